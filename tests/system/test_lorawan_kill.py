"""``namazu bridge --source chirpstack`` killed (SIGKILL) while it takes a fleet's events:
the events it had not acknowledged, and those that arrived while it was down, come
again from the network server's broker (real Mosquitto standing in), and after a
restart every sample is in InfluxDB exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from namazu.firmware_bridge.lorawan_mqtt import publish_events
from namazu.firmware_bridge.lorawan_sim import LorawanFleet
from namazu.server.ingest.service import IngestService
from tests.server.ingest_support import make_config, wait_for

pytestmark = pytest.mark.services

PROJECT_ROOT = Path(__file__).resolve().parents[2]
APP = "5b0e7c0a-1d1f-4a4e-b3c2-9e1f0a6d2c11"


def start_bridge(port: int, registry: Path, spool: Path, log) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NAMAZU_")}
    argv = [sys.executable, "-m", "namazu.server.cli", "bridge", "--source=chirpstack",
            f"--ns-port={port}", f"--ns-application={APP}", f"--registry={registry}",
            "--gateway=lora", f"--mqtt-port={port}", f"--spool={spool}",
            "--batch-samples=50"]  # fmt: skip
    return subprocess.Popen(argv, cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def subscriptions(log_path: Path) -> int:
    return log_path.read_text(errors="replace").count("subscribed to the network server")


def test_sigkilled_lorawan_bridge_loses_and_duplicates_nothing(stack, influx, tmp_path):
    farm = "lora-kill"
    fleet = LorawanFleet(farm, 60, application=APP, seed=11, repeat=0.05)
    registry = tmp_path / "devices.toml"
    registry.write_text(fleet.registry_text())
    end = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)
    start_ms = int((end - timedelta(hours=2)).timestamp() * 1000)
    events = list(fleet.events(start_ms, int(end.timestamp() * 1000)))
    half = len(events) // 2
    expected = Counter()
    for uplink in fleet.sent:
        expected[uplink.animal] += len(uplink.t_ms)
    service = IngestService(
        make_config(stack.mqtt_port, stack.influx_url, influx.database), influx
    ).start()
    log_path = tmp_path / "bridge.log"
    log = open(log_path, "ab")  # noqa: SIM115
    spool = tmp_path / "spool.sqlite"
    bridge = start_bridge(stack.mqtt_port, registry, spool, log)
    try:
        assert service.wait_ready(10)
        wait_for(lambda: subscriptions(log_path) >= 1, 30, "bridge subscribed")
        publish_events("127.0.0.1", stack.mqtt_port, events[:half], client_id="ns-1")
        wait_for(lambda: (tmp_path / f"spool-{farm}.sqlite").exists(), 30, "first spool write")
        bridge.send_signal(signal.SIGKILL)
        bridge.wait(10)
        # The network server goes on publishing while the bridge is down.
        publish_events("127.0.0.1", stack.mqtt_port, events[half:], client_id="ns-2")
        bridge = start_bridge(stack.mqtt_port, registry, spool, log)

        def stored() -> dict[str, int]:
            series = influx.query(
                f"SELECT count(odba) FROM activity WHERE farm = '{farm}' GROUP BY animal"
            )
            return {s["tags"]["animal"]: int(s["values"][0][1]) for s in series}

        wait_for(lambda: sum(stored().values()) >= sum(expected.values()), 60, "all stored")
        bridge.send_signal(signal.SIGTERM)
        assert bridge.wait(60) == 0, log_path.read_text()[-2000:]
        assert stored() == dict(expected)  # every sample once: none lost, none doubled
        assert subscriptions(log_path) >= 2
    finally:
        if bridge.poll() is None:
            bridge.kill()
        log.close()
        service.stop(end_session=True)
