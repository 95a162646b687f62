"""Helpers for tests that run ingest against the real broker and InfluxDB."""

from __future__ import annotations

import tempfile
import threading
import time
import uuid

import paho.mqtt.client as paho

from namazu.server.core.config import load_config


def now_ms() -> int:
    """Wall clock, UTC epoch ms."""
    return time.time_ns() // 1_000_000


def wait_for(predicate, timeout_s: float = 15.0, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def make_config(port: int, influx_url: str, database: str, state_url: str | None = None, **ingest):
    """A config for one ingest worker with its own client id and shared group.

    Test farms have random ids, so open enrolment is on unless the caller passes
    ``open_enrolment=False`` (the configured farm is then ``demo-farm``). Dead letters
    and data-health entries go to ``state_url``, by default a new SQLite file in a
    temporary folder.
    """
    tag = uuid.uuid4().hex[:8]
    if state_url is None:
        state_url = f"sqlite:///{tempfile.mkdtemp(prefix='namazu-ingest-')}/state.sqlite"
    ingest.setdefault("open_enrolment", True)
    env = {
        "NAMAZU_STATE__URL": f'"{state_url}"',
        "NAMAZU_MQTT__PORT": str(port),
        "NAMAZU_INFLUX__URL": f'"{influx_url}"',
        "NAMAZU_INFLUX__DATABASE": f'"{database}"',
        "NAMAZU_INGEST__CLIENT_ID": f'"ingest-{tag}"',
        "NAMAZU_INGEST__SHARED_GROUP": f'"group-{tag}"',
        "NAMAZU_INGEST__BATCH_MAX_AGE_S": "0.05",
    }
    for key, value in ingest.items():
        if isinstance(value, bool):
            value = str(value).lower()
        elif isinstance(value, str):
            value = repr(value)
        env[f"NAMAZU_INGEST__{key.upper()}"] = str(value)
    return load_config(environ=env)


class Publisher:
    """A plain paho client, as a gateway or a misbehaving device would be."""

    def __init__(self, port: int, subscribe: str | None = None):
        self.received: list[paho.MQTTMessage] = []
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2,
            client_id=f"test-{uuid.uuid4().hex[:8]}",
            protocol=paho.MQTTv5,
        )
        subscribed = threading.Event()
        self.client.on_message = lambda c, u, m: self.received.append(m)
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if subscribe:
            self.client.subscribe(subscribe, qos=1)
            assert subscribed.wait(10), f"subscription to {subscribe} not confirmed"

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
