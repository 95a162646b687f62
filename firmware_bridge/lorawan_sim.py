"""A simulated LoRaWAN fleet: the simulator's herd as collars behind a network server.

Each collar sends one compact activity uplink every ``interval_min`` minutes, carrying
that many per-minute summaries of the simulated herd; the uplink becomes the network
server's ``up`` event in its documented JSON (ChirpStack v4 or The Things Stack v3),
with one to three radio gateways' receptions. Radio loss drops an uplink after its
frame counter was used (so the gap is visible); a repeat publishes the uplink in a second
event (other gateways, another event id, as when a reception arrives after the network
server's deduplication window). Everything is decided by a seeded generator, so a test
knows exactly what was lost and what was sent.
"""

from __future__ import annotations

import argparse
import base64
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import orjson

from namazu.firmware_bridge.lorawan import (
    UPLINK_FPORT,
    ActivityUplink,
    Device,
    encode_uplink,
    format_registry,
    uplink_to_object,
)
from namazu.firmware_bridge.simulator import Herd


def dev_eui_of(index: int, seed: int = 0) -> str:
    """The DevEUI of simulated collar ``index`` (an EUI-64 under a private prefix)."""
    return f"70B3D5F{seed % 16:01X}{index:08X}".upper()


def _iso(ms: int) -> str:
    return (
        datetime.fromtimestamp(ms / 1000, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


@dataclass
class SentUplink:
    """What the fleet sent: collar, frame counter, sample times [UTC ms], lost on air?"""

    dev_eui: str
    animal: str
    f_cnt: int
    t_ms: list[int]
    lost: bool


@dataclass
class LorawanFleet:
    """A fleet of ``collars`` simulated collars of one farm.

    server : "chirpstack" or "tts"; application : ChirpStack application id or TTS
    ``app@tenant``; interval_min : minutes per uplink (1..10); loss : probability that
    an uplink is lost on air [-]; repeat : probability that an event is published twice
    [-]; decoded : put the network server's decoded object in the event instead of the
    raw payload (as when the codec in deploy/lorawan/ runs there).
    """

    farm: str
    collars: int
    server: str = "chirpstack"
    application: str = "namazu-app"
    seed: int = 0
    interval_min: int = 10
    loss: float = 0.0
    repeat: float = 0.0
    decoded: bool = False
    species: tuple[str, ...] = ("cow", "sheep", "dog")
    sent: list[SentUplink] = field(default_factory=list)

    def __post_init__(self) -> None:
        counts = {s: 0 for s in self.species}
        for i in range(self.collars):
            counts[self.species[i % len(self.species)]] += 1
        self.herd = Herd(self.farm, "lora", counts, seed=self.seed, resolution_s=60)
        self.devices = [
            Device(dev_eui_of(i, self.seed), self.farm, animal, species)
            for i, (animal, species) in enumerate(self.herd.animals)
        ]
        self._rng = np.random.default_rng(self.seed)

    def registry_text(self) -> str:
        """The fleet's device registry (TOML)."""
        return format_registry(self.devices)

    def events(self, start_ms: int, end_ms: int) -> Iterator[tuple[str, bytes]]:
        """(topic, payload) of every event over [start, end), uplink window by window."""
        step = self.interval_min * 60_000
        start_ms -= start_ms % 60_000
        frame = self.herd.activity(start_ms, end_ms, with_battery=True)
        by_animal = {a: g for a, g in frame.groupby("animal")}
        index = {d.animal: i for i, d in enumerate(self.devices)}
        f_cnt = dict.fromkeys(index, 0)
        for window in range(start_ms, end_ms - step + 1, step):
            for device in self.devices:
                rows = by_animal[device.animal]
                part = rows[(rows["t_ms"] >= window) & (rows["t_ms"] < window + step)]
                # The collar's own minute grid (the simulator's t_ms carries no drift here).
                uplink = ActivityUplink(
                    window // 1000,
                    f_cnt[device.animal] % 65_536,
                    float(part["battery_v"].iloc[-1]),
                    0,
                    tuple(float(x) for x in part["odba"].to_numpy()[: self.interval_min]),
                    tuple(float(x) for x in part["vedba"].to_numpy()[: self.interval_min]),
                )
                counter = f_cnt[device.animal]
                f_cnt[device.animal] += 1
                lost = bool(self._rng.random() < self.loss)
                data = encode_uplink(uplink)
                self.sent.append(
                    SentUplink(device.dev_eui, device.animal, counter, uplink.times_ms(), lost)
                )
                if lost:
                    continue
                yield self.event(device, counter, data, window + step)
                if self._rng.random() < self.repeat:
                    # Heard again after the network server's deduplication window: a
                    # second event, other gateways, another event id, the same uplink.
                    yield self.event(device, counter, data, window + step + 250)

    def event(self, device: Device, f_cnt: int, data: bytes, at_ms: int) -> tuple[str, bytes]:
        """The network server's ``up`` event of one uplink."""
        n_gateways = int(self._rng.integers(1, 4))
        receptions = [
            (f"{0xA840410000000000 + g:016x}", float(self._rng.normal(-105, 8)),
             float(np.round(self._rng.normal(2, 5), 1)))
            for g in range(n_gateways)
        ]  # fmt: skip
        obj = uplink_to_object_bytes(data) if self.decoded else None
        if self.server == "chirpstack":
            doc = {
                "deduplicationId": str(uuid.UUID(int=int(self._rng.integers(0, 2**63)))),
                "time": _iso(at_ms),
                "deviceInfo": {
                    "tenantId": "52f14cd4-c6f1-4fbd-8f87-4025e1d49242",
                    "tenantName": "Namazu",
                    "applicationId": self.application,
                    "applicationName": "collars",
                    "deviceProfileName": "namazu-collar",
                    "deviceName": device.animal,
                    "devEui": device.dev_eui.lower(),
                    "tags": {},
                },
                "devAddr": f"{int(device.dev_eui[-8:], 16) & 0x01FFFFFF:08x}",
                "adr": True,
                "dr": 0,
                "fCnt": f_cnt,
                "fPort": UPLINK_FPORT,
                "confirmed": False,
                "rxInfo": [
                    {
                        "gatewayId": gw,
                        "uplinkId": 1000 + k,
                        "rssi": round(rssi),
                        "snr": snr,
                        "channel": 2,
                        "location": {},
                        "context": "AAAAAA==",
                        "metadata": {},
                    }
                    for k, (gw, rssi, snr) in enumerate(receptions)
                ],  # fmt: skip
                "txInfo": {
                    "frequency": 868_500_000,
                    "modulation": {
                        "lora": {"bandwidth": 125_000, "spreadingFactor": 12, "codeRate": "CR_4_5"}
                    },
                },
            }
            if obj is None:
                doc["data"] = base64.b64encode(data).decode("ascii")
            else:
                doc["object"] = obj
            topic = f"application/{self.application}/device/{device.dev_eui.lower()}/event/up"
            return topic, orjson.dumps(doc)
        up: dict = {
            "session_key_id": "AYa2hQp1pI0AbnTT",
            "f_port": UPLINK_FPORT,
            "rx_metadata": [
                {
                    "gateway_ids": {"gateway_id": f"gw-{gw[-4:]}", "eui": gw.upper()},
                    "time": _iso(at_ms),
                    "rssi": round(rssi),
                    "channel_rssi": round(rssi),
                    "snr": snr,
                    "uplink_token": "CiIKIAoUZXUx",
                }
                for gw, rssi, snr in receptions
            ],  # fmt: skip
            "settings": {
                "data_rate": {"lora": {"bandwidth": 125_000, "spreading_factor": 12}},
                "frequency": "868500000",
            },
            "received_at": _iso(at_ms),
            "consumed_airtime": "2.793472s",
        }
        if f_cnt:  # The Things Stack leaves zero values out
            up["f_cnt"] = f_cnt
        if obj is None:
            up["frm_payload"] = base64.b64encode(data).decode("ascii")
        else:
            up["decoded_payload"] = obj
        doc = {
            "end_device_ids": {
                "device_id": device.animal,
                "application_ids": {"application_id": self.application.split("@")[0]},
                "dev_eui": device.dev_eui,
                "join_eui": "0000000000000000",
                "dev_addr": f"{int(device.dev_eui[-8:], 16) & 0x01FFFFFF:08X}",
            },
            "correlation_ids": [f"as:up:{uuid.UUID(int=int(self._rng.integers(0, 2**63))).hex}"],
            "received_at": _iso(at_ms),
            "uplink_message": up,
        }
        return f"v3/{self.application}/devices/{device.animal}/up", orjson.dumps(doc)


def uplink_to_object_bytes(data: bytes) -> dict:
    """The decoded object the network server's codec makes of ``data``."""
    from namazu.firmware_bridge.lorawan import decode_uplink

    return uplink_to_object(decode_uplink(data))


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The LoRaWAN options of ``namazu simulate``."""
    g = p.add_argument_group("LoRaWAN fleet (--lorawan chirpstack|tts)")
    g.add_argument(
        "--lorawan",
        choices=("chirpstack", "tts"),
        help="publish the herd as LoRaWAN collars' network-server events on the broker "
        "at --mqtt-host/--mqtt-port (standing in for the network server's broker)",
    )
    g.add_argument("--collars", type=int, default=200, help="collars in the fleet")
    g.add_argument("--ns-application", default="namazu-app", help="application id / app@tenant")
    g.add_argument("--interval-min", type=int, default=10, help="minutes per uplink (1..10)")
    g.add_argument("--radio-loss", type=float, default=0.0, help="uplinks lost on air [0..1)")
    g.add_argument("--repeat", type=float, default=0.0, help="uplinks heard twice [0..1)")
    g.add_argument("--registry-out", help="write the fleet's device registry (TOML) here")


def publish_fleet(args: argparse.Namespace, start: datetime, span: timedelta) -> int:
    """``namazu simulate --lorawan ...``: publish a fleet's events; print what was sent."""
    import sys

    from namazu.firmware_bridge.lorawan_mqtt import publish_events

    try:
        fleet = LorawanFleet(
            args.farm, args.collars, server=args.lorawan, application=args.ns_application,
            seed=args.seed, interval_min=args.interval_min, loss=args.radio_loss,
            repeat=args.repeat,
        )  # fmt: skip
        if not 1 <= args.interval_min <= 10 or not 0 <= args.radio_loss < 1:
            raise ValueError("--interval-min must be 1..10 and --radio-loss in [0, 1)")
    except ValueError as exc:
        print(f"namazu simulate: {exc}", file=sys.stderr)
        return 2
    if args.registry_out:
        Path(args.registry_out).write_text(fleet.registry_text(), encoding="utf-8")
    start_ms = int(start.timestamp() * 1000)
    events = fleet.events(start_ms, start_ms + int(span.total_seconds() * 1000))
    published = publish_events(args.mqtt_host, args.mqtt_port, events)
    lost = sum(u.lost for u in fleet.sent)
    print(json.dumps({"collars": args.collars, "uplinks": len(fleet.sent), "lost_on_air": lost,
                      "events_published": published}))  # fmt: skip
    return 0
