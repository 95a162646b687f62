"""The gateway bridge (``namazu bridge``): collar frames -> activity -> spooled MQTT.

Pipeline: source (serial / UDP / simulator) -> ``decode_frame`` (a rejected frame is
counted and logged with its reason, never fatal) -> per-burst ODBA/VeDBA
(``processing.activity_from_frames``) -> batches of ``batch_samples`` samples ->
``GatewayPublisher`` (disk spool first, then QoS 1).

Group commit: decoded frames wait at most ``flush_interval_s`` (50 ms by default) and
are then spooled in one fsynced transaction; only after that commit are they
acknowledged to the source (``FrameSource.acknowledge``), so a frame a collar saw
acknowledged is on disk, and a frame lost with a killed bridge was never acknowledged
(a collar that keeps unacknowledged frames resends it). A frame resent although it was
already spooled (its acknowledgement got lost) is acknowledged again, not spooled twice
(recently spooled frames are remembered; older repeats are absorbed by the server's
idempotent writes). When the spool refuses data for its disk budget, the frames are
dropped unacknowledged and counted (``dropped_spool_full``).
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

from namazu.firmware_bridge.frame import CollarFrame, FrameError, FrameKey, frame_key
from namazu.firmware_bridge.payload import batches_from_frame
from namazu.firmware_bridge.processing import activity_from_frames
from namazu.firmware_bridge.publisher import GatewayPublisher
from namazu.firmware_bridge.sources import FrameSource, SourceError, open_source
from namazu.firmware_bridge.spool import SpoolFull
from namazu.server.core.cliargs import number_in_range
from namazu.server.core.systemd import watchdog

log = logging.getLogger(__name__)

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

try:  # metrics are optional on a gateway without the server extras
    from namazu.server.core.metrics import BRIDGE_FRAMES_DROPPED
except ImportError:  # pragma: no cover
    BRIDGE_FRAMES_DROPPED = None  # type: ignore[assignment]

#: Spooled frames remembered so that a resent one is acknowledged, not spooled again.
RECENT_FRAMES = 100_000


class Bridge:
    """Wire a frame source to a publisher.

    source : a ``FrameSource``.
    publisher : a started ``GatewayPublisher``.
    gateway : gateway id (names the animals).
    batch_samples : samples per published message.
    flush_interval_s : longest time a decoded frame waits before it is spooled and
        acknowledged (the group commit) [s].
    """

    def __init__(
        self,
        source: FrameSource,
        publisher: GatewayPublisher,
        gateway: str,
        batch_samples: int = 100,
        flush_interval_s: float = 0.05,
    ) -> None:
        self.source = source
        self.publisher = publisher
        self.gateway = gateway
        self.batch_samples = batch_samples
        self.flush_interval_s = flush_interval_s
        self.rejected: collections.Counter[str] = collections.Counter()
        self.frames_ok = 0
        self.frames_repeated = 0
        self.dropped_spool_full = 0
        self.samples_spooled = 0
        self.messages_spooled = 0
        self._pending: list[CollarFrame] = []
        self._repeats: list[CollarFrame] = []
        self._oldest_pending = 0.0
        self._spool_full = False
        self._recent: collections.OrderedDict[FrameKey, int] = collections.OrderedDict()

    def handle(self, items: list[CollarFrame | FrameError]) -> None:
        """Take decoded frames and rejects; spool when a batch is full or due."""
        for item in items:
            if isinstance(item, FrameError):
                self.rejected[item.reason] += 1
                log.warning(
                    "collar frame rejected",
                    extra={"reason": item.reason, "detail": item.detail},
                )
                continue
            if self._recent.get(frame_key(item)) == item.t0_ms:
                self.frames_repeated += 1
                self._repeats.append(item)
                continue
            self.frames_ok += 1
            if not self._pending:
                self._oldest_pending = time.monotonic()
            self._pending.append(item)
        if self._repeats or len(self._pending) >= self.batch_samples * 10 or self.due_in() == 0.0:
            self.flush()

    def due_in(self) -> float | None:
        """Seconds until the pending frames must be spooled (None: nothing pending)."""
        if not self._pending:
            return None
        return max(0.0, self._oldest_pending + self.flush_interval_s - time.monotonic())

    def flush(self) -> None:
        """Spool every pending frame's activity now, then acknowledge the frames."""
        repeats, self._repeats = self._repeats, []
        frames, self._pending = self._pending, []
        if frames:
            df = activity_from_frames(frames, self.gateway)
            batches = list(
                batches_from_frame(
                    df, self.publisher.farm, self.gateway, max_samples=self.batch_samples
                )
            )
            try:
                self.publisher.publish_batches(batches)
            except SpoolFull as exc:
                self.dropped_spool_full += len(frames)
                if BRIDGE_FRAMES_DROPPED is not None:
                    BRIDGE_FRAMES_DROPPED.inc(len(frames))
                if not self._spool_full:  # once per episode, not every 50 ms
                    log.error("spool full: frames are dropped unacknowledged: %s", exc)
                self._spool_full = True
                frames = []
            else:
                if self._spool_full:
                    log.warning(
                        "spool has room again; %d frames were dropped meanwhile",
                        self.dropped_spool_full,
                    )
                self._spool_full = False
                self.samples_spooled += len(df)
                self.messages_spooled += len(batches)
                for frame in frames:
                    self._recent[frame_key(frame)] = frame.t0_ms
                while len(self._recent) > RECENT_FRAMES:
                    self._recent.popitem(last=False)
        if frames or repeats:
            self.source.acknowledge(frames + repeats)

    def run(self, stop: threading.Event | None = None, poll_s: float = 0.2) -> None:
        """Read until the source is exhausted or ``stop`` is set, then flush."""
        stop = stop or threading.Event()
        while not stop.is_set() and not self.source.exhausted:
            watchdog.beat("bridge")
            due = self.due_in()
            self.handle(self.source.read(poll_s if due is None else due))
        watchdog.forget("bridge")
        self.flush()

    def summary(self) -> dict:
        """Counters: frames accepted, repeated and rejected (by reason), frames dropped
        for a full spool, samples and messages spooled."""
        return {
            "frames_ok": self.frames_ok,
            "frames_repeated": self.frames_repeated,
            "rejected": dict(self.rejected),
            "dropped_spool_full": self.dropped_spool_full,
            "samples_spooled": self.samples_spooled,
            "messages_spooled": self.messages_spooled,
        }


def build_parser() -> argparse.ArgumentParser:
    """Options of ``namazu bridge``."""
    p = argparse.ArgumentParser(
        prog="namazu bridge", description="Collar frames -> activity -> spooled MQTT."
    )
    p.add_argument("--config", help="TOML file (default $NAMAZU_CONFIG)")
    p.add_argument(
        "--source",
        help="udp://HOST:PORT | serial:///dev/X[?baud=N] | simulator | chirpstack | tts "
        "(a LoRaWAN network server's MQTT integration, see docs/lorawan.md)",
    )
    p.add_argument("--farm")
    p.add_argument("--gateway")
    p.add_argument("--mqtt-host")
    p.add_argument("--mqtt-port", type=number_in_range(int, 1, 65535))
    p.add_argument("--spool", help="SQLite spool file")
    p.add_argument(
        "--spool-max-mb", type=number_in_range(float, 0), help="spool disk budget [MB of payload]"
    )
    p.add_argument(
        "--confirm",
        choices=("receipt", "puback"),
        help="free spooled messages on an ingest receipt (stored) or on the broker's "
        "PUBACK (overrides bridge.confirm)",
    )
    p.add_argument("--batch-samples", type=number_in_range(int, 1))
    p.add_argument("--max-inflight", type=number_in_range(int, 1, 65535))
    p.add_argument("--keepalive-s", type=number_in_range(int, 5, 65535), default=30)
    p.add_argument("--drain-timeout-s", type=number_in_range(float, 0), default=30.0)
    p.add_argument(
        "--no-wait-for-ingest",
        action="store_true",
        help="send at once after a (re)connect, without waiting for an ingest heartbeat "
        "(overrides bridge.wait_for_ingest)",
    )
    sim = p.add_argument_group("simulator source")
    animals = number_in_range(int, 0, 100_000)
    sim.add_argument("--cows", type=animals, default=10)
    sim.add_argument("--sheep", type=animals, default=0)
    sim.add_argument("--dogs", type=animals, default=0)
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--start", help="UTC start, ISO 8601 (default: now - duration)")
    sim.add_argument(
        "--duration-min", type=number_in_range(float, 0, exclusive_minimum=True), default=60.0
    )
    from namazu.firmware_bridge.lorawan_bridge import add_arguments

    add_arguments(p)
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
    if source_url in ("chirpstack", "tts"):
        from namazu.firmware_bridge.lorawan_bridge import run_from_args

        args.source = source_url
        return run_from_args(args, config)
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
        budget_mb = args.spool_max_mb if args.spool_max_mb is not None else bc.spool_max_mb
        spool = Spool(args.spool or bc.spool_path, max_bytes=int(budget_mb * 1e6) or None)
    except (SourceError, SpoolError, ValueError) as exc:
        print(f"namazu bridge: {exc}", file=sys.stderr)
        return 2
    metrics_server = None
    if bc.metrics_port:
        from namazu.server.core.metrics import MetricsServerError, start_metrics_server

        try:
            metrics_server = start_metrics_server(bc.metrics_port, families=("bridge",))
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
        confirm=args.confirm or bc.confirm,
        receipt_timeout_s=bc.receipt_timeout_s,
    ).start()
    bridge = Bridge(
        source, publisher, gateway, batch_samples=args.batch_samples or bc.batch_samples
    )
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in _STOP_SIGNALS}
    log.info("bridge running", extra={"source": source_url, "farm": farm, "gateway": gateway})
    watchdog.start_from_environment(f"bridge {farm}/{gateway} running")
    try:
        bridge.run(stop)
        drained = publisher.wait_drained(args.drain_timeout_s)
    finally:
        watchdog.stop()
        publisher.stop()
        source.close()
        unconfirmed = spool.depth()
        spool.close()
        if metrics_server is not None:
            metrics_server.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    # Honest wording: "confirmed" means stored by ingest (receipt) or, with
    # confirm=puback, only accepted by the broker; the rest stays in the spool.
    summary = bridge.summary() | {
        "confirmation": publisher.confirm,
        "messages_confirmed": publisher.stats["confirmed"],
        "messages_unconfirmed": unconfirmed,
        "all_confirmed": drained,
    }
    print(json.dumps(summary), flush=True)
    if not drained:
        confirmed_by = "stored by ingest" if publisher.confirm == "receipt" else "accepted"
        print(
            f"namazu bridge: stopped with {unconfirmed} messages still spooled, not confirmed "
            f"as {confirmed_by} (broker {publisher.host}:{publisher.port}); they are sent "
            "again after the next start",
            file=sys.stderr,
        )
        return 3  # namazu.server.cli.EXIT_UNDRAINED
    return 0
