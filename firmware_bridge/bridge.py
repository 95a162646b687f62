"""The gateway bridge (``namazu bridge``): collar frames -> activity -> spooled MQTT.

Pipeline: source (serial / UDP / simulator) -> ``decode_frame`` (a rejected frame is
counted and logged with its reason, never fatal) -> per-burst ODBA/VeDBA
(``processing.activity_from_frames``) -> batches of ``batch_samples`` samples ->
``GatewayPublisher`` (disk spool first, then QoS 1).
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import signal
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

from namazu.firmware_bridge.frame import CollarFrame, FrameError
from namazu.firmware_bridge.payload import batches_from_frame
from namazu.firmware_bridge.processing import activity_from_frames
from namazu.firmware_bridge.publisher import GatewayPublisher
from namazu.firmware_bridge.sources import FrameSource, SourceError, open_source

log = logging.getLogger(__name__)

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Bridge:
    """Wire a frame source to a publisher.

    source : a ``FrameSource``.
    publisher : a started ``GatewayPublisher``.
    gateway : gateway id (names the animals).
    batch_samples : samples per published message.
    flush_interval_s : longest time a decoded frame waits before publication [s].
    """

    def __init__(
        self,
        source: FrameSource,
        publisher: GatewayPublisher,
        gateway: str,
        batch_samples: int = 100,
        flush_interval_s: float = 1.0,
    ) -> None:
        self.source = source
        self.publisher = publisher
        self.gateway = gateway
        self.batch_samples = batch_samples
        self.flush_interval_s = flush_interval_s
        self.rejected: collections.Counter[str] = collections.Counter()
        self.frames_ok = 0
        self.samples_published = 0
        self.messages_published = 0
        self._pending: list[CollarFrame] = []
        self._last_flush = time.monotonic()

    def handle(self, items: list[CollarFrame | FrameError]) -> None:
        """Take decoded frames and rejects; publish when a batch is full or due."""
        for item in items:
            if isinstance(item, FrameError):
                self.rejected[item.reason] += 1
                log.warning(
                    "collar frame rejected",
                    extra={"reason": item.reason, "detail": item.detail},
                )
            else:
                self.frames_ok += 1
                self._pending.append(item)
        due = time.monotonic() - self._last_flush >= self.flush_interval_s
        if len(self._pending) >= self.batch_samples * 10 or (due and self._pending):
            self.flush()

    def flush(self) -> None:
        """Publish every pending frame's activity now."""
        self._last_flush = time.monotonic()
        if not self._pending:
            return
        df = activity_from_frames(self._pending, self.gateway)
        self._pending = []
        batches = list(
            batches_from_frame(
                df, self.publisher.farm, self.gateway, max_samples=self.batch_samples
            )
        )
        self.publisher.publish_batches(batches)
        self.samples_published += len(df)
        self.messages_published += len(batches)

    def run(self, stop: threading.Event | None = None, poll_s: float = 0.2) -> None:
        """Read until the source is exhausted or ``stop`` is set, then flush."""
        stop = stop or threading.Event()
        while not stop.is_set() and not self.source.exhausted:
            self.handle(self.source.read(poll_s))
        self.flush()

    def summary(self) -> dict:
        """Counters: frames accepted, rejects by reason, samples and messages published."""
        return {
            "frames_ok": self.frames_ok,
            "rejected": dict(self.rejected),
            "samples_published": self.samples_published,
            "messages_published": self.messages_published,
        }


def build_parser() -> argparse.ArgumentParser:
    """Options of ``namazu bridge``."""
    p = argparse.ArgumentParser(
        prog="namazu bridge", description="Collar frames -> activity -> spooled MQTT."
    )
    p.add_argument("--config", help="TOML file (default $NAMAZU_CONFIG)")
    p.add_argument("--source", help="udp://HOST:PORT | serial:///dev/X[?baud=N] | simulator")
    p.add_argument("--farm")
    p.add_argument("--gateway")
    p.add_argument("--mqtt-host")
    p.add_argument("--mqtt-port", type=int)
    p.add_argument("--spool", help="SQLite spool file")
    p.add_argument("--batch-samples", type=int)
    p.add_argument("--max-inflight", type=int)
    p.add_argument("--keepalive-s", type=int, default=30)
    p.add_argument("--drain-timeout-s", type=float, default=30.0)
    p.add_argument(
        "--no-wait-for-ingest",
        action="store_true",
        help="send at once after a (re)connect, without waiting for an ingest heartbeat "
        "(overrides bridge.wait_for_ingest)",
    )
    sim = p.add_argument_group("simulator source")
    sim.add_argument("--cows", type=int, default=10)
    sim.add_argument("--sheep", type=int, default=0)
    sim.add_argument("--dogs", type=int, default=0)
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--start", help="UTC start, ISO 8601 (default: now - duration)")
    sim.add_argument("--duration-min", type=float, default=60.0)
    return p


def main(argv: list[str]) -> int:
    """``namazu bridge``: run the gateway pipeline until the source ends or SIGTERM/SIGINT."""
    from namazu.firmware_bridge.simulator import Herd, _parse_time
    from namazu.firmware_bridge.spool import Spool, SpoolError
    from namazu.server.core.config import ConfigError, load_config

    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"namazu bridge: invalid configuration: {exc}", file=sys.stderr)
        return 2
    bc, mc = config.bridge, config.mqtt
    farm = args.farm or bc.farm
    gateway = args.gateway or bc.gateway
    source_url = args.source or bc.source
    herd = start = end = None
    try:
        if source_url == "simulator":
            herd = Herd(
                farm,
                gateway,
                {"cow": args.cows, "sheep": args.sheep, "dog": args.dogs},
                seed=args.seed,
            )
            span = timedelta(minutes=args.duration_min)
            start = _parse_time(args.start) if args.start else datetime.now(UTC) - span
            end = start + span
        source = open_source(source_url, herd=herd, start=start, end=end)
        spool = Spool(args.spool or bc.spool_path)
    except (SourceError, SpoolError, ValueError) as exc:
        print(f"namazu bridge: {exc}", file=sys.stderr)
        return 2
    metrics_server = None
    if bc.metrics_port:
        from namazu.server.core.metrics import MetricsServerError, start_metrics_server

        try:
            metrics_server = start_metrics_server(bc.metrics_port)
        except MetricsServerError as exc:
            print(f"namazu bridge: {exc}", file=sys.stderr)
            return 1
    publisher = GatewayPublisher(
        farm,
        gateway,
        spool,
        args.mqtt_host or mc.host,
        args.mqtt_port or mc.port,
        client_id=mc.client_id,
        username=mc.username,
        password=mc.password,
        tls_ca=str(mc.ca_file) if mc.tls and mc.ca_file else None,
        max_inflight=args.max_inflight or bc.max_inflight,
        keepalive_s=args.keepalive_s,
        wait_for_ingest=bc.wait_for_ingest and not args.no_wait_for_ingest,
    ).start()
    bridge = Bridge(
        source, publisher, gateway, batch_samples=args.batch_samples or bc.batch_samples
    )
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in _STOP_SIGNALS}
    log.info("bridge running", extra={"source": source_url, "farm": farm, "gateway": gateway})
    try:
        bridge.run(stop)
        drained = publisher.wait_drained(args.drain_timeout_s)
    finally:
        publisher.stop()
        source.close()
        spool.close()
        if metrics_server is not None:
            metrics_server.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    summary = bridge.summary() | {"drained": drained}
    print(json.dumps(summary), flush=True)
    return 0
