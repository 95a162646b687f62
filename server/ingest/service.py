"""Ingest service (``namazu ingest``): MQTT -> validation -> batched InfluxDB writes.

Threads and flow::

    paho network thread ──on_message──▶ bounded queue ──▶ writer thread
        writer: decode (namazu.server.ingest.payload), animal by animal
            valid animals ──▶ batch of line-protocol points
            refused message or animals ─▶ dead-letter archive + dead-letter topic
        batch full (points) or old (age) ─▶ flusher thread: InfluxDB /write ─▶ ack every
        message in it (one write in flight while the writer decodes the next batch)
        handled messages ─▶ receipts ``namazu/v1/{farm}/{gateway}/receipt`` to gateways

Guarantees:

- A message is acknowledged only once all of it is handled: its valid points written
  and, when it was refused in whole or in part, its dead letter recorded in the
  archive (``namazu deadletter``) and accepted by the broker.
- A message never stops the service: any exception while decoding or validating one
  message dead-letters it as ``internal_error`` (with the exception type), and decoding
  never recurses over the payload. Should a worker thread die anyway, the service stops
  its heartbeat, disconnects without acknowledging anything more, and ``namazu ingest``
  exits with status 70, so gateways hold their spool and the service manager restarts it.
- Store errors are never dead letters: while InfluxDB is unreachable, answers 5xx or
  refuses the write as a whole (401 credentials, 403 permission, 404 database), the
  writer retries with backoff and acknowledges nothing, logging the cause once as an
  ERROR, setting ``namazu_ingest_store_blocked{cause}`` and a data-health entry. Only
  points InfluxDB itself refuses (field type conflict, beyond retention) are
  dead-lettered (``store_refused``), found point by point.
- After a write, ingest publishes receipts: the sequence numbers of each gateway's
  messages now durably handled (stored or dead-lettered), so the gateway can free its
  spool (``namazu.receipt/1``, see ``namazu.firmware_bridge.payload``).
- Only configured farms are stored (``unknown_farm`` otherwise) unless
  ``ingest.open_enrolment`` is on.
- Memory is bounded: the broker sends at most Receive Maximum
  (``ingest.max_pending_messages``) unacknowledged messages, and that is all the
  service ever holds; when the writer is stuck, the broker queues the rest on disk.
- Writes are idempotent (same series + timestamp overwrites), so redelivered
  messages cost time, never duplicates. A sequence number received before with other
  values (same farm, gateway and ``boot_id``) is a conflict: dead-lettered as
  ``seq_conflict``, never written over the first. Before a batch goes to InfluxDB, the
  digests of its messages' values are recorded in the state store's sequence ledger
  (``message_digests``, one insert-or-ignore and one select per batch), shared by all
  workers and kept across restarts for ``ingest.seq_ledger_retention_days``; each
  worker's in-memory book of its recent messages catches conflicts before that. While
  the state store is unreachable the batch is held unacknowledged and retried.
- Several InfluxDB instances (``[influx_instances]``, farms mapped by
  ``farms[].influx_instance``): each instance has its own batch, flusher thread and
  retry loop, so while one instance fails only the messages of its farms are held
  (unacknowledged, not even decoded: they wait as received); the other instances' farms
  are stored and acknowledged meanwhile. A message belongs to one farm, so to one
  instance. The held messages count against ``ingest.max_pending_messages``: when they
  reach it the broker sends this worker nothing more until the instance is back.
- Several workers can share the load: activity comes through the MQTT v5 shared
  subscription ``$share/{ingest.shared_group}/namazu/v1/+/+/activity``; each worker
  needs its own stable ``ingest.client_id``.
- Mosquitto 2.0 does not restore shared subscriptions from its persistence file, so
  after a broker restart activity published before a worker has subscribed again
  would be dropped. Each worker therefore publishes a presence heartbeat on
  ``namazu/v1/_ingest/alive`` right after every SUBACK and then every
  ``ingest.heartbeat_s`` while subscribed; gateways hold their spool after each
  (re)connect until they see one (``bridge.wait_for_ingest``).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import queue
import signal
import sys
import threading
import time
from collections import Counter, OrderedDict, defaultdict, deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for_any
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import numpy as np
import orjson
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from namazu.firmware_bridge.payload import (
    MAX_RECEIPT_RANGES,
    encode_receipt,
    receipt_topic,
    seq_ranges,
)
from namazu.server.core import metrics
from namazu.server.core.cliargs import number_in_range
from namazu.server.core.config import ConfigError, NamazuConfig, load_config
from namazu.server.core.reachability import Reachability
from namazu.server.core.systemd import watchdog
from namazu.server.ingest.deadletter import (
    DEFAULT_MAX_PACKET_BYTES,
    MAX_LISTED,
    DeadLetterArchive,
    DeadLetterError,
    deadletter_document,
)
from namazu.server.ingest.mqtt import (
    Heartbeat,
    InboundMessage,
    MqttConsumer,
    MqttError,
    Subscription,
)
from namazu.server.ingest.payload import (
    REASONS,
    ActivityBatch,
    ActivityMessage,
    Envelope,
    GatewayStatus,
    PayloadError,
    deadletter_topic,
    decode_activity_message,
    decode_status,
    parse_json,
    parse_topic,
    read_envelope,
)
from namazu.server.store import digests
from namazu.server.store.influx import (
    InfluxAuthError,
    InfluxClient,
    InfluxError,
    InfluxUnavailable,
    InfluxWriteError,
    multi_series_lines,
    point_line,
    prefixed_float_lines,
    series_prefix,
)
from namazu.server.store.influx_router import InfluxRouter
from namazu.server.store.state import DataHealth, StateError, init_db, session_scope

log = logging.getLogger(__name__)

ACTIVITY_FILTER = "namazu/v1/+/+/activity"
STATUS_FILTER = "namazu/v1/+/+/status"
#: Presence heartbeat of ingest workers (the "_" cannot start a farm id).
INGEST_ALIVE_TOPIC = "namazu/v1/_ingest/alive"
#: Reason code for points InfluxDB refused (e.g. a field type conflict); see data-path.md.
STORE_REFUSED = "store_refused"
#: An exception while decoding or validating a message (a defect of the decoder).
INTERNAL_ERROR = "internal_error"
#: Data of a farm not listed under ``[[farms]]`` (with ``ingest.open_enrolment`` off).
UNKNOWN_FARM = "unknown_farm"
#: A sequence number seen before with other values.
SEQ_CONFLICT = "seq_conflict"
#: Every reason a dead letter can carry.
DEADLETTER_REASONS = (*REASONS, UNKNOWN_FARM, SEQ_CONFLICT, STORE_REFUSED, INTERNAL_ERROR)
#: Exit status of ``namazu ingest`` when a worker thread died (EX_SOFTWARE).
EXIT_WORKER_DIED = 70
#: Farm id of the data-health entries ingest keeps about its store ("_" cannot start one).
STORE_HEALTH_FARM = "_ingest"
#: How often the sequence ledger drops rows older than its retention [s].
LEDGER_PRUNE_EVERY_S = 3600.0


def activity_subscription(shared_group: str) -> Subscription:
    """The activity subscription: shared by ``shared_group``, or durable ("" = one worker)."""
    if shared_group:
        return Subscription(f"$share/{shared_group}/{ACTIVITY_FILTER}", 1, 2)
    return Subscription(ACTIVITY_FILTER, 1, 1)


def ingest_heartbeat(client_id: str, shared_group: str, period_s: float) -> Heartbeat:
    """The presence heartbeat of one worker, sent every ``period_s`` [s] while subscribed:
    JSON ``{"client_id", "sent_ms" [UTC epoch ms], "shared_group"}`` on
    :data:`INGEST_ALIVE_TOPIC`, QoS 0, not retained."""

    def payload() -> bytes:
        return orjson.dumps(
            {
                "client_id": client_id,
                "sent_ms": time.time_ns() // 1_000_000,
                "shared_group": shared_group,
            }
        )

    return Heartbeat(INGEST_ALIVE_TOPIC, payload, period_s)


@lru_cache(maxsize=65_536)
def _activity_prefix(animal: str, farm: str, gateway: str, species: str) -> str:
    """The ``activity`` series key of one animal plus a space (tags in sorted order)."""
    tags = (("animal", animal), ("farm", farm), ("gateway", gateway), ("species", species))
    return series_prefix("activity", tags)


def activity_lines(batch: ActivityBatch) -> list[str]:
    """Line-protocol points of a batch: ``activity`` (odba, vedba [g]) per sample and
    one ``collar`` point (battery_v [V]) per animal that reported its battery."""
    farm, gateway = batch.farm, batch.gateway
    columns = batch.columns
    if columns is not None:
        # fast path: flat columns and cached series keys (tags in sorted order)
        samples = prefixed_float_lines(
            [
                _activity_prefix(animal, farm, gateway, species)
                for animal, species in zip(columns.animals, columns.species, strict=True)
            ],
            columns.lengths,
            {"odba": columns.odba.tolist(), "vedba": columns.vedba.tolist()},
            columns.t_ms,
        )
        if all(battery is None for battery in columns.batteries):
            return samples
        heads = zip(columns.animals, columns.species, columns.batteries, strict=True)
        times = np.split(columns.times, np.cumsum(columns.lengths)[:-1])
    else:
        animals = batch.animals
        samples = multi_series_lines(
            "activity",
            [{"farm": farm, "gateway": gateway, "animal": a.animal, "species": a.species}
             for a in animals],
            {"odba": [a.odba for a in animals], "vedba": [a.vedba for a in animals]},
            [a.t_ms for a in animals],
        )  # fmt: skip
        heads = ((a.animal, a.species, a.battery_v) for a in animals)
        times = [a.t_ms for a in animals]
        return _with_collar_points(samples, farm, gateway, heads, times) + uplink_lines(batch)
    return _with_collar_points(samples, farm, gateway, heads, times)


def uplink_lines(batch: ActivityBatch) -> list[str]:
    """``uplink`` points of the radio uplinks a batch names (LoRaWAN): one per uplink at
    its first sample's time [UTC ms], tags farm, gateway, animal; fields f_cnt, and
    rssi_dbm [dBm], snr_db [dB], radio_gateway, gateways [count] when reported. The same
    uplink received again lands on the same point."""
    lines = []
    for a in batch.animals:
        tags = {"farm": batch.farm, "gateway": batch.gateway, "animal": a.animal}
        for uplink in a.uplinks:
            fields = {k: v for k, v in uplink.items() if k != "t_ms"}
            lines.append(point_line("uplink", tags, fields, uplink["t_ms"]))
    return lines


def _with_collar_points(
    samples: list[str], farm: str, gateway: str, heads: Any, times: Any
) -> list[str]:
    """``samples`` (the activity lines, animal after animal) with a ``collar`` point
    (battery_v [V], at the animal's last sample time [UTC ms]) after each animal that
    reported its battery. heads : (animal, species, battery or None) per animal;
    times : each animal's sample times."""
    heads = list(heads)
    if all(battery is None for _, _, battery in heads):
        return samples
    lines: list[str] = []
    start = 0
    for (animal, species, battery), t_ms in zip(heads, times, strict=True):
        stop = start + len(t_ms)
        lines += samples[start:stop]
        if battery is not None:
            tags = {"farm": farm, "gateway": gateway, "animal": animal, "species": species}
            lines.append(point_line("collar", tags, {"battery_v": battery}, int(max(t_ms))))
        start = stop
    return lines


def status_line(status: GatewayStatus, received_ms: int, replayed: bool = False) -> str:
    """The ``gateway_status`` point of a status report.

    Its time is the server's receive time [UTC ms] for a live report, and the
    gateway's ``sent_ms`` for a retained report replayed by the broker on subscribe
    (``replayed``), so a replay lands on the point it repeats. Fields: ``online``,
    and when reported ``clock_offset_s`` (the gateway's own estimate) [s], ``seq``
    (last sequence number), ``spool_depth``, and ``receive_lag_s`` = server receive
    time - gateway send time [s]: the gateway clock's offset as the server sees it
    (plus transit time).
    """
    fields: dict[str, Any] = {"online": status.online}
    if status.clock_offset_s is not None:
        fields["clock_offset_s"] = status.clock_offset_s
    if status.last_seq is not None:
        fields["seq"] = status.last_seq
    if status.spool_depth is not None:
        fields["spool_depth"] = status.spool_depth
    if status.sent_ms is not None and not replayed:
        fields["receive_lag_s"] = (received_ms - status.sent_ms) / 1000.0
    time_ms = received_ms
    if replayed and status.sent_ms is not None:
        time_ms = status.sent_ms
    tags = {"farm": status.farm, "gateway": status.gateway}
    return point_line("gateway_status", tags, fields, time_ms)


def activity_digest(document: dict[str, Any]) -> bytes:
    """A 16-byte digest of a parsed activity document's ``animals`` (its measured values),
    independent of key order and of ``sent_ms``: equal for a byte-identical re-send and
    for a re-encoding of the same values."""
    animals = document.get("animals")
    try:
        canonical = orjson.dumps(animals, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:  # an integer beyond 64 bits (standard-library parse)
        canonical = json.dumps(animals, sort_keys=True).encode()
    return hashlib.blake2b(canonical, digest_size=16).digest()


class SequenceBook:
    """What this worker saw under each (farm, gateway, boot_id, seq): the digest of the
    values, for the most recent ``max_entries`` messages (least recently seen dropped).

    A digest is *confirmed* once the shared sequence ledger has said it is the first
    (``remember``); only a confirmed digest makes another one a conflict here, so the
    book is a fast path in front of the ledger and never overrules it.

    It also counts gaps and replays per (farm, gateway, boot_id): a new ``boot_id``
    starts a new numbering, so a gateway that lost its spool and counts from 1 again is
    not taken for a replay.
    """

    def __init__(self, max_entries: int = 200_000):
        self.max_entries = max_entries
        self._digests: OrderedDict[tuple[str, str, str | None, int], tuple[bytes, bool]] = (
            OrderedDict()
        )
        self._last: dict[tuple[str, str, str | None], int] = {}

    def check(self, farm: str, gateway: str, boot_id: str | None, seq: int, digest: bytes) -> str:
        """``"new"``, ``"gap"`` (new, after missing numbers), ``"replay"`` (seen with the
        same values), ``"conflict"`` (seen with other values, confirmed as the first) or
        ``"unsure"`` (seen with other values not yet confirmed: the ledger decides)."""
        key = (farm, gateway, boot_id, seq)
        known = self._digests.get(key)
        if known is not None:
            self._digests.move_to_end(key)
            if known[0] == digest:
                return "replay"
            return "conflict" if known[1] else "unsure"
        self._digests[key] = (digest, False)
        if len(self._digests) > self.max_entries:
            self._digests.popitem(last=False)
        epoch = (farm, gateway, boot_id)
        last = self._last.get(epoch)
        self._last[epoch] = seq if last is None else max(seq, last)
        if last is not None and seq <= last:
            return "replay"  # an older number no longer in memory
        if last is not None and seq > last + 1:
            return "gap"
        return "new"

    def remember(
        self, farm: str, gateway: str, boot_id: str | None, seq: int, digest: bytes
    ) -> None:
        """Keep ``digest`` as the confirmed first values of the message (what the shared
        ledger holds), replacing what this worker saw."""
        key = (farm, gateway, boot_id, seq)
        if key in self._digests:
            self._digests[key] = (digest, True)


class StoreHealth:
    """The data-health entry of this worker's store path: a ``data_health`` row with
    farm ``_ingest``, kind ``store``, name = the worker's client id, status ``ok`` or the
    cause of a blocked write (``credentials``, ``permission``, ``no_database``,
    ``server_error``, ``unreachable``), shown on the panel's health page.

    url : the state store URL (opened at the first change). Failures are logged, never
    raised: the entry informs, it must not stop ingest.
    """

    def __init__(self, url: str, worker: str):
        self.url = url
        self.worker = worker[:128]  # what data_health.name holds (PostgreSQL refuses more)
        self._engine: Any = None

    def set(self, status: str) -> None:
        now = datetime.now(UTC)
        try:
            if self._engine is None:
                self._engine = init_db(self.url)
            with session_scope(self._engine) as session:
                row = (
                    session.query(DataHealth)
                    .filter_by(farm=STORE_HEALTH_FARM, kind="store", name=self.worker)
                    .one_or_none()
                )
                if row is None:
                    row = DataHealth(farm=STORE_HEALTH_FARM, kind="store", name=self.worker)
                    session.add(row)
                if row.status != status:
                    row.since = now
                row.status = status[:16]
                row.updated_at = now
                if status == "ok":
                    row.last_seen = now
        except Exception as exc:  # the state store is not the data path
            log.warning("data-health entry not written", extra={"error": str(exc)[:300]})


@dataclass(eq=False)
class _Pending:
    """One inbound message until every part of its handling is done (``parts`` left:
    the write of its points, the broker's acknowledgement of its dead letter)."""

    message: InboundMessage
    envelope: Envelope | None
    parts: int = 1
    has_points: bool = True


def _is_status(message: InboundMessage) -> bool:
    return message.topic.endswith("/status")


@dataclass
class _Batch:
    lines: list[str] = field(default_factory=list)
    pendings: list[_Pending] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    points: list[int] = field(default_factory=list)
    ledger: list[tuple[digests.DigestKey, bytes] | None] = field(default_factory=list)
    activity_points: int = 0
    started: float = 0.0

    def add(
        self,
        pending: _Pending,
        lines: list[str],
        activity_points: int,
        ledger: tuple[digests.DigestKey, bytes] | None = None,
    ) -> None:
        """Add one message's points; ``ledger``: its key and digest in the sequence
        ledger (activity messages), recorded before the points are written."""
        if not self.pendings:
            self.started = time.monotonic()
        self.lines += lines
        self.pendings.append(pending)
        self.sizes.append(len(lines))
        self.points.append(activity_points)
        self.ledger.append(ledger)
        self.activity_points += activity_points

    def __len__(self) -> int:
        return len(self.pendings)


@dataclass(eq=False)
class _Instance:
    """One InfluxDB instance as the writer sees it: the batch being filled for its farms,
    the write in flight on its own flusher thread, the messages held (as received) while
    that write is stuck and the batch is full, and its store state."""

    name: str
    influx: InfluxClient
    reach: Reachability
    health: StoreHealth
    batch: _Batch = field(default_factory=_Batch)
    in_flight: Future | None = None
    held: deque[InboundMessage] = field(default_factory=deque)
    blocked: str | None = None
    blocked_since: float = 0.0

    def takes_more(self, max_points: int) -> bool:
        """Whether a message may be decoded into the batch now (not while the batch is
        full and the previous write is still in flight)."""
        return self.in_flight is None or self.batch.activity_points < max_points


class _GivingUp(Exception):
    """Raised inside the flusher when the service stops while InfluxDB refuses writes."""


class IngestService:
    """MQTT -> validation -> InfluxDB, acknowledging each message only once it is handled.

    config : the whole configuration (``mqtt``, ``ingest``, ``farms``, ``state``).
    influx : where to write: an ``InfluxRouter`` (one client per instance, farms routed
        by the configuration), or one ``InfluxClient`` for every farm (e.g. a test
        database).
    observer : optional callable run in the writer thread for each activity batch with
        valid animals, in the order the service processes them (for tests and tracing).
    archive : where dead letters are recorded; default the state store
        (``state.url``), opened at the first dead letter.
    store_health : the data-health entry of the store path (of the default instance);
        default in the state store.
    """

    def __init__(
        self,
        config: NamazuConfig,
        influx: InfluxClient | InfluxRouter,
        observer: Callable[[ActivityBatch], None] | None = None,
        archive: DeadLetterArchive | None = None,
        store_health: StoreHealth | None = None,
    ):
        self.config = config
        self.router = influx if isinstance(influx, InfluxRouter) else InfluxRouter.single(influx)
        self.influx = self.router.default
        self.observer = observer
        cfg = config.ingest
        self._max_future_ms = int(cfg.max_future_s * 1000)
        self._max_age_ms = int(cfg.max_age_days * 86_400_000)
        self._known_farms = frozenset(farm.id for farm in config.farms)
        receive_maximum = min(cfg.max_pending_messages, 65_535)
        # QoS 1 traffic is bounded by Receive Maximum; the margin absorbs QoS 0 strays.
        self._queue: queue.Queue[InboundMessage] = queue.Queue(maxsize=receive_maximum + 1000)
        self._mqtt = MqttConsumer.from_config(
            config.mqtt,
            client_id=cfg.client_id,
            subscriptions=[
                activity_subscription(cfg.shared_group),
                Subscription(STATUS_FILTER, 1, 1),
            ],
            on_message=self._on_message,
            receive_maximum=receive_maximum,
            reconnect_max_s=5,
            heartbeat=ingest_heartbeat(cfg.client_id, cfg.shared_group, cfg.heartbeat_s),
        )
        self._archive = archive
        self._instances = {
            name: _Instance(
                name,
                client,
                Reachability(log, _instance_label(name), client.url),
                (store_health if name == "default" else None)
                or StoreHealth(config.state.url, _health_name(cfg.client_id, name, client)),
            )
            for name, client in self.router.instances().items()
        }
        self._stop = threading.Event()
        self._writer: threading.Thread | None = None
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._rejected: Counter[str] = Counter()
        self._animals_rejected: Counter[str] = Counter()
        self._deadletters_waiting: dict[int, _Pending] = {}
        self._deadletter_lock = threading.Lock()
        self._sequences = SequenceBook()
        self._ledger_engine: Any = None
        self._ledger_lock = threading.Lock()
        self._ledger_retention_s = cfg.seq_ledger_retention_days * 86_400.0
        self._ledger_pruned_at: float | None = None
        self._ledger_reach = Reachability(
            log,
            "the state store (sequence ledger)",
            _safe_url(config.state.url),
        )
        self._receipts: defaultdict[tuple[str, str, str | None], set[int]] = defaultdict(set)
        self._written_by_instance: Counter[str] = Counter()
        self._stop_timeout_s = 5.0
        self.failed: BaseException | None = None

    # --- life cycle ---------------------------------------------------------------

    def start(self) -> IngestService:
        """Start the writer thread and connect to the broker (returns at once)."""
        for instance in self._instances.values():
            try:
                log.info(instance.influx.prepare())
            except InfluxError as exc:
                log.warning(
                    "InfluxDB not ready at start; will retry",
                    extra={"error": str(exc), "url": instance.influx.url},
                )
        self._stop.clear()
        self._writer = threading.Thread(target=self._run, name="ingest-writer", daemon=True)
        self._writer.start()
        self._mqtt.start()
        return self

    def wait_ready(self, timeout_s: float = 10.0) -> bool:
        """Wait until connected and subscribed to the broker; False on timeout."""
        return self._mqtt.wait_ready(timeout_s)

    def stop(self, timeout_s: float = 5.0, end_session: bool = False) -> None:
        """Write what is buffered (trying for up to ``timeout_s`` [s]), then disconnect.

        Messages not written by then stay unacknowledged; the broker keeps them for
        the next start (persistent session) unless ``end_session`` is true (a worker
        that is retired for good, or a test cleaning up).
        """
        self._stop_timeout_s = timeout_s
        self._stop.set()
        if self._writer is not None and self._writer is not threading.current_thread():
            self._writer.join(timeout_s + 5)
        self._mqtt.stop(end_session=end_session)

    def __enter__(self) -> IngestService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def stats(self) -> dict[str, Any]:
        """Counters since start. Activity messages: ``received``, ``written_messages``,
        ``written_points`` (samples), ``rejected`` (messages dead-lettered in whole or in
        part) and ``rejected_by_reason``, ``animals_rejected`` by reason (animals refused
        inside partly stored messages), ``acked``, ``ack_skipped`` (arrived on an earlier
        connection; its redelivered copy is acknowledged instead), ``seq_gaps``,
        ``seq_replays``, ``seq_conflicts`` (by this worker's book or the shared ledger;
        ``seq_conflicts_shared``: those only the ledger caught),
        ``ledger_retries`` (sequence-ledger checks retried while the state store
        failed), ``ledger_pruned`` (ledger rows dropped past retention). Status
        messages: ``status_received``, ``status_points``, ``status_acked``. Also
        ``write_retries``, ``store_blocked``
        (the cause while InfluxDB refuses every write, else None; with several
        instances the first blocked one's), ``store_blocked_by_instance`` (instance name
        -> cause, blocked ones only), ``written_points_by_instance``, ``held``
        (messages waiting undecoded while their instance's write is stuck), ``receipts``
        (published), ``pending`` (queued, not yet taken by the writer), ``connected``
        and ``failed`` (the exception type that killed a worker thread, else None)."""
        with self._lock:
            out: dict[str, Any] = {
                key: self._counts[key]
                for key in (
                    "received",
                    "written_points",
                    "written_messages",
                    "rejected",
                    "acked",
                    "ack_skipped",
                    "status_received",
                    "status_points",
                    "status_acked",
                    "seq_gaps",
                    "seq_replays",
                    "seq_conflicts",
                    "seq_conflicts_shared",
                    "ledger_retries",
                    "ledger_pruned",
                    "write_retries",
                    "receipts",
                )
            }
            out["rejected_by_reason"] = dict(self._rejected)
            out["animals_rejected"] = dict(self._animals_rejected)
            out["written_points_by_instance"] = dict(self._written_by_instance)
        blocked = {i.name: i.blocked for i in self._instances.values() if i.blocked}
        out["store_blocked"] = next(iter(blocked.values()), None)
        out["store_blocked_by_instance"] = blocked
        out["held"] = sum(len(i.held) for i in self._instances.values())
        out["pending"] = self._queue.qsize()
        out["connected"] = self._mqtt.connected
        out["failed"] = None if self.failed is None else type(self.failed).__name__
        return out

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] += n

    # --- network thread -----------------------------------------------------------

    def _on_message(self, message: InboundMessage) -> None:
        if _is_status(message):
            self._count("status_received")
        else:
            self._count("received")
            metrics.INGEST_MESSAGES_RECEIVED.inc()
        # Blocks only for QoS 0 floods: QoS 1 is bounded by Receive Maximum.
        self._queue.put(message)
        metrics.INGEST_PENDING_MESSAGES.set(self._queue.qsize())

    # --- writer thread ------------------------------------------------------------

    def _run(self) -> None:
        # Per InfluxDB instance, one write in flight while the next batch is decoded: a
        # batch is handed to the instance's flusher thread, which writes it and
        # acknowledges its messages; the instance's next batch waits for that write.
        try:
            with contextlib.ExitStack() as stack:
                flushers = {
                    name: stack.enter_context(
                        ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"ingest-flush-{name}")
                    )
                    for name in self._instances
                }
                self._decode_loop(flushers)
        except BaseException as exc:  # noqa: BLE001 - a dead worker must be seen and ended
            self._die(exc)

    def _die(self, exc: BaseException) -> None:
        """A worker thread failed: stop heartbeating and disconnect, acknowledging
        nothing more, so gateways hold and the broker keeps every unhandled message."""
        self.failed = exc
        log.critical(
            "ingest worker thread died; no more heartbeats, disconnecting",
            exc_info=exc,
            extra={"error": type(exc).__name__},
        )
        self._stop.set()
        with contextlib.suppress(Exception):
            self._mqtt.stop()

    def _decode_loop(self, flushers: dict[str, ThreadPoolExecutor]) -> None:
        max_points = self.config.ingest.batch_max_points
        instances = list(self._instances.values())
        while not self._stop.is_set():
            watchdog.beat("ingest-writer")
            for instance in instances:
                if instance.in_flight is not None and instance.in_flight.done():
                    instance.in_flight.result()  # an unexpected failure ends the worker here
                    instance.in_flight = None
                while instance.held and instance.takes_more(max_points):
                    self._process(instance.held.popleft(), instance.batch)
            self._ack_delivered_deadletters()
            self._publish_receipts()
            self._submit_ready(flushers)
            stuck = [i.in_flight for i in instances if not i.takes_more(max_points)]
            if len(stuck) == len(instances):  # no batch takes more: wait for a write
                wait_for_any(stuck, timeout=0.1, return_when=FIRST_COMPLETED)
                continue
            try:
                message = self._queue.get(timeout=self._wait_s())
            except queue.Empty:
                message = None
            while message is not None:
                instance = self._instance_of(message)
                if instance.takes_more(max_points):
                    self._process(message, instance.batch)
                    if instance.in_flight is None and instance.batch.activity_points >= max_points:
                        break  # full: hand it over
                else:
                    instance.held.append(message)  # its write is still going: wait as received
                    if instance.in_flight is not None and instance.in_flight.done():
                        break  # that write ended: hand over the full batch
                try:
                    message = self._queue.get_nowait()
                except queue.Empty:
                    message = None
            self._submit_ready(flushers)
        if self.failed is not None:
            return
        for instance in instances:
            if instance.in_flight is not None:
                instance.in_flight.result()
        # the instances that take writes first: a blocked one gives up after the timeout
        for instance in sorted(instances, key=lambda i: i.blocked is not None):
            if instance.batch:
                self._flush(instance, instance.batch, give_up_after_s=self._stop_timeout_s)
        self._ack_delivered_deadletters()
        self._publish_receipts()
        watchdog.forget("ingest-writer")

    def _instance_of(self, message: InboundMessage) -> _Instance:
        """The instance of the farm a message's topic names (``namazu/v1/{farm}/...``);
        the default instance for a topic without one (it is dead-lettered anyway)."""
        parts = message.topic.split("/", 3)
        farm = parts[2] if len(parts) > 3 and parts[0] == "namazu" else ""
        return self._instances[self.router.instance_of(farm)]

    def _submit_ready(self, flushers: dict[str, ThreadPoolExecutor]) -> None:
        """Hand every batch that is full or old enough to its instance's flusher, unless
        that instance's previous write is still in flight."""
        cfg = self.config.ingest
        now = time.monotonic()
        for instance in self._instances.values():
            batch = instance.batch
            if not batch or instance.in_flight is not None:
                continue
            if (
                batch.activity_points >= cfg.batch_max_points
                or now - batch.started >= cfg.batch_max_age_s
            ):
                instance.in_flight = flushers[instance.name].submit(self._flush, instance, batch)
                instance.batch = _Batch()

    def _wait_s(self) -> float:
        """How long the writer may wait for the next message [s]: until the oldest batch
        is due, at most 0.1 s, and only briefly while a due batch or held messages wait
        for a write in flight (its end is seen by polling)."""
        cfg = self.config.ingest
        wait_s = 0.1
        now = time.monotonic()
        for instance in self._instances.values():
            if instance.in_flight is not None:
                due = instance.batch and (
                    instance.batch.activity_points >= cfg.batch_max_points
                    or now - instance.batch.started >= cfg.batch_max_age_s
                )
                if instance.held or due:
                    wait_s = min(wait_s, 0.005)
                continue
            if instance.batch:
                wait_s = min(wait_s, max(0.0, instance.batch.started + cfg.batch_max_age_s - now))
        return wait_s

    def _process(self, message: InboundMessage, batch: _Batch) -> None:
        """Decode one message into ``batch`` or dead-letter it; never raises for a
        message (any exception becomes an ``internal_error`` dead letter)."""
        pending = _Pending(message, None)
        try:
            self._decode_into(pending, batch)
        except PayloadError as exc:
            self._dead_letter(pending, exc.reason, exc.detail)
        except Exception as exc:  # noqa: BLE001 - one message must never stop ingest
            log.exception("decoding failed", extra={"topic": message.topic[:200]})
            detail = f"{type(exc).__name__} while decoding: {_safe_text(exc)}"
            self._dead_letter(
                pending, f"{INTERNAL_ERROR}", detail, {"exception": type(exc).__name__}
            )

    def _decode_into(self, pending: _Pending, batch: _Batch) -> None:
        message = pending.message
        farm, _, kind = parse_topic(message.topic)
        if farm not in self._known_farms and not self.config.ingest.open_enrolment:
            raise PayloadError(
                UNKNOWN_FARM,
                f"farm {farm!r} is not configured (ingest.open_enrolment is off)",
            )
        if kind == "status":
            status = decode_status(message.topic, message.payload)
            batch.add(pending, [status_line(status, message.received_ms, message.retain)], 0)
            self._count("status_points")
            if status.spool_depth is not None:
                metrics.GATEWAY_SPOOL_DEPTH.labels(farm=status.farm, gateway=status.gateway).set(
                    status.spool_depth
                )
            return
        document = parse_json(message.payload)
        pending.envelope = read_envelope(message.topic, document)
        decoded = decode_activity_message(
            message.topic, document, message.received_ms, self._max_future_ms, self._max_age_ms
        )
        digest = activity_digest(document)
        verdict = self._sequences.check(
            decoded.farm, decoded.gateway, decoded.boot_id, decoded.seq, digest
        )
        if verdict == "conflict":
            self._count("seq_conflicts")
            metrics.INGEST_SEQ_CONFLICTS.inc()
            raise PayloadError(SEQ_CONFLICT, _conflict_detail(decoded))
        if verdict == "replay":
            self._count("seq_replays")
        elif verdict == "gap":
            self._count("seq_gaps")
        lines: list[str] = []
        points = 0
        if decoded.batch is not None:
            if self.observer is not None:
                self.observer(decoded.batch)
            lines = activity_lines(decoded.batch)
            points = decoded.batch.n_samples
        if decoded.rejected:
            pending.parts += 1
            self._dead_letter_animals(pending, decoded)
        # Even a message with nothing to write enters the ledger: its values came first.
        pending.has_points = decoded.batch is not None
        key = (decoded.farm, decoded.gateway, decoded.boot_id or "", decoded.seq)
        batch.add(pending, lines, points, (key, digest))

    def _dead_letter_animals(self, pending: _Pending, decoded: ActivityMessage) -> None:
        first = decoded.rejected[0]
        for refused in decoded.rejected:
            with self._lock:
                self._animals_rejected[refused.reason] += 1
            metrics.INGEST_ANIMALS_REJECTED.labels(reason=refused.reason).inc()
        listed = [
            {"index": r.index, "animal": r.animal, "reason": r.reason, "detail": r.detail[:300]}
            for r in decoded.rejected[:MAX_LISTED]
        ]
        kept = 0 if decoded.batch is None else len(decoded.batch.animals)
        detail = first.detail
        if len(decoded.rejected) > 1:
            detail += f" (and {len(decoded.rejected) - 1} more animals refused)"
        self._dead_letter(
            pending,
            first.reason,
            detail,
            {
                "rejected_animals": listed,
                "rejected_animals_total": len(decoded.rejected),
                "stored_animals": kept,
            },
        )

    def _dead_letter(
        self,
        pending: _Pending,
        reason: str,
        detail: str,
        extra: dict[str, Any] | None = None,
    ) -> None:
        """Record a refused message (or part of one) in the archive and publish its dead
        letter; one part of ``pending`` is done when the broker acknowledges it."""
        message = pending.message
        with self._lock:
            self._counts["rejected"] += 1
            self._rejected[reason] += 1
        metrics.INGEST_MESSAGES_REJECTED.labels(reason=reason).inc()
        log.warning(
            "payload rejected",
            extra={"topic": message.topic[:200], "reason": reason, "detail": detail[:300]},
        )
        if pending.envelope is None:
            with contextlib.suppress(Exception):
                pending.envelope = read_envelope(message.topic, None)
        self._archive_letter(pending, reason, detail)
        document = deadletter_document(
            message.topic,
            message.payload,
            message.received_ms,
            reason,
            detail,
            max_bytes=self._mqtt.max_packet_size or DEFAULT_MAX_PACKET_BYTES,
            extra=extra,
        )
        # Publishing and recording the packet id happen under one lock, so that the
        # writer and the flusher thread never see a delivery before its record.
        with self._deadletter_lock:
            try:
                mid = self._mqtt.publish(deadletter_topic(message.topic), document)
            except MqttError as exc:
                log.error("dead letter not published", extra={"error": str(exc)})
                return  # not acknowledged: the broker delivers it again
            self._deadletters_waiting[mid] = pending

    def _archive_letter(self, pending: _Pending, reason: str, detail: str) -> None:
        """Keep the dead letter in the archive, retrying while the state store fails."""
        message, envelope = pending.message, pending.envelope
        delay_s = 0.1
        while True:
            try:
                if self._archive is None:
                    self._archive = DeadLetterArchive(self.config.state.url)
                self._archive.record(
                    message.topic,
                    envelope.farm if envelope else deadletter_topic(message.topic).split("/")[3],
                    envelope.gateway if envelope else deadletter_topic(message.topic).split("/")[4],
                    message.payload,
                    message.received_ms,
                    reason,
                    detail,
                    envelope.seq if envelope else None,
                    envelope.boot_id if envelope else None,
                )
                return
            except DeadLetterError as exc:
                log.error(
                    "dead-letter archive not writable; holding the message and retrying",
                    extra={"error": str(exc)[:300]},
                )
            watchdog.beat("ingest-writer")  # alive, waiting for the state store
            if self._stop.wait(delay_s):
                return
            delay_s = min(delay_s * 2, 5.0)

    def _ack_delivered_deadletters(self) -> None:
        with self._deadletter_lock:
            delivered = [
                self._deadletters_waiting.pop(mid, None) for mid in self._mqtt.take_delivered()
            ]
        for pending in delivered:
            if pending is not None:
                self._part_done(pending)

    def _part_done(self, pending: _Pending) -> None:
        """One part of a message's handling is done; acknowledge and confirm it with the
        last one."""
        with self._lock:
            pending.parts -= 1
            if pending.parts > 0:
                return
            envelope = pending.envelope
            if envelope is not None and envelope.seq is not None:
                self._receipts[(envelope.farm, envelope.gateway, envelope.boot_id)].add(
                    envelope.seq
                )
        self._ack(pending.message)

    def _publish_receipts(self) -> None:
        """Publish one receipt per gateway and boot_id for the messages handled since
        the last call (QoS 1, fire and forget: a lost receipt only means a re-send)."""
        with self._lock:
            if not self._receipts:
                return
            receipts, self._receipts = self._receipts, defaultdict(set)
        now = datetime.now(UTC)
        for (farm, gateway, boot_id), seqs in receipts.items():
            ranges = seq_ranges(seqs)
            for start in range(0, len(ranges), MAX_RECEIPT_RANGES):
                payload = encode_receipt(
                    farm, gateway, boot_id, ranges[start : start + MAX_RECEIPT_RANGES], now
                )
                try:
                    self._mqtt.publish(receipt_topic(farm, gateway), payload)
                except MqttError as exc:
                    log.warning("receipt not published", extra={"error": str(exc)})
                    continue
                self._count("receipts")
                metrics.INGEST_RECEIPTS_PUBLISHED.inc()

    def _ack(self, message: InboundMessage) -> None:
        if not self._mqtt.ack(message):
            self._count("ack_skipped")
        elif _is_status(message):
            self._count("status_acked")
        else:
            self._count("acked")

    # --- flusher thread -------------------------------------------------------------

    def _flush(
        self, instance: _Instance, batch: _Batch, give_up_after_s: float | None = None
    ) -> None:
        started = time.monotonic()
        try:
            batch = self._without_conflicts(batch, started, give_up_after_s)
            if not batch.lines:
                self._written(instance, batch.pendings, 0)
                return
            refused = self._write(instance, batch.lines, started, give_up_after_s)
            if refused is not None:
                # InfluxDB refused some points: find them, message by message.
                offset = 0
                parts = zip(batch.pendings, batch.sizes, batch.points, strict=True)
                for pending, size, points in parts:
                    lines = batch.lines[offset : offset + size]
                    offset += size
                    self._write_message(instance, pending, lines, points, started, give_up_after_s)
                return
        except _GivingUp:
            return  # stopping while InfluxDB refuses: nothing acknowledged
        self._written(instance, batch.pendings, batch.activity_points)

    def _without_conflicts(
        self, batch: _Batch, started: float, give_up_after_s: float | None
    ) -> _Batch:
        """Record the batch's activity messages in the sequence ledger; dead-letter those
        whose sequence number the ledger holds with other values (``seq_conflict``) and
        return the rest. Retries while the state store fails (nothing is acknowledged
        meanwhile); raises _GivingUp when the service stops meanwhile."""
        entries = [entry for entry in batch.ledger if entry is not None]
        if not entries:
            return batch
        kept = self._claim_digests(entries, started, give_up_after_s)
        for (farm, gateway, boot_id, seq), digest in kept.items():
            self._sequences.remember(farm, gateway, boot_id or None, seq, digest)
        clean = _Batch()
        offset = 0
        parts = zip(batch.pendings, batch.sizes, batch.points, batch.ledger, strict=True)
        for pending, size, points, entry in parts:
            lines = batch.lines[offset : offset + size]
            offset += size
            if entry is None or kept.get(entry[0], entry[1]) == entry[1]:
                clean.add(pending, lines, points, entry)
                continue
            self._count("seq_conflicts")
            self._count("seq_conflicts_shared")
            metrics.INGEST_SEQ_CONFLICTS.inc()
            envelope = pending.envelope
            self._dead_letter(
                pending,
                SEQ_CONFLICT,
                _conflict_detail(envelope) + " (by another worker or before a restart)",
            )
        clean.started = batch.started
        return clean

    def _claim_digests(
        self,
        entries: list[tuple[digests.DigestKey, bytes]],
        started: float,
        give_up_after_s: float | None,
    ) -> dict[digests.DigestKey, bytes]:
        """``digests.claim`` with retries and backoff while the state store fails, then
        a prune of old rows when one is due."""
        delay_s = 0.05
        while True:
            try:
                kept = digests.claim(self._ledger(), entries, datetime.now(UTC))
                break
            except (SQLAlchemyError, StateError) as exc:
                self._ledger_reach.failed(
                    exc, delay_s, f"{len(entries)} messages waiting, unacknowledged"
                )
            self._count("ledger_retries")
            delay_s = self._pause_before_retry(started, give_up_after_s, delay_s)
        self._ledger_reach.reached()
        now = time.monotonic()
        if self._ledger_pruned_at is None or now - self._ledger_pruned_at >= LEDGER_PRUNE_EVERY_S:
            self._ledger_pruned_at = now
            self.prune_ledger()
        return kept

    def _ledger(self) -> Any:
        """The state-store engine of the sequence ledger, opened once (flusher threads of
        several InfluxDB instances share it)."""
        with self._ledger_lock:
            if self._ledger_engine is None:
                self._ledger_engine = init_db(self.config.state.url)
            return self._ledger_engine

    def prune_ledger(self, now: datetime | None = None) -> int:
        """Drop sequence-ledger rows first seen more than ``ingest.seq_ledger_retention_days``
        before ``now`` (default: the current time); returns how many went. Failures are
        logged and retried at the next prune."""
        cutoff = (now or datetime.now(UTC)) - timedelta(seconds=self._ledger_retention_s)
        try:
            pruned = digests.prune(self._ledger(), cutoff)
        except (SQLAlchemyError, StateError) as exc:
            log.warning("sequence ledger not pruned", extra={"error": str(exc)[:300]})
            return 0
        self._count("ledger_pruned", pruned)
        return pruned

    def _write_message(
        self,
        instance: _Instance,
        pending: _Pending,
        lines: list[str],
        points: int,
        started: float,
        give_up_after_s: float | None,
    ) -> None:
        """Write one message's points; dead-letter those InfluxDB refuses, point by point."""
        refused = self._refused_points(instance, lines, started, give_up_after_s)
        if refused:
            pending.parts += 1
            listed = [line[:500] for line, _ in refused[:MAX_LISTED]]
            self._dead_letter(
                pending,
                STORE_REFUSED,
                refused[0][1][:500],
                {
                    "rejected_points": listed,
                    "rejected_points_total": len(refused),
                    "stored_points": len(lines) - len(refused),
                },
            )
        stored = points - sum(line.startswith("activity,") for line, _ in refused)
        self._written(instance, [pending], stored)

    def _refused_points(
        self, instance: _Instance, lines: list[str], started: float, give_up_after_s: float | None
    ) -> list[tuple[str, str]]:
        """The lines InfluxDB refuses, each with its error, found by halving: a part it
        accepts whole costs one write, a part it refuses whole (``dropped`` = its size)
        too; only mixed parts are split."""
        if not lines:
            return []
        error = self._write(instance, lines, started, give_up_after_s)
        if error is None:
            return []
        if len(lines) == 1 or error.dropped == len(lines):
            return [(line, str(error.body)) for line in lines]
        middle = len(lines) // 2
        return self._refused_points(
            instance, lines[:middle], started, give_up_after_s
        ) + self._refused_points(instance, lines[middle:], started, give_up_after_s)

    def _written(self, instance: _Instance, pendings: list[_Pending], activity_points: int) -> None:
        for pending in pendings:
            self._part_done(pending)
        activity = sum(p.has_points and not _is_status(p.message) for p in pendings)
        self._count("written_points", activity_points)
        with self._lock:
            self._written_by_instance[instance.name] += activity_points
        self._count("written_messages", activity)
        metrics.INGEST_POINTS_WRITTEN.inc(activity_points)
        metrics.INGEST_MESSAGES_WRITTEN.inc(activity)
        metrics.INGEST_PENDING_MESSAGES.set(self._queue.qsize())

    def _write(
        self, instance: _Instance, lines: list[str], started: float, give_up_after_s: float | None
    ) -> InfluxWriteError | None:
        """Write with retries until InfluxDB takes the points. Returns None when written,
        the error when InfluxDB refused some points themselves (point level). Anything
        else (unreachable, 5xx, 401/403/404) is retried with backoff; raises _GivingUp
        when the service stops meanwhile."""
        delay_s = 0.05
        while True:
            try:
                with metrics.INFLUX_WRITE_SECONDS.time():
                    instance.influx.write_lines(lines)
            except InfluxWriteError as exc:
                if exc.point_level:
                    self._store_ok(instance)
                    return exc
                if exc.status == 404 and "database not found" in exc.body:
                    try:
                        created = instance.influx.create_database()
                    except InfluxAuthError:
                        created = False  # this user may not create it: a store error
                    except InfluxError:
                        created = True  # unknown while InfluxDB is away: write again
                    if created:
                        continue
                self._store_failing(instance, exc, delay_s, len(lines))
            except InfluxUnavailable as exc:
                self._store_failing(instance, exc, delay_s, len(lines))
            else:
                self._store_ok(instance)
                return None
            self._count("write_retries")
            delay_s = self._pause_before_retry(started, give_up_after_s, delay_s)

    def _pause_before_retry(
        self, started: float, give_up_after_s: float | None, delay_s: float
    ) -> float:
        """Wait ``delay_s`` [s] before the writer retries a blocked batch (InfluxDB or the
        sequence ledger) and return the next delay (doubled, at most 5 s).

        The writer stays alive for the watchdog and keeps acknowledging delivered dead
        letters while it waits; once stopping, it gives up (``_GivingUp``) after
        ``give_up_after_s`` [s] since ``started`` (``time.monotonic``), or at once when None.
        """
        watchdog.beat("ingest-writer")  # alive, waiting for the store
        if self._stop.is_set() and (
            give_up_after_s is None or time.monotonic() - started > give_up_after_s
        ):
            raise _GivingUp
        self._ack_delivered_deadletters()
        self._stop.wait(delay_s)
        return min(delay_s * 2, 5.0)

    def _store_failing(
        self, instance: _Instance, exc: InfluxError, retry_in_s: float, points: int
    ) -> None:
        """A write to ``instance`` failed for a reason that is not the data's. An
        unreachable or failing server is reported by :class:`Reachability` (a WARNING, an
        ERROR if it lasts, repeated while it lasts); a refusal (credentials, permission,
        no database) by one ERROR line naming the cause. Both set the metric (labelled
        with the instance's URL) and the instance's data-health entry."""
        influx = instance.influx
        cause, sentence = influx.explain_write_failure(exc)
        metrics.INGEST_STORE_ERRORS.labels(cause=cause, influx=influx.url).inc()
        outage = cause in ("unreachable", "server_error")
        if outage:
            instance.reach.failed(
                exc, retry_in_s, f"{points} points waiting, their messages unacknowledged"
            )
        if cause == instance.blocked:
            return
        if instance.blocked is None:
            instance.blocked_since = time.monotonic()
        else:
            metrics.INGEST_STORE_BLOCKED.labels(cause=instance.blocked, influx=influx.url).set(0)
        instance.blocked = cause
        metrics.INGEST_STORE_BLOCKED.labels(cause=cause, influx=influx.url).set(1)
        if not outage:
            log.error(
                "%s; holding messages unacknowledged and retrying",
                sentence,
                extra={"cause": cause, "database": influx.database, "url": influx.url},
            )
        instance.health.set(cause)

    def _store_ok(self, instance: _Instance) -> None:
        if instance.blocked is None:
            return
        down_s = time.monotonic() - instance.blocked_since
        influx = instance.influx
        metrics.INGEST_STORE_BLOCKED.labels(cause=instance.blocked, influx=influx.url).set(0)
        if instance.blocked in ("unreachable", "server_error"):
            instance.reach.reached()
        else:
            log.info(
                "InfluxDB accepts writes again",
                extra={"after": instance.blocked, "down_s": round(down_s, 1), "url": influx.url},
            )
        instance.blocked = None
        instance.health.set("ok")


def _instance_label(name: str) -> str:
    """How log lines name an instance: "InfluxDB", or "InfluxDB instance 'north'"."""
    return "InfluxDB" if name == "default" else f"InfluxDB instance {name!r}"


def _health_name(worker: str, name: str, client: InfluxClient) -> str:
    """The data-health entry name of a worker's store path to one instance: the worker's
    client id for the default instance, with the instance's name and URL for others."""
    if name == "default":
        return worker
    return f"{worker} {name} {client.url}"[:128]


def _conflict_detail(message: ActivityMessage | Envelope | None) -> str:
    """The dead-letter detail of a ``seq_conflict``."""
    if message is None:
        return "sequence number received before with other values; the first is kept"
    return (
        f"seq {message.seq} of {message.farm}/{message.gateway} (boot_id "
        f"{message.boot_id}) was received before with other values; the first is kept"
    )


def _safe_url(url: str) -> str:
    """A SQLAlchemy URL with its password masked (for log lines)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - only for a log line
        return "state.url"


def _safe_text(exc: BaseException, limit: int = 200) -> str:
    """The message of an exception, bounded; never fails."""
    try:
        return str(exc)[:limit]
    except Exception:  # noqa: BLE001 - str() of a hostile object
        return "(message not printable)"


def run_service(service: IngestService, stop: threading.Event, stats_every_s: float) -> int:
    """Run a started service until ``stop`` is set (0) or a worker thread dies
    (:data:`EXIT_WORKER_DIED`); logs the counters every ``stats_every_s`` [s]."""
    next_stats = time.monotonic() + stats_every_s
    while not stop.wait(min(0.5, stats_every_s)):
        if service.failed is not None:
            return EXIT_WORKER_DIED
        if time.monotonic() >= next_stats:
            log.info("ingest counters", extra=service.stats)
            next_stats = time.monotonic() + stats_every_s
    return EXIT_WORKER_DIED if service.failed is not None else 0


def main(argv: list[str]) -> int:
    """``namazu ingest``: subscribe, validate, write to InfluxDB, dead-letter bad payloads."""
    from namazu.server.core.logging_setup import LoggingConfigError, configure_logging

    parser = argparse.ArgumentParser(prog="namazu ingest", description=main.__doc__)
    parser.add_argument("--config", help="TOML config file (default $NAMAZU_CONFIG)")
    parser.add_argument("--client-id", help="stable MQTT client id of this worker")
    parser.add_argument(
        "--metrics-port",
        type=number_in_range(int, 0, 65535),
        help="serve Prometheus /metrics on this port",
    )
    parser.add_argument("--metrics-host", default="127.0.0.1", help="metrics listen address")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    parser.add_argument("--log-format", choices=["json", "text"], default="json")
    parser.add_argument(
        "--stats-every",
        type=number_in_range(float, 0, exclusive_minimum=True),
        default=60.0,
        help="log counters every [s]",
    )
    args = parser.parse_args(argv)
    try:
        configure_logging(args.log_level, json=args.log_format == "json")
        config = load_config(args.config)
    except (ConfigError, LoggingConfigError) as exc:
        print(f"namazu ingest: {exc}", file=sys.stderr)
        return 2
    if args.client_id:
        config = config.model_copy(
            update={"ingest": config.ingest.model_copy(update={"client_id": args.client_id})}
        )
    server = None
    metrics_port = args.metrics_port
    if metrics_port is None and config.ingest.metrics_port:
        metrics_port = config.ingest.metrics_port
    if metrics_port is not None:
        try:
            server = metrics.start_metrics_server(
                metrics_port, args.metrics_host, families=("ingest",)
            )
        except metrics.MetricsServerError as exc:
            print(f"namazu ingest: {exc}", file=sys.stderr)
            return 1
        log.info("metrics served", extra={"url": server.url})

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    influx = InfluxRouter.from_config(config)
    service = IngestService(config, influx).start()
    watchdog.start_from_environment(f"ingest {config.ingest.client_id} running")
    log.info(
        "ingest started",
        extra={
            "broker": f"{config.mqtt.host}:{config.mqtt.port}",
            "influx": ", ".join(
                f"{name}={client.url}/{client.database}"
                for name, client in influx.instances().items()
            ),
            "client_id": config.ingest.client_id,
            "farms": "any (open enrolment)"
            if config.ingest.open_enrolment
            else ", ".join(sorted(f.id for f in config.farms)),
        },
    )
    status = 0
    try:
        status = run_service(service, stop, args.stats_every)
    finally:
        watchdog.stop()
        service.stop()
        influx.close()
        if server is not None:
            server.close()
        log.info("ingest stopped", extra=service.stats)
    return status
