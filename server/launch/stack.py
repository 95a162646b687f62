"""Local Mosquitto + InfluxDB launcher (``namazu stack start|stop|status``).

``namazu stack start`` also starts one more InfluxDB for each configured
``[influx_instances.NAME]`` whose URL is on this machine (``127.0.0.1`` or
``localhost`` with a port), under ``<data_dir>/instances/NAME``, recorded as
``influxd-NAME``; instances on other hosts are left to those hosts.

The same code starts the services for the test fixtures, the demo and for a
developer's machine: configs, data and logs live under one data directory, both
services listen on loopback only, on chosen or free ports. Neither service
daemonises itself; they run as child processes (``start_new_session`` for the
detached CLI form) and their pids are recorded in ``<data_dir>/stack.json``.

A ``shielded`` stack (the demo) puts its services in their own process group, so a
Ctrl-C at the terminal reaches only the caller, which stops its clients first and the
services last; on Linux the services also receive SIGTERM when the thread that
started them exits, so a killed caller leaves nothing running.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

MOSQUITTO_BIN = "/usr/sbin/mosquitto"
INFLUXD_BIN = "/usr/bin/influxd"
STATE_FILE = "stack.json"


class StackError(RuntimeError):
    """A service could not be started, stopped or reached."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1", timeout_s: float = 0.2) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def mosquitto_config(data_dir: Path, port: int, extra: str = "", host: str = "127.0.0.1") -> str:
    """Mosquitto 2.x configuration for a development broker listening on ``host``
    (loopback by default).

    Queues are set deliberately: the default ``max_queued_messages 1000`` silently
    drops messages for a slow subscriber, so persistent sessions get a large queue.
    """
    lines = [
        f"listener {port} {host}",
        "allow_anonymous true",
        "persistence true",
        f"persistence_location {data_dir}/",
        "autosave_interval 5",
        "max_queued_messages 2000000",
        "max_queued_bytes 0",
        "max_inflight_messages 1000",
        "max_packet_size 4194304",
        "persistent_client_expiration 14d",
        "set_tcp_nodelay true",
        f"log_dest file {data_dir}/mosquitto.log",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "connection_messages true",
    ]
    if os.geteuid() == 0:
        lines.append("user root")
    if extra:
        lines.append(extra)
    return "\n".join(lines) + "\n"


def influxdb_config(
    data_dir: Path, http_port: int, rpc_port: int, auth: bool = False, host: str = "127.0.0.1"
) -> str:
    """InfluxDB 1.x configuration: both bind addresses on ``host`` (loopback by default),
    no reporting; ``auth`` turns on user authentication (the first user created must be
    an admin)."""
    return f"""reporting-disabled = true
bind-address = "{host}:{rpc_port}"

[meta]
  dir = "{data_dir}/meta"

[data]
  dir = "{data_dir}/data"
  wal-dir = "{data_dir}/wal"
  query-log-enabled = false
  index-version = "inmem"
  cache-snapshot-write-cold-duration = "1m"

[coordinator]
  query-timeout = "60s"

[monitor]
  store-enabled = false

[http]
  enabled = true
  bind-address = "{host}:{http_port}"
  auth-enabled = {"true" if auth else "false"}
  log-enabled = false
  max-body-size = 0
  flux-enabled = false

[continuous_queries]
  enabled = true
  log-enabled = false
  run-interval = "1s"

[subscriber]
  enabled = false
"""


def _wait(predicate, timeout_s: float, what: str, proc: subprocess.Popen | None, log: Path):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise StackError(f"{what} exited with code {proc.returncode}; log tail:\n{tail}")
        time.sleep(0.05)
    raise StackError(f"{what} did not become ready within {timeout_s:.0f} s (log: {log})")


def influx_ready(url: str) -> bool:
    """True when InfluxDB answers /ping with 204."""
    try:
        return requests.get(f"{url}/ping", timeout=0.5).status_code == 204
    except requests.RequestException:
        return False


@dataclass
class Stack:
    """Mosquitto and InfluxDB as child processes under ``data_dir``.

    Ports of 0 are replaced by free ports at construction, and kept across
    restarts of either service (so clients can reconnect to the same address).
    ``influx_auth`` starts InfluxDB with authentication on (users are the caller's).
    """

    data_dir: Path
    mqtt_port: int = 0
    influx_http_port: int = 0
    influx_rpc_port: int = 0
    mosquitto_extra: str = ""
    influx_auth: bool = False
    detached: bool = False
    shielded: bool = False
    mosquitto_bin: str = MOSQUITTO_BIN
    influxd_bin: str = INFLUXD_BIN
    _procs: dict[str, subprocess.Popen] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).resolve()
        self.mqtt_port = self.mqtt_port or free_port()
        self.influx_http_port = self.influx_http_port or free_port()
        self.influx_rpc_port = self.influx_rpc_port or free_port()

    @property
    def influx_url(self) -> str:
        """Base URL of the InfluxDB HTTP API."""
        return f"http://127.0.0.1:{self.influx_http_port}"

    @property
    def mosquitto_dir(self) -> Path:
        return self.data_dir / "mosquitto"

    @property
    def influx_dir(self) -> Path:
        return self.data_dir / "influxdb"

    def _spawn(self, name: str, argv: list[str], log: Path) -> subprocess.Popen:
        log.parent.mkdir(parents=True, exist_ok=True)
        shielded = self.shielded and not self.detached
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=self.detached,
                process_group=0 if shielded else None,
                preexec_fn=_terminate_with_parent if shielded else None,
            )
        self._procs[name] = proc
        return proc

    def start_mosquitto(self, timeout_s: float = 15.0) -> None:
        """Start Mosquitto (or do nothing if this stack's broker is running)."""
        if self.running("mosquitto"):
            return
        if port_open(self.mqtt_port):
            raise StackError(f"port {self.mqtt_port} is already in use (MQTT)")
        self.mosquitto_dir.mkdir(parents=True, exist_ok=True)
        conf = self.mosquitto_dir / "mosquitto.conf"
        conf.write_text(mosquitto_config(self.mosquitto_dir, self.mqtt_port, self.mosquitto_extra))
        log = self.mosquitto_dir / "stdout.log"
        proc = self._spawn("mosquitto", [self.mosquitto_bin, "-c", str(conf)], log)
        _wait(lambda: port_open(self.mqtt_port), timeout_s, "mosquitto", proc, log)

    def start_influx(self, timeout_s: float = 60.0) -> None:
        """Start InfluxDB (or do nothing if this stack's influxd is running)."""
        if self.running("influxd"):
            return
        for port in (self.influx_http_port, self.influx_rpc_port):
            if port_open(port):
                raise StackError(f"port {port} is already in use (InfluxDB)")
        self.influx_dir.mkdir(parents=True, exist_ok=True)
        conf = self.influx_dir / "influxdb.conf"
        conf.write_text(
            influxdb_config(
                self.influx_dir, self.influx_http_port, self.influx_rpc_port, self.influx_auth
            )
        )
        log = self.influx_dir / "influxd.log"
        proc = self._spawn("influxd", [self.influxd_bin, "-config", str(conf)], log)
        _wait(lambda: influx_ready(self.influx_url), timeout_s, "influxd", proc, log)

    def start(self) -> Stack:
        """Start both services; returns self."""
        self.start_mosquitto()
        self.start_influx()
        return self

    def running(self, name: str) -> bool:
        proc = self._procs.get(name)
        return proc is not None and proc.poll() is None

    def _stop(self, name: str, timeout_s: float = 15.0, kill: bool = False) -> None:
        proc = self._procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def stop_mosquitto(self, kill: bool = False) -> None:
        """Stop Mosquitto (SIGTERM saves its persistence file; ``kill`` sends SIGKILL)."""
        self._stop("mosquitto", kill=kill)

    def stop_influx(self, kill: bool = False) -> None:
        """Stop InfluxDB."""
        self._stop("influxd", kill=kill)

    def stop(self) -> None:
        """Stop both services."""
        self.stop_mosquitto()
        self.stop_influx()

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def state(self) -> dict:
        """What the CLI records in ``stack.json``."""
        return {
            "data_dir": str(self.data_dir),
            "mqtt_port": self.mqtt_port,
            "influx_http_port": self.influx_http_port,
            "influx_rpc_port": self.influx_rpc_port,
            "influx_url": self.influx_url,
            "pids": {name: proc.pid for name, proc in self._procs.items()},
        }

    def record(self, **extra: Any) -> None:
        """Write ``stack.json`` (ports, pids, ``extra``) so ``namazu stack status`` and
        ``stop`` find this stack, whoever started it."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / STATE_FILE).write_text(json.dumps(self.state() | extra, indent=2))

    def forget(self) -> None:
        """Remove ``stack.json`` when it still describes this stack's processes."""
        recorded = read_state(self.data_dir)
        mine = {name: proc.pid for name, proc in self._procs.items()}
        if recorded is not None and (not mine or recorded.get("pids") == mine):
            (self.data_dir / STATE_FILE).unlink(missing_ok=True)


def _terminate_with_parent() -> None:
    """In a shielded child before exec: SIGTERM when the starting thread exits (Linux)."""
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs: a killed child that nobody has reaped yet (a zombie)
    still answers ``kill(pid, 0)`` but is dead, so it is reaped or read from /proc."""
    with contextlib.suppress(ChildProcessError, OSError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False  # our own child, just reaped
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def read_state(data_dir: Path) -> dict | None:
    """The recorded state of a detached stack, or None."""
    path = Path(data_dir) / STATE_FILE
    if not path.exists():
        return None
    return json.loads(path.read_text())


def status(data_dir: Path) -> dict:
    """Health of every part of a detached stack under ``data_dir``."""
    state = read_state(data_dir)
    if state is None:
        return {"running": False, "reason": f"no stack recorded under {data_dir}"}
    pids = state.get("pids", {})
    report = {
        "mosquitto": {
            "pid": pids.get("mosquitto"),
            "alive": bool(pids.get("mosquitto")) and _pid_alive(pids["mosquitto"]),
            "port": state["mqtt_port"],
            "accepting": port_open(state["mqtt_port"]),
        },
        "influxd": {
            "pid": pids.get("influxd"),
            "alive": bool(pids.get("influxd")) and _pid_alive(pids["influxd"]),
            "url": state["influx_url"],
            "ping": influx_ready(state["influx_url"]),
        },
    }
    if state.get("postgres_port"):
        report["postgres"] = {
            "pid": pids.get("postgres"),
            "alive": bool(pids.get("postgres")) and _pid_alive(pids["postgres"]),
            "port": state["postgres_port"],
            "accepting": port_open(state["postgres_port"]),
            "state_url": state.get("state_url"),
        }
    for name, instance in state.get("influx_instances", {}).items():
        pid = pids.get(f"influxd-{name}")
        report[f"influxd-{name}"] = {
            "pid": pid,
            "alive": bool(pid) and _pid_alive(pid),
            "url": instance["url"],
            "ping": influx_ready(instance["url"]),
        }
    report["running"] = (
        report["mosquitto"]["accepting"]
        and report["influxd"]["ping"]
        and all(v["ping"] for k, v in report.items() if k.startswith("influxd-"))
    )
    return report


def _http_ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=1.0, allow_redirects=False).status_code < 400
    except requests.RequestException:
        return False


def services_health(config: Any, influx_url: str | None = None) -> dict[str, Any]:
    """Health of the parts above the stack, as far as this machine can see them.

    config : a ``NamazuConfig``. influx_url : the stack's InfluxDB (default config's
    ``[influx]``; the ``[influx_instances]`` are asked too).
    Returns a dict: ``ingest`` / ``scheduler`` (their /metrics endpoints when a metrics
    port is configured), ``scheduler.last_tick`` (age of the newest detection
    checkpoint [s]), ``web`` (the panel's login page answers), ``data`` (age of the
    newest activity sample [s] and the gateways' last reported online state).
    """
    from namazu.server.store.influx import InfluxClient, InfluxError

    report: dict[str, Any] = {}
    for name, port in (
        ("ingest", config.ingest.metrics_port),
        ("scheduler", config.scheduler.metrics_port),
    ):
        report[name] = (
            {"metrics": _http_ok(f"http://127.0.0.1:{port}/metrics"), "port": port}
            if port
            else {"metrics": None, "note": f"{name}.metrics_port not set"}
        )
    report["scheduler"]["last_tick_age_s"] = _last_tick_age_s(config.state.url)
    web = config.web
    report["web"] = {"url": f"http://{web.host}:{web.port}/", "answers": False}
    if web.port:
        report["web"]["answers"] = _http_ok(f"http://{web.host}:{web.port}/login")
    data: dict[str, Any] = {"newest_sample_age_s": None, "gateways": {}}
    urls = [(influx_url or config.influx.url, config.influx.database)]
    urls += [(item.url, item.database) for item in config.influx_instances.values()]
    for url, database in urls:  # every InfluxDB instance; the newest sample of them all
        client = InfluxClient(url, database, timeout_s=2)
        try:
            rows = client.query('SELECT last("odba") FROM "activity"')
            if rows:
                age = round(time.time() - rows[0]["values"][0][0] / 1000, 1)
                newest = data["newest_sample_age_s"]
                data["newest_sample_age_s"] = age if newest is None else min(newest, age)
            for item in client.query('SELECT last("online") FROM "gateway_status" GROUP BY *'):
                tags = item.get("tags") or {}
                key = f"{tags.get('farm', '?')}/{tags.get('gateway', '?')}"
                data["gateways"][key] = "online" if item["values"][0][1] else "offline"
        except InfluxError as exc:
            data.setdefault("error", f"{url}: {str(exc)[:200]}")
        finally:
            client.close()
    report["data"] = data
    return report


def _last_tick_age_s(state_url: str) -> float | None:
    """Seconds since the newest detection checkpoint, or None when there is none."""
    from sqlalchemy import select
    from sqlalchemy.exc import SQLAlchemyError

    from namazu.server.store.state import Checkpoint, make_engine, session_scope

    if state_url.startswith("sqlite:///") and not Path(state_url[10:]).exists():
        return None
    try:
        engine = make_engine(state_url)
        with session_scope(engine) as session:
            times = session.scalars(
                select(Checkpoint.updated_at).where(Checkpoint.name.like("detection:%"))
            ).all()
        engine.dispose()
    except SQLAlchemyError:
        return None
    stamps = [t for t in times if t is not None]
    if not stamps:
        return None
    return round(time.time() - max(stamps).timestamp(), 1)


def stop_detached(data_dir: Path, timeout_s: float = 15.0) -> list[str]:
    """Stop the services of a detached stack; returns the names stopped."""
    state = read_state(data_dir)
    if state is None:
        return []
    stopped = [
        name
        for name, pid in state.get("pids", {}).items()
        # PostgreSQL: SIGINT is its fast shutdown (SIGTERM waits for every client)
        if _stop_pid(pid, timeout_s, signal.SIGINT if name == "postgres" else signal.SIGTERM)
    ]
    (Path(data_dir) / STATE_FILE).unlink(missing_ok=True)
    return stopped


def _stop_pid(pid: int, timeout_s: float = 15.0, sig: int = signal.SIGTERM) -> bool:
    """``sig`` (then SIGKILL after ``timeout_s``) to a recorded service; False if it was
    gone."""
    if not _pid_alive(pid):
        return False
    os.kill(pid, sig)
    deadline = time.monotonic() + timeout_s
    while _pid_alive(pid) and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    if _pid_alive(pid):
        os.kill(pid, signal.SIGKILL)
    return True


def healthy_services(report: dict) -> set[str]:
    """Services of a ``status`` report whose recorded process is alive and answering."""
    healthy = set()
    if report.get("mosquitto", {}).get("alive") and report["mosquitto"].get("accepting"):
        healthy.add("mosquitto")
    for name, part in report.items():
        if name.startswith("influxd") and part.get("alive") and part.get("ping"):
            healthy.add(name)
    if report.get("postgres", {}).get("alive") and report["postgres"].get("accepting"):
        healthy.add("postgres")
    return healthy


def local_influx_instances(config: Any) -> dict[str, int]:
    """The configured further InfluxDB instances on this machine: name -> HTTP port
    (URL host ``127.0.0.1`` or ``localhost`` with an explicit port)."""
    from urllib.parse import urlsplit

    found = {}
    for name, instance in config.influx_instances.items():
        url = urlsplit(instance.url)
        if url.hostname in ("127.0.0.1", "localhost") and url.port:
            found[name] = url.port
    return found


def _start_instances(
    data_dir: Path, config: Any, recorded: dict, kept: dict, state: dict
) -> list[Stack]:
    """Start an InfluxDB for every local instance that is not kept running; records pids
    (``influxd-NAME``) and URLs (``influx_instances``) in ``state``; returns the new ones."""
    started = []
    known = recorded.get("influx_instances", {})
    state["influx_instances"] = {}
    for name, port in local_influx_instances(config).items():
        rpc_port = known.get(name, {}).get("rpc_port") or 0
        instance = Stack(
            data_dir / "instances" / name,
            influx_http_port=port,
            influx_rpc_port=rpc_port,
            detached=True,
            influxd_bin=config.stack.influxd_bin,
        )
        key = f"influxd-{name}"
        if key not in kept:
            try:
                instance.start_influx()
            except StackError:
                for running in started:
                    running.stop_influx()
                raise
            started.append(instance)
            state["pids"][key] = instance.state()["pids"]["influxd"]
        state["influx_instances"][name] = {
            "url": instance.influx_url,
            "rpc_port": instance.influx_rpc_port if key not in kept else rpc_port,
        }
    return started


def _port(given: int | None, recorded: int | None, configured: int | None) -> int:
    """The port to use: the command line's, else the recorded one, else the config's."""
    if given is not None:
        return given
    return recorded or configured or 0


def main(argv: list[str]) -> int:
    """``namazu stack start|stop|status``: the local Mosquitto + InfluxDB."""
    from namazu.server.core.config import ConfigError, load_config

    parser = argparse.ArgumentParser(prog="namazu stack", description=main.__doc__)
    parser.add_argument("action", choices=["start", "stop", "status"])
    parser.add_argument("--config", help="TOML config file")
    parser.add_argument("--data-dir", type=Path, help="directory for configs, data, logs")
    parser.add_argument("--mqtt-port", type=int, help="MQTT port (0 = free port)")
    parser.add_argument("--influx-port", type=int, help="InfluxDB HTTP port (0 = free port)")
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="also PostgreSQL, for a state store shared by several processes (prints its URL)",
    )
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        cfg = config.stack
    except ConfigError as exc:
        print(f"namazu stack: {exc}", file=sys.stderr)
        return 2
    data_dir = (args.data_dir or cfg.data_dir).resolve()
    if args.action == "status":
        report = status(data_dir)
        state = read_state(data_dir)
        report["services"] = services_health(config, state["influx_url"] if state else None)
        print(json.dumps(report, indent=2))
        return 0 if report.get("running") else 3
    if args.action == "stop":
        stopped = stop_detached(data_dir)
        print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")
        return 0
    current = status(data_dir)
    recorded = read_state(data_dir) or {}
    wanted = {"mosquitto", "influxd", *(f"influxd-{n}" for n in local_influx_instances(config))}
    if args.postgres or "postgres" in recorded.get("pids", {}):
        wanted.add("postgres")
    if current.get("running") and healthy_services(current) == wanted:
        print(f"stack already running under {data_dir}")
        print(json.dumps(current, indent=2))
        return 0
    # restart only what is down, on the recorded ports, and keep what still answers
    kept = {name: recorded["pids"][name] for name in healthy_services(current)}
    for name, pid in recorded.get("pids", {}).items():
        if name not in kept:
            _stop_pid(pid)  # a recorded process that no longer answers
    stack = Stack(
        data_dir,
        mqtt_port=_port(args.mqtt_port, recorded.get("mqtt_port"), cfg.mqtt_port),
        influx_http_port=_port(
            args.influx_port, recorded.get("influx_http_port"), cfg.influx_http_port
        ),
        influx_rpc_port=_port(None, recorded.get("influx_rpc_port"), cfg.influx_rpc_port),
        detached=True,
        mosquitto_bin=cfg.mosquitto_bin,
        influxd_bin=cfg.influxd_bin,
    )
    try:
        if "mosquitto" not in kept:
            stack.start_mosquitto()
        if "influxd" not in kept:
            stack.start_influx()
    except StackError as exc:
        stack.stop()
        print(f"namazu stack: {exc}", file=sys.stderr)
        return 1
    state = stack.state()
    state["pids"] = {**kept, **state["pids"]}
    try:
        instances = _start_instances(data_dir, config, recorded, kept, state)
    except StackError as exc:
        stack.stop()
        print(f"namazu stack: {exc}", file=sys.stderr)
        return 1
    if "postgres" in wanted:
        from namazu.server.launch.postgres import PostgresServer

        postgres = PostgresServer(
            data_dir / "postgres", port=recorded.get("postgres_port") or 0, detached=True
        )
        try:
            if "postgres" not in kept:
                postgres.start()
                state["pids"]["postgres"] = postgres.pid
            state["state_url"] = postgres.ensure_database("namazu")
        except StackError as exc:
            stack.stop()
            for instance in instances:
                instance.stop_influx()
            postgres.stop()
            print(f"namazu stack: {exc}", file=sys.stderr)
            return 1
        state["postgres_port"] = postgres.port
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / STATE_FILE).write_text(json.dumps(state, indent=2))
    for name, pid in kept.items():
        print(f"{name}: still running (pid {pid}), kept")
    print(f"mosquitto: mqtt://127.0.0.1:{stack.mqtt_port}")
    print(f"influxdb:  {stack.influx_url}")
    for name, instance in state["influx_instances"].items():
        print(f"influxdb:  {instance['url']}  (influx_instances.{name})")
    if "state_url" in state:
        print(f"postgres:  {state['state_url']}  (state.url)")
    print(f"data dir:  {data_dir}")
    return 0
