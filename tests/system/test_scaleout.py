"""Scale-out: ingest workers on one MQTT v5 shared subscription split the traffic, and
killing one with SIGKILL loses nothing (its unacknowledged messages come back)."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from namazu.firmware_bridge.payload import activity_topic, encode_activity
from tests.chaos.gateway import message_batches
from tests.chaos.harness import IngestWorker, wait_for_count
from tests.server.ingest_support import Publisher

FARM = "scale-farm"


def _messages(gateway: str, index: int, samples: int, start_ms: int) -> list[tuple[str, bytes]]:
    topic = activity_topic(FARM, gateway)
    now = int(time.time() * 1000)
    return [
        (topic, encode_activity(FARM, gateway, seq, now, batch))
        for seq, batch in enumerate(message_batches(index, 10, samples, 100, start_ms))
    ]


def _workers(stack, database, tmp_path, group):
    return [
        IngestWorker(
            stack,
            database,
            f"scale-{group}-{i}",
            tmp_path / f"ingest-{i}.log",
            shared_group=group,
            max_pending_messages=50,
        )
        for i in (1, 2)
    ]


@pytest.mark.services
def test_two_workers_share_the_load_and_a_killed_one_loses_nothing(stack, influx, tmp_path):
    group = "g" + uuid.uuid4().hex[:8]
    start_ms = (int(time.time() * 1000) - 4 * 86_400_000) // 60_000 * 60_000
    workers = _workers(stack, influx.database, tmp_path, group)
    gateway = Publisher(stack.mqtt_port)
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.wait_subscribed()

        # 1. both workers take part
        for topic, payload in _messages("gw-a", 0, 20_000, start_ms):
            gateway.client.publish(topic, payload, qos=1)
        assert wait_for_count(influx, 20_000, timeout_s=60, farm=FARM) == 20_000
        for worker in workers:
            worker.stop()
        received = [worker.log_stats()[-1]["received"] for worker in workers]
        assert all(n >= 20 for n in received), received  # 200 messages, both got a share
        assert sum(received) >= 200

        # 2. SIGKILL one worker while traffic flows; it comes back (as under systemd)
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.wait_subscribed()
        later = _messages("gw-b", 1, 40_000, start_ms)

        def publish() -> None:
            for topic, payload in later:
                gateway.client.publish(topic, payload, qos=1)
                time.sleep(0.002)

        sender = threading.Thread(target=publish)
        sender.start()
        time.sleep(0.3)
        workers[1].kill()
        sender.join()
        time.sleep(1.0)
        workers[1].start()
        assert wait_for_count(influx, 60_000, timeout_s=60, farm=FARM) == 60_000
        frame = influx.query_frame(
            "SELECT count(odba) FROM activity WHERE farm = $f GROUP BY gateway", {"f": FARM}
        )
        assert sorted(frame["count"].tolist()) == [20_000, 40_000]
    finally:
        gateway.close()
        for worker in workers:
            worker.stop()
