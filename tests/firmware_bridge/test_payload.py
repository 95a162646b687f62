"""Payload encoder and batching."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from namazu.firmware_bridge.payload import (
    PayloadEncodeError,
    batches_from_frame,
    encode_activity,
    sample_count,
)
from namazu.firmware_bridge.simulator import Herd


def test_batches_cover_every_sample_once_in_order():
    df = Herd("f", "gw-2", {"cow": 7, "dog": 2}, seed=1).activity(0, 3_600_000 * 3, True)
    batches = list(batches_from_frame(df, "f", "gw-2", max_samples=100))
    assert all(sample_count(b) <= 100 for b in batches)
    assert sum(sample_count(b) for b in batches) == len(df)
    rebuilt = [(a["animal"], int(t)) for b in batches for a in b for t in a["t_ms"]]
    assert sorted(rebuilt) == sorted(zip(df["animal"], df["t_ms"].astype(int), strict=True))
    assert all("battery_v" in a for b in batches for a in b)


def test_encode_rejects_what_the_schema_forbids():
    ok = {"animal": "a", "species": "cow", "t_ms": [1], "odba": [0.1], "vedba": [0.1]}
    doc = orjson.loads(encode_activity("f", "g", 3, 5, [ok]))
    assert doc["seq"] == 3 and doc["animals"][0]["odba"] == [0.1]
    with pytest.raises(PayloadEncodeError, match="non-finite"):
        encode_activity("f", "g", 1, 1, [ok | {"odba": [np.nan]}])
    with pytest.raises(PayloadEncodeError, match="lengths"):
        encode_activity("f", "g", 1, 1, [ok | {"t_ms": [1, 2]}])
    with pytest.raises(PayloadEncodeError, match="at most 10000"):
        big = ok | {"t_ms": list(range(10_001)), "odba": [0.1] * 10_001, "vedba": [0.1] * 10_001}
        encode_activity("f", "g", 1, 1, [big])
    with pytest.raises(PayloadEncodeError, match="at least one"):
        encode_activity("f", "g", 1, 1, [])
