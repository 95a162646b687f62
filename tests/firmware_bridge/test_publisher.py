"""GatewayPublisher against a real Mosquitto: order, outage, SIGKILL, Last Will, backpressure.

The broker path alone, with a plain subscriber: messages are confirmed by the broker's
PUBACK (``confirm="puback"``). Confirmation by ingest receipts: ``test_receipts.py``."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing

import orjson

from namazu.firmware_bridge.publisher import GatewayPublisher
from namazu.firmware_bridge.spool import Spool

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def animals(i: int) -> list[dict]:
    return [
        {
            "animal": "gw-1-cow-001",
            "species": "cow",
            "t_ms": [1_714_521_600_000 + 60_000 * i],
            "odba": [0.1],
            "vedba": [0.07],
        }
    ]


def seqs(sub) -> list[int]:
    return [doc["seq"] for doc in sub.activity()]


def test_all_messages_arrive_in_seq_order_with_bounded_inflight(
    broker, tmp_path, subscriber_factory
):
    sub = subscriber_factory(broker.mqtt_port)
    spool = Spool(tmp_path / "spool.sqlite")
    publisher = GatewayPublisher(
        "f1", "gw-1", spool, "127.0.0.1", broker.mqtt_port, max_inflight=25, confirm="puback"
    ).start()
    try:
        sent = publisher.publish_batches(animals(i) for i in range(1500))
        for i in range(1500, 2000):
            sent.append(publisher.publish_activity(animals(i)))
        assert publisher.wait_drained(30)
        assert sub.wait_for(lambda s: len(s.activity()) >= 2000)
    finally:
        publisher.stop()
    assert seqs(sub) == sent == list(range(1, 2001))
    assert publisher.stats["max_inflight_seen"] <= 25
    assert publisher.stats["acked"] == 2000 and spool.depth() == 0
    online = [s for s in sub.statuses() if s["online"]]
    assert online and online[0]["farm"] == "f1" and online[0]["gateway"] == "gw-1"
    assert sub.statuses()[-1]["online"] is False  # clean stop publishes offline


def test_broker_down_for_the_first_half_loses_nothing_and_keeps_order(
    broker, tmp_path, subscriber_factory
):
    sub = subscriber_factory(broker.mqtt_port)  # persistent session, survives the outage
    broker.stop_mosquitto()
    spool = Spool(tmp_path / "spool.sqlite")
    publisher = GatewayPublisher(
        "f1",
        "gw-1",
        spool,
        "127.0.0.1",
        broker.mqtt_port,
        max_inflight=50,
        reconnect_max_s=1,
        confirm="puback",
    ).start()
    try:
        for i in range(400):
            publisher.publish_activity(animals(i))
        time.sleep(0.5)
        assert not publisher.connected and spool.depth() == 400
        broker.start_mosquitto()
        for i in range(400, 800):
            publisher.publish_activity(animals(i))
        assert publisher.wait_drained(30)
        assert sub.wait_for(lambda s: len(set(seqs(s))) >= 800, 30)
    finally:
        publisher.stop()
    received = seqs(sub)
    assert sorted(set(received)) == list(range(1, 801))
    assert received == sorted(received)


def _spawn(port: int, spool_path, n: int, inflight: int, linger_s: float = 0.0):
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.firmware_bridge.gateway_proc",
            str(port),
            str(spool_path),
            str(n),
            str(inflight),
            str(linger_s),
        ],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )


def test_sigkilled_publisher_restarts_and_drains_its_spool_without_loss(
    broker, tmp_path, subscriber_factory
):
    sub = subscriber_factory(broker.mqtt_port)
    spool_path = tmp_path / "spool.sqlite"
    n = 6000
    proc = _spawn(broker.mqtt_port, spool_path, n, inflight=3)
    try:
        assert proc.stdout.readline().strip() == "spooled"
        # Killed once it has freed 300 messages by its own spool (the subscriber may lag
        # the broker by any amount on a loaded machine, the spool does not).
        assert _wait_spool_depth_at_most(spool_path, n - 300, 60)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    with Spool(spool_path) as spool:
        left = {m.seq for m in spool.pending(limit=n)}
    assert left, "the publisher finished before it could be killed"
    # A message leaves the spool only on the broker's PUBACK, so every message gone from
    # the spool reaches the subscriber (the broker delivers it whenever it gets to it);
    # the ones still on disk are sent again by the restarted publisher.
    freed = set(range(1, n + 1)) - left
    assert sub.wait_for(lambda s: freed <= set(seqs(s)), 60), sorted(freed - set(seqs(sub)))[:10]
    proc = _spawn(broker.mqtt_port, spool_path, n, inflight=200)
    try:
        assert proc.stdout.readline().strip() == "spooled"
        assert proc.stdout.readline().strip() == "drained"
    finally:
        proc.wait(timeout=30)
        proc.stdout.close()
    assert sub.wait_for(lambda s: len(set(seqs(s))) >= n, 30)
    received = seqs(sub)
    assert sorted(set(received)) == list(range(1, n + 1))
    # Re-sent duplicates are allowed (idempotent at the server); order of first arrival holds.
    first_seen = list(dict.fromkeys(received))
    assert first_seen == sorted(first_seen)


def _wait_spool_depth_at_most(spool_path, depth: int, timeout_s: float) -> bool:
    """Poll the spool file of another process until it holds at most ``depth``
    messages; False on the timeout."""
    deadline = time.monotonic() + timeout_s
    with closing(sqlite3.connect(f"file:{spool_path}?mode=ro", uri=True, timeout=30)) as db:
        while time.monotonic() < deadline:
            if db.execute("SELECT COUNT(*) FROM messages").fetchone()[0] <= depth:
                return True
            time.sleep(0.01)
    return False


def test_last_will_turns_status_offline_when_the_connection_dies(
    broker, tmp_path, subscriber_factory
):
    proc = _spawn(broker.mqtt_port, tmp_path / "spool.sqlite", 5, inflight=10, linger_s=60)
    try:
        assert proc.stdout.readline().strip() == "spooled"
        assert proc.stdout.readline().strip() == "drained"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    # A subscriber arriving afterwards sees the retained status: offline, from the Will.
    late = subscriber_factory(
        broker.mqtt_port, topic="namazu/v1/f-kill/gw-k/status", client_id="late"
    )
    assert late.wait_for(lambda s: any(not st["online"] for st in s.statuses()), 10)
    topic, payload, retained = late.messages[-1]
    status = orjson.loads(payload)
    assert retained and status["online"] is False and status["gateway"] == "gw-k"
    assert status["schema"] == "namazu.status/1"
