"""LoRaWAN collars: the compact activity uplink, the interval downlink, the network
servers' event JSON and the device registry. Pure: no sockets, no MQTT (the
subscription lives in ``lorawan_mqtt.py``).

Compact activity uplink (fPort 1, 13..49 bytes, big-endian; see docs/lorawan.md)::

    0      version = 1
    1..4   base time: UTC epoch seconds of the first summary's minute [s]
    5..6   uplink sequence number (wraps at 65,536)
    7      battery: 0 = not measured, else 2.00 V + value x 0.01 V
    8      configuration id: the last interval downlink the collar applied (0 = factory)
    9..    1..10 summaries of 4 bytes, one per minute from the base time:
           ODBA and VeDBA means of the minute, uint16 each, in units of 0.1 mg
           (saturating at 6.5535 g)

The number of summaries is the collar's reporting interval in minutes (one uplink
every n minutes, n = 1..10). Interval downlink (fPort 10, 3 bytes): version = 1,
interval [min], configuration id (1..255).

Event parsers read ChirpStack v4 (``application/{id}/device/{dev_eui}/event/{type}``,
protobuf-JSON camelCase) and The Things Stack v3 (``v3/{app}@{tenant}/devices/{id}/
{type}``, snake_case, zero values left out) into one ``NetworkEvent``.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import struct
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

UPLINK_VERSION = 1
UPLINK_FPORT = 1
DOWNLINK_FPORT = 10
HEADER_BYTES = 9
SUMMARY_BYTES = 4
#: Summaries one uplink carries at most (49 bytes; the smallest data rates allow 51).
MAX_SUMMARIES = 10
MAX_UPLINK_BYTES = HEADER_BYTES + SUMMARY_BYTES * MAX_SUMMARIES
#: Activity resolution on air [g per unit] and the largest value [g].
ACTIVITY_STEP_G = 1e-4
MAX_ACTIVITY_G = 65_535 * ACTIVITY_STEP_G
BATTERY_BASE_V = 2.0
BATTERY_STEP_V = 0.01
SUMMARY_STEP_S = 60
#: LoRaWAN frame counters are 32 bits (16 on air, extended by the network server).
FCNT_MODULUS = 2**32

SPECIES = ("cow", "sheep", "dog")
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_EUI = re.compile(r"[0-9A-Fa-f]{16}")


class LorawanError(ValueError):
    """A LoRaWAN payload, event or registry entry is malformed.

    reason : machine-readable code; detail : one line naming what is wrong.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


# --- the compact activity uplink --------------------------------------------------------


@dataclass(frozen=True)
class ActivityUplink:
    """One decoded activity uplink.

    base_s : UTC epoch of the first summary's minute [s].
    seq : the collar's uplink sequence number (0..65,535).
    battery_v : battery voltage [V], None when not measured.
    config_id : id of the last interval downlink the collar applied (0 = factory).
    odba, vedba : per-minute means [g], one per minute from ``base_s``.
    """

    base_s: int
    seq: int
    battery_v: float | None
    config_id: int
    odba: tuple[float, ...]
    vedba: tuple[float, ...]

    @property
    def interval_min(self) -> int:
        """The reporting interval in force [min] (= summaries per uplink)."""
        return len(self.odba)

    def times_ms(self) -> list[int]:
        """UTC epoch of each summary's minute [ms]."""
        return [(self.base_s + SUMMARY_STEP_S * i) * 1000 for i in range(len(self.odba))]


def _activity_units(value: float, where: str) -> int:
    if not math.isfinite(value) or value < 0:
        raise LorawanError("bad_value", f"{where} = {value!r} g must be finite and >= 0")
    return min(65_535, math.floor(value * 10_000 + 0.5))  # as JavaScript's Math.round


def encode_uplink(uplink: ActivityUplink) -> bytes:
    """The uplink's bytes (13..49). Activity above 6.5535 g is sent as 6.5535 g;
    battery is rounded to 10 mV and clipped to 2.01..4.55 V. Raises LorawanError
    for values that cannot be expressed."""
    n = len(uplink.odba)
    if not 1 <= n <= MAX_SUMMARIES or len(uplink.vedba) != n:
        raise LorawanError(
            "bad_length", f"{n} odba / {len(uplink.vedba)} vedba summaries; need 1..10 each, equal"
        )
    if not 0 <= uplink.base_s < 2**32:
        raise LorawanError("bad_value", f"base time {uplink.base_s} s is outside uint32")
    if not 0 <= uplink.seq < 2**16 or not 0 <= uplink.config_id < 256:
        raise LorawanError("bad_value", f"seq {uplink.seq} / config_id {uplink.config_id}")
    battery = 0
    if uplink.battery_v is not None:
        if not math.isfinite(uplink.battery_v):
            raise LorawanError("bad_value", "battery_v is not finite")
        battery = min(255, max(1, math.floor((uplink.battery_v - BATTERY_BASE_V) * 100 + 0.5)))
    out = bytearray(
        struct.pack(">BIHBB", UPLINK_VERSION, uplink.base_s, uplink.seq, battery, uplink.config_id)
    )
    for i in range(n):
        out += struct.pack(
            ">HH",
            _activity_units(uplink.odba[i], f"odba[{i}]"),
            _activity_units(uplink.vedba[i], f"vedba[{i}]"),
        )
    return bytes(out)


def decode_uplink(data: bytes) -> ActivityUplink:
    """Decode the compact uplink. Raises LorawanError naming the fault."""
    n_bytes = len(data)
    if n_bytes < HEADER_BYTES + SUMMARY_BYTES or n_bytes > MAX_UPLINK_BYTES:
        raise LorawanError(
            "bad_length", f"uplink of {n_bytes} bytes; expected {HEADER_BYTES + 4}..49"
        )
    if (n_bytes - HEADER_BYTES) % SUMMARY_BYTES:
        raise LorawanError("bad_length", f"uplink of {n_bytes} bytes is not 9 + 4 x summaries")
    version, base_s, seq, battery, config_id = struct.unpack_from(">BIHBB", data)
    if version != UPLINK_VERSION:
        raise LorawanError("bad_version", f"uplink version {version}; this decoder reads 1")
    odba, vedba = [], []
    for offset in range(HEADER_BYTES, n_bytes, SUMMARY_BYTES):
        o, v = struct.unpack_from(">HH", data, offset)
        # Divisions (not products) so that the values match the JavaScript codec's bit
        # for bit: both give the double nearest to the decimal.
        odba.append(o / 10_000)
        vedba.append(v / 10_000)
    battery_v = None if battery == 0 else (200 + battery) / 100
    return ActivityUplink(base_s, seq, battery_v, config_id, tuple(odba), tuple(vedba))


def uplink_to_object(uplink: ActivityUplink) -> dict[str, Any]:
    """The decoded form the JavaScript codec returns (``object`` / ``decoded_payload``)."""
    return {
        "version": UPLINK_VERSION,
        "base_time_s": uplink.base_s,
        "seq": uplink.seq,
        "battery_v": uplink.battery_v,
        "config_id": uplink.config_id,
        "interval_min": uplink.interval_min,
        "odba_g": list(uplink.odba),
        "vedba_g": list(uplink.vedba),
    }


def uplink_from_object(obj: Any) -> ActivityUplink:
    """Read a network server's already-decoded payload (the JavaScript codec's output).
    Raises LorawanError naming the fault."""
    if not isinstance(obj, dict):
        raise LorawanError("bad_object", "decoded payload is not an object")
    if obj.get("version") != UPLINK_VERSION:
        raise LorawanError("bad_version", f"decoded payload version {obj.get('version')!r}")

    def integer(key: str, high: int) -> int:
        value = obj.get(key)
        if type(value) is float and value.is_integer():
            value = int(value)
        if type(value) is not int or not 0 <= value < high:
            raise LorawanError("bad_object", f"decoded {key} = {str(value)[:40]!r}")
        return value

    def series(key: str) -> tuple[float, ...]:
        values = obj.get(key)
        if not isinstance(values, list) or not 1 <= len(values) <= MAX_SUMMARIES:
            raise LorawanError("bad_object", f"decoded {key} must be a list of 1..10 numbers")
        for v in values:
            if type(v) not in (int, float) or not math.isfinite(v) or v < 0:
                raise LorawanError("bad_object", f"decoded {key} holds {str(v)[:40]!r}")
        return tuple(float(v) for v in values)

    odba, vedba = series("odba_g"), series("vedba_g")
    if len(odba) != len(vedba):
        raise LorawanError("bad_object", f"{len(odba)} odba_g but {len(vedba)} vedba_g")
    battery = obj.get("battery_v")
    if battery is not None and (
        type(battery) not in (int, float) or not 0 <= battery <= 10 or not math.isfinite(battery)
    ):
        raise LorawanError("bad_object", f"decoded battery_v = {str(battery)[:40]!r}")
    return ActivityUplink(
        integer("base_time_s", 2**32),
        integer("seq", 2**16),
        None if battery is None else float(battery),
        integer("config_id", 256),
        odba,
        vedba,
    )


def encode_interval_downlink(interval_min: int, config_id: int) -> bytes:
    """The interval downlink (fPort 10): version, interval [min] (1..10), config id (1..255)."""
    if not 1 <= interval_min <= MAX_SUMMARIES:
        raise LorawanError("bad_value", f"interval {interval_min} min; must be 1..10")
    if not 1 <= config_id <= 255:
        raise LorawanError("bad_value", f"config id {config_id}; must be 1..255")
    return bytes((UPLINK_VERSION, interval_min, config_id))


def decode_interval_downlink(data: bytes) -> tuple[int, int]:
    """(interval [min], config id) of an interval downlink. Raises LorawanError."""
    if len(data) != 3 or data[0] != UPLINK_VERSION:
        raise LorawanError("bad_downlink", f"interval downlink {data.hex()!r} is not 01 NN II")
    if not 1 <= data[1] <= MAX_SUMMARIES or data[2] == 0:
        raise LorawanError("bad_downlink", f"interval {data[1]} min / config id {data[2]}")
    return data[1], data[2]


# --- network-server events --------------------------------------------------------------


@dataclass(frozen=True)
class RadioReception:
    """One radio gateway's reception of an uplink: gateway id, RSSI [dBm], SNR [dB]."""

    gateway: str
    rssi_dbm: float | None
    snr_db: float | None


@dataclass(frozen=True)
class NetworkEvent:
    """One event of a network server, in the shape Namazu needs.

    server : "chirpstack" or "tts"; kind : "up", "join", "status", "ack", "log", ...
    dev_eui : 16 upper-case hex digits (None when the event does not carry it);
    device : the network server's device name / id; f_cnt, f_port : frame counter and
    port (uplinks); data : FRMPayload bytes (None when absent); decoded : the network
    server's decoded payload (None when absent); receptions : one per radio gateway,
    strongest first; received_at : network-server time (ISO-8601 text or None);
    event_id : the server's id of this uplink (ChirpStack deduplicationId, TTS
    correlation id), used only in logs; acknowledged : for ack events; detail : free
    text for log / status events.
    """

    server: str
    kind: str
    dev_eui: str | None
    device: str | None
    f_cnt: int | None = None
    f_port: int | None = None
    data: bytes | None = None
    decoded: Any = None
    receptions: tuple[RadioReception, ...] = ()
    received_at: str | None = None
    event_id: str | None = None
    acknowledged: bool | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def best(self) -> RadioReception | None:
        """The reception with the strongest signal (None without radio metadata)."""
        return self.receptions[0] if self.receptions else None


_CS_TOPIC = re.compile(r"application/([^/]+)/device/([0-9A-Fa-f]{16})/event/([a-z]+)")
_TTS_TOPIC = re.compile(r"v3/([^/]+)/devices/([^/]+)/((?:down/)?[a-z_]+(?:/[a-z_]+)?)")


def chirpstack_topics(application_id: str = "+") -> list[str]:
    """Subscriptions for ChirpStack v4 events of one application (or all)."""
    return [f"application/{application_id}/device/+/event/+"]


def tts_topics(application: str = "+") -> list[str]:
    """Subscriptions for The Things Stack v3 events (``app@tenant``, or all)."""
    return [f"v3/{application}/devices/+/#"]


def _json_object(payload: bytes) -> dict[str, Any]:
    if len(payload) > 65_536:
        raise LorawanError("too_large", f"event of {len(payload)} bytes (limit 65,536)")
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise LorawanError("not_json", f"event is not JSON: {str(exc)[:120]}") from None
    if not isinstance(document, dict):
        raise LorawanError("not_json", "event is not a JSON object")
    return document


def _b64(value: Any, where: str) -> bytes | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 1024:
        raise LorawanError("bad_payload", f"{where} must be base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise LorawanError("bad_payload", f"{where} is not valid base64") from None


def _number(value: Any) -> float | None:
    if type(value) in (int, float) and math.isfinite(value):
        return float(value)
    return None


def _count(value: Any, where: str, default: int | None = None) -> int | None:
    if value is None:
        return default
    if type(value) is not int or not 0 <= value < FCNT_MODULUS:
        raise LorawanError("bad_event", f"{where} = {str(value)[:40]!r} is not a counter")
    return value


def _eui(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _EUI.fullmatch(value):
        raise LorawanError("bad_event", f"{where} {str(value)[:40]!r} is not a 16-hex-digit EUI")
    return value.upper()


def _receptions(items: Any, gateway_of) -> tuple[RadioReception, ...]:
    if items is None:
        return ()
    if not isinstance(items, list):
        raise LorawanError("bad_event", "radio metadata is not a list")
    out = []
    for item in items[:64]:
        if not isinstance(item, dict):
            continue
        gateway = gateway_of(item)
        if not isinstance(gateway, str) or not gateway:
            continue
        rssi = _number(item.get("rssi", item.get("channel_rssi")))
        out.append(RadioReception(gateway[:64], rssi, _number(item.get("snr"))))
    out.sort(key=lambda r: -math.inf if r.rssi_dbm is None else -r.rssi_dbm)
    # A gateway heard twice (two antennas) counts once, with its best reception.
    seen: set[str] = set()
    return tuple(r for r in out if not (r.gateway in seen or seen.add(r.gateway)))


def parse_chirpstack(topic: str, payload: bytes) -> NetworkEvent:
    """A ChirpStack v4 event (``application/{id}/device/{dev_eui}/event/{type}``).
    Raises LorawanError naming the fault."""
    match = _CS_TOPIC.fullmatch(topic)
    if match is None:
        raise LorawanError("bad_topic", f"{topic[:120]!r} is not a ChirpStack v4 event topic")
    kind = match.group(3)
    doc = _json_object(payload)
    info = doc.get("deviceInfo")
    if not isinstance(info, dict):
        raise LorawanError("bad_event", "ChirpStack event lacks deviceInfo")
    dev_eui = _eui(info.get("devEui"), "deviceInfo.devEui")
    if dev_eui != match.group(2).upper():
        raise LorawanError("bad_event", f"devEui {dev_eui} differs from the topic's")
    device = info.get("deviceName") if isinstance(info.get("deviceName"), str) else None
    common = {"server": "chirpstack", "kind": kind, "dev_eui": dev_eui, "device": device}
    if kind == "up":
        return NetworkEvent(
            **common,
            f_cnt=_count(doc.get("fCnt"), "fCnt", 0),
            f_port=_count(doc.get("fPort"), "fPort", 0),
            data=_b64(doc.get("data"), "data"),
            decoded=doc.get("object"),
            receptions=_receptions(doc.get("rxInfo"), lambda r: r.get("gatewayId")),
            received_at=doc.get("time") if isinstance(doc.get("time"), str) else None,
            event_id=str(doc["deduplicationId"])[:64] if "deduplicationId" in doc else None,
        )
    if kind == "ack":
        return NetworkEvent(
            **common,
            acknowledged=doc.get("acknowledged") is True,
            received_at=doc.get("time") if isinstance(doc.get("time"), str) else None,
            detail={"queue_item_id": str(doc.get("queueItemId"))[:64]},
        )
    keep = ("level", "code", "description", "batteryLevel", "margin", "devAddr")
    return NetworkEvent(
        **common,
        received_at=doc.get("time") if isinstance(doc.get("time"), str) else None,
        detail={k: str(doc[k])[:200] for k in keep if k in doc},
    )


def parse_tts(topic: str, payload: bytes) -> NetworkEvent:
    """A The Things Stack v3 event (``v3/{app}@{tenant}/devices/{device_id}/{type}``).
    Raises LorawanError naming the fault."""
    match = _TTS_TOPIC.fullmatch(topic)
    if match is None:
        raise LorawanError("bad_topic", f"{topic[:120]!r} is not a The Things Stack v3 topic")
    kind = match.group(3).replace("down/", "down_")
    doc = _json_object(payload)
    ids = doc.get("end_device_ids")
    if not isinstance(ids, dict):
        raise LorawanError("bad_event", "event lacks end_device_ids")
    device = ids.get("device_id")
    if device != match.group(2):
        raise LorawanError("bad_event", f"device_id {str(device)[:64]!r} differs from the topic's")
    dev_eui = _eui(ids["dev_eui"], "end_device_ids.dev_eui") if "dev_eui" in ids else None
    common = {"server": "tts", "kind": kind, "dev_eui": dev_eui, "device": device}
    received_at = doc.get("received_at") if isinstance(doc.get("received_at"), str) else None
    correlation = doc.get("correlation_ids")
    event_id = str(correlation[0])[:64] if isinstance(correlation, list) and correlation else None
    if kind == "up":
        up = doc.get("uplink_message")
        if not isinstance(up, dict):
            raise LorawanError("bad_event", "up event lacks uplink_message")
        if dev_eui is None:
            raise LorawanError("bad_event", "up event lacks end_device_ids.dev_eui")
        return NetworkEvent(
            **common,
            f_cnt=_count(up.get("f_cnt"), "f_cnt", 0),  # zero values are left out
            f_port=_count(up.get("f_port"), "f_port", 0),
            data=_b64(up.get("frm_payload"), "frm_payload"),
            decoded=up.get("decoded_payload"),
            receptions=_receptions(
                up.get("rx_metadata"),
                lambda r: (
                    (r.get("gateway_ids") or {}).get("gateway_id")
                    if isinstance(r.get("gateway_ids"), dict)
                    else None
                ),
            ),
            received_at=received_at,
            event_id=event_id,
        )
    if kind in ("down_ack", "down_nack"):
        return NetworkEvent(
            **common,
            acknowledged=kind == "down_ack",
            received_at=received_at,
            event_id=event_id,
        )
    return NetworkEvent(**common, received_at=received_at, event_id=event_id)


PARSERS = {"chirpstack": parse_chirpstack, "tts": parse_tts}


def parse_event(server: str, topic: str, payload: bytes) -> NetworkEvent:
    """Parse one event of ``server`` ("chirpstack" or "tts")."""
    try:
        return PARSERS[server](topic, payload)
    except KeyError:
        raise LorawanError(
            "bad_server", f"network server {server!r}; use chirpstack or tts"
        ) from None


def uplink_of(event: NetworkEvent) -> ActivityUplink:
    """The activity uplink an ``up`` event carries: from its FRMPayload with Namazu's
    codec, else from the network server's decoded payload. Raises LorawanError."""
    if event.f_port != UPLINK_FPORT:
        raise LorawanError("unknown_port", f"uplink on fPort {event.f_port}; activity is on 1")
    if event.data is not None:
        return decode_uplink(event.data)
    if event.decoded is not None:
        return uplink_from_object(event.decoded)
    raise LorawanError("no_payload", "uplink has neither a payload nor a decoded object")


# --- downlink requests ------------------------------------------------------------------


def downlink_request(
    server: str, application: str, dev_eui: str, device: str, data: bytes
) -> tuple[str, bytes]:
    """(topic, payload) that enqueues a confirmed downlink on fPort 10.

    ChirpStack v4: ``application/{application}/device/{dev_eui}/command/down``;
    The Things Stack v3: ``v3/{application}/devices/{device}/down/push``
    (``application`` there is ``app@tenant``)."""
    text = base64.b64encode(data).decode("ascii")
    if server == "chirpstack":
        body = {"devEui": dev_eui.lower(), "confirmed": True, "fPort": DOWNLINK_FPORT, "data": text}
        return f"application/{application}/device/{dev_eui.lower()}/command/down", orjson.dumps(
            body
        )
    if server == "tts":
        body = {
            "downlinks": [
                {
                    "f_port": DOWNLINK_FPORT,
                    "frm_payload": text,
                    "confirmed": True,
                    "priority": "NORMAL",
                }
            ]
        }
        return f"v3/{application}/devices/{device}/down/push", orjson.dumps(body)
    raise LorawanError("bad_server", f"network server {server!r}; use chirpstack or tts")


# --- frame-counter loss -----------------------------------------------------------------


def frame_counter_loss(f_cnts: Sequence[int]) -> tuple[int, int]:
    """(uplinks received, uplinks missing) from the frame counters of one collar's
    distinct uplinks in arrival order. A counter that goes down starts a new session
    (a rejoin resets it); each session's missing count is its span minus what arrived."""
    received = missing = 0
    session: list[int] = []
    for value in list(f_cnts) + [-1]:
        if session and (value < 0 or value < session[-1]):
            distinct = len(set(session))
            received += distinct
            missing += max(session) - min(session) + 1 - distinct
            session = []
        if value >= 0:
            session.append(value)
    return received, missing


# --- device registry --------------------------------------------------------------------


@dataclass(frozen=True)
class Device:
    """A registered collar: its DevEUI and the farm, animal and species it belongs to."""

    dev_eui: str
    farm: str
    animal: str
    species: str


def parse_device(entry: Any, where: str) -> Device:
    """One registry entry (``dev_eui``, ``farm``, ``animal``, ``species``); raises
    LorawanError naming the fault."""
    if not isinstance(entry, dict):
        raise LorawanError("bad_registry", f"{where} is not a table")
    dev_eui = _eui(entry.get("dev_eui"), f"{where}.dev_eui")
    for key in ("farm", "animal"):
        if not isinstance(entry.get(key), str) or not _ID.fullmatch(entry[key]):
            raise LorawanError(
                "bad_registry", f"{where}.{key} {str(entry.get(key))[:40]!r} is not an id"
            )
    if entry.get("species") not in SPECIES:
        raise LorawanError(
            "bad_registry",
            f"{where}.species {str(entry.get('species'))[:20]!r}: one of {', '.join(SPECIES)}",
        )
    return Device(dev_eui, entry["farm"], entry["animal"], entry["species"])


def parse_registry(text: str) -> dict[str, Device]:
    """A TOML device registry (``[[device]]`` tables) as DevEUI -> Device.
    Raises LorawanError naming the bad entry (or a DevEUI listed twice)."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise LorawanError("bad_registry", f"registry is not TOML: {exc}") from None
    entries = document.get("device", [])
    if not isinstance(entries, list):
        raise LorawanError("bad_registry", "registry: [[device]] must be an array of tables")
    devices: dict[str, Device] = {}
    for i, entry in enumerate(entries):
        device = parse_device(entry, f"device[{i}]")
        if device.dev_eui in devices:
            raise LorawanError("bad_registry", f"device[{i}]: DevEUI {device.dev_eui} listed twice")
        devices[device.dev_eui] = device
    return devices


def format_registry(devices: Iterable[Device]) -> str:
    """TOML text of a registry (what ``parse_registry`` reads back)."""
    lines = ["# Namazu LoRaWAN device registry: DevEUI -> farm, animal, species", ""]
    for d in sorted(devices, key=lambda d: d.dev_eui):
        lines += [
            "[[device]]",
            f'dev_eui = "{d.dev_eui}"',
            f'farm = "{d.farm}"',
            f'animal = "{d.animal}"',
            f'species = "{d.species}"',
            "",
        ]
    return "\n".join(lines)


def write_registry(path: str | Path, devices: Iterable[Device]) -> None:
    """Write a registry file atomically."""
    write_atomically(path, format_registry(devices).encode("utf-8"))


def read_registry(path: str | Path) -> dict[str, Device]:
    """The registry file at ``path`` (an absent file is an empty registry)."""
    path = Path(path)
    if not path.exists():
        return {}
    return parse_registry(path.read_text("utf-8"))


def iso_ms(text: str | None) -> int | None:
    """UTC epoch [ms] of an ISO-8601 time (nanosecond fractions allowed), None if unreadable."""
    if not text:
        return None
    cut = re.sub(r"(\.\d{6})\d+", r"\1", text.replace("Z", "+00:00"))
    try:
        return int(datetime.fromisoformat(cut).timestamp() * 1000)
    except ValueError:
        return None


# --- files shared by the panel and the bridge -------------------------------------------

#: Beside the registry: interval changes asked for in the panel, and what became of them.
REQUESTS_FILE = "interval-requests.json"
STATUS_FILE = "interval-status.json"


@dataclass(frozen=True)
class IntervalRequest:
    """A reporting-interval change asked for a collar.

    interval_min : the new interval [min] (1..10); config_id : its id (1..255), which
    the collar reports back once applied; requested_at : UTC epoch [ms]; by : who asked.
    """

    dev_eui: str
    interval_min: int
    config_id: int
    requested_at: int
    by: str = ""


def parse_interval_requests(text: str) -> dict[str, IntervalRequest]:
    """The requests file (``{"requests": {DevEUI: {...}}}``); raises LorawanError."""
    try:
        document = orjson.loads(text or "{}")
    except orjson.JSONDecodeError as exc:
        raise LorawanError("bad_requests", f"interval requests are not JSON: {exc}") from None
    items = document.get("requests", {}) if isinstance(document, dict) else None
    if not isinstance(items, dict):
        raise LorawanError("bad_requests", "interval requests: 'requests' must be an object")
    out = {}
    for key, item in items.items():
        dev_eui = _eui(key, "request DevEUI")
        if not isinstance(item, dict):
            raise LorawanError("bad_requests", f"request of {dev_eui} is not an object")
        interval, config_id, at = (
            item.get(k) for k in ("interval_min", "config_id", "requested_at")
        )
        if type(interval) is not int or not 1 <= interval <= MAX_SUMMARIES:
            raise LorawanError("bad_requests", f"request of {dev_eui}: interval_min {interval!r}")
        if type(config_id) is not int or not 1 <= config_id <= 255 or type(at) is not int:
            raise LorawanError("bad_requests", f"request of {dev_eui}: config_id / requested_at")
        out[dev_eui] = IntervalRequest(
            dev_eui, interval, config_id, at, str(item.get("by", ""))[:64]
        )
    return out


def format_interval_requests(requests: Iterable[IntervalRequest]) -> bytes:
    """JSON text of the requests file."""
    return orjson.dumps(
        {
            "requests": {
                r.dev_eui: {
                    "interval_min": r.interval_min,
                    "config_id": r.config_id,
                    "requested_at": r.requested_at,
                    "by": r.by,
                }
                for r in requests
            }
        },
        option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS,
    )


def next_config_id(previous: IntervalRequest | None) -> int:
    """The configuration id of the next request for a collar (1..255, then 1 again)."""
    return 1 if previous is None else previous.config_id % 255 + 1


def read_interval_status(path: str | Path) -> dict[str, dict[str, Any]]:
    """The bridge's interval-status file: DevEUI -> interval_min, config_id and the
    times [UTC ms] requested_at, sent_at, radio_ack_at, confirmed_at ({} when absent or
    unreadable)."""
    try:
        document = orjson.loads(Path(path).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    collars = document.get("collars") if isinstance(document, dict) else None
    return collars if isinstance(collars, dict) else {}


def write_atomically(path: str | Path, data: bytes) -> None:
    """Replace ``path`` by ``data`` in one step (a reader sees the old or the new file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    temporary.replace(path)
