"""LoRaWAN network server -> Namazu (``namazu bridge --source chirpstack|tts``).

Pipeline: ``NetworkServerLink`` (the network server's MQTT events, QoS 1, acknowledged by
hand) -> ``parse_event`` -> for ``up`` events on fPort 1: the device registry names the
farm, animal and species of the DevEUI, ``uplink_of`` decodes the payload (Namazu's
codec on ``data`` / ``frm_payload``, or the server's ``object`` / ``decoded_payload``)
-> one sample per minute -> ``GatewayPublisher`` of the farm (disk spool first, then
QoS 1, freed on ingest receipts) -> only then the network server's event is
acknowledged.

- Other event types (join, status, ack, txack, log, location, down/*) are recorded:
  counted by type and logged with their details; ``ack`` events also mark a downlink
  as received by the collar's radio.
- Malformed events, unknown devices and unknown ports are dead-lettered: one JSON line
  with the reason, the detail, the topic and the payload (base64) in the dead-letter
  file, fsynced before the event is acknowledged.
- The same uplink delivered twice (the network server publishing it again, or a
  redelivery after a reconnect) is spooled once: uplinks are remembered by DevEUI,
  frame counter and payload. Receptions by several radio gateways arrive in one event
  (the network server deduplicates them) and yield one uplink; its best reception and
  the number of gateways are kept.
- Frame counters: per collar, the distinct counters seen give the uplinks received and
  missing (``frame_counter_loss``); ``summary()`` reports them.
"""

from __future__ import annotations

import argparse
import base64
import collections
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from namazu.firmware_bridge.lorawan import (
    REQUESTS_FILE,
    STATUS_FILE,
    ActivityUplink,
    Device,
    IntervalRequest,
    LorawanError,
    NetworkEvent,
    downlink_request,
    encode_interval_downlink,
    frame_counter_loss,
    parse_event,
    parse_interval_requests,
    read_interval_status,
    read_registry,
    uplink_of,
    write_atomically,
)
from namazu.firmware_bridge.lorawan_mqtt import InboundEvent, NetworkServerLink
from namazu.firmware_bridge.publisher import GatewayPublisher
from namazu.firmware_bridge.spool import Spool, SpoolFull
from namazu.server.core.systemd import watchdog

log = logging.getLogger(__name__)

SERVERS = ("chirpstack", "tts")
#: Uplinks remembered to recognise a repeated delivery.
RECENT_UPLINKS = 200_000
#: Frame counters kept per collar for the loss count of ``summary()`` (the last ones).
COUNTERS_KEPT = 10_000


class LorawanBridge:
    """Network-server events -> spooled Namazu activity.

    link : a started ``NetworkServerLink`` (or anything with ``read``/``ack``/``publish``).
    registry : DevEUI -> Device.
    publisher_for : farm -> started ``GatewayPublisher`` (called once per farm).
    deadletter_path : JSON-lines file of refused events.
    application : the network server's application (for downlink topics).
    batch_samples : samples per published message.
    registry_path : the registry file, when there is one: it is read again when it
        changes (the panel's admin page edits it), and beside it the bridge reads the
        interval requests (``interval-requests.json``, written by the panel) and writes
        what became of them (``interval-status.json``: sent, radio ack, confirmed).
    """

    def __init__(
        self,
        link: Any,
        registry: dict[str, Device],
        publisher_for: Any,
        deadletter_path: str | Path,
        application: str = "+",
        batch_samples: int = 100,
        registry_path: str | Path | None = None,
    ) -> None:
        self.link = link
        self.server = link.server
        self.registry = registry
        self._publisher_for = publisher_for
        self.publishers: dict[str, GatewayPublisher] = {}
        self.deadletter_path = Path(deadletter_path)
        self.application = application
        self.batch_samples = batch_samples
        self.events: collections.Counter[str] = collections.Counter()
        self.deadlettered: collections.Counter[str] = collections.Counter()
        self.uplinks_spooled = 0
        self.uplinks_repeated = 0
        self.samples_spooled = 0
        self.dropped_spool_full = 0
        self.f_cnts: dict[str, collections.deque[int]] = collections.defaultdict(
            lambda: collections.deque(maxlen=COUNTERS_KEPT)
        )
        self.radio: dict[str, dict[str, Any]] = {}
        self.requests: dict[str, IntervalRequest] = {}
        #: DevEUI -> the network server's device id, learnt from its events (The Things
        #: Stack addresses downlinks by device id; the animal id is the fallback).
        self.device_ids: dict[str, str] = {}
        #: DevEUI -> what became of its last interval request (all times UTC epoch [ms]).
        self.downlinks: dict[str, dict[str, Any]] = {}
        self._recent: collections.OrderedDict[tuple, None] = collections.OrderedDict()
        self.registry_path = Path(registry_path) if registry_path else None
        if self.registry_path is not None:  # what earlier runs sent is not sent again
            self.downlinks = read_interval_status(self.registry_path.with_name(STATUS_FILE))
        self._mtimes: dict[str, float] = {}
        self._next_poll = 0.0

    # --- events -----------------------------------------------------------------------
    def handle(self, inbound: list[InboundEvent]) -> None:
        """Spool the uplinks of these events, record or dead-letter the rest, then
        acknowledge all of them to the network server's broker."""
        rows: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
        keys: dict[str, list[tuple]] = collections.defaultdict(list)
        held: dict[str, list[InboundEvent]] = collections.defaultdict(list)
        refused: list[dict[str, Any]] = []
        taken: list[InboundEvent] = []
        batch_keys: set[tuple] = set()
        for item in inbound:
            try:
                event = parse_event(self.server, item.topic, item.payload)
                self.events[event.kind] += 1
                if event.kind != "up":
                    self._record(event)
                    taken.append(item)
                    continue
                device = self._device(event)
                uplink = uplink_of(event)
            except LorawanError as exc:
                refused.append(_dead_letter(item, exc.reason, exc.detail))
                self.deadlettered[exc.reason] += 1
                taken.append(item)
                continue
            except Exception as exc:  # a poison event is one bad row, never a stopped bridge
                log.exception("network-server event could not be read")
                refused.append(
                    _dead_letter(item, "unreadable", f"{type(exc).__name__}: {exc}"[:300])
                )
                self.deadlettered["unreadable"] += 1
                taken.append(item)
                continue
            # The same uplink: same collar, frame counter and content (decoded, so that a
            # repeat with and without the server's decoded object is recognised too).
            key = (device.dev_eui, event.f_cnt, uplink)
            if key in self._recent or key in batch_keys:
                self.uplinks_repeated += 1
                taken.append(item)
                continue
            batch_keys.add(key)
            keys[device.farm].append(key)
            self._note_radio(device, event, uplink.config_id, uplink.interval_min)
            rows[device.farm].append(_uplink_entry(device, event, uplink))
            held[device.farm].append(item)
        if refused:
            self._write_dead_letters(refused)
        for farm, farm_rows in rows.items():
            try:
                self._spool(farm, farm_rows)
            except SpoolFull as exc:
                # Not acknowledged: the network server's broker keeps the events.
                self.dropped_spool_full += len(keys[farm])
                log.error("spool of farm %s full; events stay with the broker: %s", farm, exc)
                continue
            taken += held[farm]
            for key in keys[farm]:
                self._recent[key] = None
                self.f_cnts[key[0]].append(int(key[1]))
                self.uplinks_spooled += 1
            self.samples_spooled += sum(len(e["t_ms"]) for e in farm_rows)
        while len(self._recent) > RECENT_UPLINKS:
            self._recent.popitem(last=False)
        self.link.ack(taken)

    def _device(self, event: NetworkEvent) -> Device:
        device = self.registry.get(event.dev_eui or "")
        if device is None:
            raise LorawanError(
                "unknown_device", f"DevEUI {event.dev_eui} is not in the device registry"
            )
        return device

    def _spool(self, farm: str, entries: list[dict[str, Any]]) -> None:
        publisher = self.publishers.get(farm)
        if publisher is None:
            publisher = self.publishers[farm] = self._publisher_for(farm)
        publisher.publish_batches(group_uplinks(entries, self.batch_samples))

    def _note_radio(self, device: Device, event: NetworkEvent, config_id: int, interval: int):
        best = event.best
        self.radio[device.dev_eui] = {
            "f_cnt": event.f_cnt,
            "gateway": best.gateway if best else None,
            "rssi_dbm": best.rssi_dbm if best else None,
            "snr_db": best.snr_db if best else None,
            "gateways": len(event.receptions),
        }
        state = self.downlinks.get(device.dev_eui)
        if (
            state is not None
            and state["confirmed_at"] is None
            and config_id == state["config_id"]
            and interval == state["interval_min"]
        ):
            state["confirmed_at"] = _now_ms()
            self._write_status()
            log.info(
                "collar confirmed its new reporting interval",
                extra={"dev_eui": device.dev_eui, "interval_min": interval},
            )

    def _record(self, event: NetworkEvent) -> None:
        dev_eui = event.dev_eui or self._dev_eui_of(event.device)
        if event.dev_eui and event.device:
            self.device_ids[event.dev_eui] = event.device
        state = self.downlinks.get(dev_eui or "")
        acked = event.kind in ("ack", "down_ack") and event.acknowledged
        if acked and state is not None and state["radio_ack_at"] is None:
            state["radio_ack_at"] = _now_ms()
            self._write_status()
        log.info(
            "network-server event",
            extra={"kind": event.kind, "dev_eui": event.dev_eui, "detail": event.detail},
        )

    def _write_dead_letters(self, refused: list[dict[str, Any]]) -> None:
        self.deadletter_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.deadletter_path, "a", encoding="utf-8") as out:
            for entry in refused:
                out.write(json.dumps(entry) + "\n")
                log.warning(
                    "network-server event dead-lettered",
                    extra={"reason": entry["reason"], "detail": entry["detail"]},
                )
            out.flush()
            os.fsync(out.fileno())

    # --- downlink ---------------------------------------------------------------------
    def request_interval(
        self, dev_eui: str, interval_min: int, config_id: int | None = None, by: str = ""
    ) -> IntervalRequest:
        """Enqueue a confirmed interval downlink for a collar at its network server."""
        device = self.registry.get(dev_eui.upper())
        if device is None:
            raise LorawanError("unknown_device", f"DevEUI {dev_eui} is not in the device registry")
        if config_id is None:
            last = self.downlinks.get(device.dev_eui, {}).get("config_id")
            config_id = 1 if not isinstance(last, int) else last % 255 + 1
        request = IntervalRequest(device.dev_eui, interval_min, config_id, _now_ms(), by)
        self._send(request)
        return request

    def _send(self, request: IntervalRequest) -> None:
        device = self.registry[request.dev_eui]
        data = encode_interval_downlink(request.interval_min, request.config_id)
        topic, payload = downlink_request(
            self.server,
            self.application,
            device.dev_eui,
            self.device_ids.get(device.dev_eui, device.animal),
            data,
        )
        self.link.publish(topic, payload)
        self.requests[device.dev_eui] = request
        self.downlinks[device.dev_eui] = {
            "interval_min": request.interval_min,
            "config_id": request.config_id,
            "requested_at": request.requested_at,
            "sent_at": _now_ms(),
            "radio_ack_at": None,
            "confirmed_at": None,
        }
        self._write_status()
        log.info(
            "interval downlink enqueued",
            extra={"dev_eui": device.dev_eui, "interval_min": request.interval_min},
        )

    def _dev_eui_of(self, device_name: str | None) -> str | None:
        for dev_eui, name in self.device_ids.items():
            if name == device_name:
                return dev_eui
        for device in self.registry.values():
            if device.animal == device_name:
                return device.dev_eui
        return None

    # --- files shared with the panel --------------------------------------------------
    def _changed(self, path: Path) -> bool:
        try:
            mtime = path.stat().st_mtime_ns
        except FileNotFoundError:
            return False
        if self._mtimes.get(path.name) == mtime:
            return False
        self._mtimes[path.name] = mtime
        return True

    def poll_files(self) -> None:
        """Read the registry again when it changed, and send the interval requests the
        panel added since the last look (a bad file is logged and skipped)."""
        if self.registry_path is None:
            return
        try:
            if self._changed(self.registry_path):
                self.registry = read_registry(self.registry_path)
                log.info("device registry read", extra={"devices": len(self.registry)})
            requests_path = self.registry_path.with_name(REQUESTS_FILE)
            if self._changed(requests_path):
                wanted = parse_interval_requests(requests_path.read_text("utf-8"))
                for dev_eui, request in wanted.items():
                    sent = self.downlinks.get(dev_eui, {}).get("config_id")
                    if dev_eui in self.registry and sent != request.config_id:
                        self._send(request)
        except (LorawanError, OSError) as exc:
            log.error("LoRaWAN files not taken: %s", exc)

    def _write_status(self) -> None:
        if self.registry_path is not None:
            write_atomically(
                self.registry_path.with_name(STATUS_FILE),
                json.dumps({"collars": self.downlinks}, indent=2, sort_keys=True).encode(),
            )

    # --- reporting --------------------------------------------------------------------
    def loss(self) -> dict[str, dict[str, int]]:
        """Per collar (DevEUI): uplinks received and missing by their frame counters,
        over its last ``COUNTERS_KEPT`` uplinks (data health counts over its window)."""
        out = {}
        for dev_eui, counters in self.f_cnts.items():
            received, missing = frame_counter_loss(counters)
            out[dev_eui] = {"received": received, "missing": missing}
        return out

    def summary(self) -> dict[str, Any]:
        """Counters: events by type, dead letters by reason, uplinks spooled and
        repeated, samples spooled, uplinks missing by frame counter."""
        loss = self.loss()
        return {
            "events": dict(self.events),
            "deadlettered": dict(self.deadlettered),
            "uplinks_spooled": self.uplinks_spooled,
            "uplinks_repeated": self.uplinks_repeated,
            "samples_spooled": self.samples_spooled,
            "uplinks_missing": sum(v["missing"] for v in loss.values()),
            "collars_with_loss": sum(1 for v in loss.values() if v["missing"]),
            "dropped_spool_full": self.dropped_spool_full,
        }

    def run(self, stop: threading.Event, poll_s: float = 0.2) -> None:
        """Handle events until ``stop`` is set."""
        while not stop.is_set():
            watchdog.beat("lorawan-bridge")
            if time.monotonic() >= self._next_poll:
                self.poll_files()
                self._next_poll = time.monotonic() + 1.0
            items = self.link.read(poll_s)
            if items:
                self.handle(items)
        watchdog.forget("lorawan-bridge")


def _uplink_entry(device: Device, event: NetworkEvent, uplink: ActivityUplink) -> dict[str, Any]:
    """One uplink as an animal entry of the activity payload, with its radio metadata."""
    radio: dict[str, Any] = {"t_ms": uplink.base_s * 1000, "f_cnt": event.f_cnt or 0}
    best = event.best
    if best is not None:
        radio["radio_gateway"] = best.gateway
        if best.rssi_dbm is not None and -200 <= best.rssi_dbm <= 50:
            radio["rssi_dbm"] = best.rssi_dbm
        if best.snr_db is not None and -50 <= best.snr_db <= 50:
            radio["snr_db"] = best.snr_db
    radio["gateways"] = len(event.receptions)
    entry: dict[str, Any] = {
        "animal": device.animal,
        "species": device.species,
        "t_ms": uplink.times_ms(),
        "odba": list(uplink.odba),
        "vedba": list(uplink.vedba),
        "uplinks": [radio],
    }
    if uplink.battery_v is not None:
        entry["battery_v"] = uplink.battery_v
    return entry


def group_uplinks(entries: list[dict[str, Any]], max_samples: int) -> list[list[dict[str, Any]]]:
    """Uplink entries (see ``_uplink_entry``) merged per animal into messages of at most
    ``max_samples`` samples (an uplink is never split; one larger than the limit goes
    alone)."""
    messages: list[list[dict[str, Any]]] = []
    current: dict[str, dict[str, Any]] = {}
    count = 0
    for entry in entries:
        n = len(entry["t_ms"])
        if current and count + n > max_samples:
            messages.append(list(current.values()))
            current, count = {}, 0
        merged = current.get(entry["animal"])
        if merged is None:
            current[entry["animal"]] = {
                k: list(v) if isinstance(v, list) else v for k, v in entry.items()
            }
        else:
            for key in ("t_ms", "odba", "vedba", "uplinks"):
                merged[key] += entry[key]
            if "battery_v" in entry:
                merged["battery_v"] = entry["battery_v"]
        count += n
    if current:
        messages.append(list(current.values()))
    return messages


def _dead_letter(item: InboundEvent, reason: str, detail: str) -> dict[str, Any]:
    return {
        "reason": reason,
        "detail": detail,
        "topic": item.topic[:300],
        "payload_b64": base64.b64encode(item.payload[:65_536]).decode("ascii"),
        "received_ms": _now_ms(),
    }


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def spool_path_for(base: str | Path, farm: str) -> Path:
    """The spool file of one farm: ``base``'s name with ``-{farm}`` before the suffix."""
    base = Path(base)
    return base.with_name(f"{base.stem}-{farm}{base.suffix or '.sqlite'}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The LoRaWAN options of ``namazu bridge``."""
    g = p.add_argument_group("LoRaWAN network server (--source chirpstack|tts)")
    g.add_argument("--ns-host", default="127.0.0.1", help="network server's MQTT broker")
    g.add_argument("--ns-port", type=int, default=1883)
    g.add_argument("--ns-username")
    g.add_argument("--ns-password-env", help="environment variable holding the password")
    g.add_argument("--ns-ca", help="CA file: connect with TLS (e.g. port 8883)")
    g.add_argument(
        "--ns-application",
        default="+",
        help="ChirpStack application id or TTS app@tenant (default: all)",
    )
    g.add_argument(
        "--registry",
        help="device registry (TOML, [[device]] tables; default web.lorawan_registry, the "
        "file the panel's admin page edits)",
    )
    g.add_argument("--deadletter", help="dead-letter file (JSON lines)")


def run_from_args(args: argparse.Namespace, config: Any) -> int:
    """``namazu bridge --source chirpstack|tts``: run until SIGTERM/SIGINT."""
    bc, mc = config.bridge, config.mqtt
    gateway = args.gateway or bc.gateway
    registry_path = Path(args.registry or config.web.lorawan_registry)
    try:
        registry = read_registry(registry_path)
    except LorawanError as exc:
        print(f"namazu bridge: {exc}", file=sys.stderr)
        return 2
    spool_base = Path(args.spool or bc.spool_path)
    spools: list[Spool] = []

    def publisher_for(farm: str) -> GatewayPublisher:
        spool = Spool(spool_path_for(spool_base, farm))
        spools.append(spool)
        return GatewayPublisher(
            farm,
            gateway,
            spool,
            args.mqtt_host or mc.host,
            args.mqtt_port or mc.port,
            client_id=f"namazu-gw-{farm}-{gateway}",
            username=mc.username,
            password=mc.password,
            tls_ca=str(mc.ca_file) if mc.tls and mc.ca_file else None,
            max_inflight=args.max_inflight or bc.max_inflight,
            wait_for_ingest=bc.wait_for_ingest and not args.no_wait_for_ingest,
            confirm=args.confirm or bc.confirm,
            receipt_timeout_s=bc.receipt_timeout_s,
        ).start()

    metrics_server = None
    if bc.metrics_port:  # the spool and publisher metrics of every farm's publisher
        from namazu.server.core.metrics import MetricsServerError, start_metrics_server

        try:
            metrics_server = start_metrics_server(bc.metrics_port, families=("bridge",))
        except MetricsServerError as exc:
            print(f"namazu bridge: {exc}", file=sys.stderr)
            return 1
    link = NetworkServerLink(
        args.source,
        args.ns_host,
        args.ns_port,
        application=args.ns_application,
        client_id=f"namazu-lorawan-{gateway}",
        username=args.ns_username,
        password=os.environ.get(args.ns_password_env) if args.ns_password_env else None,
        tls_ca=args.ns_ca,
    ).start()
    bridge = LorawanBridge(
        link,
        registry,
        publisher_for,
        args.deadletter or spool_base.with_name("lorawan-deadletter.jsonl"),
        application=args.ns_application,
        batch_samples=args.batch_samples or bc.batch_samples,
        registry_path=registry_path,
    )
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    log.info("LoRaWAN bridge running", extra={"server": args.source, "devices": len(registry)})
    watchdog.start_from_environment(f"LoRaWAN bridge ({args.source}) running")
    try:
        bridge.run(stop)
        drained = all(p.wait_drained(args.drain_timeout_s) for p in bridge.publishers.values())
    finally:
        watchdog.stop()
        link.stop()
        for publisher in bridge.publishers.values():
            publisher.stop()
        for spool in spools:
            spool.close()
        if metrics_server is not None:
            metrics_server.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(json.dumps(bridge.summary() | {"all_confirmed": drained}), flush=True)
    return 0 if drained else 3
