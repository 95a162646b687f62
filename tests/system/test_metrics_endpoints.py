"""The Prometheus endpoints of the running services, scraped over HTTP: ``namazu
ingest`` counts what it received, wrote and rejected and shows each gateway's spool
depth from its status; ``namazu scheduler`` times its jobs and exports open alarms and
queued mails per farm."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as paho
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from namazu.firmware_bridge.payload import batches_from_frame
from namazu.firmware_bridge.publisher import GatewayPublisher
from namazu.firmware_bridge.simulator import Herd
from namazu.firmware_bridge.spool import Spool
from namazu.server.launch.stack import free_port
from tests.chaos.harness import IngestWorker, spawn_module
from tests.server.ingest_support import wait_for

pytestmark = pytest.mark.services

FARM, GATEWAY = "metrics-farm", "gw-m"
REJECTED = "namazu_ingest_messages_rejected_total"


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of a /metrics page ({} while unreachable)."""
    try:
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except requests.ConnectionError:
        return {}
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_running_ingest_serves_received_written_rejected_and_spool_depth(stack, influx, tmp_path):
    port = free_port()
    # A group of its own: earlier tests on the shared broker may leave offline persistent
    # members in the default group, which Mosquitto would hand a share of these messages.
    worker = IngestWorker(
        stack,
        influx.database,
        "metrics-ingest",
        tmp_path / "ingest.log",
        metrics_port=port,
        shared_group=f"metrics-{uuid.uuid4().hex[:8]}",
    ).start()
    herd = Herd(FARM, GATEWAY, {"cow": 2, "dog": 1}, seed=3, resolution_s=60)
    end = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=30)
    frame = herd.activity(end - timedelta(minutes=30), end, with_battery=False)
    publisher = GatewayPublisher(FARM, GATEWAY, Spool(tmp_path / "spool.sqlite"),
                                 port=stack.mqtt_port, wait_for_ingest=True)  # fmt: skip
    try:
        worker.wait_subscribed()
        publisher.start()
        publisher.publish_batches(batches_from_frame(frame, FARM, GATEWAY, max_samples=50))
        assert publisher.wait_drained(30)
        bad = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="metrics-bad")
        bad.connect("127.0.0.1", stack.mqtt_port)
        bad.loop_start()
        bad.publish(f"namazu/v1/{FARM}/{GATEWAY}/activity", b"not json", qos=1).wait_for_publish()
        bad.loop_stop()
        bad.disconnect()

        def counters():
            metrics = scrape(port)
            written = metrics.get(("namazu_ingest_points_written_total", ()), 0)
            return metrics if written >= len(frame) and _rejected(metrics) >= 1 else None

        metrics = wait_for(counters, 30, "ingest counters on /metrics")
        assert metrics[("namazu_ingest_points_written_total", ())] == len(frame)
        assert metrics[("namazu_ingest_messages_received_total", ())] >= 2
        depth = ("namazu_gateway_spool_depth", (("farm", FARM), ("gateway", GATEWAY)))
        assert depth in metrics and metrics[depth] >= 0
        others = ("namazu_web_", "namazu_scheduler_", "namazu_bridge_", "namazu_mails_")
        assert not [name for name, _ in metrics if name.startswith(others)]  # only its own
    finally:
        publisher.stop()
        worker.stop()


def _rejected(metrics: dict) -> float:
    """All rejected messages, whatever the reason label."""
    return sum(v for (name, _), v in metrics.items() if name == REJECTED)


def test_running_scheduler_serves_job_times_open_alarms_and_queued_mails(
    stack, influx, tmp_path, state_url
):
    port = free_port()
    config = tmp_path / "config.toml"
    config.write_text(
        f"""
[influx]
url = "{stack.influx_url}"
database = "{influx.database}"
[state]
url = "{state_url}"
[scheduler]
tick_s = 1.0
alarm_log_path = "{tmp_path / "alarm-log.jsonl"}"
metrics_port = {port}
[[farms]]
id = "{FARM}"
latitude = 43.0
longitude = 13.0
""",
        encoding="utf-8",
    )
    proc = spawn_module(
        ["namazu.server.cli", "scheduler", "--config", str(config), "--log-level", "WARNING"],
        {},
        tmp_path / "scheduler.log",
    )
    try:

        def ticked():
            metrics = scrape(port)
            count = metrics.get(("namazu_scheduler_tick_seconds_count", (("job", "detection"),)))
            return metrics if count and count >= 1 else None

        metrics = wait_for(ticked, 60, "a detection run on the scheduler's /metrics")
        assert metrics[("namazu_alarms_open", (("farm", FARM),))] == 0
        assert ("namazu_mails_queued", ()) in metrics
        verified = wait_for(
            lambda: scrape(port).get(("namazu_alarm_log_verified", ())) is not None,
            60,
            "the alarm-log check on the scheduler's /metrics",
        )
        assert verified
        metrics = scrape(port)
        assert metrics[("namazu_alarm_log_verified", ())] == 1  # no alarms, no log: intact
        others = ("namazu_web_", "namazu_ingest_", "namazu_bridge_")
        assert not [name for name, _ in metrics if name.startswith(others)]  # only its own
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(15)
