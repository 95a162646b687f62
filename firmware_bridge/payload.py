"""Activity payload v1 encoder (the gateway side of ``namazu.activity/1``).

The specification is the JSON Schema ``firmware_bridge/schemas/activity-v1.schema.json``;
the server decodes and validates with ``server/ingest/payload.py``. This module only builds
documents: it never talks to the broker.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any

import numpy as np
import orjson
import pandas as pd

SCHEMA_ID = "namazu.activity/1"
STATUS_SCHEMA_ID = "namazu.status/1"

#: Samples allowed in one message in total (schema / ARCHITECTURE.md limit).
MAX_SAMPLES_PER_MESSAGE = 10_000
#: Animals allowed in one message (schema limit).
MAX_ANIMALS_PER_MESSAGE = 1_000

#: Columns an activity DataFrame must carry for ``batches_from_frame``.
ACTIVITY_COLUMNS = ("animal", "species", "t_ms", "odba", "vedba")


class PayloadEncodeError(ValueError):
    """The data cannot be expressed as a valid v1 payload; the message names why."""


def activity_topic(farm: str, gateway: str) -> str:
    """MQTT topic of a gateway's activity batches."""
    return f"namazu/v1/{farm}/{gateway}/activity"


def status_topic(farm: str, gateway: str) -> str:
    """MQTT topic of a gateway's retained status."""
    return f"namazu/v1/{farm}/{gateway}/status"


@cache
def load_schema(name: str = "activity-v1.schema.json") -> dict[str, Any]:
    """The JSON Schema document shipped in ``firmware_bridge/schemas`` (parsed)."""
    text = resources.files("firmware_bridge").joinpath("schemas", name).read_text("utf-8")
    return json.loads(text)


def encode_activity(
    farm: str,
    gateway: str,
    seq: int,
    sent_ms: int,
    animals: list[dict[str, Any]],
    boot_id: str | None = None,
) -> bytes:
    """Serialise one activity batch as UTF-8 JSON (orjson).

    farm, gateway : topic segments.
    seq : gateway message sequence number (>= 0).
    sent_ms : gateway clock when the batch is first sent, UTC epoch [ms].
    animals : dicts with ``animal``, ``species``, ``t_ms`` (UTC epoch [ms]),
        ``odba`` and ``vedba`` ([g], same length as ``t_ms``) and optionally
        ``battery_v`` [V] and ``uplinks`` (radio uplinks, see the schema); lists or
        numpy arrays.
    boot_id : the gateway's numbering epoch (random per spool creation; see the schema),
        or None to leave the field out.
    Returns the payload bytes. Raises PayloadEncodeError on non-finite activity,
    length mismatch or too many samples/animals.
    """
    if not animals:
        raise PayloadEncodeError("a batch needs at least one animal")
    if len(animals) > MAX_ANIMALS_PER_MESSAGE:
        raise PayloadEncodeError(
            f"{len(animals)} animals in one batch; at most {MAX_ANIMALS_PER_MESSAGE}"
        )
    out = []
    total = 0
    for entry in animals:
        t_ms = np.asarray(entry["t_ms"], dtype=np.int64)
        odba = np.asarray(entry["odba"], dtype=np.float64)
        vedba = np.asarray(entry["vedba"], dtype=np.float64)
        if not (len(t_ms) == len(odba) == len(vedba)) or len(t_ms) == 0:
            raise PayloadEncodeError(
                f"animal {entry.get('animal')!r}: t_ms/odba/vedba lengths "
                f"{len(t_ms)}/{len(odba)}/{len(vedba)} must be equal and non-zero"
            )
        if not (np.isfinite(odba).all() and np.isfinite(vedba).all()):
            raise PayloadEncodeError(f"animal {entry.get('animal')!r}: non-finite activity")
        total += len(t_ms)
        item: dict[str, Any] = {
            "animal": str(entry["animal"]),
            "species": str(entry["species"]),
            "t_ms": t_ms.tolist(),
            "odba": np.round(odba, 6).tolist(),
            "vedba": np.round(vedba, 6).tolist(),
        }
        battery = entry.get("battery_v")
        if battery is not None and np.isfinite(battery):
            item["battery_v"] = round(float(battery), 3)
        if entry.get("uplinks"):
            item["uplinks"] = list(entry["uplinks"])
        out.append(item)
    if total > MAX_SAMPLES_PER_MESSAGE:
        raise PayloadEncodeError(f"{total} samples in one batch; at most {MAX_SAMPLES_PER_MESSAGE}")
    document = {
        "schema": SCHEMA_ID,
        "farm": farm,
        "gateway": gateway,
        "seq": int(seq),
        "sent_ms": int(sent_ms),
        "animals": out,
    }
    if boot_id is not None:
        if not is_boot_id(boot_id):
            raise PayloadEncodeError(
                f"boot_id {str(boot_id)[:80]!r} is not [A-Za-z0-9][A-Za-z0-9_.-]{{0,63}}"
            )
        document["boot_id"] = boot_id
    return orjson.dumps(document)


def batches_from_frame(
    df: pd.DataFrame, farm: str, gateway: str, max_samples: int = 100
) -> Iterator[list[dict[str, Any]]]:
    """Chunk an activity DataFrame into per-message animal lists.

    df : columns animal, species, t_ms (UTC epoch [ms]), odba, vedba [g], and
        optionally battery_v [V]; rows in any order (kept stable).
    farm, gateway : accepted for symmetry with the payload; not used for chunking.
    max_samples : samples per message (1..10,000).
    Yields lists of animal dicts ready for ``encode_activity``; samples keep the
    frame's row order, each chunk holds at most ``max_samples`` samples.
    """
    del farm, gateway
    if not 1 <= max_samples <= MAX_SAMPLES_PER_MESSAGE:
        raise PayloadEncodeError(f"max_samples={max_samples}; must be 1..10000")
    missing = [c for c in ACTIVITY_COLUMNS if c not in df.columns]
    if missing:
        raise PayloadEncodeError(f"activity frame lacks columns {missing}")
    n = len(df)
    if n == 0:
        return
    animal = df["animal"].to_numpy()
    species = df["species"].to_numpy()
    t_ms = df["t_ms"].to_numpy(dtype=np.int64)
    odba = df["odba"].to_numpy(dtype=np.float64)
    vedba = df["vedba"].to_numpy(dtype=np.float64)
    battery = df["battery_v"].to_numpy(dtype=np.float64) if "battery_v" in df else None
    for start in range(0, n, max_samples):
        stop = min(start + max_samples, n)
        yield _group_chunk(animal, species, t_ms, odba, vedba, battery, start, stop)


def _group_chunk(
    animal: np.ndarray,
    species: np.ndarray,
    t_ms: np.ndarray,
    odba: np.ndarray,
    vedba: np.ndarray,
    battery: np.ndarray | None,
    start: int,
    stop: int,
) -> list[dict[str, Any]]:
    groups: dict[str, list[int]] = {}
    for i in range(start, stop):
        groups.setdefault(animal[i], []).append(i)
    out = []
    for name, rows in groups.items():
        idx = np.asarray(rows)
        entry: dict[str, Any] = {
            "animal": str(name),
            "species": str(species[idx[0]]),
            "t_ms": t_ms[idx],
            "odba": odba[idx],
            "vedba": vedba[idx],
        }
        if battery is not None:
            last = battery[idx[-1]]
            if np.isfinite(last):
                entry["battery_v"] = float(last)
        out.append(entry)
    return out


def encode_status(
    farm: str,
    gateway: str,
    online: bool,
    sent_ms: int,
    clock_offset_s: float | None = None,
    spool_depth: int = 0,
    last_seq: int = 0,
    spool_bytes: int | None = None,
    spool_full: bool | None = None,
    boot_id: str | None = None,
) -> bytes:
    """Serialise a retained gateway status (``namazu.status/1``, see status-v1.schema.json).

    sent_ms : gateway clock at publication, UTC epoch [ms].
    clock_offset_s : gateway clock minus reference time [s] (positive = gateway ahead);
        None (JSON null) while it has not been measured.
    spool_depth : messages waiting in the spool until their delivery is confirmed [messages].
    last_seq : highest sequence number handed out so far (0 = none yet; seqs start at 1).
    spool_bytes : payload bytes the spool holds [B]; spool_full : true while the spool
        refuses new data for its disk budget; boot_id : the spool's random id. Each is
        left out when None.
    """
    document = {
        "schema": STATUS_SCHEMA_ID,
        "farm": farm,
        "gateway": gateway,
        "online": bool(online),
        "sent_ms": int(sent_ms),
        "clock_offset_s": None if clock_offset_s is None else float(clock_offset_s),
        "spool_depth": int(spool_depth),
        "last_seq": int(last_seq),
    }
    optional = {"spool_bytes": spool_bytes, "spool_full": spool_full, "boot_id": boot_id}
    document.update({key: value for key, value in optional.items() if value is not None})
    return orjson.dumps(document)


def sample_count(animals: Sequence[dict[str, Any]]) -> int:
    """Total samples in an animal list [samples]."""
    return sum(len(a["t_ms"]) for a in animals)


# --- end-to-end receipts (namazu.receipt/1) ---------------------------------------------

RECEIPT_SCHEMA_ID = "namazu.receipt/1"
#: Largest sequence number (the activity schema's limit, 2**53 - 1).
MAX_SEQ = 9_007_199_254_740_991
#: Most ranges one receipt may carry (ingest sends a few per flush).
MAX_RECEIPT_RANGES = 10_000
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class ReceiptError(ValueError):
    """A receipt payload is malformed; the message names what is wrong."""


def is_boot_id(value: object) -> bool:
    """True for a valid ``boot_id`` (and farm/gateway id): ``[A-Za-z0-9][A-Za-z0-9_.-]{0,63}``."""
    return isinstance(value, str) and _ID.fullmatch(value) is not None


@dataclass(frozen=True)
class Receipt:
    """Ingest's confirmation that some of a gateway's messages are durably handled:
    their points are in InfluxDB, or the message was dead-lettered.

    boot_id : the ``boot_id`` those messages carried (None: sent without one).
    seqs : inclusive ranges (first, last) of sequence numbers. Receipts may overlap;
        what is confirmed is the union of all of them.
    stored_at : when ingest finished handling them, ISO-8601 UTC text.
    """

    farm: str
    gateway: str
    boot_id: str | None
    seqs: tuple[tuple[int, int], ...]
    stored_at: str

    def covers(self, seq: int) -> bool:
        """True when ``seq`` lies in one of the ranges."""
        return any(first <= seq <= last for first, last in self.seqs)


def receipt_topic(farm: str, gateway: str) -> str:
    """MQTT topic of ingest's receipts for one gateway (QoS 1, not retained)."""
    return f"namazu/v1/{farm}/{gateway}/receipt"


def seq_ranges(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """Sequence numbers folded into sorted inclusive ranges: [5, 1, 2, 3] -> [(1, 3), (5, 5)]."""
    ranges: list[tuple[int, int]] = []
    for seq in sorted(set(seqs)):
        if ranges and seq == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], seq)
        else:
            ranges.append((seq, seq))
    return ranges


def encode_receipt(
    farm: str,
    gateway: str,
    boot_id: str | None,
    seqs: Sequence[tuple[int, int]],
    stored_at: datetime,
) -> bytes:
    """Serialise a receipt (``namazu.receipt/1``).

    seqs : inclusive (first, last) ranges of sequence numbers, e.g. from :func:`seq_ranges`.
    stored_at : time the messages were handled (timezone-aware; written as UTC, ms).
    Raises ReceiptError for ranges the decoder would refuse.
    """
    ranges = [_seq_range(pair, i) for i, pair in enumerate(seqs)]
    if not 1 <= len(ranges) <= MAX_RECEIPT_RANGES:
        raise ReceiptError(f"a receipt holds 1..{MAX_RECEIPT_RANGES} ranges, got {len(ranges)}")
    if stored_at.tzinfo is None:
        raise ReceiptError("stored_at must be timezone-aware")
    text = stored_at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return orjson.dumps(
        {
            "schema": RECEIPT_SCHEMA_ID,
            "farm": farm,
            "gateway": gateway,
            "boot_id": boot_id,
            "seqs": [list(pair) for pair in ranges],
            "stored_at": text,
        }
    )


def _seq_range(pair: Any, index: int) -> tuple[int, int]:
    where = f"seqs[{index}]"
    if type(pair) not in (list, tuple) or len(pair) != 2:
        raise ReceiptError(f"{where} must be a pair [first, last]")
    first, last = pair
    for value in (first, last):
        if type(value) is not int or not 0 <= value <= MAX_SEQ:
            raise ReceiptError(f"{where} must hold integers in [0, {MAX_SEQ}]")
    if first > last:
        raise ReceiptError(f"{where} = [{first}, {last}] has first > last")
    return first, last


def decode_receipt(payload: bytes) -> Receipt:
    """Parse and check a receipt. Unknown keys are ignored (additive changes stay
    compatible). Never recurses over the input. Raises ReceiptError naming the fault."""
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise ReceiptError(f"receipt is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ReceiptError("receipt must be a JSON object")
    if document.get("schema") != RECEIPT_SCHEMA_ID:
        raise ReceiptError(f"receipt schema is not {RECEIPT_SCHEMA_ID!r}")
    for key in ("farm", "gateway"):
        if not is_boot_id(document.get(key)):
            raise ReceiptError(f"receipt {key} is missing or not a valid id")
    boot_id = document.get("boot_id")
    if boot_id is not None and not is_boot_id(boot_id):
        raise ReceiptError("receipt boot_id is not a valid id")
    seqs = document.get("seqs")
    if not isinstance(seqs, list) or not 1 <= len(seqs) <= MAX_RECEIPT_RANGES:
        raise ReceiptError(f"receipt seqs must be a list of 1..{MAX_RECEIPT_RANGES} ranges")
    ranges = tuple(_seq_range(pair, i) for i, pair in enumerate(seqs))
    stored_at = document.get("stored_at")
    if not isinstance(stored_at, str) or len(stored_at) > 40:
        raise ReceiptError("receipt stored_at must be ISO-8601 text")
    try:
        datetime.fromisoformat(stored_at)
    except ValueError:
        raise ReceiptError(f"receipt stored_at {stored_at!r} is not ISO-8601") from None
    return Receipt(document["farm"], document["gateway"], boot_id, ranges, stored_at)
