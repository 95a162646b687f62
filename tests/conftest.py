"""Shared fixtures: the real data folder and the real local stack.

Data: ``NAMAZU_DATA_DIR`` (default ``../shared/data``). A test that needs a file calls
``require_data("relative/path")``: it skips with a reason when the file is absent, and
fails instead when ``NAMAZU_REQUIRE_DATA=1`` (as in CI).

Property-based tests (hypothesis, schemathesis): ``NAMAZU_HYPOTHESIS_PROFILE`` picks
the profile. ``default`` draws new random examples on every run; ``ci`` (set by
``.ci/run``) derives them from each test's name, so a CI result can be reproduced
exactly; ``make fuzz`` runs the random profile with many more examples.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import settings


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Every test leaves the root logger's level and the project's own handler as it
    found them: a command run in process (``namazu scheduler --log-level CRITICAL``)
    installs its handler and level, which would otherwise silence the log records later
    tests look for. pytest's capture handlers are left to pytest."""
    root = logging.getLogger()
    level = root.level
    ours = [h for h in root.handlers if h.get_name() == "namazu"]
    noisy = {
        name: logging.getLogger(name).level for name in ("urllib3", "apscheduler.executors.default")
    }
    yield
    for handler in list(root.handlers):
        if handler.get_name() == "namazu" and handler not in ours:
            root.removeHandler(handler)
    for handler in ours:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)
    for name, old in noisy.items():
        logging.getLogger(name).setLevel(old)


settings.register_profile("ci", derandomize=True, database=None)
settings.load_profile(os.environ.get("NAMAZU_HYPOTHESIS_PROFILE", "default"))

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path:
    """The folder with the real data pack (not part of the repository)."""
    default = PROJECT_ROOT.parent / "shared" / "data"
    return Path(os.environ.get("NAMAZU_DATA_DIR", default)).resolve()


def require_data(relpath: str) -> Path:
    """Path of a data-pack file; skip (or fail under NAMAZU_REQUIRE_DATA=1) when missing."""
    path = shared_data_dir() / relpath
    if not path.exists():
        message = f"data file {relpath} not found under {shared_data_dir()} (set NAMAZU_DATA_DIR)"
        if os.environ.get("NAMAZU_REQUIRE_DATA") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The data-pack folder (may not exist; use ``require_data`` for files)."""
    return shared_data_dir()


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    """Real Mosquitto + InfluxDB for the whole test session (free ports, temp dir).

    Tests that stop or restart a service must use ``private_stack`` instead.
    """
    from namazu.server.launch.stack import Stack

    running = Stack(tmp_path_factory.mktemp("stack")).start()
    yield running
    running.stop()


@pytest.fixture
def private_stack(tmp_path):
    """A stack of the test's own, free to be stopped and restarted by the test."""
    from namazu.server.launch.stack import Stack

    running = Stack(tmp_path / "stack").start()
    yield running
    running.stop()


def _fresh_influx_database(url: str, request):
    """An InfluxClient on a new database named after the test, on the server at ``url``."""
    import re
    import uuid

    from namazu.server.store.influx import InfluxClient

    name = re.sub(r"[^A-Za-z0-9_]", "_", request.node.name)[:40] + "_" + uuid.uuid4().hex[:6]
    client = InfluxClient(url, name)
    client.create_database()
    return client


@pytest.fixture
def influx(stack, request):
    """An InfluxClient on a fresh database of the session stack (dropped afterwards)."""
    client = _fresh_influx_database(stack.influx_url, request)
    yield client
    client.drop_database()
    client.close()


@pytest.fixture(scope="session")
def second_influxd(tmp_path_factory):
    """A second InfluxDB server for the whole session (its own free ports and temp dir),
    started by the same launcher as the stack's: the other instance of tests with several
    InfluxDB instances. Tests that stop it must start their own ``Stack.start_influx``."""
    from namazu.server.launch.stack import Stack

    running = Stack(tmp_path_factory.mktemp("influx2"))
    running.start_influx()
    yield running
    running.stop_influx()


@pytest.fixture
def influx_pair(stack, second_influxd, request):
    """Two InfluxClients on fresh databases: ``default`` on the session stack's InfluxDB,
    ``north`` on the second server (both dropped afterwards)."""
    pair = {
        "default": _fresh_influx_database(stack.influx_url, request),
        "north": _fresh_influx_database(second_influxd.influx_url, request),
    }
    yield pair
    for client in pair.values():
        client.drop_database()
        client.close()


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server for the whole test session (free port, temp dir, fsync
    off), started by the project's launcher."""
    from namazu.server.launch.postgres import PostgresServer

    server = PostgresServer.temporary(durable=False).start()
    yield server
    server.stop(remove=True)


@pytest.fixture(scope="module")
def postgres_database(postgres, request):
    """Name of a fresh database on the session's PostgreSQL for one test module."""
    import re
    import uuid

    module = request.module.__name__.rpartition(".")[2]
    name = "t_" + re.sub(r"[^A-Za-z0-9_]", "_", module)[:40] + "_" + uuid.uuid4().hex[:6]
    postgres.create_database(name)
    yield name
    postgres.drop_database(name)


#: The state-store backends every state-store test runs on (the test id says which).
STATE_BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def postgres_template(postgres):
    """Name of a database migrated to the newest schema revision, cloned by each test's
    own database (a file copy: far quicker than migrating every one)."""
    from namazu.server.store.state import dispose_engine, init_db

    url = postgres.create_database("namazu_template")
    init_db(url)
    dispose_engine(url)  # no session may stay on a template while it is cloned
    return "namazu_template"


@pytest.fixture(scope="session")
def postgres_admin(postgres):
    """An autocommit connection to the session's PostgreSQL (database ``postgres``) that
    creates and drops the tests' databases without starting ``psql`` each time."""
    import psycopg

    with psycopg.connect(
        host="127.0.0.1", port=postgres.port, user="postgres", dbname="postgres", autocommit=True
    ) as connection:
        yield connection


@contextmanager
def fresh_state_store(request, backend: str, directory: Path, migrated: bool) -> Iterator[str]:
    """URL of a state store of the caller's own on ``backend``: a new SQLite file under
    ``directory``, or a new PostgreSQL database (dropped afterwards) cloned from the
    migrated template when ``migrated``, else empty."""
    import uuid

    from namazu.server.store.state import dispose_engine

    if backend == "sqlite":
        url = f"sqlite:///{directory}/state.sqlite"
        try:
            yield url
        finally:
            dispose_engine(url)
        return
    postgres = request.getfixturevalue("postgres")
    admin = request.getfixturevalue("postgres_admin")
    template = request.getfixturevalue("postgres_template") if migrated else "template0"
    name = "t_" + uuid.uuid4().hex[:16]
    admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}" STRATEGY FILE_COPY')
    url = postgres.url(name)
    try:
        yield url
    finally:
        dispose_engine(url)
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture(params=STATE_BACKENDS)
def state_url(request, tmp_path):
    """URL of a state store of the test's own, once on SQLite (an empty file) and once on
    PostgreSQL (a fresh database already at the newest revision)."""
    with fresh_state_store(request, request.param, tmp_path, migrated=True) as url:
        yield url


@pytest.fixture(params=STATE_BACKENDS)
def empty_state_url(request, tmp_path):
    """URL of an empty state store of the test's own (no table at all), once on SQLite
    and once on PostgreSQL: for the migration tests."""
    with fresh_state_store(request, request.param, tmp_path, migrated=False) as url:
        yield url
