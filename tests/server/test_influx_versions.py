"""InfluxDB 1.x, 2.x and 3.x through the v1 API: token or user/password, database
creation only where the server implements it, and a start-up sentence that says plainly
what answered.

1.6.7 is the real server of the test stack (also with authentication on: a user who may
write but is no admin, a wrong password). No 2.x or 3.x server can be installed here:
they are played by a small HTTP server that answers as their documentation says (and
as users have reported), and nothing more:

- 2.x: ``/ping`` 204 with ``X-Influxdb-Version: v2.7.10`` and ``X-Influxdb-Build: OSS``;
  HTTP 401 ``{"code": "unauthorized", ...}`` without a valid token; ``CREATE DATABASE``
  answers HTTP 200 ``{"results": [{"statement_id": 0, "error": "not implemented: CREATE
  DATABASE"}]}`` (influxdata/influxdb#22255).
- 3.x (Core): ``/ping`` is a GET answered 200 with a JSON body (version, revision,
  process_id) and ``x-influxdb-version``/``x-influxdb-build`` headers; ``/query`` reads
  the query from the URL; a database is created by its first write.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from namazu.server.store.influx import InfluxAuthError, InfluxClient

TOKEN = "the-api-token"


class FakeInflux(BaseHTTPRequestHandler):
    """Answers like InfluxDB ``generation`` (2 or 3) documents; records every request."""

    generation = 2
    requests: list[dict]

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def _send(self, status: int, body: object | None = None, headers: dict | None = None):
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self, method: str) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        form = parse_qs(url.query) | (parse_qs(body) if url.path == "/query" else {})
        self.requests.append(
            {"method": method, "path": url.path, "auth": self.headers.get("Authorization"),
             "q": form.get("q", [""])[0], "url_q": parse_qs(url.query).get("q", [""])[0],
             "body": body}
        )  # fmt: skip
        if self.headers.get("Authorization") != f"Token {TOKEN}":
            self._send(401, {"code": "unauthorized", "message": "unauthorized access"})
            return
        if url.path == "/ping" and self.generation == 2:
            self._send(204, None, {"X-Influxdb-Build": "OSS", "X-Influxdb-Version": "v2.7.10"})
        elif url.path == "/ping":
            self._send(
                200,
                {"version": "3.8.0", "revision": "83b589b883", "process_id": "b756d9e0"},
                {"x-influxdb-version": "3.8.0", "x-influxdb-build": "Core"},
            )
        elif url.path == "/write":
            self._send(204)
        elif url.path == "/query":
            statement = form.get("q", [""])[0]
            if self.generation == 3 and method != "GET":
                self._send(405, {"error": "method not allowed"})
            elif statement.upper().startswith("CREATE DATABASE"):
                error = "not implemented: CREATE DATABASE"
                self._send(200, {"results": [{"statement_id": 0, "error": error}]})
            else:
                self._send(200, {"results": [{"statement_id": 0}]})
        else:
            self._send(404, {"code": "not found", "message": "path not found"})

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")


@pytest.fixture(params=[2, 3], ids=["influxdb2", "influxdb3"])
def fake_server(request):
    handler = type("Handler", (FakeInflux,), {"generation": request.param, "requests": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield request.param, f"http://127.0.0.1:{server.server_port}", handler.requests
    server.shutdown()
    server.server_close()


def test_token_check_write_and_read(fake_server):
    generation, url, seen = fake_server
    client = InfluxClient(url, "namazu", token=TOKEN)
    sentence = client.prepare()
    if generation == 2:
        assert sentence.startswith(f"InfluxDB 2.7.10 (OSS) at {url}: v1 /write and /query with ")
        assert "CREATE DATABASE is not implemented: the bucket for 'namazu' and its DBRP " in (
            sentence
        )
        assert [r["q"] for r in seen if r["q"].startswith("CREATE")] == ['CREATE DATABASE "namazu"']
    else:
        assert sentence.startswith(f"InfluxDB 3.8.0 (Core) at {url}: v1 /write and /query with ")
        assert "database 'namazu' is created by the first write (InfluxDB 3)" in sentence
        assert not [r for r in seen if r["q"].startswith("CREATE")]
    assert "token authentication" in sentence and sentence.endswith("InfluxQL reads work")
    client.write_lines(["activity,farm=f odba=0.1 1"])
    client.query("SELECT last(odba) FROM activity")
    assert all(r["auth"] == f"Token {TOKEN}" for r in seen)
    reads = [r for r in seen if r["q"].startswith(("SELECT", "SHOW"))]
    assert reads and all(r["method"] == "GET" and r["url_q"] == r["q"] for r in reads)
    assert client.create_database() is False  # remembered / never asked: no second try


def test_a_wrong_token_is_a_plain_credentials_error(fake_server):
    _, url, _ = fake_server
    client = InfluxClient(url, "namazu", token="wrong")
    with pytest.raises(InfluxAuthError, match=r"refused the credentials \(token\) with HTTP 401"):
        client.prepare()
    with pytest.raises(InfluxAuthError, match="unauthorized access"):
        client.write_lines(["m v=1 1"])


def test_ingest_starts_against_influxdb2_and_says_what_it_found(stack, tmp_path):
    """Also: under systemd it reports readiness and pings the watchdog while its writer
    thread runs (a real unix datagram socket stands in for systemd's)."""
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.settimeout(60)
    handler = type("Handler", (FakeInflux,), {"generation": 2, "requests": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NAMAZU_", "NOTIFY_"))}
    env |= {
        "NAMAZU_INFLUX__URL": f"http://127.0.0.1:{server.server_port}",
        "NAMAZU_INFLUX__TOKEN": TOKEN,
        "NAMAZU_MQTT__PORT": str(stack.mqtt_port),
        "NAMAZU_INGEST__CLIENT_ID": "ingest-influx2-test",
        "NOTIFY_SOCKET": str(tmp_path / "notify.sock"),
        "WATCHDOG_USEC": "1000000",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "namazu.server.cli", "ingest", "--stats-every", "3600"],
        env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        first = json.loads(proc.stderr.readline())
        assert notify.recv(4096).decode() == "READY=1\nSTATUS=ingest ingest-influx2-test running"
        assert notify.recv(4096).decode() == "WATCHDOG=1"
    finally:
        notify.close()
        proc.terminate()
        _, rest = proc.communicate(timeout=60)
        server.shutdown()
        server.server_close()
    assert first["level"] == "INFO" and first["msg"].startswith("InfluxDB 2.7.10 (OSS) at ")
    assert "the bucket for 'namazu' and its DBRP mapping must exist" in first["msg"]
    assert proc.returncode == 0, rest
    assert "Traceback" not in rest


@pytest.mark.services
def test_influxdb1_live(stack, influx):
    sentence = influx.prepare()
    assert sentence.startswith(f"{influx.server_info().name} at {influx.url}: ")
    assert influx.server_info().generation == 1
    assert f"database {influx.database!r} created or already there" in sentence
    assert "without authentication" in sentence and sentence.endswith("InfluxQL reads work")
    influx.write_lines(["m,t=a v=1 1000"], precision="ms")
    assert influx.count("m", "v") == 1  # a SELECT by GET
    off = InfluxClient(stack.influx_url, influx.database + "_absent", create_databases=False)
    sentence = off.prepare()
    assert "not created (influx.create_database = false)" in sentence
    assert "InfluxQL reads fail: " in sentence and "database not found" in sentence


@pytest.mark.services
def test_influxdb1_live_with_authentication(tmp_path):
    """A real 1.6 with authentication on: a user with rights on the database but no
    admin right (what docs/deployment.md creates) is told CREATE DATABASE was refused,
    not crashed; a wrong password is a plain credentials error."""
    from namazu.server.launch.stack import Stack

    stack = Stack(tmp_path / "stack", influx_auth=True).start()
    try:
        admin = InfluxClient(stack.influx_url, "namazu", "admin", "admin-pw")
        InfluxClient(stack.influx_url, "namazu").query(
            "CREATE USER admin WITH PASSWORD 'admin-pw' WITH ALL PRIVILEGES"
        )  # the first user, allowed without credentials
        admin.create_database()
        admin.query("CREATE USER namazu WITH PASSWORD 'namazu-pw'")
        admin.query('GRANT ALL ON "namazu" TO "namazu"')
        client = InfluxClient(stack.influx_url, "namazu", "namazu", "namazu-pw")
        sentence = client.prepare()
        assert "with user/password authentication" in sentence
        assert "CREATE DATABASE was refused (the user is no admin): 'namazu' must exist" in (
            sentence
        )
        assert sentence.endswith("InfluxQL reads work")
        client.write_lines(["m,t=a v=1 1000"], precision="ms")
        assert client.count("m", "v") == 1
        wrong = InfluxClient(stack.influx_url, "namazu", "namazu", "not-the-password")
        with pytest.raises(InfluxAuthError, match=r"refused the credentials \(user/password\)"):
            wrong.write_lines(["m,t=a v=2 2000"], precision="ms")
    finally:
        stack.stop()
