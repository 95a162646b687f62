"""The connection to a LoRaWAN network server's MQTT integration (the only module that
talks to that broker).

Events arrive with QoS 1 on a persistent session (stable client id, clean session off)
and are acknowledged by hand: ``NetworkServerLink.ack`` sends the PUBACK only after the
bridge has put the event's samples in its disk spool (or recorded / dead-lettered the
event). A bridge killed in between leaves the event unacknowledged, and the broker
delivers it again on the next connection: nothing acknowledged is lost.
"""

from __future__ import annotations

import logging
import queue
import ssl
import threading
from collections.abc import Iterable
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from namazu.firmware_bridge.lorawan import chirpstack_topics, tts_topics

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class InboundEvent:
    """One MQTT message of the network server: paho message id, topic, payload bytes."""

    mid: int
    topic: str
    payload: bytes


class NetworkServerLink:
    """Subscriber to a network server's events, publisher of its downlink requests.

    server : "chirpstack" or "tts" (picks the topic layout).
    host, port : the network server's MQTT broker.
    application : ChirpStack application id (UUID) or TTS ``app@tenant``; "+" = all.
    client_id : stable client id (the broker keeps the session and its queued events).
    max_inflight : events delivered and not yet acknowledged, at most (the broker
        holds the rest).
    """

    def __init__(
        self,
        server: str,
        host: str,
        port: int,
        application: str = "+",
        client_id: str = "namazu-lorawan",
        username: str | None = None,
        password: str | None = None,
        tls_ca: str | None = None,
        keepalive_s: int = 30,
        max_inflight: int = 1000,
    ) -> None:
        self.server = server
        self.host, self.port = host, int(port)
        self.topics = (
            chirpstack_topics(application) if server == "chirpstack" else tts_topics(application)
        )
        self.keepalive_s = keepalive_s
        self.events: queue.Queue[InboundEvent] = queue.Queue()
        self.subscribed = threading.Event()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=False,
            manual_ack=True,
        )
        self._client.max_inflight_messages_set(max_inflight)
        self._client.max_queued_messages_set(0)
        if username:
            self._client.username_pw_set(username, password)
        if tls_ca:
            self._client.tls_set(ca_certs=tls_ca, cert_reqs=ssl.CERT_REQUIRED)
        self._client.reconnect_delay_set(1, 30)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *_: self.subscribed.set()
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message

    def start(self) -> NetworkServerLink:
        """Connect in the background (reconnecting for ever)."""
        self._client.connect_async(self.host, self.port, keepalive=self.keepalive_s)
        self._client.loop_start()
        return self

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("network-server broker refused the connection: %s", reason_code)
            return
        client.subscribe([(topic, 1) for topic in self.topics])
        log.info("subscribed to the network server", extra={"topics": self.topics})

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.subscribed.clear()
        log.warning("network-server broker connection lost: %s", reason_code)

    def _on_message(self, client, userdata, message) -> None:
        self.events.put(InboundEvent(message.mid, message.topic, bytes(message.payload)))

    def read(self, timeout_s: float, limit: int = 2000) -> list[InboundEvent]:
        """The events that arrived within ``timeout_s`` [s] (up to ``limit``)."""
        try:
            out = [self.events.get(timeout=timeout_s)]
        except queue.Empty:
            return []
        while len(out) < limit:
            try:
                out.append(self.events.get_nowait())
            except queue.Empty:
                break
        return out

    def ack(self, events: list[InboundEvent]) -> None:
        """PUBACK these events: they are spooled, recorded or dead-lettered."""
        for event in events:
            if event.mid:  # QoS 0 messages have nothing to acknowledge
                self._client.ack(event.mid, 1)

    def publish(self, topic: str, payload: bytes) -> None:
        """Publish a downlink request (QoS 1)."""
        self._client.publish(topic, payload, qos=1)

    def stop(self) -> None:
        """Disconnect; the broker keeps the session and every unacknowledged event."""
        self._client.disconnect()
        self._client.loop_stop()


def publish_events(
    host: str, port: int, events: Iterable[tuple[str, bytes]], client_id: str = "namazu-sim-ns"
) -> int:
    """Publish (topic, payload) events with QoS 1 as a network server would (the
    simulator's stand-in); waits for every PUBACK and returns how many were sent."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    client.max_inflight_messages_set(1000)
    client.connect(host, int(port))
    client.loop_start()
    try:
        infos = [client.publish(topic, payload, qos=1) for topic, payload in events]
        for info in infos:
            info.wait_for_publish(60)
        return len(infos)
    finally:
        client.disconnect()
        client.loop_stop()
