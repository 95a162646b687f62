"""Gateway-side fixtures: a Mosquitto of the test's own and a plain paho subscriber."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

#: ``stored_at`` of the receipts the tests send.
STORED_AT = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def broker(tmp_path):
    """A Mosquitto (only) started by the project's launcher; the test may stop/restart it."""
    from namazu.server.launch.stack import Stack

    stack = Stack(tmp_path / "stack")
    stack.start_mosquitto()
    yield stack
    stack.stop_mosquitto()


class Subscriber:
    """A plain paho subscriber with a persistent session recording every message."""

    def __init__(self, port: int, topic: str = "namazu/v1/#", client_id: str = "test-sub"):
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False
        )
        self.client.max_inflight_messages_set(1000)
        self.client.on_connect = lambda c, u, f, r, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 1)
        self.client.connect_async("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        assert self._subscribed.wait(10), "subscriber could not subscribe"

    def _on_message(self, client, userdata, message) -> None:
        with self._lock:
            self.messages.append((message.topic, bytes(message.payload), bool(message.retain)))

    def activity(self) -> list[dict]:
        """Decoded activity payloads in arrival order."""
        with self._lock:
            items = list(self.messages)
        return [orjson.loads(p) for t, p, _ in items if t.endswith("/activity")]

    def statuses(self) -> list[dict]:
        """Decoded status payloads in arrival order."""
        with self._lock:
            items = list(self.messages)
        return [orjson.loads(p) for t, p, _ in items if t.endswith("/status")]

    def wait_for(self, predicate, timeout_s: float = 20.0) -> bool:
        """Poll until ``predicate(self)`` is true."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate(self):
                return True
            time.sleep(0.05)
        return predicate(self)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def subscriber_factory():
    made: list[Subscriber] = []

    def make(port: int, **kw) -> Subscriber:
        sub = Subscriber(port, **kw)
        made.append(sub)
        return sub

    yield make
    for sub in made:
        sub.close()


class ReceiptResponder:
    """Stands in for ingest's receipts on a real broker: takes every activity message and
    answers on ``namazu/v1/{farm}/{gateway}/receipt`` per the receipt contract, unless
    ``hold`` is set (then it only records what arrived)."""

    def __init__(self, port: int, client_id: str = "test-receipts"):
        from namazu.firmware_bridge.payload import encode_receipt

        self._encode = encode_receipt
        self.hold = False
        self.boot_id_override: str | None = None
        self.seqs: list[int] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False
        )
        self.client.max_inflight_messages_set(1000)
        self.client.on_connect = lambda c, u, f, r, p: c.subscribe("namazu/v1/+/+/activity", qos=1)
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 1)
        self.client.connect_async("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        assert self._subscribed.wait(10), "receipt responder could not subscribe"

    def _on_message(self, client, userdata, message) -> None:
        doc = orjson.loads(message.payload)
        with self._lock:
            self.seqs.append(doc["seq"])
        if self.hold:
            return
        boot_id = self.boot_id_override or doc.get("boot_id")
        receipt = self._encode(
            doc["farm"], doc["gateway"], boot_id, [(doc["seq"], doc["seq"])], STORED_AT
        )
        client.publish(f"namazu/v1/{doc['farm']}/{doc['gateway']}/receipt", receipt, qos=1)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def receipts(broker):
    """A receipt responder on the test's broker."""
    responder = ReceiptResponder(broker.mqtt_port)
    yield responder
    responder.close()
