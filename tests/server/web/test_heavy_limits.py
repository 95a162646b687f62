"""Heavy requests on a real panel server (werkzeug, threaded) over a real InfluxDB:
exports stream chunk by chunk, at most ``heavy_per_user_limit`` per user and
``heavy_global_limit`` in all run at once (more: 429 with Retry-After), a light request
still answers while they are in flight, and the evaluation's shift count is capped.
Under gunicorn with two workers the same limits hold over both processes, and a killed
worker's slots are freed by the kernel.

Exports are held "in flight" honestly: the client reads the headers and then stops
reading with a small receive buffer, so the server's stream blocks on the socket, as it
does for a slow client. (Latency figures are in ``bench/bench_panel_load.py``.)
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pandas as pd
import psutil
import pytest
from werkzeug.serving import make_server

from namazu.server.launch.stack import free_port
from namazu.server.store.influx import InfluxClient
from namazu.server.store.state import init_db, session_scope
from namazu.server.web.auth import create_user, issue_token
from tests.server.web.export_support import (
    ANIMAL,
    DAYS,
    FARM,
    START,
    export_path,
    get,
    hold,
    write_activity,
)

USERS = ("u1", "u2", "u3")
LIMITS = {"heavy_global_limit": 3, "heavy_per_user_limit": 2, "evaluation_max_shifts": 20}


@pytest.fixture(scope="module")
def activity(stack):
    """40 days of one animal's activity in a fresh InfluxDB database; yields
    (InfluxDB URL, database)."""
    database = "heavy_" + uuid.uuid4().hex[:8]
    write_activity(stack.influx_url, database)
    yield stack.influx_url, database
    influx = InfluxClient(stack.influx_url, database)
    influx.drop_database()
    influx.close()


def _viewers(state_url: str) -> dict[str, str]:
    """API tokens of the viewer accounts ``USERS`` in a new state store."""
    engine = init_db(state_url)
    tokens = {}
    with session_scope(engine) as db:
        for name in USERS:
            tokens[name] = issue_token(db, create_user(db, name, "viewer", "x" * 12))
    return tokens


@pytest.fixture(scope="module")
def server(activity, tmp_path_factory):
    """The panel on loopback (werkzeug, threaded) over ``activity``; yields
    (port, tokens by user, the app's heavy gate)."""
    from namazu.server.web import create_app

    influx_url, database = activity
    state_url = f"sqlite:///{tmp_path_factory.mktemp('heavy')}/state.sqlite"
    tokens = _viewers(state_url)
    app = create_app(
        {
            "influx": {"url": influx_url, "database": database},
            "state": {"url": state_url},
            "web": {"secret_key": "k" * 48, **LIMITS},
            "farms": [{"id": FARM, "latitude": 43.0, "longitude": 13.0}],
        }
    )
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd.server_port, tokens, app.extensions["namazu"].heavy_gate
    httpd.shutdown()


def _wait_until(condition, what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


def test_heavy_requests_are_limited_per_user_and_in_all(server):
    port, tokens, gate = server
    held = []
    try:
        for user in ("u1", "u1", "u2"):
            sock, head = hold(port, tokens[user], export_path())
            held.append(sock)
            assert head.startswith("HTTP/1.1 200"), head
        assert gate.running == 3
        # u1 already runs two: refused, whatever the global count
        status, headers, body = get(port, tokens["u1"], export_path(1))
        assert status == 429 and int(headers["Retry-After"]) >= 1
        assert "too many heavy requests" in json.loads(body)["error"]
        # u3 runs none, but the panel runs three: refused too
        status, headers, _ = get(port, tokens["u3"], export_path(1))
        assert status == 429 and 1 <= int(headers["Retry-After"]) <= 60
        # a light request still answers while the three are in flight
        status, _, body = get(port, tokens["u3"], "/api/v1/farms")
        assert status == 200 and json.loads(body)[0]["id"] == FARM
        assert gate.running == 3
    finally:
        for sock in held:
            sock.close()
    _wait_until(lambda: gate.running == 0, "the abandoned exports freed their slots")
    status, _, body = get(port, tokens["u3"], export_path())
    lines = body.decode().splitlines()
    assert status == 200 and len(lines) == 1 + DAYS * 1440  # every sample, 40 chunks
    assert lines[0].startswith("study-name,") and lines[1].split(",")[0] == "Namazu demo-farm"
    assert sum(line.startswith("study-name,") for line in lines) == 1


def test_timeline_export_streams_every_sample(server):
    port, tokens, _ = server
    end = START + pd.Timedelta(days=3)
    path = (
        f"/api/v1/export/timeline.csv?farm={FARM}&series={ANIMAL}"
        f"&start={START:%Y-%m-%dT%H:%MZ}&end={end:%Y-%m-%dT%H:%MZ}"
    )
    status, headers, body = get(port, tokens["u1"], path)
    rows = body.decode().splitlines()
    assert status == 200 and rows[0] == "time,series,kind,value"
    assert len(rows) == 1 + 3 * 1440 and {row.split(",")[2] for row in rows[1:]} == {"activity"}
    assert headers["Transfer-Encoding"] == "chunked"


def test_the_evaluation_caps_its_shifts_and_says_so(server):
    port, tokens, _ = server
    path = (
        f"/api/v1/evaluation?farm={FARM}&start=2024-01-01&end=2024-02-01"
        "&resolution_min=60&n_shifts=2000"
    )
    status, _, body = get(port, tokens["u2"], path)
    assert status == 200
    assert json.loads(body)["shifts"] == {"requested": 2000, "cap": 20, "used": 20}


@pytest.fixture
def gunicorn_panel(activity, tmp_path):
    """``namazu web`` on gunicorn with 2 workers (4 threads each), limits 2 in all and 1
    per user; yields (port, tokens by user, the slot directory, the master's process)."""
    influx_url, database = activity
    state_url = f"sqlite:///{tmp_path}/state.sqlite"
    tokens = _viewers(state_url)
    slots = tmp_path / "slots"
    port = free_port()
    config = tmp_path / "namazu.toml"
    config.write_text(
        f'[influx]\nurl = "{influx_url}"\ndatabase = "{database}"\n'
        f'[state]\nurl = "{state_url}"\n'
        f'[web]\nport = {port}\nsecret_key = "{"k" * 48}"\nruntime_dir = "{slots}"\n'
        "heavy_global_limit = 2\nheavy_per_user_limit = 1\n"
        f'[[farms]]\nid = "{FARM}"\nlatitude = 43.0\nlongitude = 13.0\n'
    )
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.settimeout(60)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NAMAZU_", "WATCHDOG_"))}
    env |= {"NAMAZU_CONFIG": str(config), "NOTIFY_SOCKET": str(tmp_path / "notify.sock")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "namazu.server.cli", "web", "--workers", "2", "--threads", "4"],
        env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        ready = notify.recv(4096).decode()
        assert ready.startswith("READY=1"), ready
        yield port, tokens, slots, proc
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
        notify.close()


def _slot_holders(slots) -> dict[str, int]:
    """Which process holds each slot lock file of ``slots`` now: file name -> pid, read
    from the kernel's table of locks (``/proc/locks``)."""
    by_inode = {path.stat().st_ino: path.name for path in slots.glob("*.lock")}
    holders = {}
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "->" in fields or fields[1] != "FLOCK":  # a waiter, or not a flock
            continue
        inode = int(fields[5].rsplit(":", 1)[1])
        if inode in by_inode:
            holders[by_inode[inode]] = int(fields[4])
    return holders


def _global_holders(slots) -> list[int]:
    return sorted(pid for name, pid in _slot_holders(slots).items() if name.startswith("global"))


def _hold_on_another_worker(port, token, slots, busy_pid: int) -> socket.socket:
    """Hold an export whose slot lands in a worker other than ``busy_pid`` (connections
    are spread over the workers by the kernel: retry until one lands elsewhere)."""
    for _ in range(40):
        sock, head = hold(port, token, export_path())
        assert head.startswith("HTTP/1.1 200"), head
        if _global_holders(slots) != [busy_pid, busy_pid]:
            return sock
        sock.close()
        _wait_until(lambda: _global_holders(slots) == [busy_pid], "the retried export let go")
    raise AssertionError("40 connections in a row landed in the same worker")


def test_limits_hold_across_gunicorn_workers_and_a_killed_worker_frees_its_slot(
    gunicorn_panel,
):
    """Each probe below is a new connection, which either worker may take; with the
    limits counted per worker, half of them would find a free slot and answer 200."""
    port, tokens, slots, master = gunicorn_panel
    _wait_until(lambda: len(psutil.Process(master.pid).children()) == 2, "both workers run")
    workers = {child.pid for child in psutil.Process(master.pid).children()}
    held = []
    try:
        sock, head = hold(port, tokens["u1"], export_path())
        held.append(sock)
        assert head.startswith("HTTP/1.1 200"), head
        [first] = _global_holders(slots)
        assert first in workers and set(_slot_holders(slots).values()) == {first}
        # u1 runs one export in one worker; one global slot is free, yet the per-user
        # limit refuses u1 whichever worker takes the request
        for _ in range(8):
            status, headers, _ = get(port, tokens["u1"], export_path(1))
            assert status == 429 and 1 <= int(headers["Retry-After"]) <= 60
        # u2's export runs in the other worker: both global slots are taken, one per
        # worker, and u3 is refused whichever worker takes the request
        held.append(_hold_on_another_worker(port, tokens["u2"], slots, first))
        [second] = set(_global_holders(slots)) - {first}
        assert second in workers
        for _ in range(8):
            status, headers, body = get(port, tokens["u3"], export_path(1))
            assert status == 429 and "too many heavy requests" in json.loads(body)["error"]
        status, _, _ = get(port, tokens["u3"], "/api/v1/farms")
        assert status == 200
        # the worker running u1's export dies: the kernel frees its slots, gunicorn
        # starts another worker, and u3 and u1 are served again
        os.kill(first, signal.SIGKILL)
        _wait_until(lambda: _global_holders(slots) == [second], "the dead worker's slot is free")
        assert set(_slot_holders(slots).values()) == {second}
        for user in ("u3", "u1"):
            status, _, body = get(port, tokens[user], export_path(1))
            assert status == 200 and len(body.decode().splitlines()) == 1 + 1440
        assert _global_holders(slots) == [second]
    finally:
        for sock in held:
            sock.close()
    _wait_until(lambda: not _slot_holders(slots), "the abandoned exports freed their slots")
