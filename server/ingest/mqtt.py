"""The server's one MQTT module (the only paho user on the server side).

:class:`MqttConsumer` keeps a persistent MQTT v5 session for a service such as
ingest:

- a stable client id, ``clean_start=False`` and a Session Expiry Interval, so the
  broker keeps the subscriptions and queues messages while the service is down or
  reconnecting;
- manual acknowledgements (paho >= 2.0 ``Client(manual_ack=True)``, then
  ``client.ack(mid, qos)``): a QoS 1 message is acknowledged only when its owner
  says so, and until then the broker will deliver it again after a reconnect;
- Receive Maximum: the broker never has more than that many unacknowledged QoS 1
  messages outstanding towards this client, which bounds what the service holds;
- reconnection with exponential backoff (paho's loop thread);
- QoS 1 publishing with delivery reports (used for dead letters);
- an optional presence heartbeat (:class:`Heartbeat`): a small QoS 0 message
  published right after every SUBACK and then periodically while subscribed, so
  that other clients can tell that this service's subscriptions exist on the
  broker's current run (gateways hold their spool until they see one; see
  ``docs/data-path.md``).

An acknowledgement belongs to the connection a message arrived on. After a
reconnect the broker resends every unacknowledged message, possibly reusing packet
ids, so acknowledgements for messages of an earlier connection are dropped
(:meth:`MqttConsumer.ack` returns False) and their redelivered copies are processed
again; writes are idempotent, so this costs time, never data.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from namazu.server.core.reachability import BrokerReachability

log = logging.getLogger(__name__)

DEFAULT_SESSION_EXPIRY_S = 7 * 86_400
MAX_RECEIVE_MAXIMUM = 65_535


class MqttError(Exception):
    """Base class of the server's MQTT failures."""


class MqttPublishError(MqttError):
    """paho refused to queue a message for publishing (e.g. payload too large)."""


@dataclass(frozen=True)
class InboundMessage:
    """A message as delivered by the broker.

    mid, qos : packet id and QoS, needed to acknowledge it.
    received_ms : server clock at arrival, UTC epoch ms.
    generation : the connection it arrived on (see :meth:`MqttConsumer.ack`).
    """

    topic: str
    payload: bytes
    mid: int
    qos: int
    retain: bool
    dup: bool
    received_ms: int
    generation: int


@dataclass(frozen=True)
class Subscription:
    """A topic filter to subscribe to on every connect.

    retain_handling : 0 send retained messages on every subscribe, 1 only for a new
        subscription, 2 never (shared subscriptions never get retained messages).
    """

    topic_filter: str
    qos: int = 1
    retain_handling: int = 1


@dataclass(frozen=True)
class Heartbeat:
    """A presence message published only while every subscription is confirmed.

    topic : where to publish (QoS 0, never retained).
    payload : called for every heartbeat; returns the message body.
    period_s : interval between heartbeats while subscribed [s]; the first one goes
        out as soon as the broker's SUBACK arrives.
    """

    topic: str
    payload: Callable[[], bytes]
    period_s: float


class MqttConsumer:
    """A persistent MQTT v5 session that hands messages to a callback and acks on demand.

    host, port : broker address.
    client_id : stable client id (the broker keys the session on it).
    subscriptions : topic filters, subscribed again on every connect.
    on_message : called in paho's network thread for every message; it must be quick
        (hand the message to a queue) and every QoS 1 message must later be passed to
        :meth:`ack`.
    receive_maximum : most unacknowledged QoS 1 messages the broker may have
        outstanding towards this client (1..65535) [messages].
    session_expiry_s : how long the broker keeps the session after a disconnect [s].
    keepalive_s : MQTT keepalive [s].
    reconnect_min_s, reconnect_max_s : exponential reconnect backoff bounds [s].
    heartbeat : optional presence message sent after each SUBACK and then every
        ``heartbeat.period_s`` while subscribed (see :class:`Heartbeat`).
    """

    def __init__(
        self,
        host: str,
        port: int,
        client_id: str,
        subscriptions: Sequence[Subscription],
        on_message: Callable[[InboundMessage], None],
        *,
        receive_maximum: int = 1000,
        session_expiry_s: int = DEFAULT_SESSION_EXPIRY_S,
        username: str | None = None,
        password: str | None = None,
        tls: bool = False,
        ca_file: str | Path | None = None,
        keepalive_s: int = 30,
        reconnect_min_s: int = 1,
        reconnect_max_s: int = 30,
        heartbeat: Heartbeat | None = None,
    ):
        if heartbeat is not None and not heartbeat.period_s > 0:
            raise ValueError(f"heartbeat period {heartbeat.period_s} s must be > 0")
        if not 1 <= receive_maximum <= MAX_RECEIVE_MAXIMUM:
            raise ValueError(f"receive_maximum {receive_maximum} is outside 1..65535")
        self.host = host
        self.port = port
        self.client_id = client_id
        self.subscriptions = list(subscriptions)
        self.receive_maximum = receive_maximum
        self.session_expiry_s = session_expiry_s
        self.keepalive_s = keepalive_s
        self._on_message_cb = on_message
        self._lock = threading.Lock()
        self._generation = 0
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._delivered: deque[int] = deque(maxlen=MAX_RECEIVE_MAXIMUM)
        self.connects = 0
        self.disconnects = 0
        #: The broker's Maximum Packet Size from its last CONNACK [bytes] (None: not said).
        self.max_packet_size: int | None = None
        self._stopping = False
        self.heartbeat = heartbeat
        self.heartbeats_sent = 0
        self._heartbeat_stop = threading.Event()
        self._heartbeat_thread: threading.Thread | None = None

        client = paho.Client(
            paho.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=paho.MQTTv5,
            manual_ack=True,
        )
        if username:
            client.username_pw_set(username, password)
        if tls:
            client.tls_set(ca_certs=str(ca_file) if ca_file else None)
        client.reconnect_delay_set(reconnect_min_s, reconnect_max_s)
        client.max_queued_messages_set(0)
        client.max_inflight_messages_set(1000)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        self._broker = BrokerReachability(log, host, port, reconnect_min_s, reconnect_max_s)
        client.on_connect_fail = lambda client, userdata: self._broker.connect_failed()
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        self._client = client

    @classmethod
    def from_config(
        cls,
        mqtt: Any,
        client_id: str,
        subscriptions: Sequence[Subscription],
        on_message: Callable[[InboundMessage], None],
        receive_maximum: int,
        reconnect_max_s: int = 30,
        heartbeat: Heartbeat | None = None,
    ) -> MqttConsumer:
        """Build from a ``namazu.server.core.config.MqttConfig``."""
        return cls(
            mqtt.host,
            mqtt.port,
            client_id,
            subscriptions,
            on_message,
            receive_maximum=receive_maximum,
            username=mqtt.username,
            password=mqtt.password,
            tls=mqtt.tls,
            ca_file=mqtt.ca_file,
            keepalive_s=mqtt.keepalive_s,
            reconnect_max_s=reconnect_max_s,
            heartbeat=heartbeat,
        )

    # --- life cycle ---------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background (never raises when the broker is down)."""
        self._stopping = False
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = int(self.session_expiry_s)
        props.ReceiveMaximum = int(self.receive_maximum)
        self._client.connect_async(
            self.host,
            self.port,
            keepalive=self.keepalive_s,
            clean_start=False,
            properties=props,
        )
        self._client.loop_start()
        if self.heartbeat is not None:
            self._heartbeat_stop.clear()
            self._heartbeat_thread = threading.Thread(
                target=self._heartbeat_loop, name="mqtt-heartbeat", daemon=True
            )
            self._heartbeat_thread.start()

    def stop(self, end_session: bool = False) -> None:
        """Disconnect cleanly and stop the network thread.

        The broker keeps the session (subscriptions and queued messages) unless
        ``end_session`` is true, which sets its expiry to zero on the way out.
        """
        self._stopping = True
        self._heartbeat_stop.set()
        if self._heartbeat_thread is not None:
            self._heartbeat_thread.join(timeout=5)
            self._heartbeat_thread = None
        props = None
        if end_session:
            props = Properties(PacketTypes.DISCONNECT)
            props.SessionExpiryInterval = 0
        self._client.disconnect(properties=props)
        self._client.loop_stop()
        self._connected.clear()

    @property
    def connected(self) -> bool:
        """True while connected and subscribed."""
        return self._connected.is_set() and self._subscribed.is_set()

    def wait_ready(self, timeout_s: float) -> bool:
        """Wait until connected and subscribed; False on timeout."""
        deadline = time.monotonic() + timeout_s
        if not self._connected.wait(timeout_s):
            return False
        return self._subscribed.wait(max(0.0, deadline - time.monotonic()))

    # --- acknowledgements and publishing ------------------------------------------

    def ack(self, message: InboundMessage) -> bool:
        """Acknowledge a message (QoS 1: send PUBACK).

        Returns False, sending nothing, when the message arrived on an earlier
        connection: the broker has already redelivered it and its copy will be
        acknowledged instead.
        """
        if message.qos == 0:
            return True
        with self._lock:
            if message.generation != self._generation or not self._connected.is_set():
                return False
            self._client.ack(message.mid, message.qos)
        return True

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> int:
        """Queue a message for publishing; returns its packet id (mid).

        While disconnected the message waits in paho's queue and is sent after the
        reconnect. The broker's acknowledgement of a QoS 1 message shows up in
        :meth:`take_delivered`.
        """
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):
            raise MqttPublishError(f"cannot publish to {topic}: {paho.error_string(info.rc)}")
        return info.mid

    def take_delivered(self) -> list[int]:
        """Packet ids of published QoS 1 messages the broker acknowledged since the last call.

        Call it from the thread that publishes: an id returned by :meth:`publish` can
        only appear here after that call returned, so no acknowledgement is missed.
        """
        taken = []
        while True:
            try:
                taken.append(self._delivered.popleft())
            except IndexError:
                return taken

    # --- paho callbacks (network thread) ------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning(
                "MQTT connect refused",
                extra={"broker": f"{self.host}:{self.port}", "reason": str(reason_code)},
            )
            return
        with self._lock:
            self._generation += 1
            self.connects += 1
        self.max_packet_size = getattr(properties, "MaximumPacketSize", None)
        self._connected.set()
        self._broker.connected()
        log.info(
            "MQTT connected",
            extra={
                "broker": f"{self.host}:{self.port}",
                "client_id": self.client_id,
                "session_present": bool(flags.session_present),
            },
        )
        subs = [
            (s.topic_filter, SubscribeOptions(qos=s.qos, retainHandling=s.retain_handling))
            for s in self.subscriptions
        ]
        if subs:
            client.subscribe(subs)
        else:
            self._subscribed.set()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        failed = [str(code) for code in reason_codes if code.is_failure]
        if failed:
            log.error("MQTT subscribe refused", extra={"reasons": failed})
            return
        self._subscribed.set()
        self._send_heartbeat()  # at once: the subscriptions exist on this broker run now

    def _send_heartbeat(self) -> None:
        """Publish one heartbeat if subscribed on the current connection (any thread)."""
        if self.heartbeat is None:
            return
        # Under the lock that _on_disconnect takes to clear _subscribed: a heartbeat is
        # never queued after a disconnect, so none can reach the broker on the next
        # connection before its SUBACK.
        with self._lock:
            if not (self._connected.is_set() and self._subscribed.is_set()):
                return
            try:
                payload = self.heartbeat.payload()
            except Exception:  # a broken payload builder must not kill the network thread
                log.exception("heartbeat payload failed")
                return
            info = self._client.publish(self.heartbeat.topic, payload, qos=0, retain=False)
            if info.rc == paho.MQTT_ERR_SUCCESS:
                self.heartbeats_sent += 1

    def _heartbeat_loop(self) -> None:
        assert self.heartbeat is not None
        while not self._heartbeat_stop.wait(self.heartbeat.period_s):
            self._send_heartbeat()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        with self._lock:
            self._generation += 1
            self.disconnects += 1
            self._connected.clear()
            self._subscribed.clear()
        if self._stopping:
            log.info("MQTT disconnected", extra={"broker": f"{self.host}:{self.port}"})
            return
        log.warning(
            "MQTT disconnected; reconnecting with backoff",
            extra={"broker": f"{self.host}:{self.port}", "reason": str(reason_code)},
        )

    def _on_message(self, client, userdata, message) -> None:
        inbound = InboundMessage(
            topic=message.topic,
            payload=message.payload,
            mid=message.mid,
            qos=message.qos,
            retain=bool(message.retain),
            dup=bool(message.dup),
            received_ms=time.time_ns() // 1_000_000,
            generation=self._generation,
        )
        self._on_message_cb(inbound)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        # No lock here: paho holds its message mutex while calling this (deque is atomic).
        self._delivered.append(mid)
