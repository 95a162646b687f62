"""Shell scripts in deploy/: valid syntax; add-gateway.sh refuses unsafe names."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SCRIPTS = sorted(DEPLOY.rglob("*.sh"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_syntax_and_executable(script):
    subprocess.run(["sh", "-n", str(script)], check=True, capture_output=True)
    assert os.access(script, os.X_OK), f"{script.name} is not executable"


@pytest.mark.parametrize(
    "farm,gateway,reason",
    [
        ("deadletter", "gw1", "reserved"),
        ("farmA", "alarms", "reserved"),
        ("farm/A", "gw1", "not a valid topic segment"),
        ("farmA", "gw+", "not a valid topic segment"),
        ("farmA", "#", "not a valid topic segment"),
    ],
)
def test_add_gateway_refuses_names_that_would_escape_the_acl(tmp_path, farm, gateway, reason):
    passwd = tmp_path / "passwd"
    result = subprocess.run(
        ["sh", str(DEPLOY / "mosquitto" / "add-gateway.sh"), farm, gateway, str(passwd)],
        capture_output=True,
        text=True,
        env={**os.environ, "NAMAZU_GATEWAY_PASSWORD": "pw"},
    )
    assert result.returncode == 2
    assert reason in result.stderr
    assert not passwd.exists()


def test_add_gateway_generates_a_password_when_none_is_given(tmp_path):
    passwd = tmp_path / "passwd"
    env = {k: v for k, v in os.environ.items() if k != "NAMAZU_GATEWAY_PASSWORD"}
    result = subprocess.run(
        ["sh", str(DEPLOY / "mosquitto" / "add-gateway.sh"), "farmA", "gw9", str(passwd)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    password = result.stdout.strip().splitlines()[-1]
    assert len(password) >= 40
    assert passwd.read_text().startswith("farmA/gw9:$7$")
    assert oct(passwd.stat().st_mode & 0o777) == "0o600"
