"""Install as people do: build the wheel, install it into a fresh virtual environment
outside the repository (with constraints.txt, as CI does), and run it from there.

First the gateway install (no extra): ``namazu --version``, the bridge on a real broker,
and a plain message that ``namazu analyze`` needs the server extra. Then the server
extra on top: ``namazu analyze`` on the worked example (the bundled periods file) and
``namazu web`` answering the API document and the vendored plotly.js. It needs PyPI (or
pip's cache) for the dependencies: 2-3 minutes on a busy 2-core machine with a warm cache.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import requests

from namazu.server.launch.stack import free_port, port_open
from tests.conftest import PROJECT_ROOT, require_data

pytestmark = [pytest.mark.services, pytest.mark.slow]

DATA = "wikelski2020/activity_2017-01-17_2017-04-14.csv"
CATALOG = "wikelski2020/catalog_2017-01-17_2017-04-16.csv"


def _sh(*args: str | Path, cwd: Path, env: dict | None = None, timeout: float = 600):
    proc = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"{args}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def _source_tree(destination: Path) -> Path:
    """The checkout's files (tracked and new, not ignored) copied to ``destination``."""
    listed = _sh("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard",
                 cwd=PROJECT_ROOT).stdout  # fmt: skip
    for name in filter(None, listed.split("\0")):
        source = PROJECT_ROOT / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    return destination


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = _source_tree(tmp_path_factory.mktemp("src"))
    out = tmp_path_factory.mktemp("dist")
    _sh(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", out, src, cwd=src)
    (built,) = out.glob("namazu-*.whl")
    return built


def test_the_wheel_carries_the_panel_files_and_a_spdx_licence(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        meta = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    for needed in (
        "namazu/server/web/openapi.json",
        "namazu/server/web/static/vendor/plotly.min.js",
        "namazu/server/web/templates/timeline.html",
        "namazu/server/research/periods/wikelski2020.csv",
        "namazu/firmware_bridge/schemas/activity-v1.schema.json",
        "namazu/server/store/migrations/env.py",
        "namazu/server/store/migrations/versions/0001_baseline.py",
    ):
        assert needed in names, needed
    assert not any(n.startswith(("server/", "analytics/", "firmware_bridge/")) for n in names)
    assert "License-Expression: MIT" in meta
    assert "Requires-Dist: plotly" not in meta


def test_gateway_then_server_install_from_the_wheel(wheel, tmp_path, stack):
    venv = tmp_path / "venv"
    _sh(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    pip = [venv / "bin" / "python", "-m", "pip", "install", "-q", "--no-compile",
           "--disable-pip-version-check",
           "-c", PROJECT_ROOT / "constraints.txt"]  # fmt: skip
    namazu = venv / "bin" / "namazu"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NAMAZU_", "PYTHON"))}

    # --- gateway: the core dependencies only
    _sh(*pip, wheel, cwd=tmp_path, env=env)
    version = _sh(namazu, "--version", cwd=tmp_path, env=env).stdout.strip()
    assert version == f"namazu {wheel.name.split('-')[1]}"
    freeze = _sh(venv / "bin" / "python", "-m", "pip", "freeze", cwd=tmp_path, env=env).stdout
    for heavy in ("scipy", "matplotlib", "Flask", "SQLAlchemy", "plotly"):
        assert f"\n{heavy}==" not in f"\n{freeze}", f"{heavy} came with the gateway install"
    bridge = subprocess.run(
        [namazu, "bridge", "--source", "simulator", "--cows", "3", "--duration-min", "20",
         "--mqtt-port", str(stack.mqtt_port), "--no-wait-for-ingest", "--confirm", "puback",
         "--spool", str(tmp_path / "spool.sqlite")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bridge.returncode == 0, bridge.stderr
    assert json.loads(bridge.stdout.strip().splitlines()[-1])["all_confirmed"] is True
    refused = subprocess.run([namazu, "analyze", "--help"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert refused.returncode == 4
    assert "pip install 'namazu[server]'" in refused.stderr

    # --- server: the extra on top
    _sh(*pip, f"{wheel}[server]", cwd=tmp_path, env=env)
    out = tmp_path / "analysis"
    analysis = _sh(
        namazu, "analyze", "--activity", require_data(DATA), "--catalog", require_data(CATALOG),
        "--farm", "43.0147,13.0509", "--column", "animal", "--resolution", "15min",
        "--periods", "wikelski2020", "--out", out, "--no-progress", cwd=tmp_path, env=env,
    )  # fmt: skip
    assert "0 of 2 target earthquakes were preceded by an alarm" in analysis.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["periods"]) == {"stable", "pasture"}

    port = free_port()
    web_env = env | {
        "NAMAZU_STATE__URL": f"sqlite:///{tmp_path}/state.sqlite",
        "NAMAZU_WEB__PORT": str(port),
        "NAMAZU_WEB__SECRET_KEY": "a-secret-for-the-install-test",
    }
    web = subprocess.Popen([namazu, "web"], cwd=tmp_path, env=web_env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not port_open(port) and web.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        document = requests.get(f"http://127.0.0.1:{port}/api/v1/openapi.json", timeout=10)
        assert document.status_code == 200 and document.json()["info"]["title"]
        script = requests.get(f"http://127.0.0.1:{port}/static/plotly.min.js", timeout=10)
        assert script.status_code == 200 and "plotly.js v" in script.text[:100]
    finally:
        web.send_signal(signal.SIGTERM)
        _, err = web.communicate(timeout=60)
    assert web.returncode == 0, err
