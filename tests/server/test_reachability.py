"""One plain line when the broker or InfluxDB cannot be reached, repeated at a sane
interval, an ERROR after a while, and one line when it answers again."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading

import paho.mqtt.client as paho
import pytest
import requests

from namazu.server.core.reachability import BrokerReachability, Reachability, describe_error
from namazu.server.launch.stack import free_port
from namazu.server.store.influx import InfluxClient, InfluxUnavailable


class FakeClock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


class Lines(logging.Handler):
    """Collects formatted records; ``seen`` is set at the first one."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.seen.set()


@pytest.fixture
def lines():
    handler = Lines()
    logger = logging.getLogger("namazu.test.reach")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield logger, handler
    logger.removeHandler(handler)


def test_reasons_are_short_and_plain():
    refused = free_port()
    with pytest.raises(requests.ConnectionError) as info:
        requests.get(f"http://127.0.0.1:{refused}/ping", timeout=5)
    assert describe_error(info.value) == "connection refused"
    with pytest.raises(InfluxUnavailable) as wrapped:
        InfluxClient(f"http://127.0.0.1:{refused}", "x").write_lines(["m v=1 1"])
    assert describe_error(wrapped.value) == "connection refused"
    assert describe_error(ConnectionRefusedError(111, "Connection refused")) == "connection refused"
    assert describe_error(socket.gaierror(-2, "Name or service not known")) == (
        "host name not resolved"
    )
    assert describe_error(TimeoutError("timed out")) == "timed out"
    assert describe_error("HTTP 503") == "HTTP 503"


def test_first_failure_warns_repeats_every_minute_then_errors_and_recovery_is_told(lines):
    logger, handler = lines
    clock = FakeClock()
    reach = Reachability(logger, "broker", "10.0.0.5:1883", clock=clock)
    error = ConnectionRefusedError(111, "Connection refused")
    assert reach.failed(error, 4, "50 messages spooled")
    clock.now += 30
    assert not reach.failed(error, 8, "60 messages spooled")  # within the minute: quiet
    clock.now += 30
    assert reach.failed(error, 16, "70 messages spooled")
    clock.now += 300
    assert reach.failed(error, 30, "90 messages spooled")
    clock.now += 12
    assert reach.reached()
    assert not reach.reached()
    got = [(r.levelname, r.getMessage()) for r in handler.records]
    assert got == [
        ("WARNING", "cannot reach broker 10.0.0.5:1883 (connection refused); "
                    "50 messages spooled; retrying in 4 s"),
        ("WARNING", "cannot reach broker 10.0.0.5:1883 (connection refused); "
                    "70 messages spooled; retrying in 16 s"),
        ("ERROR", "cannot reach broker 10.0.0.5:1883 (connection refused); "
                  "90 messages spooled; retrying in 30 s"),
        ("INFO", "reached broker 10.0.0.5:1883 again after 372 s"),
    ]  # fmt: skip
    assert handler.records[2].down_s == 360.0 and handler.records[2].reason == "connection refused"


def test_a_real_paho_client_reports_the_refused_broker(lines):
    logger, handler = lines
    port = free_port()  # nothing listens there
    reach = BrokerReachability(logger, "127.0.0.1", port, reconnect_min_s=1, reconnect_max_s=8)
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="reach-test")
    client.reconnect_delay_set(1, 8)
    client.on_connect_fail = lambda c, u: reach.connect_failed("3 messages spooled")
    client.connect_async("127.0.0.1", port)
    client.loop_start()
    try:
        assert handler.seen.wait(20), "no line about the unreachable broker"
    finally:
        client.loop_stop()
    assert handler.records[0].levelname == "WARNING"
    assert handler.records[0].getMessage() == (
        f"cannot reach broker 127.0.0.1:{port} (connection refused); "
        "3 messages spooled; retrying in 1 s"
    )


def test_a_scheduler_job_reports_an_unreachable_store_in_one_line(lines):
    from namazu.server.detection.scheduler import GuardedJob

    logger, handler = lines
    clock = FakeClock()
    store = Reachability(logger, "InfluxDB", "http://10.0.0.9:8086", clock=clock)
    refused = free_port()
    failing = True

    def body() -> None:
        if failing:
            InfluxClient(f"http://127.0.0.1:{refused}", "x").write_lines(["m v=1 1"])

    job = GuardedJob("detection", body, 60.0, clock=clock, store=store)
    assert job() is False
    clock.now += 30
    assert job() is False  # backing off: not run, nothing said
    clock.now += 31
    assert job() is False  # a minute later: said again, with the longer wait
    failing = False
    clock.now += 200
    assert job() is True
    got = [(r.levelname, r.getMessage()) for r in handler.records]
    assert got == [
        ("WARNING", "cannot reach InfluxDB http://10.0.0.9:8086 (connection refused); "
                    "job detection backing off; retrying in 60 s"),
        ("WARNING", "cannot reach InfluxDB http://10.0.0.9:8086 (connection refused); "
                    "job detection backing off; retrying in 120 s"),
        ("INFO", "reached InfluxDB http://10.0.0.9:8086 again after 261 s"),
    ]  # fmt: skip
    assert all(r.exc_info is None for r in handler.records)


@pytest.mark.services
def test_namazu_ingest_says_at_once_that_the_broker_is_unreachable(stack, tmp_path):
    port = free_port()  # no broker there
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NAMAZU_", "NOTIFY_"))}
    env |= {"NAMAZU_MQTT__PORT": str(port), "NAMAZU_INFLUX__URL": stack.influx_url,
            "NAMAZU_INFLUX__DATABASE": "reach_test"}  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "namazu.server.cli", "ingest", "--log-format", "text"],
        env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    seen = []
    try:
        for line in proc.stderr:
            seen.append(line.rstrip())
            if "cannot reach broker" in line or len(seen) > 20:
                break
    finally:
        proc.terminate()
        proc.communicate(timeout=60)
    (line,) = [s for s in seen if "cannot reach broker" in s]
    assert f"WARNING namazu.server.ingest.mqtt: cannot reach broker 127.0.0.1:{port} " in line
    assert "(connection refused); retrying in 1 s" in line and "reason=" in line
    assert not any(s.startswith("{") for s in seen)  # text format, every field kept
