"""deploy/systemd: each unit runs as the namazu user, restarts on failure, is hardened,
starts a real ``namazu`` command with real configuration keys, and passes
``systemd-analyze verify`` without a single warning."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from namazu.server.cli import COMMANDS
from namazu.server.core.config_reference import reference_entries

UNITS = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
INSTALLED_BIN = "/opt/namazu/venv/bin/namazu"

REQUIRED_SERVICE_KEYS = {
    "User": "namazu",
    "Restart": "on-failure",
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "CapabilityBoundingSet": "",
    "ProtectKernelTunables": "yes",
    "ProtectControlGroups": "yes",
    "RestrictSUIDSGID": "yes",
}


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """{section: [(key, value), ...]} keeping repeated keys, as systemd does."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
            sections.setdefault(current, [])
            continue
        assert current is not None, f"key outside a section: {line!r}"
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {line!r}"
        sections[current].append((key.strip(), value.strip()))
    return sections


def _units() -> list[Path]:
    return sorted(UNITS.glob("*.service"))


def _values(unit: dict, section: str, key: str) -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def test_the_four_services_are_shipped():
    names = {path.name for path in _units()}
    assert names == {
        "namazu-bridge.service",
        "namazu-ingest@.service",
        "namazu-scheduler.service",
        "namazu-web.service",
    }


@pytest.mark.parametrize("path", _units(), ids=lambda p: p.name)
def test_unit_has_user_restart_and_hardening(path):
    unit = parse_unit(path.read_text())
    for key, expected in REQUIRED_SERVICE_KEYS.items():
        assert _values(unit, "Service", key) == [expected], f"{path.name}: {key}"
    assert _values(unit, "Service", "ReadWritePaths") == ["/var/lib/namazu"]
    assert _values(unit, "Service", "RestrictAddressFamilies"), f"{path.name}: no address limit"
    assert _values(unit, "Service", "SystemCallFilter"), f"{path.name}: no syscall filter"
    assert _values(unit, "Install", "WantedBy") == ["multi-user.target"]


@pytest.mark.parametrize("path", _units(), ids=lambda p: p.name)
def test_unit_waits_for_readiness_and_long_runners_have_a_watchdog(path):
    unit = parse_unit(path.read_text())
    assert _values(unit, "Service", "Type") == ["notify"]
    assert _values(unit, "Service", "NotifyAccess") == ["main"]
    watchdog = _values(unit, "Service", "WatchdogSec")
    if path.name == "namazu-web.service":
        assert watchdog == []  # gunicorn replaces hung workers itself (web.timeout_s)
    else:
        (value,) = watchdog
        assert value.endswith("s") and int(value[:-1]) >= 30


@pytest.mark.parametrize("path", _units(), ids=lambda p: p.name)
def test_unit_starts_a_namazu_command_with_known_config_keys(path):
    unit = parse_unit(path.read_text())
    (exec_start,) = _values(unit, "Service", "ExecStart")
    binary, command = exec_start.split()[:2]
    assert binary == INSTALLED_BIN
    assert command in COMMANDS, f"{path.name}: unknown command {command!r}"
    known_env = {item.env for _, keys in reference_entries().values() for item in keys}
    for assignment in _values(unit, "Service", "Environment"):
        name = assignment.split("=", 1)[0]
        if name.startswith("NAMAZU_") and name != "NAMAZU_CONFIG":
            assert name in known_env, f"{path.name}: {name} is not a configuration key"


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)
def test_systemd_analyze_verify_reports_nothing(tmp_path):
    namazu = Path(sys.executable).with_name("namazu")
    assert namazu.exists(), f"{namazu} missing: install the package (pip install -e .)"
    for path in _units():
        # Installed path -> this checkout's entry point, which must exist for verify.
        name = path.name.replace("@.service", "@1.service")
        (tmp_path / name).write_text(path.read_text().replace(INSTALLED_BIN, str(namazu)))
    result = subprocess.run(
        ["systemd-analyze", "verify", *sorted(str(p) for p in tmp_path.glob("*.service"))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr
