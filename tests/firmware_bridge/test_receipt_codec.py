"""The receipt contract (``namazu.receipt/1``): what ingest publishes after a write is
what the gateway reads back, and a forged or broken receipt is refused with a reason."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from namazu.firmware_bridge.payload import (
    MAX_RECEIPT_RANGES,
    MAX_SEQ,
    RECEIPT_SCHEMA_ID,
    ReceiptError,
    decode_receipt,
    encode_activity,
    encode_receipt,
    receipt_topic,
    seq_ranges,
)
from namazu.server.ingest.payload import PayloadError, decode_activity

STORED = datetime(2026, 11, 30, 5, 20, 1, 250_000, tzinfo=UTC)


def test_receipt_round_trip_and_wire_format():
    payload = encode_receipt("farm-a", "gw-1", "b0f3", [(1, 3), (7, 7)], STORED)
    assert orjson.loads(payload) == {
        "schema": RECEIPT_SCHEMA_ID,
        "farm": "farm-a",
        "gateway": "gw-1",
        "boot_id": "b0f3",
        "seqs": [[1, 3], [7, 7]],
        "stored_at": "2026-11-30T05:20:01.250Z",
    }
    receipt = decode_receipt(payload)
    assert (receipt.farm, receipt.gateway, receipt.boot_id) == ("farm-a", "gw-1", "b0f3")
    assert receipt.seqs == ((1, 3), (7, 7))
    assert [s for s in range(10) if receipt.covers(s)] == [1, 2, 3, 7]
    assert receipt_topic("farm-a", "gw-1") == "namazu/v1/farm-a/gw-1/receipt"


def test_receipt_without_boot_id_and_other_zone():
    local = STORED.astimezone(timezone(timedelta(hours=2)))
    receipt = decode_receipt(encode_receipt("f", "g", None, [(0, 0)], local))
    assert receipt.boot_id is None and receipt.stored_at == "2026-11-30T05:20:01.250Z"


def test_unknown_keys_are_ignored_for_compatibility():
    doc = orjson.loads(encode_receipt("f", "g", None, [(4, 9)], STORED))
    doc["worker"] = "ingest-2"
    assert decode_receipt(orjson.dumps(doc)).seqs == ((4, 9),)


@given(st.lists(st.integers(0, 10_000), max_size=200))
def test_seq_ranges_cover_exactly_the_seqs(seqs):
    ranges = seq_ranges(seqs)
    covered = [s for first, last in ranges for s in range(first, last + 1)]
    assert covered == sorted(set(seqs))
    assert all(b[0] > a[1] + 1 for a, b in zip(ranges, ranges[1:], strict=False))


@pytest.mark.parametrize(
    "change, fault",
    [
        ({"schema": "namazu.receipt/2"}, "schema"),
        ({"farm": "bad farm"}, "farm"),
        ({"gateway": 3}, "gateway"),
        ({"boot_id": ["x"]}, "boot_id"),
        ({"seqs": []}, "seqs"),
        ({"seqs": [[3, 1]]}, "first > last"),
        ({"seqs": [[1, MAX_SEQ + 1]]}, "integers"),
        ({"seqs": [[1.5, 2]]}, "integers"),
        ({"seqs": [[1, 2, 3]]}, "pair"),
        ({"seqs": [[0, 0]] * (MAX_RECEIPT_RANGES + 1)}, "seqs"),
        ({"stored_at": "yesterday"}, "ISO-8601"),
    ],
)
def test_broken_receipts_are_refused_with_the_fault_named(change, fault):
    doc = orjson.loads(encode_receipt("f", "g", "b", [(1, 2)], STORED))
    doc.update(change)
    with pytest.raises(ReceiptError, match=fault):
        decode_receipt(orjson.dumps(doc))


def test_deeply_nested_receipt_is_refused_without_recursion():
    deep = b'{"schema": "namazu.receipt/1", "farm": "f", "gateway": "g", "seqs": ' + (
        b"[" * 1000 + b"]" * 1000 + b"}"
    )
    with pytest.raises(ReceiptError, match="seqs"):
        decode_receipt(deep)
    with pytest.raises(ReceiptError, match="not JSON"):
        decode_receipt(b"[" * 5000)


def test_activity_boot_id_is_optional_and_checked():
    animals = [{"animal": "c1", "species": "cow", "t_ms": [1_000], "odba": [0.1], "vedba": [0.1]}]
    topic = "namazu/v1/f/g/activity"
    with_boot = encode_activity("f", "g", 1, 1_000, animals, boot_id="7f3a9c")
    assert decode_activity(topic, with_boot, 1_000, 0, 10_000).boot_id == "7f3a9c"
    assert (
        decode_activity(
            topic, encode_activity("f", "g", 1, 1_000, animals), 1_000, 0, 10_000
        ).boot_id
        is None
    )
    bad = orjson.loads(with_boot)
    bad["boot_id"] = "has space"
    with pytest.raises(PayloadError) as info:
        decode_activity(topic, orjson.dumps(bad), 1_000, 0, 10_000)
    assert info.value.reason == "schema" and "boot_id" in info.value.detail
