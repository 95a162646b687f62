"""Heavy requests on a real panel server (werkzeug, threaded) over a real InfluxDB:
exports stream chunk by chunk, at most ``heavy_per_user_limit`` per user and
``heavy_global_limit`` in all run at once (more: 429 with Retry-After), a light request
still answers while they are in flight, and the evaluation's shift count is capped.

Exports are held "in flight" honestly: the client reads the headers and then stops
reading with a small receive buffer, so the server's stream blocks on the socket, as it
does for a slow client. (Latency figures are in ``bench/bench_panel_load.py``.)
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import uuid

import numpy as np
import pandas as pd
import pytest
from werkzeug.serving import make_server

from namazu.server.store.influx import InfluxClient, float_series_lines
from namazu.server.store.state import init_db, session_scope
from namazu.server.web.auth import create_user, issue_token

FARM, ANIMAL = "demo-farm", "cow-1"
START = pd.Timestamp("2024-01-01T00:00:00Z")
DAYS = 40  # 57,600 one-minute samples: a Movebank CSV of ~6 MB, far over socket buffers
USERS = ("u1", "u2", "u3")
LIMITS = {"heavy_global_limit": 3, "heavy_per_user_limit": 2, "evaluation_max_shifts": 20}


@pytest.fixture(scope="module")
def server(stack, tmp_path_factory):
    """The panel on loopback with 40 days of one animal's activity; yields
    (port, tokens by user, the app's heavy gate)."""
    from namazu.server.web import create_app

    database = "heavy_" + uuid.uuid4().hex[:8]
    influx = InfluxClient(stack.influx_url, database)
    influx.create_database()
    index = pd.date_range(START, periods=DAYS * 1440, freq="1min")
    odba = 0.1 + np.random.default_rng(3).gamma(2.0, 0.01, index.size)
    t_ms = index.as_unit("ms").asi8
    for k in range(0, index.size, 50_000):
        part = slice(k, k + 50_000)
        influx.write_lines(
            float_series_lines(
                "activity",
                {"farm": FARM, "gateway": "gw-1", "animal": ANIMAL, "species": "cow"},
                {"odba": odba[part], "vedba": odba[part] * 0.8},
                t_ms[part],
            )
        )
    state_url = f"sqlite:///{tmp_path_factory.mktemp('heavy')}/state.sqlite"
    engine = init_db(state_url)
    tokens = {}
    with session_scope(engine) as db:
        for name in USERS:
            tokens[name] = issue_token(db, create_user(db, name, "viewer", "x" * 12))
    app = create_app(
        {
            "influx": {"url": stack.influx_url, "database": database},
            "state": {"url": state_url},
            "web": {"secret_key": "k" * 48, **LIMITS},
            "farms": [{"id": FARM, "latitude": 43.0, "longitude": 13.0}],
        }
    )
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd.server_port, tokens, app.extensions["namazu"].heavy_gate
    httpd.shutdown()
    influx.drop_database()
    influx.close()


def _export_path(days: int = DAYS) -> str:
    end = START + pd.Timedelta(days=days)
    return (
        f"/api/v1/export/movebank.csv?farm={FARM}&animal={ANIMAL}"
        f"&start={START:%Y-%m-%dT%H:%MZ}&end={end:%Y-%m-%dT%H:%MZ}"
    )


def _hold(port: int, token: str, path: str) -> tuple[socket.socket, str]:
    """Send a GET, read only the status line and headers, then stop reading."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        piece = sock.recv(1)
        assert piece, "connection closed before the headers"
        head += piece
    return sock, head.decode("latin-1")


def _get(port: int, token: str, path: str) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        connection.request("GET", path, headers={"Authorization": f"Bearer {token}"})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


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
            sock, head = _hold(port, tokens[user], _export_path())
            held.append(sock)
            assert head.startswith("HTTP/1.1 200"), head
        assert gate.running == 3
        # u1 already runs two: refused, whatever the global count
        status, headers, body = _get(port, tokens["u1"], _export_path(1))
        assert status == 429 and int(headers["Retry-After"]) >= 1
        assert "too many heavy requests" in json.loads(body)["error"]
        # u3 runs none, but the panel runs three: refused too
        status, headers, _ = _get(port, tokens["u3"], _export_path(1))
        assert status == 429 and 1 <= int(headers["Retry-After"]) <= 60
        # a light request still answers while the three are in flight
        status, _, body = _get(port, tokens["u3"], "/api/v1/farms")
        assert status == 200 and json.loads(body)[0]["id"] == FARM
        assert gate.running == 3
    finally:
        for sock in held:
            sock.close()
    _wait_until(lambda: gate.running == 0, "the abandoned exports freed their slots")
    status, _, body = _get(port, tokens["u3"], _export_path())
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
    status, headers, body = _get(port, tokens["u1"], path)
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
    status, _, body = _get(port, tokens["u2"], path)
    assert status == 200
    assert json.loads(body)["shifts"] == {"requested": 2000, "cap": 20, "used": 20}
