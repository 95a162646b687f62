"""Ingest service (``namazu ingest``): MQTT -> validation -> batched InfluxDB writes.

Threads and flow::

    paho network thread ──on_message──▶ bounded queue ──▶ writer thread
        writer: decode (namazu.server.ingest.payload) ─ valid ──▶ batch of line-protocol points
                                        └ invalid ─▶ dead-letter topic, then ack
        batch full (points) or old (age) ─▶ flusher thread: InfluxDB /write ─▶ ack every
        message in it (one write in flight while the writer decodes the next batch)

Guarantees:

- A message is acknowledged only after its points are written (or, when invalid,
  after the broker accepted its dead letter). While InfluxDB is down the writer
  retries with backoff and acknowledges nothing, so the broker keeps the messages.
- Memory is bounded: the broker sends at most Receive Maximum
  (``ingest.max_pending_messages``) unacknowledged messages, and that is all the
  service ever holds; when the writer is stuck, the broker queues the rest on disk.
- Writes are idempotent (same series + timestamp overwrites), so redelivered
  messages cost time, never duplicates.
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
import base64
import contextlib
import logging
import queue
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import orjson

from namazu.server.core import metrics
from namazu.server.core.config import ConfigError, NamazuConfig, load_config
from namazu.server.core.reachability import Reachability
from namazu.server.core.systemd import watchdog
from namazu.server.ingest.mqtt import (
    Heartbeat,
    InboundMessage,
    MqttConsumer,
    MqttError,
    Subscription,
)
from namazu.server.ingest.payload import (
    ActivityBatch,
    GatewayStatus,
    PayloadError,
    deadletter_topic,
    decode_activity,
    decode_status,
    parse_topic,
)
from namazu.server.store.influx import (
    InfluxClient,
    InfluxError,
    InfluxUnavailable,
    InfluxWriteError,
    multi_series_lines,
    point_line,
    prefixed_float_lines,
    series_prefix,
)

log = logging.getLogger(__name__)

ACTIVITY_FILTER = "namazu/v1/+/+/activity"
STATUS_FILTER = "namazu/v1/+/+/status"
#: Presence heartbeat of ingest workers (the "_" cannot start a farm id).
INGEST_ALIVE_TOPIC = "namazu/v1/_ingest/alive"
#: Reason code for points InfluxDB refused (e.g. a field type conflict); see data-path.md.
STORE_REFUSED = "store_refused"


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
    return _with_collar_points(samples, farm, gateway, heads, times)


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


def deadletter_payload(message: InboundMessage, reason: str, detail: str) -> bytes:
    """The JSON document published to ``namazu/v1/deadletter/{farm}/{gateway}``."""
    return orjson.dumps(
        {
            "reason": reason,
            "detail": detail,
            "topic": message.topic,
            "received_ms": message.received_ms,
            "payload_b64": base64.b64encode(message.payload).decode("ascii"),
        }
    )


def _is_status(message: InboundMessage) -> bool:
    return message.topic.endswith("/status")


@dataclass
class _Batch:
    lines: list[str] = field(default_factory=list)
    messages: list[InboundMessage] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    points: list[int] = field(default_factory=list)
    activity_points: int = 0
    started: float = 0.0

    def add(self, message: InboundMessage, lines: list[str], activity_points: int) -> None:
        if not self.messages:
            self.started = time.monotonic()
        self.lines += lines
        self.messages.append(message)
        self.sizes.append(len(lines))
        self.points.append(activity_points)
        self.activity_points += activity_points

    def __len__(self) -> int:
        return len(self.messages)


class IngestService:
    """MQTT -> validation -> InfluxDB, acknowledging each message only once it is stored.

    config : the whole configuration (``mqtt``, ``ingest`` sections are used).
    influx : the InfluxDB client to write through (injected, e.g. a test database).
    observer : optional callable run in the writer thread for each valid activity
        batch, in the order the service processes them (for tests and tracing).
    """

    def __init__(
        self,
        config: NamazuConfig,
        influx: InfluxClient,
        observer: Callable[[ActivityBatch], None] | None = None,
    ):
        self.config = config
        self.influx = influx
        self.observer = observer
        cfg = config.ingest
        self._max_future_ms = int(cfg.max_future_s * 1000)
        self._max_age_ms = int(cfg.max_age_days * 86_400_000)
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
        self._stop = threading.Event()
        self._writer: threading.Thread | None = None
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._rejected: Counter[str] = Counter()
        self._deadletters_waiting: dict[int, InboundMessage] = {}
        self._deadletter_lock = threading.Lock()
        self._last_seq: dict[tuple[str, str], int] = {}
        self._influx_down_since: float | None = None
        self._influx_reach = Reachability(log, "InfluxDB", influx.url)
        self._stop_timeout_s = 5.0

    # --- life cycle ---------------------------------------------------------------

    def start(self) -> IngestService:
        """Start the writer thread and connect to the broker (returns at once)."""
        try:
            log.info(self.influx.prepare())
        except InfluxUnavailable as exc:
            log.warning("InfluxDB unavailable at start; will retry", extra={"error": str(exc)})
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
        if self._writer is not None:
            self._writer.join(timeout_s + 5)
        self._mqtt.stop(end_session=end_session)

    def __enter__(self) -> IngestService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def stats(self) -> dict[str, Any]:
        """Counters since start. Activity messages: ``received``, ``written_messages``,
        ``written_points`` (samples), ``rejected`` (total) and ``rejected_by_reason``,
        ``acked``, ``ack_skipped`` (arrived on an earlier connection; its redelivered
        copy is acknowledged instead), ``seq_gaps``, ``seq_replays``. Status messages:
        ``status_received``, ``status_points``, ``status_acked``. Also
        ``write_retries`` and ``pending`` (queued, not yet taken by the writer)."""
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
                    "write_retries",
                )
            }
            out["rejected_by_reason"] = dict(self._rejected)
        out["pending"] = self._queue.qsize()
        out["connected"] = self._mqtt.connected
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
        # One write in flight while the next batch is decoded: a batch is handed to the
        # flusher thread, which writes it and acknowledges its messages; the writer waits
        # for that write to finish before handing over the next one.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-flush") as flusher:
            self._decode_loop(flusher)

    def _decode_loop(self, flusher: ThreadPoolExecutor) -> None:
        cfg = self.config.ingest
        batch = _Batch()
        in_flight: Future | None = None
        while not self._stop.is_set():
            watchdog.beat("ingest-writer")
            self._ack_delivered_deadletters()
            timeout = cfg.batch_max_age_s
            if batch:
                timeout = max(0.0, batch.started + cfg.batch_max_age_s - time.monotonic())
            try:
                message = self._queue.get(timeout=min(timeout, 0.1))
            except queue.Empty:
                message = None
            while message is not None:
                self._process(message, batch)
                if batch.activity_points >= cfg.batch_max_points:
                    break
                try:
                    message = self._queue.get_nowait()
                except queue.Empty:
                    message = None
            if batch and (
                batch.activity_points >= cfg.batch_max_points
                or time.monotonic() - batch.started >= cfg.batch_max_age_s
            ):
                if in_flight is not None:
                    in_flight.result()
                in_flight = flusher.submit(self._flush, batch)
                batch = _Batch()
        if in_flight is not None:
            in_flight.result()
        if batch:
            self._flush(batch, give_up_after_s=self._stop_timeout_s)
        self._ack_delivered_deadletters()
        watchdog.forget("ingest-writer")

    def _process(self, message: InboundMessage, batch: _Batch) -> None:
        try:
            _, _, kind = parse_topic(message.topic)
            if kind == "status":
                status = decode_status(message.topic, message.payload)
                batch.add(message, [status_line(status, message.received_ms, message.retain)], 0)
                self._count("status_points")
                if status.spool_depth is not None:
                    metrics.GATEWAY_SPOOL_DEPTH.labels(
                        farm=status.farm, gateway=status.gateway
                    ).set(status.spool_depth)
                return
            activity = decode_activity(
                message.topic,
                message.payload,
                message.received_ms,
                self._max_future_ms,
                self._max_age_ms,
            )
        except PayloadError as exc:
            self._reject(message, exc.reason, exc.detail)
            return
        self._check_sequence(activity)
        if self.observer is not None:
            self.observer(activity)
        lines = activity_lines(activity)
        batch.add(message, lines, activity.n_samples)

    def _check_sequence(self, batch: ActivityBatch) -> None:
        key = (batch.farm, batch.gateway)
        last = self._last_seq.get(key)
        if last is not None:
            if batch.seq <= last:
                self._count("seq_replays")
            elif batch.seq > last + 1:
                self._count("seq_gaps")
        self._last_seq[key] = max(batch.seq, last if last is not None else batch.seq)

    def _reject(self, message: InboundMessage, reason: str, detail: str) -> None:
        with self._lock:
            self._counts["rejected"] += 1
            self._rejected[reason] += 1
        metrics.INGEST_MESSAGES_REJECTED.labels(reason=reason).inc()
        log.warning(
            "payload rejected",
            extra={"topic": message.topic, "reason": reason, "detail": detail[:300]},
        )
        # Publishing and recording the packet id happen under one lock, so that the
        # writer and the flusher thread never see a delivery before its record.
        with self._deadletter_lock:
            try:
                mid = self._mqtt.publish(
                    deadletter_topic(message.topic), deadletter_payload(message, reason, detail)
                )
            except MqttError as exc:
                log.error("dead letter not published", extra={"error": str(exc)})
                return  # not acknowledged: the broker delivers it again
            self._deadletters_waiting[mid] = message

    def _ack_delivered_deadletters(self) -> None:
        with self._deadletter_lock:
            delivered = [
                self._deadletters_waiting.pop(mid, None) for mid in self._mqtt.take_delivered()
            ]
        for source in delivered:
            if source is not None:
                self._ack(source)

    def _ack(self, message: InboundMessage) -> None:
        if not self._mqtt.ack(message):
            self._count("ack_skipped")
        elif _is_status(message):
            self._count("status_acked")
        else:
            self._count("acked")

    def _flush(self, batch: _Batch, give_up_after_s: float | None = None) -> None:
        started = time.monotonic()
        refused = self._write(batch.lines, started, give_up_after_s)
        if refused is None:
            return  # gave up while stopping: nothing acknowledged
        if refused:
            # InfluxDB refused part of the batch: find the culprit messages one by one.
            offset = 0
            parts = zip(batch.messages, batch.sizes, batch.points, strict=True)
            for message, size, points in parts:
                lines = batch.lines[offset : offset + size]
                offset += size
                error = self._write(lines, started, give_up_after_s)
                if error is None:
                    return
                if error:
                    self._reject(message, STORE_REFUSED, error)
                else:
                    self._written([message], points)
            return
        self._written(batch.messages, batch.activity_points)

    def _written(self, messages: list[InboundMessage], activity_points: int) -> None:
        for message in messages:
            self._ack(message)
        activity = sum(not _is_status(m) for m in messages)
        self._count("written_points", activity_points)
        self._count("written_messages", activity)
        metrics.INGEST_POINTS_WRITTEN.inc(activity_points)
        metrics.INGEST_MESSAGES_WRITTEN.inc(activity)
        metrics.INGEST_PENDING_MESSAGES.set(self._queue.qsize())

    def _write(self, lines: list[str], started: float, give_up_after_s: float | None) -> str | None:
        """Write with retries. Returns "" when written, the error text when InfluxDB
        refused the data, None when giving up (stopping) while InfluxDB is unavailable."""
        delay_s = 0.05
        while True:
            try:
                with metrics.INFLUX_WRITE_SECONDS.time():
                    self.influx.write_lines(lines)
            except InfluxUnavailable as exc:
                self._influx_unavailable(exc, delay_s, len(lines))
            except InfluxWriteError as exc:
                if exc.status == 404 and "database not found" in exc.body:
                    created = True  # unknown while InfluxDB is away: try the write again
                    with contextlib.suppress(InfluxError):
                        created = self.influx.create_database()
                    if created:
                        continue
                return str(exc)
            else:
                if self._influx_down_since is not None:
                    self._influx_reach.reached()
                    self._influx_down_since = None
                return ""
            self._count("write_retries")
            watchdog.beat("ingest-writer")  # alive, waiting for InfluxDB
            if self._stop.is_set() and (
                give_up_after_s is None or time.monotonic() - started > give_up_after_s
            ):
                return None
            self._ack_delivered_deadletters()
            self._stop.wait(delay_s)
            delay_s = min(delay_s * 2, 5.0)

    def _influx_unavailable(self, exc: InfluxUnavailable, retry_in_s: float, points: int) -> None:
        if self._influx_down_since is None:
            self._influx_down_since = time.monotonic()
        self._influx_reach.failed(
            exc, retry_in_s, f"{points} points waiting, their messages unacknowledged"
        )


def main(argv: list[str]) -> int:
    """``namazu ingest``: subscribe, validate, write to InfluxDB, dead-letter bad payloads."""
    from namazu.server.core.logging_setup import LoggingConfigError, configure_logging

    parser = argparse.ArgumentParser(prog="namazu ingest", description=main.__doc__)
    parser.add_argument("--config", help="TOML config file (default $NAMAZU_CONFIG)")
    parser.add_argument("--client-id", help="stable MQTT client id of this worker")
    parser.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on this port")
    parser.add_argument("--metrics-host", default="127.0.0.1", help="metrics listen address")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    parser.add_argument("--log-format", choices=["json", "text"], default="json")
    parser.add_argument("--stats-every", type=float, default=60.0, help="log counters every [s]")
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
    influx = InfluxClient.from_config(config.influx)
    service = IngestService(config, influx).start()
    watchdog.start_from_environment(f"ingest {config.ingest.client_id} running")
    log.info(
        "ingest started",
        extra={
            "broker": f"{config.mqtt.host}:{config.mqtt.port}",
            "influx": config.influx.url,
            "database": config.influx.database,
            "client_id": config.ingest.client_id,
        },
    )
    try:
        while not stop.wait(args.stats_every):
            log.info("ingest counters", extra=service.stats)
    finally:
        watchdog.stop()
        service.stop()
        influx.close()
        if server is not None:
            server.close()
        log.info("ingest stopped", extra=service.stats)
    return 0
