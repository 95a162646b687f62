"""Gateway MQTT publisher: spool first, then QoS 1 with backpressure (the only paho user here).

Flow of one activity batch::

    publish_activity() ─▶ Spool.append (durable, gets seq) ─▶ pump thread
        ─▶ paho publish (QoS 1, at most ``max_inflight`` without PUBACK)
        ─▶ PUBACK: sent, not yet confirmed
        ─▶ ingest receipt on namazu/v1/{farm}/{gateway}/receipt ("stored: seqs a..b")
        ─▶ Spool.confirm_ranges ─▶ gone from disk

- End-to-end confirmation (``confirm="receipt"``, the default): the broker's PUBACK
  only says the broker took the message; a broker crash can still lose it (Mosquitto
  writes its persistence file every few seconds). The spool keeps every message until
  an ingest worker publishes a receipt covering its seq, after writing it to InfluxDB
  (or dead-lettering it). Receipts carry the spool's ``boot_id``; receipts for another
  boot id, farm or gateway are ignored (counted), and a receipt without a boot id
  counts only for messages spooled before the spool had one (an upgraded spool).
  After every (re)connect every unconfirmed message is sent again from the spool in
  seq order, and when no receipt has confirmed anything for ``receipt_timeout_s``
  while messages wait, the ones that waited that long are sent again (the time-out
  doubles after each resend, up to 16 times, and returns to its base with the next
  receipt). Resends are byte-identical
  copies (same seq, same payload), which the server's idempotent writes absorb.
  ``confirm="puback"`` deletes on PUBACK instead, for a broker without Namazu ingest.
- Backpressure: the pump hands paho a spooled message only while fewer than
  ``max_inflight`` are waiting for their PUBACK and fewer than ``max_unconfirmed`` are
  sent and unconfirmed, so paho's in-memory queue and the broker's share of this
  gateway stay bounded however long ingest or the broker is away; the rest waits on
  disk (bounded by the spool's disk budget, see ``spool.py``).
- Order: messages are handed over in seq order. After a process restart the spool is
  read from the start.
- Availability: a retained status on ``namazu/v1/{farm}/{gateway}/status`` is
  published on every connection (``online: true``), when the spool fills up or has
  room again, and at ``stop()`` (``online: false``); the Last Will carries ``online:
  false`` for a connection that dies.
- Ingest presence gate (``wait_for_ingest``): Mosquitto 2.0 forgets shared
  subscriptions when it restarts, so a message accepted (PUBACK) before an ingest
  worker has subscribed again has no subscriber and is dropped. With the gate, after
  every (re)connect the publisher sends no activity (it keeps spooling) until a
  heartbeat of an ingest worker arrives on ``namazu/v1/_ingest/alive`` over the
  current connection; workers send one right after each SUBACK, so it proves that
  their subscriptions exist on the broker's current run. The status and the Last
  Will are never gated; a connection that stays up keeps sending while ingest is away
  (the broker queues for the workers' persistent sessions, up to ``max_unconfirmed``).
- Clock offset: every ingest heartbeat carries the server's clock (``sent_ms``). The
  publisher subscribes to it on every connection (gate or not) and reports, in its
  status, the gateway clock minus the server clock as the smallest of the last
  ``OFFSET_SAMPLES`` differences (receive time - send time = offset + transit delay,
  and the delay is never negative, so the smallest difference is the closest). The
  status is republished when the estimate moves by more than ``OFFSET_REPORT_STEP_S``.
  A clock source of the gateway's own (``clock_offset_s``) takes precedence.
"""

from __future__ import annotations

import bisect
import collections
import itertools
import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from namazu.firmware_bridge.payload import (
    ReceiptError,
    activity_topic,
    decode_receipt,
    encode_activity,
    encode_status,
    receipt_topic,
    status_topic,
)
from namazu.firmware_bridge.spool import Spool, SpoolFull
from namazu.server.core.reachability import BrokerReachability

log = logging.getLogger(__name__)

try:  # metrics are optional on a gateway without the server extras
    from namazu.server.core.metrics import (
        BRIDGE_MESSAGES_CONFIRMED,
        BRIDGE_MESSAGES_PUBLISHED,
        BRIDGE_MESSAGES_RESENT,
        SPOOL_BYTES,
        SPOOL_DEPTH,
        SPOOL_FULL,
    )
except ImportError:  # pragma: no cover
    BRIDGE_MESSAGES_CONFIRMED = BRIDGE_MESSAGES_PUBLISHED = BRIDGE_MESSAGES_RESENT = None  # type: ignore[assignment]
    SPOOL_BYTES = SPOOL_DEPTH = SPOOL_FULL = None  # type: ignore[assignment]

#: paho refuses more than this many unacknowledged messages per client.
PAHO_MAX_QUEUE = 65_535
#: Presence heartbeat of the ingest workers (published by ``server/ingest/service.py``).
INGEST_ALIVE_TOPIC = "namazu/v1/_ingest/alive"
#: Heartbeats the clock-offset estimate is the minimum over.
OFFSET_SAMPLES = 8
#: A status is republished when the offset estimate moves by more than this [s].
OFFSET_REPORT_STEP_S = 0.5
#: How a spooled message is confirmed: by an ingest receipt, or by the broker's PUBACK.
CONFIRM_MODES = ("receipt", "puback")
#: The receipt time-out grows to at most this multiple of ``receipt_timeout_s``.
RECEIPT_BACKOFF_MAX = 16


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class GatewayPublisher:
    """Spooled, ordered QoS 1 publisher of one gateway's activity batches.

    farm, gateway : topic segments.
    spool : the gateway's disk spool (owned by the caller).
    host, port : MQTT broker.
    client_id : stable MQTT client id; default ``namazu-gw-{farm}-{gateway}``.
    username, password, tls_ca : optional authentication / TLS CA file.
    max_inflight : messages waiting for their PUBACK at once (1..65,534).
    keepalive_s : MQTT keepalive [s]; a dead link is noticed after ~1.5x this.
    protocol : "3.1.1" (clean_session=False) or "5" (clean_start=False, session
        expiry ``session_expiry_s``).
    clock_offset_s : gateway clock minus reference time [s], or a callable returning
        it, from a clock source of the gateway's own (GPS, NTP); None (default) reports
        the offset measured against the ingest heartbeats (null until the first).
    clock_ms : the gateway clock, UTC epoch [ms] (default: the system clock).
    reconnect_max_s : longest wait between reconnection attempts [s].
    status_interval_s : status refresh cadence while connected [s].
    wait_for_ingest : after every (re)connect, send activity only once an ingest
        heartbeat has arrived on that connection (the presence gate above); False
        sends at once (a broker without Namazu ingest, or a single ingest worker
        with a durable, non-shared subscription).
    confirm : "receipt" (delete a message once an ingest receipt says it is stored)
        or "puback" (delete on the broker's PUBACK: a broker without Namazu ingest).
    receipt_timeout_s : a sent message is sent again when no receipt has confirmed
        anything for this long [s].
    max_unconfirmed : messages sent (handed to paho) and not yet confirmed, at most.
    """

    def __init__(
        self,
        farm: str,
        gateway: str,
        spool: Spool,
        host: str = "127.0.0.1",
        port: int = 1883,
        client_id: str | None = None,
        username: str | None = None,
        password: str | None = None,
        tls_ca: str | None = None,
        max_inflight: int = 1000,
        keepalive_s: int = 30,
        protocol: str = "3.1.1",
        session_expiry_s: int = 7 * 86400,
        clock_offset_s: float | Callable[[], float] | None = None,
        clock_ms: Callable[[], int] = _now_ms,
        reconnect_max_s: float = 30.0,
        status_interval_s: float = 30.0,
        wait_for_ingest: bool = False,
        confirm: str = "receipt",
        receipt_timeout_s: float = 60.0,
        max_unconfirmed: int = 20_000,
    ) -> None:
        if not 1 <= max_inflight <= PAHO_MAX_QUEUE - 1:
            raise ValueError(f"max_inflight={max_inflight}; must be 1..{PAHO_MAX_QUEUE - 1}")
        if protocol not in {"3.1.1", "5"}:
            raise ValueError(f"protocol={protocol!r}; must be '3.1.1' or '5'")
        if confirm not in CONFIRM_MODES:
            raise ValueError(f"confirm={confirm!r}; must be one of {', '.join(CONFIRM_MODES)}")
        if receipt_timeout_s <= 0 or max_unconfirmed < max_inflight:
            raise ValueError(
                f"receipt_timeout_s={receipt_timeout_s} must be > 0 and max_unconfirmed="
                f"{max_unconfirmed} at least max_inflight={max_inflight}"
            )
        self.farm = farm
        self.gateway = gateway
        self.spool = spool
        self.host = host
        self.port = int(port)
        self.client_id = client_id or f"namazu-gw-{farm}-{gateway}"
        # One slot is kept for the retained status message.
        self.max_inflight = int(max_inflight)
        self.keepalive_s = int(keepalive_s)
        self.confirm = confirm
        self.receipt_timeout_s = float(receipt_timeout_s)
        self.max_unconfirmed = int(max_unconfirmed)
        self._clock_offset = clock_offset_s
        self._clock_ms = clock_ms
        self._offset_samples: collections.deque[float] = collections.deque(maxlen=OFFSET_SAMPLES)
        self._reported_offset: float | None = None
        self._status_interval_s = status_interval_s
        self._topic = activity_topic(farm, gateway)
        self._status_topic = status_topic(farm, gateway)
        self._receipt_topic = receipt_topic(farm, gateway)
        self._v5 = protocol == "5"
        self._session_expiry_s = session_expiry_s
        self.wait_for_ingest = bool(wait_for_ingest)

        self._append_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._connected = threading.Event()
        self._acked_mids: collections.deque[int] = collections.deque()
        self._receipts: collections.deque[list[tuple[int, int]]] = collections.deque()
        # pump thread only: paho mid -> spool seq (waiting for PUBACK); seq -> PUBACK
        # time [monotonic s] (sent, waiting for a receipt); seqs due to be sent again
        self._inflight: dict[int, int] = {}
        self._unconfirmed: dict[int, float] = {}
        self._resend: collections.deque[int] = collections.deque()
        self._handed_upto = 0  # highest seq handed to paho (pump thread only)
        self._last_confirmation = time.monotonic()
        self._timeout_s = self.receipt_timeout_s
        self._reported_full = False
        self._pump: threading.Thread | None = None
        # Presence gate: connection counter (paho thread, under _handover_lock), the
        # connection on which an ingest heartbeat last arrived, and the connection the
        # pump last saw (pump thread only).
        self._handover_lock = threading.Lock()
        self._connection = 0
        self._ingest_seen_on = 0
        self._pump_connection = 0
        self.stats: dict[str, int] = {
            "spooled": 0,
            "spool_refused": 0,
            "handed": 0,
            "acked": 0,
            "confirmed": 0,
            "resent": 0,
            "receipts": 0,
            "receipts_ignored": 0,
            "connects": 0,
            "disconnects": 0,
            "max_inflight_seen": 0,
            "ingest_heartbeats": 0,
            "resend_dropped": 0,
            "unconfirmed_at_reconnect": 0,
            "unconfirmed_at_start": spool.depth(),
        }

        if self._v5:
            self._client = mqtt.Client(
                CallbackAPIVersion.VERSION2,
                client_id=self.client_id,
                protocol=mqtt.MQTTv5,
            )
        else:
            self._client = mqtt.Client(
                CallbackAPIVersion.VERSION2,
                client_id=self.client_id,
                clean_session=False,
                protocol=mqtt.MQTTv311,
            )
        self._client.max_inflight_messages_set(self.max_inflight + 1)
        self._client.max_queued_messages_set(0)
        self._client.reconnect_delay_set(1, max(1, int(reconnect_max_s)))
        if username is not None:
            self._client.username_pw_set(username, password)
        if tls_ca is not None:
            self._client.tls_set(ca_certs=tls_ca, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        self._client.will_set(self._status_topic, self._status(False), qos=1, retain=True)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._client.on_message = self._on_message
        self._broker = BrokerReachability(log, host, port, 1, max(1, int(reconnect_max_s)))
        self._client.on_connect_fail = lambda client, userdata: self._broker.connect_failed(
            f"{self.spool.depth()} messages spooled"
        )

    # --- public API ----------------------------------------------------------------
    def start(self) -> GatewayPublisher:
        """Connect in the background and start sending; never raises if the broker is down."""
        kwargs: dict[str, Any] = {"keepalive": self.keepalive_s}
        if self._v5:
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = self._session_expiry_s
            kwargs.update(clean_start=False, properties=props)
        self._client.connect_async(self.host, self.port, **kwargs)
        self._client.loop_start()
        self._pump = threading.Thread(target=self._pump_loop, name="namazu-pump", daemon=True)
        self._pump.start()
        return self

    def publish_activity(self, animals: list[dict[str, Any]]) -> int:
        """Spool one activity batch durably and queue it for sending; return its seq."""
        return self.publish_batches([animals])[0]

    def publish_batches(self, batches: Iterable[list[dict[str, Any]]]) -> list[int]:
        """Spool several batches in one durable transaction (in order); return their seqs.

        Raises ``SpoolFull`` (nothing spooled) when the spool's disk budget is reached.
        """
        sent_ms = self._clock_ms()
        builders = [self._builder(animals, sent_ms) for animals in batches]
        if not builders:
            return []
        with self._append_lock:
            try:
                seqs = self.spool.append_built(self._topic, builders)
            except SpoolFull:
                self.stats["spool_refused"] += len(builders)
                self._wake.set()  # the pump reports the full spool
                raise
        self.stats["spooled"] += len(seqs)
        self._wake.set()
        return seqs

    def wait_drained(self, timeout_s: float) -> bool:
        """Block until every spooled message is confirmed (deleted from the spool); False
        on timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.spool.depth() == 0:
                return True
            time.sleep(0.02)
        return self.spool.depth() == 0

    @property
    def connected(self) -> bool:
        """True while the MQTT connection is up."""
        return self._connected.is_set()

    @property
    def measured_clock_offset_s(self) -> float | None:
        """Gateway clock minus server clock from the recent ingest heartbeats [s]
        (smallest receive - send difference), or None before the first heartbeat."""
        samples = list(self._offset_samples)
        return min(samples) if samples else None

    @property
    def ingest_present(self) -> bool:
        """True while connected and the gate is open (or ``wait_for_ingest`` is off)."""
        return self._connected.is_set() and self._gate_open()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Publish ``online: false`` (retained), disconnect cleanly and stop the threads."""
        self._stopping.set()
        self._wake.set()
        if self._pump is not None:
            self._pump.join(timeout=timeout_s)
        self._settle()
        if self._connected.is_set():
            info = self._client.publish(self._status_topic, self._status(False), qos=1, retain=True)
            try:
                info.wait_for_publish(timeout=timeout_s)
            except (RuntimeError, ValueError):
                log.warning("offline status not confirmed before disconnect")
        self._client.disconnect()
        self._client.loop_stop()
        self._settle()

    # --- internals -----------------------------------------------------------------
    def _builder(self, animals: list[dict[str, Any]], sent_ms: int) -> Callable[[int], bytes]:
        boot_id = self.spool.boot_id

        def build(seq: int) -> bytes:
            return encode_activity(self.farm, self.gateway, seq, sent_ms, animals, boot_id=boot_id)

        return build

    def _offset(self) -> float | None:
        value = self._clock_offset
        if value is None:
            return self.measured_clock_offset_s
        return float(value() if callable(value) else value)

    def _status(self, online: bool) -> bytes:
        offset = self._offset()
        self._reported_offset = offset
        self._reported_full = self.spool.full
        return encode_status(
            self.farm,
            self.gateway,
            online,
            self._clock_ms(),
            clock_offset_s=offset,
            spool_depth=self.spool.depth(),
            last_seq=self.spool.last_seq(),
            spool_bytes=self.spool.bytes,
            spool_full=self._reported_full,
            boot_id=self.spool.boot_id,
        )

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning("broker refused connection: %s", reason_code)
            return
        with self._handover_lock:
            if self.wait_for_ingest or self.confirm == "receipt":
                # paho would resend these at once, possibly to a broker where no ingest
                # worker has subscribed yet; the pump sends every unconfirmed message
                # again from the spool (in seq order, once the gate opens).
                self.stats["resend_dropped"] += len(client.drop_out_messages())
            self._connection += 1
        self.stats["connects"] += 1
        self._connected.set()
        self._broker.connected()
        log.info(
            "connected to broker",
            extra={"host": self.host, "port": self.port, "session": flags.session_present},
        )
        client.publish(self._status_topic, self._status(True), qos=1, retain=True)
        client.subscribe(INGEST_ALIVE_TOPIC, qos=0)
        if self.confirm == "receipt":
            client.subscribe(self._receipt_topic, qos=1)
        self._wake.set()

    def _on_message(self, client, userdata, message) -> None:
        if message.topic == self._receipt_topic:
            self._take_receipt(message.payload)
            return
        # A heartbeat on this connection was routed by the broker's current run from a
        # worker that had its SUBACK there: its subscriptions exist, the gate opens.
        if message.topic == INGEST_ALIVE_TOPIC and not message.retain:
            self.stats["ingest_heartbeats"] += 1
            self._measure_offset(client, message.payload)
            if self._ingest_seen_on != self._connection:
                if self.wait_for_ingest:
                    log.info("ingest present; sending the spool")
                self._ingest_seen_on = self._connection
                self._wake.set()

    def _take_receipt(self, payload: bytes) -> None:
        """Queue the ranges of a receipt meant for this spool (paho thread)."""
        try:
            receipt = decode_receipt(payload)
        except ReceiptError as exc:
            self.stats["receipts_ignored"] += 1
            log.warning("receipt ignored: %s", exc)
            return
        ranges = list(receipt.seqs)
        if receipt.boot_id is None:  # messages spooled before the spool had a boot id
            below = self.spool.boot_id_from_seq
            ranges = [(lo, min(hi, below - 1)) for lo, hi in ranges if lo < below]
        mine = (receipt.farm, receipt.gateway) == (self.farm, self.gateway)
        if not mine or not ranges or receipt.boot_id not in (self.spool.boot_id, None):
            self.stats["receipts_ignored"] += 1
            log.info("receipt for another gateway or boot id ignored")
            return
        self.stats["receipts"] += 1
        self._receipts.append(ranges)
        self._wake.set()

    def _measure_offset(self, client, payload: bytes) -> None:
        """One clock-offset sample from a heartbeat; republish the status when the
        reported offset is stale (paho thread)."""
        received_ms = self._clock_ms()
        try:
            server_ms = orjson.loads(payload)["sent_ms"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.debug("ingest heartbeat without a server time")
            return
        if type(server_ms) is not int:
            return
        self._offset_samples.append((received_ms - server_ms) / 1000.0)
        if self._clock_offset is not None:
            return
        reported, measured = self._reported_offset, self.measured_clock_offset_s
        if reported is None or abs(measured - reported) > OFFSET_REPORT_STEP_S:
            client.publish(self._status_topic, self._status(True), qos=1, retain=True)

    def _gate_open(self) -> bool:
        return not self.wait_for_ingest or self._ingest_seen_on == self._connection

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self._connected.is_set() and not self._stopping.is_set():
            self.stats["disconnects"] += 1
            log.warning("broker connection lost: %s", reason_code)
        self._connected.clear()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        # Runs in paho's thread while it holds its own locks: only record and signal.
        self._acked_mids.append(mid)
        self._wake.set()

    def _settle(self) -> None:
        """Apply the PUBACKs and receipts that arrived (pump thread, or after it ended)."""
        self._flush_acks()
        self._apply_receipts()

    def _flush_acks(self) -> None:
        seqs = []
        while self._acked_mids:
            seq = self._inflight.pop(self._acked_mids.popleft(), None)
            if seq is not None:
                seqs.append(seq)
        if not seqs:
            return
        self.stats["acked"] += len(seqs)
        if BRIDGE_MESSAGES_PUBLISHED is not None:
            BRIDGE_MESSAGES_PUBLISHED.inc(len(seqs))
        if self.confirm == "puback":
            self._count_confirmed(self.spool.ack_many(seqs))
            return
        now = time.monotonic()
        if not self._unconfirmed:
            self._last_confirmation = now  # the time-out runs from the first wait
        for seq in seqs:
            self._unconfirmed[seq] = now

    def _apply_receipts(self) -> None:
        ranges: list[tuple[int, int]] = []
        while self._receipts:
            ranges += self._receipts.popleft()
        if not ranges:
            return
        confirmed = self.spool.confirm_ranges(ranges)
        self._count_confirmed(confirmed)
        self._forget_confirmed(ranges)
        if confirmed:
            self._last_confirmation = time.monotonic()
            self._timeout_s = self.receipt_timeout_s

    def _forget_confirmed(self, ranges: list[tuple[int, int]]) -> None:
        """Drop the seqs the ranges cover from the unconfirmed set, in time proportional
        to the smaller of the ranges' span and the set (pump thread)."""
        span = sum(hi - lo + 1 for lo, hi in ranges)
        if span <= len(self._unconfirmed):
            for lo, hi in ranges:
                for seq in range(lo, hi + 1):
                    self._unconfirmed.pop(seq, None)
            return
        ranges = sorted(ranges)
        starts = [lo for lo, _ in ranges]
        reach = list(itertools.accumulate((hi for _, hi in ranges), max))

        def covered(seq: int) -> bool:
            i = bisect.bisect_right(starts, seq) - 1
            return i >= 0 and reach[i] >= seq

        for seq in [s for s in self._unconfirmed if covered(s)]:
            del self._unconfirmed[seq]

    def _count_confirmed(self, n: int) -> None:
        self.stats["confirmed"] += n
        if n and BRIDGE_MESSAGES_CONFIRMED is not None:
            BRIDGE_MESSAGES_CONFIRMED.inc(n)

    def _check_receipt_timeout(self) -> None:
        """Queue for resending the messages that waited ``receipt_timeout_s`` for a
        receipt while none confirmed anything (pump thread)."""
        if not self._unconfirmed:
            return
        now = time.monotonic()
        if now - self._last_confirmation < self._timeout_s:
            return
        due = sorted(s for s, t in self._unconfirmed.items() if now - t >= self._timeout_s)
        if not due:
            return
        for seq in due:
            del self._unconfirmed[seq]
        self._resend.extend(due)
        log.warning(
            "no receipt for %.0f s; sending %d unconfirmed messages again",
            self._timeout_s,
            len(due),
        )
        self._last_confirmation = now
        self._timeout_s = min(self._timeout_s * 2, self.receipt_timeout_s * RECEIPT_BACKOFF_MAX)

    def _pump_loop(self) -> None:
        last_status = time.monotonic()
        while not self._stopping.is_set():
            self._wake.wait(timeout=0.5)
            self._wake.clear()
            try:
                self._settle()
                if self._connected.is_set():
                    with self._handover_lock:
                        self._new_connection_reset()
                        if self._gate_open():
                            self._check_receipt_timeout()
                            self._hand_over()
                    stale = time.monotonic() - last_status >= self._status_interval_s
                    if stale or self.spool.full != self._reported_full:
                        self._client.publish(
                            self._status_topic, self._status(True), qos=1, retain=True
                        )
                        last_status = time.monotonic()
                self._report_metrics()
            except Exception:  # keep the pump alive; the spool keeps the data
                log.exception("publisher pump error")
                time.sleep(0.5)

    def _report_metrics(self) -> None:
        if SPOOL_DEPTH is not None:
            SPOOL_DEPTH.set(self.spool.depth())
            SPOOL_BYTES.set(self.spool.bytes)
            SPOOL_FULL.set(1 if self.spool.full else 0)

    def _new_connection_reset(self) -> None:
        """After a reconnect, send every unconfirmed message again (pump thread)."""
        if self._pump_connection == self._connection:
            return
        self._pump_connection = self._connection
        if self.wait_for_ingest or self.confirm == "receipt":
            self._flush_acks()  # acknowledgements that arrived before the reconnect
            waiting = len(self._inflight) + len(self._unconfirmed) + len(self._resend)
            self.stats["unconfirmed_at_reconnect"] += waiting
            self._inflight.clear()
            self._unconfirmed.clear()
            self._resend.clear()
            self._handed_upto = 0

    def _hand_over(self) -> None:
        room = self.max_inflight - len(self._inflight)
        if self._resend and room > 0:
            again = [self._resend.popleft() for _ in range(min(room, len(self._resend)))]
            for message in self.spool.get(again):  # those confirmed meanwhile are gone
                self._send(message.seq, message.topic, message.payload)
                self.stats["resent"] += 1
                if BRIDGE_MESSAGES_RESENT is not None:
                    BRIDGE_MESSAGES_RESENT.inc()
            room = self.max_inflight - len(self._inflight)
        waiting = len(self._inflight) + len(self._unconfirmed) + len(self._resend)
        room = min(room, self.max_unconfirmed - waiting)
        if room <= 0:
            return
        for message in self.spool.pending(limit=room, after_seq=self._handed_upto):
            if not self._send(message.seq, message.topic, message.payload):
                return
            self._handed_upto = message.seq
            self.stats["handed"] += 1
        self.stats["max_inflight_seen"] = max(self.stats["max_inflight_seen"], len(self._inflight))

    def _send(self, seq: int, topic: str, payload: bytes) -> bool:
        info = self._client.publish(topic, payload, qos=1)
        if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:  # cannot happen with the bounds above
            log.error("paho queue full; will retry seq %d", seq)
            return False
        self._inflight[info.mid] = seq
        return True
