"""A PostgreSQL server of the project's own: a cluster under a data dir, started as a
child process on a free port (loopback only), for the state store shared by several
scheduler and web processes, and for the tests.

PostgreSQL refuses to run as root: when the caller is root, ``initdb`` and ``postgres``
run as the ``postgres`` user (``setpriv``), and the cluster directory is handed to it.
That directory must then be reachable by that user (``/tmp`` is; a root-only home is not).

Usage::

    server = PostgresServer(Path("/tmp/namazu-pg")).start()
    url = server.create_database("namazu")      # postgresql+psycopg://...
    ...
    server.stop()
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from namazu.server.launch.stack import StackError, free_port, port_open

__all__ = ["PostgresServer", "find_postgres_bin"]

#: Where Debian puts each major version's server programs.
DEBIAN_POSTGRES_ROOT = Path("/usr/lib/postgresql")

#: The unprivileged account PostgreSQL runs as when started by root.
SERVICE_USER = "postgres"


def find_postgres_bin() -> Path:
    """The directory holding ``initdb`` and ``postgres``: ``NAMAZU_POSTGRES_BIN``, else
    the newest Debian version under /usr/lib/postgresql, else the one on PATH.
    Raises StackError when none is installed."""
    configured = os.environ.get("NAMAZU_POSTGRES_BIN")
    if configured:
        return Path(configured)
    versions = sorted(
        (p for p in DEBIAN_POSTGRES_ROOT.glob("*/bin") if (p / "initdb").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if versions:
        return versions[-1]
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    raise StackError(
        "PostgreSQL is not installed (no initdb under /usr/lib/postgresql/*/bin or on PATH); "
        "apt-get install postgresql"
    )


@dataclass
class PostgresServer:
    """One PostgreSQL cluster under ``data_dir`` served on ``127.0.0.1:port``.

    Authentication is ``trust`` for the superuser ``postgres`` on loopback only: the
    server is the caller's own, reachable from this machine alone. ``durable=False``
    turns fsync off (tests: a crash of the machine may lose the last commits);
    ``detached`` keeps it running after the caller exits (``namazu stack start``).
    ``host`` : the address it listens on; ``trusted_network`` : a CIDR whose clients
    are trusted too (a private test network); ``wrapper`` : argv put before the server
    program (e.g. ``ip netns exec NAME``).
    """

    data_dir: Path
    port: int = 0
    durable: bool = True
    detached: bool = False
    max_connections: int = 200
    bin_dir: Path | None = None
    host: str = "127.0.0.1"
    trusted_network: str | None = None
    wrapper: tuple[str, ...] = ()
    _proc: subprocess.Popen | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).resolve()
        self.port = self.port or free_port()
        self.bin_dir = Path(self.bin_dir) if self.bin_dir else find_postgres_bin()

    @classmethod
    def temporary(cls, **kwargs) -> PostgresServer:
        """A server in a fresh directory under the system temp dir (removed by ``stop``
        when ``remove=True``)."""
        return cls(Path(tempfile.mkdtemp(prefix="namazu-pg-")), **kwargs)

    @property
    def cluster_dir(self) -> Path:
        return self.data_dir / "cluster"

    @property
    def socket_dir(self) -> Path:
        return self.data_dir / "socket"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "postgres.log"

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL of ``database`` on this server (psycopg 3 driver)."""
        return f"postgresql+psycopg://{SERVICE_USER}@{self.host}:{self.port}/{database}"

    def _as_service_user(self, argv: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return argv
        return ["setpriv", "--reuid", SERVICE_USER, "--regid", SERVICE_USER,
                "--init-groups", "--reset-env", *argv]  # fmt: skip

    def _hand_over(self, *paths: Path) -> None:
        if os.geteuid() != 0:
            return
        try:
            account = pwd.getpwnam(SERVICE_USER)
        except KeyError:
            raise StackError(f"running as root needs the {SERVICE_USER!r} user") from None
        for parent in Path(self.data_dir).parents:
            if not parent.stat().st_mode & 0o001:
                raise StackError(
                    f"{self.data_dir}: the {SERVICE_USER} user cannot reach it ({parent} is "
                    "closed to others: chmod o+x it, or put the data dir elsewhere)"
                )
        for path in paths:
            os.chown(path, account.pw_uid, account.pw_gid)

    def initdb(self) -> None:
        """Create the cluster (UTF-8, superuser ``postgres``) unless it exists."""
        if (self.cluster_dir / "PG_VERSION").exists():
            return
        for path in (self.data_dir, self.cluster_dir, self.socket_dir):
            path.mkdir(parents=True, exist_ok=True)
        self._hand_over(self.data_dir, self.cluster_dir, self.socket_dir)
        argv = [str(self.bin_dir / "initdb"), "-D", str(self.cluster_dir), "-U", SERVICE_USER,
                "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8",
                "--no-instructions"]  # fmt: skip
        if not self.durable:
            argv.append("--no-sync")
        done = subprocess.run(self._as_service_user(argv), capture_output=True, text=True)
        if done.returncode != 0:
            raise StackError(
                f"initdb failed in {self.cluster_dir}: {(done.stderr or done.stdout).strip()}"
            )
        if self.trusted_network:
            with open(self.cluster_dir / "pg_hba.conf", "a", encoding="utf-8") as hba:
                hba.write(f"host all all {self.trusted_network} trust\n")

    def start(self, timeout_s: float = 30.0) -> PostgresServer:
        """Create the cluster if needed and start the server; returns self."""
        if self.running:
            return self
        if port_open(self.port, self.host):
            raise StackError(f"port {self.port} is already in use (PostgreSQL)")
        self.initdb()
        argv = [str(self.bin_dir / "postgres"), "-D", str(self.cluster_dir),
                "-p", str(self.port), "-k", str(self.socket_dir),
                "-c", f"listen_addresses={self.host}",
                "-c", f"max_connections={self.max_connections}"]  # fmt: skip
        if not self.durable:
            argv += ["-c", "fsync=off", "-c", "synchronous_commit=off",
                     "-c", "full_page_writes=off"]  # fmt: skip
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [*self.wrapper, *self._as_service_user(argv)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=self.detached,
            )
        deadline = time.monotonic() + timeout_s
        while not self._accepting():
            if self._proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                raise StackError(f"postgres exited with {self._proc.returncode}:\n{tail}")
            if time.monotonic() > deadline:
                self.stop()
                raise StackError(f"postgres not ready on port {self.port} after {timeout_s} s")
            time.sleep(0.1)
        return self

    def _accepting(self) -> bool:
        argv = [str(self.bin_dir / "pg_isready"), "-q", "-h", self.host, "-p", str(self.port)]
        return subprocess.run(argv, capture_output=True).returncode == 0

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run one SQL statement through ``psql`` (outside any transaction); its output."""
        argv = [str(self.bin_dir / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                "-h", self.host, "-p", str(self.port), "-U", SERVICE_USER,
                "-d", database, "-c", sql]  # fmt: skip
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode != 0:
            raise StackError(f"psql {sql!r} failed: {done.stderr.strip()}")
        return done.stdout

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def ensure_database(self, name: str) -> str:
        """Create ``name`` unless it exists; its URL."""
        if self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'").strip() != "1":
            return self.create_database(name)
        return self.url(name)

    def create_database(self, name: str) -> str:
        """Create an empty database ``name`` (letters, digits, underscores); its URL."""
        if not name.replace("_", "").isalnum():
            raise ValueError(f"database name {name!r}: letters, digits and underscores only")
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop ``name``, closing any connection still open to it."""
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self, timeout_s: float = 30.0, remove: bool = False) -> None:
        """Fast shutdown (SIGINT: open transactions roll back); ``remove`` deletes the
        data dir afterwards."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if remove:
            shutil.rmtree(self.data_dir, ignore_errors=True)
