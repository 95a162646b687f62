"""End-to-end confirmation against a real Mosquitto: a spooled message leaves the spool
only on a receipt for its seq and boot id, never on the broker's PUBACK; unconfirmed
messages are sent again after a reconnect or a receipt time-out; the disk budget refuses
new data and reports it. The receipts come from ``ReceiptResponder`` (conftest), which
answers per the receipt contract as ingest does; ``tests/system`` runs the same path
through the real ingest service."""

from __future__ import annotations

import sqlite3
import time

import orjson
import pytest

from namazu.firmware_bridge.payload import encode_activity, encode_receipt, receipt_topic
from namazu.firmware_bridge.publisher import GatewayPublisher
from namazu.firmware_bridge.spool import Spool, SpoolFull
from tests.firmware_bridge.conftest import STORED_AT, ReceiptResponder
from tests.firmware_bridge.test_publisher import animals


def wait_until(predicate, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_puback_keeps_the_message_a_receipt_frees_it(broker, receipts, tmp_path):
    receipts.hold = True
    spool = Spool(tmp_path / "spool.sqlite")
    publisher = GatewayPublisher(
        "f1", "gw-1", spool, port=broker.mqtt_port, receipt_timeout_s=3600, confirm="receipt"
    ).start()
    topic = receipt_topic("f1", "gw-1")
    try:
        publisher.publish_batches(animals(i) for i in range(30))
        assert wait_until(lambda: publisher.stats["acked"] == 30 and len(receipts.seqs) == 30)
        time.sleep(0.3)
        assert spool.depth() == 30  # accepted by the broker, not yet confirmed stored
        sent = orjson.loads(spool.pending(limit=1)[0].payload)
        assert sent["boot_id"] == spool.boot_id and len(spool.boot_id) == 32

        wrong = [
            encode_receipt("f1", "gw-1", "another-boot", [(1, 30)], STORED_AT),
            encode_receipt("f1", "gw-1", None, [(1, 30)], STORED_AT),
            b'{"schema": "namazu.receipt/1", "seqs": "all"}',
        ]
        for payload in wrong:
            receipts.client.publish(topic, payload, qos=1)
        assert wait_until(lambda: publisher.stats["receipts_ignored"] == 3)
        assert spool.depth() == 30

        overlapping = encode_receipt(
            "f1", "gw-1", spool.boot_id, [(1, 10), (5, 20), (25, 25)], STORED_AT
        )
        receipts.client.publish(topic, overlapping, qos=1)
        assert wait_until(lambda: spool.depth() == 9)
        assert [m.seq for m in spool.pending()] == [21, 22, 23, 24, 26, 27, 28, 29, 30]
        assert publisher.stats["confirmed"] == 21 and publisher.stats["resent"] == 0
    finally:
        publisher.stop()
        spool.close()


def test_receipt_timeout_sends_the_unconfirmed_again(broker, receipts, tmp_path):
    receipts.hold = True  # ingest "lost" the first copies
    spool = Spool(tmp_path / "spool.sqlite")
    publisher = GatewayPublisher(
        "f1", "gw-1", spool, port=broker.mqtt_port, receipt_timeout_s=0.5, confirm="receipt"
    ).start()
    try:
        publisher.publish_batches(animals(i) for i in range(20))
        assert wait_until(lambda: publisher.stats["resent"] >= 20)
        receipts.hold = False
        assert publisher.wait_drained(30)
    finally:
        publisher.stop()
        spool.close()
    assert sorted(set(receipts.seqs)) == list(range(1, 21))
    assert len(receipts.seqs) > 20  # the resent copies arrived too (same seq, same bytes)


@pytest.mark.parametrize("confirm", ["receipt", "puback"])
def test_broker_sigkill_while_messages_queue(tmp_path, confirm):
    """Mosquitto SIGKILLed while the messages wait in its queue for a subscriber that
    is away (ingest lagging). Its persistence file is written only at autosave, here set
    far beyond the test, so the kill loses the queue: with receipts the gateway sends
    everything again and nothing is missing; with PUBACK confirmation all of it is lost
    (the comparison shows the fault really happened)."""
    from namazu.server.launch.stack import Stack

    stack = Stack(tmp_path / "stack", mosquitto_extra="autosave_interval 3600")
    stack.start_mosquitto()
    responder = ReceiptResponder(stack.mqtt_port, client_id=f"ingest-{confirm}")
    responder.close()  # its persistent session queues what arrives meanwhile
    spool = Spool(tmp_path / "spool.sqlite")
    publisher = GatewayPublisher(
        "f1", "gw-1", spool, port=stack.mqtt_port, reconnect_max_s=1, confirm=confirm
    ).start()
    try:
        publisher.publish_batches(animals(i) for i in range(200))
        assert wait_until(lambda: publisher.stats["acked"] == 200)
        stack.stop_mosquitto(kill=True)
        stack.start_mosquitto()
        responder = ReceiptResponder(stack.mqtt_port, client_id=f"ingest-{confirm}")
        if confirm == "receipt":
            assert publisher.wait_drained(30)
            assert sorted(set(responder.seqs)) == list(range(1, 201))
        else:
            assert spool.depth() == 0  # deleted on PUBACK
            time.sleep(2.0)  # anything that survived would arrive now
            assert responder.seqs == []
    finally:
        publisher.stop()
        responder.close()
        spool.close()
        stack.stop_mosquitto()


def test_full_spool_refuses_new_data_keeps_the_old_and_says_so(
    broker, receipts, tmp_path, subscriber_factory
):
    status = subscriber_factory(broker.mqtt_port, topic="namazu/v1/f1/gw-1/status")
    receipts.hold = True
    # the largest of the ten messages: two-digit seq, a 13-digit clock
    one = len(encode_activity("f1", "gw-1", 10, 1_800_000_000_000, animals(9), boot_id="0" * 32))
    spool = Spool(tmp_path / "spool.sqlite", max_bytes=10 * one + one // 2)
    publisher = GatewayPublisher(
        "f1", "gw-1", spool, port=broker.mqtt_port, receipt_timeout_s=3600, confirm="receipt"
    ).start()
    try:
        assert wait_until(lambda: publisher.connected)
        for i in range(10):
            publisher.publish_activity(animals(i))
        with pytest.raises(SpoolFull):
            publisher.publish_activity(animals(10))
        assert spool.depth() == 10 and spool.full
        assert publisher.stats["spool_refused"] == 1
        assert status.wait_for(lambda s: s.statuses() and s.statuses()[-1].get("spool_full"))
        assert status.statuses()[-1]["spool_depth"] == 10
        receipts.client.publish(
            receipt_topic("f1", "gw-1"),
            encode_receipt("f1", "gw-1", spool.boot_id, [(1, 5)], STORED_AT),
            qos=1,
        )
        assert wait_until(lambda: spool.depth() == 5 and not spool.full)
        assert status.wait_for(lambda s: s.statuses()[-1].get("spool_full") is False)
        assert publisher.publish_activity(animals(10)) == 11
    finally:
        publisher.stop()
        spool.close()


def test_receipt_without_boot_id_frees_only_what_was_spooled_before_boot_ids(
    broker, receipts, tmp_path
):
    path = tmp_path / "spool.sqlite"
    with Spool(path) as spool:  # pretend the first two messages predate boot ids
        legacy = [lambda s: encode_activity("f1", "gw-1", s, 0, animals(s))] * 2  # no boot id
        spool.append_built("namazu/v1/f1/gw-1/activity", legacy)
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = '3' WHERE key = 'boot_id_from_seq'")
    db.commit()
    db.close()
    receipts.hold = True
    spool = Spool(path)
    publisher = GatewayPublisher(
        "f1", "gw-1", spool, port=broker.mqtt_port, receipt_timeout_s=3600, confirm="receipt"
    ).start()
    try:
        publisher.publish_activity(animals(3))  # seq 3, with the boot id
        assert wait_until(lambda: publisher.stats["acked"] == 3)
        legacy = encode_receipt("f1", "gw-1", None, [(1, 10)], STORED_AT)
        receipts.client.publish(receipt_topic("f1", "gw-1"), legacy, qos=1)
        assert wait_until(lambda: spool.depth() == 1)
        time.sleep(0.3)
        assert [m.seq for m in spool.pending()] == [3]  # not freed by a receipt without id
    finally:
        publisher.stop()
        spool.close()
