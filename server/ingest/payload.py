"""Decode and validate MQTT payloads on the server: activity batches and gateway status.

The activity payload is specified by ``firmware_bridge/schemas/activity-v1.schema.json``.
This module implements that schema by hand, because the generic validator costs far
more than the parse itself; ``tests/server/test_payload.py`` runs both over the same
generated documents and checks that they agree. On top of the schema it applies the
rules a schema cannot express: equal array lengths, at most 10,000 samples per
message in total, sample times inside a window around the server clock, and farm and
gateway equal to the topic's segments.

Every rejection raises :class:`PayloadError` with a machine-readable ``reason``
(one of :data:`REASONS`) and a one-line human ``detail``; ingest forwards both to the
dead-letter topic. :func:`decode_activity_message` refuses animals one by one (the
valid animals of a message are kept); :func:`decode_activity` refuses the whole message
at the first fault. The functions here are pure: bytes and numbers in, values out.

Untrusted input is never walked recursively: before a decoder looks into a parsed
document, :func:`check_depth` refuses one nested deeper than :data:`MAX_DEPTH` levels
(iteratively), and every message shows an untrusted value through :func:`show`, which
never recurses and is bounded in length.
"""

from __future__ import annotations

import heapq
import json
import math
import re
from dataclasses import dataclass, field
from itertools import chain
from operator import itemgetter
from typing import Any

import numpy as np
import orjson

ACTIVITY_SCHEMA = "namazu.activity/1"
STATUS_SCHEMA = "namazu.status/1"
TOPIC_ROOT = "namazu/v1"
TOPIC_KINDS = ("activity", "raw", "status")
SPECIES = ("cow", "sheep", "dog")
_SPECIES_SET = frozenset(SPECIES)

MAX_ANIMALS = 1000
MAX_SAMPLES = 10_000
MAX_PAYLOAD_BYTES = 4 * 1024 * 1024
MAX_SEQ = 9_007_199_254_740_991
MAX_EPOCH_MS = 32_503_680_000_000  # 3000-01-01T00:00:00Z
MAX_BATTERY_V = 10.0
#: Deepest nesting of arrays and objects accepted; a valid activity document has 4.
MAX_DEPTH = 8

#: Reason codes of rejected payloads (docs/ARCHITECTURE.md, docs/data-path.md).
REASONS = (
    "not_json",
    "schema_version",
    "schema",
    "non_finite",
    "too_large",
    "time_out_of_range",
    "unknown_species",
    "topic_mismatch",
    "length_mismatch",
)

_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_TOP_KEYS = frozenset({"schema", "farm", "gateway", "seq", "sent_ms", "animals"})
_TOP_OPTIONAL = frozenset({"boot_id"})
_ANIMAL_REQUIRED = frozenset({"animal", "species", "t_ms", "odba", "vedba"})
_ANIMAL_KEYS = _ANIMAL_REQUIRED | {"battery_v", "uplinks"}
#: Radio uplinks (LoRaWAN) one animal entry may name, and the keys of one.
MAX_UPLINKS = 1000
_UPLINK_KEYS = frozenset({"t_ms", "f_cnt", "rssi_dbm", "snr_db", "radio_gateway", "gateways"})
_UPLINK_NUMBERS = {"rssi_dbm": (-200.0, 50.0), "snr_db": (-50.0, 50.0)}
_NUMBER_TYPES = frozenset({int, float})
#: The five required fields of an animal entry, fetched in one call.
_ANIMAL_FIELDS = itemgetter("animal", "species", "t_ms", "odba", "vedba")


class PayloadError(ValueError):
    """A payload or topic was rejected.

    reason : machine-readable code, one of :data:`REASONS`.
    detail : one line of human-readable text naming what is wrong.
    """

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class AnimalSamples:
    """One animal's samples within a batch.

    t_ms : sample times, UTC epoch milliseconds (int64).
    odba, vedba : activity of each sample's burst [g] (float64, finite, >= 0).
    battery_v : collar battery voltage [V], or None when not reported.
    uplinks : the radio uplinks that carried the samples (LoRaWAN), each a dict with
        ``t_ms`` [UTC ms], ``f_cnt`` and optionally ``rssi_dbm`` [dBm], ``snr_db`` [dB],
        ``radio_gateway`` and ``gateways`` [count]; empty when not reported.
    """

    animal: str
    species: str
    t_ms: np.ndarray
    odba: np.ndarray
    vedba: np.ndarray
    battery_v: float | None = None
    uplinks: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class FlatColumns:
    """The samples of all animals of a batch in message order, one column each.

    animals, species, batteries : per animal, in message order (battery [V] or None).
    lengths : samples per animal.
    t_ms : sample times, UTC epoch milliseconds (Python ints); ``times`` the same as an
        int64 array.
    odba, vedba : activity [g] (float64 arrays).
    Filled by the column-wise fast path so that ingest can serialise a message without
    building per-animal objects; :meth:`split` builds them when somebody asks.
    """

    animals: tuple[str, ...]
    species: tuple[str, ...]
    batteries: list[float | None]
    lengths: list[int]
    t_ms: list[int]
    times: np.ndarray
    odba: np.ndarray
    vedba: np.ndarray

    def split(self) -> list[AnimalSamples]:
        """The per-animal samples (array slices of the columns, no copies)."""
        out = []
        start = 0
        new_samples = object.__new__
        rows = zip(self.animals, self.species, self.batteries, self.lengths, strict=True)
        for animal, species, battery, n in rows:
            stop = start + n
            # The frozen dataclass's __init__ sets each field through
            # object.__setattr__, five times slower than this direct fill of values
            # that are already checked.
            samples = new_samples(AnimalSamples)
            samples.__dict__.update(
                animal=animal,
                species=species,
                t_ms=self.times[start:stop],
                odba=self.odba[start:stop],
                vedba=self.vedba[start:stop],
                battery_v=battery,
            )
            out.append(samples)
            start = stop
        return out


@dataclass(frozen=True)
class ActivityBatch:
    """A validated activity message: one gateway's batch of many animals' samples.

    columns : the same samples as flat columns, when the fast path validated the
        message (None otherwise); never part of comparisons.
    boot_id : the gateway's numbering epoch (None when the message has none): the same
        ``seq`` under another ``boot_id`` is another message.
    A batch made by :meth:`from_columns` builds ``animals`` from its columns on first
    access (ingest serialises from the columns and never needs them).
    """

    farm: str
    gateway: str
    seq: int
    sent_ms: int
    animals: list[AnimalSamples]
    columns: FlatColumns | None = field(default=None, repr=False, compare=False)
    boot_id: str | None = None

    @classmethod
    def from_columns(
        cls,
        farm: str,
        gateway: str,
        seq: int,
        sent_ms: int,
        columns: FlatColumns,
        boot_id: str | None = None,
    ) -> ActivityBatch:
        """A batch whose ``animals`` are built from ``columns`` when first read."""
        batch = object.__new__(cls)
        batch.__dict__.update(farm=farm, gateway=gateway, seq=seq, sent_ms=sent_ms, boot_id=boot_id)
        batch.__dict__["columns"] = columns
        return batch

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes missing from the instance: the lazy ``animals``.
        columns = self.__dict__.get("columns")
        if name != "animals" or columns is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        animals = columns.split()
        self.__dict__["animals"] = animals
        return animals

    @property
    def n_samples(self) -> int:
        """Number of samples over all animals."""
        if self.columns is not None:
            return len(self.columns.t_ms)
        return sum(len(a.t_ms) for a in self.animals)


@dataclass(frozen=True)
class AnimalReject:
    """One animal entry of an activity message that was refused.

    index : its position in ``animals``; animal : its id when that id is valid, else None.
    reason, detail : as in :class:`PayloadError`.
    """

    index: int
    animal: str | None
    reason: str
    detail: str


@dataclass(frozen=True)
class ActivityMessage:
    """A decoded activity message: its valid animals as a batch, and the refused ones.

    seq, boot_id : the message's sequence number and numbering epoch (boot_id may be None).
    batch : the valid animals (None when every animal was refused).
    rejected : the refused animal entries in message order, each with its reason.
    """

    farm: str
    gateway: str
    seq: int
    boot_id: str | None
    batch: ActivityBatch | None
    rejected: tuple[AnimalReject, ...] = ()


@dataclass(frozen=True)
class Envelope:
    """Who sent a message and under which number, as far as that can be read.

    farm, gateway : from the topic; seq, boot_id : from the payload (None when missing
    or invalid). Enough to confirm a refused message to its gateway.
    """

    farm: str
    gateway: str
    seq: int | None
    boot_id: str | None


@dataclass(frozen=True)
class GatewayStatus:
    """A gateway's status report (retained; its Last Will says ``online=False``).

    sent_ms : gateway clock when sent, UTC epoch ms (None in a bare Last Will).
    clock_offset_s : the gateway's own estimate of its clock offset [s] (None if absent).
    spool_depth : messages waiting in the gateway spool (None if absent).
    last_seq : last sequence number the gateway assigned (None if absent).
    """

    farm: str
    gateway: str
    online: bool
    sent_ms: int | None = None
    clock_offset_s: float | None = None
    spool_depth: int | None = None
    last_seq: int | None = None


#: Ids already found valid; a farm's few thousand ids repeat in every message.
_VALID_IDS: set[str] = set()
_VALID_IDS_MAX = 100_000


def is_segment(value: object) -> bool:
    """True when ``value`` is a valid topic segment (farm, gateway or animal id).

    Valid ids are remembered, so a repeated id costs a set lookup instead of a regular
    expression; the set is bounded (reset when full), so arbitrary ids from a hostile
    client cannot grow memory.
    """
    if not isinstance(value, str):
        return False
    if value in _VALID_IDS:
        return True
    if _SEGMENT.fullmatch(value) is None:
        return False
    if len(_VALID_IDS) >= _VALID_IDS_MAX:
        _VALID_IDS.clear()
    _VALID_IDS.add(value)
    return True


def parse_topic(topic: str) -> tuple[str, str, str]:
    """Split ``namazu/v1/{farm}/{gateway}/{kind}`` into (farm, gateway, kind).

    Raises PayloadError("topic_mismatch") for any other topic, naming what is wrong.
    """
    parts = topic.split("/")
    if len(parts) != 5 or "/".join(parts[:2]) != TOPIC_ROOT:
        raise PayloadError(
            "topic_mismatch", f"topic {show(topic)} is not namazu/v1/FARM/GATEWAY/KIND"
        )
    farm, gateway, kind = parts[2], parts[3], parts[4]
    if kind not in TOPIC_KINDS:
        raise PayloadError(
            "topic_mismatch",
            f"topic {show(topic)}: kind {show(kind)} is not one of {', '.join(TOPIC_KINDS)}",
        )
    for name, value in (("farm", farm), ("gateway", gateway)):
        if not is_segment(value):
            raise PayloadError(
                "topic_mismatch",
                f"topic {show(topic)}: {name} {show(value)} is not a "
                "valid id ([A-Za-z0-9][A-Za-z0-9_.-]{0,63})",
            )
    return farm, gateway, kind


def deadletter_topic(topic: str) -> str:
    """The dead-letter topic ``namazu/v1/deadletter/{farm}/{gateway}`` for a source topic.

    Works for malformed topics too: missing segments become ``unknown``.
    """
    parts = topic.split("/")
    farm = parts[2] if len(parts) > 2 and parts[2] else "unknown"
    gateway = parts[3] if len(parts) > 3 and parts[3] else "unknown"
    return f"{TOPIC_ROOT}/deadletter/{farm}/{gateway}"


class _NonFiniteToken(Exception):
    pass


def _reject_constant(name: str) -> float:
    raise _NonFiniteToken(name)


def show(value: Any, limit: int = 80) -> str:
    """A short rendering of an untrusted value for a one-line message.

    Never recursive and never longer than about ``limit`` characters: a string shows its
    first ``limit`` characters, a number itself, an array or object only its kind and
    size (``an array of 3 items``).
    """
    if isinstance(value, str):
        text = repr(value[:limit])
        return text + "..." if len(value) > limit else text
    if type(value) is int:
        return (
            repr(value) if value.bit_length() <= 64 else f"an integer of {value.bit_length()} bits"
        )
    if value is None or type(value) in (bool, float):
        return repr(value)
    if type(value) in (list, dict):
        return f"{_kind(value)} of {len(value)} items"
    return _kind(value)


def check_depth(document: Any, limit: int = MAX_DEPTH) -> None:
    """Refuse a parsed document whose arrays and objects nest deeper than ``limit`` levels.

    Walks the containers with an explicit stack (no recursion), looking inside an array
    or object only when it holds containers, so arrays of numbers cost one C-level pass.
    Raises PayloadError("schema").
    """
    if type(document) is not list and type(document) is not dict:
        return
    pending = [(document, 1)]
    while pending:
        value, depth = pending.pop()
        items = value.values() if type(value) is dict else value
        kinds = set(map(type, items))
        if list in kinds or dict in kinds:
            if depth >= limit:
                raise PayloadError("schema", f"arrays and objects nest deeper than {limit} levels")
            pending.extend((item, depth + 1) for item in items if type(item) in (list, dict))


def parse_json(payload: bytes) -> Any:
    """Parse strict JSON (RFC 8259) from UTF-8 bytes.

    orjson does the work; when it refuses, the standard library tells a payload that
    uses the non-JSON tokens NaN/Infinity (or overflows a double) — reason
    ``non_finite`` — apart from one that is not JSON at all (``not_json``). The result
    may nest up to 1,024 levels: the decoders bound it (:func:`check_depth`) before
    they look into it.
    """
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise PayloadError(
            "too_large", f"payload has {len(payload)} bytes, more than {MAX_PAYLOAD_BYTES}"
        )
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        first_error = str(exc)
    try:
        text = bytes(payload).decode("utf-8")
        document = json.loads(text, parse_constant=_reject_constant)
    except _NonFiniteToken as exc:
        raise PayloadError("non_finite", f"token {exc.args[0]} is not a JSON number") from None
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise PayloadError("not_json", f"payload is not JSON: {first_error}") from None
    if "infinity" in first_error:
        raise PayloadError("non_finite", f"a number overflows a double: {first_error}")
    return document


def _names(keys: set[str], shown: int = 5) -> str:
    """The first ``shown`` of a set of (untrusted) key names in sorted order, and how
    many more there are; linear in the number of keys."""
    first = ", ".join(show(key, 40) for key in heapq.nsmallest(shown, keys))
    return first if len(keys) <= shown else f"{first} and {len(keys) - shown} more"


def _is_int(value: Any) -> bool:
    # JSON Schema: an integer is any number with a zero fractional part (1.0 counts).
    if type(value) is int:
        return True
    return type(value) is float and math.isfinite(value) and value.is_integer()


def _check_finite_scalar(value: Any, where: str) -> None:
    if type(value) is float and not math.isfinite(value):
        raise PayloadError("non_finite", f"{where} is {show(value)}")


def _integer_field(value: Any, where: str, low: int, high: int, range_reason: str) -> int:
    _check_finite_scalar(value, where)
    if not _is_int(value):
        raise PayloadError("schema", f"{where} must be an integer, got {_kind(value)}")
    number = int(value)
    if not low <= number <= high:
        raise PayloadError(range_reason, f"{where} = {number} is outside [{low}, {high}]")
    return number


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return {
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "an object",
    }.get(type(value), type(value).__name__)


def _segment_field(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise PayloadError("schema", f"{where} must be a string, got {_kind(value)}")
    if not is_segment(value):
        raise PayloadError(
            "schema",
            f"{where} {show(value)} is not a valid id ([A-Za-z0-9][A-Za-z0-9_.-]{{0,63}})",
        )
    return value


def _array(value: Any, where: str, min_items: int, max_items: int) -> list:
    if not isinstance(value, list):
        raise PayloadError("schema", f"{where} must be an array, got {_kind(value)}")
    if len(value) > max_items:
        raise PayloadError("too_large", f"{where} has {len(value)} items, at most {max_items}")
    if len(value) < min_items:
        raise PayloadError("schema", f"{where} has {len(value)} items, at least {min_items}")
    return value


def _times(values: list, where: str) -> np.ndarray:
    types = set(map(type, values))
    if types <= {int}:
        try:
            arr = np.array(values, dtype=np.int64)
        except OverflowError:
            raise PayloadError(
                "time_out_of_range", f"{where} holds a value outside [0, {MAX_EPOCH_MS}]"
            ) from None
    elif types <= _NUMBER_TYPES:
        floats = np.array(values, dtype=np.float64)
        if not np.isfinite(floats).all():
            raise PayloadError("non_finite", f"{where} holds a non-finite value")
        if (floats != np.floor(floats)).any():
            bad = floats[floats != np.floor(floats)][0]
            raise PayloadError("schema", f"{where} must hold integers, found {float(bad)!r}")
        if floats.min() < 0 or floats.max() > MAX_EPOCH_MS:
            raise PayloadError(
                "time_out_of_range", f"{where} holds a value outside [0, {MAX_EPOCH_MS}]"
            )
        arr = floats.astype(np.int64)
    else:
        odd = next(v for v in values if type(v) not in _NUMBER_TYPES)
        raise PayloadError("schema", f"{where} must hold integers, found {_kind(odd)}")
    if len(arr) and (arr.min() < 0 or arr.max() > MAX_EPOCH_MS):
        raise PayloadError(
            "time_out_of_range", f"{where} holds a value outside [0, {MAX_EPOCH_MS}]"
        )
    return arr


def _activity(values: Any, where: str) -> np.ndarray:
    values = _array(values, where, 0, MAX_SAMPLES)
    if not set(map(type, values)) <= _NUMBER_TYPES:
        odd = next(v for v in values if type(v) not in _NUMBER_TYPES)
        raise PayloadError("schema", f"{where} must hold numbers, found {_kind(odd)}")
    try:
        arr = np.array(values, dtype=np.float64)
    except OverflowError:  # an integer beyond a double: JSON allows it, the schema too
        arr = np.array([float("inf")], dtype=np.float64)
    if not np.isfinite(arr).all():
        raise PayloadError("non_finite", f"{where} holds a non-finite value")
    if len(arr) and arr.min() < 0:
        raise PayloadError("schema", f"{where} holds a negative value {float(arr.min())!r}")
    return arr


def _animal(item: Any, index: int) -> AnimalSamples:
    where = f"animals[{index}]"
    if not isinstance(item, dict):
        raise PayloadError("schema", f"{where} must be an object, got {_kind(item)}")
    missing = _ANIMAL_REQUIRED - item.keys()
    if missing:
        raise PayloadError("schema", f"{where} lacks {_names(missing)}")
    extra = item.keys() - _ANIMAL_KEYS
    if extra:
        raise PayloadError("schema", f"{where} has unknown keys {_names(extra)}")
    animal = _segment_field(item["animal"], f"{where}.animal")
    species = item["species"]
    if not isinstance(species, str) or species not in SPECIES:
        raise PayloadError(
            "unknown_species",
            f"{where}.species {show(species)} is not one of {', '.join(SPECIES)}",
        )
    t_ms = _times(_array(item["t_ms"], f"{where}.t_ms", 1, MAX_SAMPLES), f"{where}.t_ms")
    odba = _activity(item["odba"], f"{where}.odba")
    vedba = _activity(item["vedba"], f"{where}.vedba")
    battery = item.get("battery_v")
    if "battery_v" in item:
        _check_finite_scalar(battery, f"{where}.battery_v")
        if type(battery) not in _NUMBER_TYPES:
            raise PayloadError(
                "schema", f"{where}.battery_v must be a number, got {_kind(battery)}"
            )
        if not 0 <= battery <= MAX_BATTERY_V:
            raise PayloadError(
                "schema", f"{where}.battery_v = {battery} V is outside [0, {MAX_BATTERY_V}]"
            )
        battery = float(battery)
    uplinks = _uplinks(item["uplinks"], f"{where}.uplinks") if "uplinks" in item else ()
    return AnimalSamples(animal, species, t_ms, odba, vedba, battery, uplinks)


def _uplinks(value: Any, where: str) -> tuple[dict[str, Any], ...]:
    """The checked radio uplinks of one animal entry (see ``activity-v1.schema.json``)."""
    out = []
    for i, item in enumerate(_array(value, where, 1, MAX_UPLINKS)):
        at = f"{where}[{i}]"
        if not isinstance(item, dict):
            raise PayloadError("schema", f"{at} must be an object, got {_kind(item)}")
        if not {"t_ms", "f_cnt"} <= item.keys():
            raise PayloadError("schema", f"{at} lacks {_names({'t_ms', 'f_cnt'} - item.keys())}")
        if item.keys() - _UPLINK_KEYS:
            raise PayloadError(
                "schema", f"{at} has unknown keys {_names(item.keys() - _UPLINK_KEYS)}"
            )
        entry: dict[str, Any] = {
            "t_ms": _integer_field(
                item["t_ms"], f"{at}.t_ms", 0, MAX_EPOCH_MS, "time_out_of_range"
            ),
            "f_cnt": _integer_field(item["f_cnt"], f"{at}.f_cnt", 0, 2**32 - 1, "schema"),
        }
        for key, (low, high) in _UPLINK_NUMBERS.items():
            if key in item:
                number = item[key]
                _check_finite_scalar(number, f"{at}.{key}")
                if type(number) not in _NUMBER_TYPES or not low <= number <= high:
                    raise PayloadError(
                        "schema", f"{at}.{key} = {show(number)} is outside [{low}, {high}]"
                    )
                entry[key] = float(number)
        if "radio_gateway" in item:
            gateway = item["radio_gateway"]
            if not isinstance(gateway, str) or not 1 <= len(gateway) <= 64:
                raise PayloadError("schema", f"{at}.radio_gateway must be text of 1..64 characters")
            entry["radio_gateway"] = gateway
        if "gateways" in item:
            entry["gateways"] = _integer_field(item["gateways"], f"{at}.gateways", 0, 64, "schema")
        out.append(entry)
    return tuple(out)


def _animals_fast(items: list) -> list[AnimalSamples] | None:
    """The animals of a well-formed message, with one conversion and one check per column
    for the whole message instead of per animal (a 100-sample message often carries 100
    animals of one sample each). Returns None at the first unusual thing; the per-animal
    path (:func:`_animal`) then finds it and names it, so results and errors are the same.
    """
    found = _columns_fast(items)
    return None if found is None else found.split()


def _columns_fast(items: list) -> FlatColumns | None:
    """The animals of a well-formed message as flat columns, or None (see
    :func:`_animals_fast`).

    Each check runs over a whole column of the message at once (C-level ``map``/``set``
    loops) rather than animal by animal.
    """
    if not set(map(type, items)) <= {dict}:
        return None
    try:
        animals, species, t_lists, odba_lists, vedba_lists = zip(
            *map(_ANIMAL_FIELDS, items), strict=True
        )
        if not set(species) <= _SPECIES_SET:
            return None
    except (KeyError, TypeError, ValueError):  # a key missing; an unhashable species
        return None
    for column in (t_lists, odba_lists, vedba_lists):
        if not set(map(type, column)) <= {list}:
            return None
    lengths = list(map(len, t_lists))
    if (
        0 in lengths
        or lengths != list(map(len, odba_lists))
        or lengths != list(map(len, vedba_lists))
    ):
        return None
    if not set(map(type, animals)) <= {str}:
        return None
    if not _VALID_IDS.issuperset(animals) and not all(map(is_segment, animals)):
        return None
    key_counts = set(map(len, items))
    if key_counts == {5}:  # exactly the required keys (all five were found)
        batteries: list[float | None] = [None] * len(items)
    else:
        batteries = []
        for item in items:
            if len(item) == 5:
                batteries.append(None)
                continue
            if len(item) != 6 or "battery_v" not in item:
                return None
            battery = item["battery_v"]
            if type(battery) not in _NUMBER_TYPES or not 0 <= battery <= MAX_BATTERY_V:
                return None
            batteries.append(float(battery))
    t_all = list(chain.from_iterable(t_lists))
    odba_all = list(chain.from_iterable(odba_lists))
    vedba_all = list(chain.from_iterable(vedba_lists))
    if len(t_all) > MAX_SAMPLES or not set(map(type, t_all)) <= {int}:
        return None
    if not set(map(type, odba_all)) <= _NUMBER_TYPES or not set(map(type, vedba_all)) <= (
        _NUMBER_TYPES
    ):
        return None
    try:
        t = np.array(t_all, dtype=np.int64)
        odba_arr = np.array(odba_all, dtype=np.float64)
        vedba_arr = np.array(vedba_all, dtype=np.float64)
    except OverflowError:
        return None
    if t.min() < 0 or t.max() > MAX_EPOCH_MS:
        return None
    for arr in (odba_arr, vedba_arr):
        if not np.isfinite(arr).all() or arr.min() < 0:
            return None
    return FlatColumns(animals, species, batteries, lengths, t_all, t, odba_arr, vedba_arr)


def _top_level(document: Any) -> tuple[str, str, int, int, str | None, list]:
    """The checked top-level fields of an activity document: farm, gateway, seq,
    sent_ms [UTC ms], boot_id (or None) and the list of animal entries (unchecked)."""
    if not isinstance(document, dict):
        raise PayloadError("schema", f"payload must be a JSON object, got {_kind(document)}")
    if "schema" in document and document["schema"] != ACTIVITY_SCHEMA:
        raise PayloadError(
            "schema_version",
            f"schema {show(document['schema'])} is not {ACTIVITY_SCHEMA!r}",
        )
    missing = _TOP_KEYS - document.keys()
    if missing:
        raise PayloadError("schema", f"payload lacks {_names(missing)}")
    extra = document.keys() - _TOP_KEYS - _TOP_OPTIONAL
    if extra:
        raise PayloadError("schema", f"payload has unknown keys {_names(extra)}")
    farm = _segment_field(document["farm"], "farm")
    gateway = _segment_field(document["gateway"], "gateway")
    seq = _integer_field(document["seq"], "seq", 0, MAX_SEQ, "schema")
    sent_ms = _integer_field(document["sent_ms"], "sent_ms", 0, MAX_EPOCH_MS, "time_out_of_range")
    boot_id = None
    if "boot_id" in document:
        boot_id = _segment_field(document["boot_id"], "boot_id")
    items = _array(document["animals"], "animals", 1, MAX_ANIMALS)
    return farm, gateway, seq, sent_ms, boot_id, items


def validate_activity_document(document: Any) -> ActivityBatch:
    """Check a parsed activity document against schema v1 and return it as a batch.

    Implements exactly ``activity-v1.schema.json`` (with ECMA-262 regular-expression
    semantics for ids). Array lengths, totals, time window and topic are checked by
    :func:`decode_activity`. Raises PayloadError with the reason code.
    """
    farm, gateway, seq, sent_ms, boot_id, items = _top_level(document)
    columns = _columns_fast(items)
    if columns is None:
        animals = [_animal(item, i) for i, item in enumerate(items)]
        return ActivityBatch(farm, gateway, seq, sent_ms, animals, boot_id=boot_id)
    return ActivityBatch.from_columns(farm, gateway, seq, sent_ms, columns, boot_id)


def _animal_fault(
    a: AnimalSamples, i: int, now_ms: int, max_future_ms: int, max_age_ms: int
) -> PayloadError | None:
    """What is wrong with one schema-valid animal beyond the schema: unequal lengths,
    or a sample outside [now - max_age_ms, now + max_future_ms] [UTC ms]; None if nothing."""
    n = len(a.t_ms)
    if len(a.odba) != n or len(a.vedba) != n:
        return PayloadError(
            "length_mismatch",
            f"animals[{i}] ({a.animal}): t_ms has {n} items, odba {len(a.odba)}, "
            f"vedba {len(a.vedba)}",
        )
    low, high = int(a.t_ms.min()), int(a.t_ms.max())
    if high > now_ms + max_future_ms:
        return PayloadError(
            "time_out_of_range",
            f"animals[{i}] ({a.animal}): sample at {high} ms is {(high - now_ms) / 1000:.0f} s "
            f"ahead of the server clock (limit {max_future_ms / 1000:.0f} s)",
        )
    if low < now_ms - max_age_ms:
        return PayloadError(
            "time_out_of_range",
            f"animals[{i}] ({a.animal}): sample at {low} ms is "
            f"{(now_ms - low) / 86_400_000:.1f} days old (limit "
            f"{max_age_ms / 86_400_000:.1f} days)",
        )
    return None


def _fast_window_ok(columns: FlatColumns, now_ms: int, max_future_ms: int, max_age_ms: int) -> bool:
    # On the fast path lengths are equal by construction.
    return (
        len(columns.t_ms) <= MAX_SAMPLES
        and now_ms - max_age_ms <= min(columns.t_ms)
        and max(columns.t_ms) <= now_ms + max_future_ms
    )


def _check_total(animals: list[AnimalSamples]) -> None:
    total = sum(len(a.t_ms) for a in animals)
    if total > MAX_SAMPLES:
        raise PayloadError("too_large", f"message holds {total} samples, at most {MAX_SAMPLES}")


def check_activity_batch(
    batch: ActivityBatch, now_ms: int, max_future_ms: int, max_age_ms: int
) -> None:
    """The rules beyond the schema: equal lengths, time window, total size.

    now_ms : server clock, UTC epoch ms.
    max_future_ms : samples later than now + this are rejected [ms].
    max_age_ms : samples earlier than now - this are rejected [ms].
    Raises PayloadError at the first animal at fault.
    """
    columns = batch.columns
    if columns is not None and _fast_window_ok(columns, now_ms, max_future_ms, max_age_ms):
        return
    for i, a in enumerate(batch.animals):
        fault = _animal_fault(a, i, now_ms, max_future_ms, max_age_ms)
        if fault is not None:
            raise fault
    _check_total(batch.animals)


def _entry_id(item: Any) -> str | None:
    animal = item.get("animal") if type(item) is dict else None
    return animal if is_segment(animal) else None


def decode_activity_message(
    topic: str, document: Any, now_ms: int, max_future_ms: int, max_age_ms: int
) -> ActivityMessage:
    """Validate one parsed activity message animal by animal.

    topic : the MQTT topic it arrived on, ``namazu/v1/{farm}/{gateway}/activity``.
    document : the payload as parsed by :func:`parse_json`.
    now_ms : server clock, UTC epoch milliseconds.
    max_future_ms, max_age_ms : accepted sample-time window around ``now_ms`` [ms].
    Returns the valid animals as a batch and the refused ones with their reasons.
    Raises PayloadError when the message as a whole is refused: topic, top-level
    fields, more than :data:`MAX_ANIMALS` animals, or more than :data:`MAX_SAMPLES`
    samples in its valid animals.
    """
    farm, gateway, kind = parse_topic(topic)
    if kind != "activity":
        raise PayloadError("topic_mismatch", f"topic {show(topic)} is not an activity topic")
    # Nesting first. Animals that pass the column-wise fast path are flat by construction
    # (strings and arrays of numbers), so then only the other top-level values are walked.
    items = document.get("animals") if type(document) is dict else None
    columns = _columns_fast(items) if type(items) is list else None
    if columns is None:
        check_depth(document)
    else:
        check_depth([value for key, value in document.items() if key != "animals"])
    doc_farm, doc_gateway, seq, sent_ms, boot_id, items = _top_level(document)
    if (doc_farm, doc_gateway) != (farm, gateway):
        raise PayloadError(
            "topic_mismatch",
            f"payload says farm {doc_farm!r}, gateway {doc_gateway!r}; "
            f"topic says {farm!r}, {gateway!r}",
        )
    if columns is not None and _fast_window_ok(columns, now_ms, max_future_ms, max_age_ms):
        batch = ActivityBatch.from_columns(farm, gateway, seq, sent_ms, columns, boot_id)
        return ActivityMessage(farm, gateway, seq, boot_id, batch)
    split = columns.split() if columns is not None else None
    valid: list[AnimalSamples] = []
    rejected: list[AnimalReject] = []
    for i, item in enumerate(items):
        try:
            animal = split[i] if split is not None else _animal(item, i)
            fault = _animal_fault(animal, i, now_ms, max_future_ms, max_age_ms)
        except PayloadError as exc:
            fault = exc
        if fault is None:
            valid.append(animal)
        else:
            rejected.append(AnimalReject(i, _entry_id(item), fault.reason, fault.detail))
    _check_total(valid)
    batch = ActivityBatch(farm, gateway, seq, sent_ms, valid, boot_id=boot_id) if valid else None
    return ActivityMessage(farm, gateway, seq, boot_id, batch, tuple(rejected))


def decode_activity(
    topic: str, payload: bytes, now_ms: int, max_future_ms: int, max_age_ms: int
) -> ActivityBatch:
    """Parse and validate one activity message, refusing all of it at the first fault.

    topic : the MQTT topic it arrived on, ``namazu/v1/{farm}/{gateway}/activity``.
    payload : the message bytes (UTF-8 JSON).
    now_ms : server clock, UTC epoch milliseconds.
    max_future_ms, max_age_ms : accepted sample-time window around ``now_ms`` [ms].
    Returns the batch; raises PayloadError(reason, detail) when it must be rejected
    (for an animal at fault, the first one's reason: what the dead letter of
    :func:`decode_activity_message`'s result carries).
    """
    message = decode_activity_message(topic, parse_json(payload), now_ms, max_future_ms, max_age_ms)
    if message.rejected:
        first = message.rejected[0]
        raise PayloadError(first.reason, first.detail)
    assert message.batch is not None  # at least one animal, none refused
    return message.batch


def read_envelope(topic: str, document: Any) -> Envelope | None:
    """Farm and gateway of the topic, seq and boot_id of a parsed payload, as far as
    they are valid (never raises, never recurses); None for a topic that names no
    farm and gateway."""
    parts = topic.split("/")
    if len(parts) != 5 or not (is_segment(parts[2]) and is_segment(parts[3])):
        return None
    seq = boot_id = None
    if type(document) is dict:
        value = document.get("seq")
        if _is_int(value) and 0 <= value <= MAX_SEQ:
            seq = int(value)
        if is_segment(document.get("boot_id")):
            boot_id = document["boot_id"]
    return Envelope(parts[2], parts[3], seq, boot_id)


def _optional_number(document: dict, key: str, integer: bool) -> Any:
    value = document.get(key)
    if value is None:
        return None
    _check_finite_scalar(value, key)
    if integer:
        return _integer_field(value, key, 0, MAX_SEQ, "schema")
    if type(value) not in _NUMBER_TYPES:
        raise PayloadError("schema", f"{key} must be a number, got {_kind(value)}")
    return float(value)


def decode_status(topic: str, payload: bytes) -> GatewayStatus:
    """Parse a gateway status message (``namazu.status/1``, retained, Last Will).

    Required: ``schema``, ``online`` (bool); ``farm``/``gateway`` must match the topic
    when present. Optional: ``sent_ms`` [UTC ms], ``clock_offset_s`` [s],
    ``spool_depth``, ``last_seq``. Raises PayloadError with a reason code.
    """
    farm, gateway, kind = parse_topic(topic)
    if kind != "status":
        raise PayloadError("topic_mismatch", f"topic {show(topic)} is not a status topic")
    document = parse_json(payload)
    check_depth(document)
    if not isinstance(document, dict):
        raise PayloadError("schema", f"status must be a JSON object, got {_kind(document)}")
    if document.get("schema") != STATUS_SCHEMA:
        raise PayloadError(
            "schema_version",
            f"schema {show(document.get('schema'))} is not {STATUS_SCHEMA!r}",
        )
    for key, expected in (("farm", farm), ("gateway", gateway)):
        if key in document and document[key] != expected:
            raise PayloadError(
                "topic_mismatch",
                f"status {key} {show(document[key])} differs from topic {expected!r}",
            )
    online = document.get("online")
    if not isinstance(online, bool):
        raise PayloadError("schema", f"status online must be a boolean, got {_kind(online)}")
    sent_ms = document.get("sent_ms")
    if sent_ms is not None:
        sent_ms = _integer_field(sent_ms, "sent_ms", 0, MAX_EPOCH_MS, "time_out_of_range")
    return GatewayStatus(
        farm=farm,
        gateway=gateway,
        online=online,
        sent_ms=sent_ms,
        clock_offset_s=_optional_number(document, "clock_offset_s", integer=False),
        spool_depth=_optional_number(document, "spool_depth", integer=True),
        last_seq=_optional_number(document, "last_seq", integer=True),
    )
