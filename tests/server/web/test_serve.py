"""``namazu web`` serves the panel on gunicorn (not werkzeug's development server):
readiness over sd_notify, the API document and the vendored plotly.js, gunicorn's own
lines as JSON through Namazu's log handler, and a clean stop on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import requests
from prometheus_client.parser import text_string_to_metric_families

from namazu.server.launch.stack import free_port


def _viewer_token(env: dict, cwd) -> str:
    """An API token of a new viewer account, through ``namazu users``."""
    namazu = [sys.executable, "-m", "namazu.server.cli", "users"]
    added = subprocess.run([*namazu, "add", "watcher", "--role", "viewer", "--password-stdin"],
                           input="a long enough password\n", env=env, cwd=cwd,
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert added.returncode == 0, added.stderr
    issued = subprocess.run([*namazu, "token", "watcher"], env=env, cwd=cwd,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert issued.returncode == 0, issued.stderr
    return issued.stdout.strip()


def test_namazu_web_runs_on_gunicorn(tmp_path):
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.settimeout(60)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NAMAZU_", "WATCHDOG_"))}
    env |= {
        "NAMAZU_STATE__URL": f"sqlite:///{tmp_path}/state.sqlite",
        "NAMAZU_WEB__PORT": str(port),
        "NAMAZU_WEB__SECRET_KEY": "test-secret-key-of-some-length",
        "NOTIFY_SOCKET": str(tmp_path / "notify.sock"),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "namazu.server.cli", "web", "--workers", "2", "--threads", "2"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        ready = notify.recv(4096).decode()
        assert ready.startswith("READY=1"), ready
        base = f"http://127.0.0.1:{port}"
        document = requests.get(f"{base}/api/v1/openapi.json", timeout=10)
        assert document.status_code == 200 and document.json()["openapi"].startswith("3.")
        script = requests.get(f"{base}/static/plotly.min.js", timeout=10)
        assert script.status_code == 200 and script.text.startswith("/**\n* plotly.js v")
        assert "Server" not in script.headers or "Werkzeug" not in script.headers["Server"]
        # Two workers, one count: every scrape adds up the requests of both.
        token = _viewer_token(env, tmp_path)
        for _ in range(8):
            assert requests.get(f"{base}/login", timeout=10).status_code == 200
        for _ in range(4):
            scraped = requests.get(
                f"{base}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10
            )
            assert scraped.status_code == 200
            logins = sum(
                sample.value
                for family in text_string_to_metric_families(scraped.text)
                for sample in family.samples
                if sample.name == "namazu_web_requests_total"
                and sample.labels["endpoint"].endswith("login")
            )
            assert logins >= 8
            assert "namazu_ingest_" not in scraped.text
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        notify.close()
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in err.splitlines() if line.strip()]
    gunicorn = [line["msg"] for line in lines if line["logger"] == "gunicorn.error"]
    assert any(msg.startswith("Listening at: http://127.0.0.1:") for msg in gunicorn), gunicorn
    assert any(msg == "Using worker: gthread" for msg in gunicorn), gunicorn
    assert sum(msg.startswith("Booting worker") for msg in gunicorn) == 2
