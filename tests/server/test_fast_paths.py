"""The vectorised ingest paths give exactly the results of the per-animal reference paths."""

from __future__ import annotations

import json
import time

import numpy as np
import orjson
import pytest

from namazu.server.ingest import payload as payload_module
from namazu.server.ingest.payload import PayloadError, validate_activity_document
from namazu.server.store.influx import float_series_lines, multi_series_lines
from tests.chaos import fuzz


def test_multi_series_lines_equals_per_series_lines():
    rng = np.random.default_rng(3)
    tags = [
        {"farm": "f 1", "gateway": "g=1", "animal": f"cow,{k}", "species": "cow"} for k in range(7)
    ]
    sizes = [1, 3, 1, 10, 2, 1, 5]
    odba = [rng.gamma(2.0, 0.1, n) for n in sizes]
    vedba = [x * 0.7 for x in odba]
    times = [1_700_000_000_000 + 60_000 * np.arange(n) for n in sizes]
    expected = []
    for k in range(7):
        expected += float_series_lines(
            "activity", tags[k], {"odba": odba[k], "vedba": vedba[k]}, times[k]
        )
    got = multi_series_lines("activity", tags, {"odba": odba, "vedba": vedba}, times)
    assert got == expected
    one = multi_series_lines("activity", tags[:2], {"odba": odba[:2]}, times[:2])
    assert one == float_series_lines(
        "activity", tags[0], {"odba": odba[0]}, times[0]
    ) + float_series_lines("activity", tags[1], {"odba": odba[1]}, times[1])


def _per_animal(document):
    """The reference path: every animal validated on its own."""
    return [payload_module._animal(item, i) for i, item in enumerate(document["animals"])]


def test_fast_animal_validation_agrees_with_the_per_animal_path():
    now = int(time.time() * 1000)
    compared = fast_taken = 0
    for _topic, body in fuzz.payload_cases(3000, seed=21, now_ms=now):
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(document, dict) or not isinstance(document.get("animals"), list):
            continue
        items = document["animals"]
        if not 1 <= len(items) <= payload_module.MAX_ANIMALS:
            continue
        fast = payload_module._animals_fast(items)
        try:
            reference = _per_animal(document)
        except PayloadError:
            assert fast is None  # the fast path never accepts what the reference rejects
            continue
        compared += 1
        if fast is None:
            continue
        fast_taken += 1
        assert len(fast) == len(reference)
        for a, b in zip(fast, reference, strict=True):
            assert (a.animal, a.species, a.battery_v) == (b.animal, b.species, b.battery_v)
            for column in ("t_ms", "odba", "vedba"):
                x, y = getattr(a, column), getattr(b, column)
                assert x.dtype == y.dtype and np.array_equal(x, y)
    assert compared > 500 and fast_taken > 500


def test_validate_document_with_many_single_sample_animals():
    doc = {
        "schema": "namazu.activity/1",
        "farm": "f",
        "gateway": "g",
        "seq": 1,
        "sent_ms": 1,
        "animals": [
            {"animal": f"a{k}", "species": "dog", "t_ms": [k], "odba": [0.5], "vedba": [0.25]}
            for k in range(100)
        ],
    }
    batch = validate_activity_document(json.loads(json.dumps(doc)))
    assert [int(a.t_ms[0]) for a in batch.animals] == list(range(100))
    assert batch.n_samples == 100


def test_flat_columns_give_the_same_lines_as_the_per_animal_path():
    from namazu.server.ingest.payload import ActivityBatch, decode_activity
    from namazu.server.ingest.service import activity_lines

    now = int(time.time() * 1000)
    window = (300_000, 400 * 86_400_000)
    compared = 0
    for topic, body in fuzz.payload_cases(1500, seed=5, now_ms=now):
        try:
            batch = decode_activity(topic, body, now, *window)
        except PayloadError:
            continue
        if batch.columns is None:
            continue
        compared += 1
        fast_lines = activity_lines(batch)
        assert "animals" not in vars(batch)  # serialised without per-animal objects
        reference = ActivityBatch(
            batch.farm, batch.gateway, batch.seq, batch.sent_ms, batch.animals
        )
        assert reference.columns is None
        assert fast_lines == activity_lines(reference)
        assert batch.columns.lengths == [len(a.t_ms) for a in batch.animals]
        assert sum(batch.columns.lengths) == batch.n_samples
    assert compared > 200


def test_prefixed_float_lines_equal_per_series_lines():
    from namazu.server.store.influx import prefixed_float_lines, series_prefix

    tags = [
        {"animal": f"cow,{k}", "farm": "f 1", "gateway": "g=1", "species": "cow"} for k in range(4)
    ]
    sizes = [2, 1, 3, 1]
    rng = np.random.default_rng(9)
    odba = rng.gamma(2.0, 0.1, sum(sizes))
    times = 1_700_000_000_000 + 60_000 * np.arange(sum(sizes))
    expected, start = [], 0
    for tag, n in zip(tags, sizes, strict=True):
        stop = start + n
        expected += float_series_lines(
            "activity",
            tag,
            {"odba": odba[start:stop], "vedba": odba[start:stop] / 2},
            times[start:stop],
        )
        start = stop
    prefixes = [series_prefix("activity", tuple(sorted(t.items()))) for t in tags]
    got = prefixed_float_lines(
        prefixes, sizes, {"odba": odba.tolist(), "vedba": (odba / 2).tolist()}, times.tolist()
    )
    assert got == expected


def test_a_batch_from_columns_behaves_like_a_plain_batch():
    from namazu.server.ingest.payload import ActivityBatch

    document = {
        "schema": "namazu.activity/1",
        "farm": "f",
        "gateway": "g",
        "seq": 3,
        "sent_ms": 1,
        "animals": [
            {"animal": "a1", "species": "cow", "t_ms": [1, 2], "odba": [0.5, 0.25],
             "vedba": [0.2, 0.1], "battery_v": 3.7},
            {"animal": "a2", "species": "dog", "t_ms": [5], "odba": [1], "vedba": [0.5]},
        ],
    }  # fmt: skip
    lazy = validate_activity_document(document)
    assert lazy.columns is not None and "animals" not in vars(lazy)
    assert lazy.n_samples == 3
    plain = ActivityBatch("f", "g", 3, 1, _per_animal(document))
    assert repr(lazy) == repr(plain)  # every field, the arrays' values included
    assert [a.battery_v for a in lazy.animals] == [3.7, None]
    assert lazy.animals is lazy.animals  # built once
    with pytest.raises(AttributeError, match="no attribute 'animal'"):
        _ = lazy.animal
