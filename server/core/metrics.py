"""Prometheus metrics: every ``namazu_*`` metric object is defined here, once.

Services import the objects they update (``from namazu.server.core.metrics import
INGEST_MESSAGES_RECEIVED``). Each process exports only its own families: the objects
are created outside any registry, and a process registers the groups it runs
(``export_families("ingest")``) before serving them, either with its own small HTTP
server (``start_metrics_server(port, families=("ingest",))``, used by ingest, the
scheduler and the bridge) or through a Flask route (``metrics_response``, used by the
web panel, which exports the ``web`` group)::

    @app.get("/metrics")
    def metrics():
        return metrics_response()

The groups are ``ingest``, ``bridge``, ``scheduler`` and ``web``; ``namazu_build_info``
and the process, platform and garbage-collector collectors of ``prometheus_client``
come with every process. Durations are in seconds, sizes in counts, as Prometheus
conventions ask.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
    multiprocess,
    start_http_server,
)

__all__ = [
    "SPOOL_FULL",
    "SPOOL_BYTES",
    "BRIDGE_MESSAGES_RESENT",
    "BRIDGE_MESSAGES_CONFIRMED",
    "BRIDGE_FRAMES_DROPPED",
    "ALARMS_OPEN",
    "ALARM_LOG_VERIFICATION_TIME",
    "ALARM_LOG_VERIFIED",
    "BRIDGE_MESSAGES_PUBLISHED",
    "BUILD_INFO",
    "FAMILIES",
    "FARM_ANIMALS",
    "GATEWAY_SPOOL_DEPTH",
    "GATEWAY_UP",
    "INFLUX_WRITE_FAILURES",
    "INFLUX_WRITE_SECONDS",
    "INGEST_MESSAGES_RECEIVED",
    "INGEST_MESSAGES_REJECTED",
    "INGEST_MESSAGES_WRITTEN",
    "INGEST_PENDING_MESSAGES",
    "INGEST_POINTS_WRITTEN",
    "INGEST_ANIMALS_REJECTED",
    "INGEST_RECEIPTS_PUBLISHED",
    "INGEST_SEQ_CONFLICTS",
    "INGEST_STORE_BLOCKED",
    "INGEST_STORE_ERRORS",
    "MAILS_FAILED",
    "MAILS_QUEUED",
    "MAILS_SENT",
    "MetricsServer",
    "MetricsServerError",
    "SCHEDULER_TICK_FAILURES",
    "SCHEDULER_TICK_SECONDS",
    "SPOOL_DEPTH",
    "WEB_REQUESTS",
    "WEB_REQUEST_SECONDS",
    "export_families",
    "metrics_response",
    "metrics_text",
    "start_metrics_server",
]

# Buckets for latencies from a millisecond to a minute [s].
_LATENCY_BUCKETS_S = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)

# --- ingest ---------------------------------------------------------------------------
INGEST_MESSAGES_RECEIVED = Counter(
    "namazu_ingest_messages_received",
    "MQTT activity messages received by ingest [messages]",
    registry=None,
)
INGEST_MESSAGES_WRITTEN = Counter(
    "namazu_ingest_messages_written",
    "activity messages durably written to InfluxDB and acknowledged [messages]",
    registry=None,
)
INGEST_MESSAGES_REJECTED = Counter(
    "namazu_ingest_messages_rejected",
    "activity messages rejected and dead-lettered, by reason code [messages]",
    ["reason"],
    registry=None,
)
INGEST_POINTS_WRITTEN = Counter(
    "namazu_ingest_points_written",
    "activity points written to InfluxDB [points]",
    registry=None,
)
INGEST_PENDING_MESSAGES = Gauge(
    "namazu_ingest_pending_messages",
    "messages received but not yet written and acknowledged [messages]",
    registry=None,
)
INGEST_STORE_BLOCKED = Gauge(
    "namazu_ingest_store_blocked",
    "1 while InfluxDB refuses or fails every write of this worker, by cause "
    "(credentials, permission, no_database, server_error, unreachable) and instance URL "
    "(influx); the messages of its farms are held unacknowledged meanwhile [bool]",
    ["cause", "influx"],
    registry=None,
)
INGEST_STORE_ERRORS = Counter(
    "namazu_ingest_store_errors",
    "failed InfluxDB write attempts that were retried, by cause and instance URL "
    "(influx) [attempts]",
    ["cause", "influx"],
    registry=None,
)
INGEST_SEQ_CONFLICTS = Counter(
    "namazu_ingest_seq_conflicts",
    "messages whose sequence number this worker had seen with other values "
    "(dead-lettered as seq_conflict) [messages]",
    registry=None,
)
INGEST_ANIMALS_REJECTED = Counter(
    "namazu_ingest_animals_rejected",
    "animal entries refused inside otherwise stored messages, by reason [animals]",
    ["reason"],
    registry=None,
)
INGEST_RECEIPTS_PUBLISHED = Counter(
    "namazu_ingest_receipts_published",
    "receipts published to gateways (namazu/v1/{farm}/{gateway}/receipt) [messages]",
    registry=None,
)
INFLUX_WRITE_SECONDS = Histogram(
    "namazu_influx_write_seconds",
    "duration of one InfluxDB /write request [s]",
    buckets=_LATENCY_BUCKETS_S,
    registry=None,
)
INFLUX_WRITE_FAILURES = Counter(
    "namazu_influx_write_failures",
    "InfluxDB /write requests that failed, by kind: unavailable (no answer or HTTP 5xx) "
    "or refused (HTTP 4xx) [requests]",
    ["kind"],
    registry=None,
)
GATEWAY_SPOOL_DEPTH = Gauge(
    "namazu_gateway_spool_depth",
    "messages waiting in a gateway's spool, as its last status reported it [messages]",
    ["farm", "gateway"],
    registry=None,
)

# --- gateway bridge (its own process; `bridge.metrics_port`) ---------------------------
SPOOL_DEPTH = Gauge(
    "namazu_spool_depth",
    "messages waiting in this gateway's spool until their delivery is confirmed [messages]",
    registry=None,
)
SPOOL_BYTES = Gauge(
    "namazu_spool_bytes",
    "payload bytes held in this gateway's spool (what its disk budget counts) [B]",
    registry=None,
)
SPOOL_FULL = Gauge(
    "namazu_spool_full",
    "1 while this gateway's spool refuses new data for its disk budget, else 0",
    registry=None,
)
BRIDGE_MESSAGES_PUBLISHED = Counter(
    "namazu_bridge_messages_published",
    "activity messages acknowledged by the broker (QoS 1 PUBACK) [messages]",
    registry=None,
)
BRIDGE_MESSAGES_CONFIRMED = Counter(
    "namazu_bridge_messages_confirmed",
    "spooled messages confirmed (ingest receipt, or PUBACK with bridge.confirm = puback) "
    "and deleted from the spool [messages]",
    registry=None,
)
BRIDGE_MESSAGES_RESENT = Counter(
    "namazu_bridge_messages_resent",
    "messages sent again after a receipt time-out [messages]",
    registry=None,
)
BRIDGE_FRAMES_DROPPED = Counter(
    "namazu_bridge_frames_dropped",
    "collar frames dropped unacknowledged because the spool was full [frames]",
    registry=None,
)

# --- scheduler ------------------------------------------------------------------------
SCHEDULER_TICK_SECONDS = Histogram(
    "namazu_scheduler_tick_seconds",
    "duration of one scheduled job run, by job name [s]",
    ["job"],
    buckets=_LATENCY_BUCKETS_S,
    registry=None,
)
SCHEDULER_TICK_FAILURES = Counter(
    "namazu_scheduler_tick_failures",
    "scheduled job runs that raised, by job name [runs]",
    ["job"],
    registry=None,
)
ALARMS_OPEN = Gauge(
    "namazu_alarms_open",
    "alarms currently open, by farm [alarms]",
    ["farm"],
    registry=None,
)
FARM_ANIMALS = Gauge(
    "namazu_farm_animals",
    "animals of a farm by data-health status (ok, silent, offline) at the last health "
    "run [animals]",
    ["farm", "status"],
    registry=None,
)
GATEWAY_UP = Gauge(
    "namazu_gateway_up",
    "1 when a gateway's last status says online, 0 when it says offline (its Last Will) [boolean]",
    ["farm", "gateway"],
    registry=None,
)
ALARM_LOG_VERIFIED = Gauge(
    "namazu_alarm_log_verified",
    "1 when the last check of the alarm log's hash chain (against the state store) "
    "passed, 0 when it found a broken or missing record [boolean]",
    registry=None,
)
ALARM_LOG_VERIFICATION_TIME = Gauge(
    "namazu_alarm_log_last_verification_timestamp_seconds",
    "when the alarm log was last checked, UTC epoch [s]",
    registry=None,
)

# --- mail (sent by the scheduler) -----------------------------------------------------
MAILS_QUEUED = Gauge(
    "namazu_mails_queued",
    "alert e-mails waiting in the outbox [mails]",
    registry=None,
)
MAILS_SENT = Counter(
    "namazu_mails_sent",
    "alert e-mails accepted by the SMTP server [mails]",
    registry=None,
)
MAILS_FAILED = Counter(
    "namazu_mails_failed",
    "alert e-mail delivery attempts that failed [attempts]",
    registry=None,
)

# --- web ------------------------------------------------------------------------------
WEB_REQUESTS = Counter(
    "namazu_web_requests",
    "HTTP requests served by the panel and API, by endpoint and status code [requests]",
    ["endpoint", "status"],
    registry=None,
)
WEB_REQUEST_SECONDS = Histogram(
    "namazu_web_request_seconds",
    "duration of one HTTP request, by endpoint [s]",
    ["endpoint"],
    buckets=_LATENCY_BUCKETS_S,
    registry=None,
)

# --- build (every process) ------------------------------------------------------------
BUILD_INFO = Info("namazu_build", "version of the running Namazu package")
try:
    BUILD_INFO.info({"version": metadata.version("namazu")})
except metadata.PackageNotFoundError:  # running from a source tree without install
    BUILD_INFO.info({"version": "unknown"})

#: The metric families each kind of process exports.
FAMILIES: dict[str, tuple] = {
    "ingest": (
        INGEST_MESSAGES_RECEIVED,
        INGEST_MESSAGES_WRITTEN,
        INGEST_MESSAGES_REJECTED,
        INGEST_POINTS_WRITTEN,
        INGEST_PENDING_MESSAGES,
        INGEST_ANIMALS_REJECTED,
        INGEST_RECEIPTS_PUBLISHED,
        INGEST_SEQ_CONFLICTS,
        INGEST_STORE_BLOCKED,
        INGEST_STORE_ERRORS,
        INFLUX_WRITE_SECONDS,
        INFLUX_WRITE_FAILURES,
        GATEWAY_SPOOL_DEPTH,
    ),
    "bridge": (
        SPOOL_DEPTH,
        SPOOL_BYTES,
        SPOOL_FULL,
        BRIDGE_MESSAGES_PUBLISHED,
        BRIDGE_MESSAGES_CONFIRMED,
        BRIDGE_MESSAGES_RESENT,
        BRIDGE_FRAMES_DROPPED,
    ),
    "scheduler": (
        SCHEDULER_TICK_SECONDS,
        SCHEDULER_TICK_FAILURES,
        ALARMS_OPEN,
        FARM_ANIMALS,
        GATEWAY_UP,
        ALARM_LOG_VERIFIED,
        ALARM_LOG_VERIFICATION_TIME,
        INFLUX_WRITE_FAILURES,
        MAILS_QUEUED,
        MAILS_SENT,
        MAILS_FAILED,
    ),
    "web": (WEB_REQUESTS, WEB_REQUEST_SECONDS),
}

#: Names of the families each registry exports (by ``export_families``).
_exported: weakref.WeakKeyDictionary[CollectorRegistry, set[str]] = weakref.WeakKeyDictionary()
_export_lock = threading.Lock()


def export_families(*groups: str, registry: CollectorRegistry = REGISTRY) -> None:
    """Register the metric families of ``groups`` (see ``FAMILIES``) in ``registry``.

    Idempotent; a family shared by two groups is registered once. Raises ValueError
    naming the valid groups for an unknown one.
    """
    unknown = [g for g in groups if g not in FAMILIES]
    if unknown:
        raise ValueError(
            f"unknown metric group {unknown[0]!r}; valid groups: {', '.join(sorted(FAMILIES))}"
        )
    with _export_lock:
        done = _exported.setdefault(registry, set())
        for group in groups:
            for family in FAMILIES[group]:
                if family._name not in done:  # noqa: SLF001 - prometheus_client's family name
                    registry.register(family)
                    done.add(family._name)  # noqa: SLF001


class MetricsServerError(Exception):
    """The metrics HTTP server could not be started (port in use, bad address)."""


@dataclass
class MetricsServer:
    """A running ``/metrics`` HTTP server; ``port`` is the bound port (useful with 0)."""

    host: str
    port: int
    _server: WSGIServer
    _thread: threading.Thread

    @property
    def url(self) -> str:
        """The scrape URL, e.g. ``http://127.0.0.1:9101/metrics``."""
        return f"http://{self.host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def start_metrics_server(
    port: int,
    host: str = "127.0.0.1",
    registry: CollectorRegistry = REGISTRY,
    families: Iterable[str] = (),
) -> MetricsServer:
    """Serve the metrics over HTTP on ``host:port`` in a daemon thread.

    port : TCP port; 0 picks a free one (read it back from ``.port``).
    host : listen address; loopback by default, put a reverse proxy or firewall in
        front before exposing it further.
    families : the groups this process exports (``export_families``), e.g. ("ingest",).
    Raises MetricsServerError when the address cannot be bound.
    """
    export_families(*families, registry=registry)
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise MetricsServerError(f"cannot serve metrics on {host}:{port}: {exc}") from exc
    return MetricsServer(host=host, port=int(server.server_port), _server=server, _thread=thread)


def metrics_text(registry: CollectorRegistry = REGISTRY) -> bytes:
    """The current metrics in the Prometheus text exposition format (UTF-8 bytes).

    In multiprocess mode (``$PROMETHEUS_MULTIPROC_DIR``, the panel with several gunicorn
    workers) the default registry's text adds up what every process recorded there.
    """
    if registry is REGISTRY and os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        shared = CollectorRegistry()
        shared.register(_SharedFamilies(_exported.get(REGISTRY, set())))
        return generate_latest(shared)
    return generate_latest(registry)


class _SharedFamilies:
    """The exported families as every process of the multiprocess directory recorded
    them (the directory also holds the unused families' zeros, which stay out)."""

    def __init__(self, names: set[str]):
        self.names = set(names)

    def collect(self) -> Any:
        for family in multiprocess.MultiProcessCollector(None).collect():
            if family.name in self.names:
                yield family


def metrics_response(
    registry: CollectorRegistry = REGISTRY,
) -> tuple[bytes, int, dict[str, str]]:
    """A Flask-compatible ``(body, status, headers)`` tuple for a ``/metrics`` view."""
    return metrics_text(registry), 200, {"Content-Type": CONTENT_TYPE_LATEST}
