"""The vectorised ingest paths give exactly the results of the per-animal reference paths."""

from __future__ import annotations

import json
import time

import numpy as np
import orjson

from server import payload as payload_module
from server.influx import float_series_lines, multi_series_lines
from server.payload import PayloadError, validate_activity_document
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
