"""Server-side payload decoding: reason codes, the malformed corpus, and the contract
that the hand-written validator agrees with the JSON Schema file."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import jsonschema
import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal

from namazu.server.ingest.payload import (
    MAX_EPOCH_MS,
    REASONS,
    Envelope,
    PayloadError,
    check_depth,
    deadletter_topic,
    decode_activity,
    decode_activity_message,
    decode_status,
    parse_topic,
    read_envelope,
    show,
)
from tests.budget import examples
from tests.server.payload_cases import malformed_corpus, valid_document

SCHEMA_PATH = (
    Path(__file__).resolve().parents[2] / "firmware_bridge/schemas/activity-v1.schema.json"
)
NOW_MS = 1_700_000_000_000
FUTURE_MS = 300_000
AGE_MS = 400 * 86_400_000
TOPIC = "namazu/v1/farm-a/gw-1/activity"


def decode(payload: bytes, topic: str = TOPIC):
    return decode_activity(topic, payload, NOW_MS, FUTURE_MS, AGE_MS)


def reason_of(payload: bytes, topic: str = TOPIC) -> str:
    with pytest.raises(PayloadError) as info:
        decode(payload, topic)
    assert info.value.reason in REASONS
    assert info.value.detail and "\n" not in info.value.detail
    return info.value.reason


def test_valid_document_decodes_to_arrays():
    doc = valid_document("farm-a", "gw-1", 7, NOW_MS - 600_000, animals=2, samples=3)
    batch = decode(orjson.dumps(doc))
    assert (batch.farm, batch.gateway, batch.seq) == ("farm-a", "gw-1", 7)
    assert batch.n_samples == 6
    first = batch.animals[0]
    assert first.animal == "gw-1-cow-000" and first.species == "cow"
    assert first.t_ms.dtype == np.int64
    assert_array_equal(first.t_ms, [NOW_MS - 600_000 + i * 60_000 for i in range(3)])
    assert_allclose(first.odba, [0.1, 0.11, 0.12])
    assert_allclose(batch.animals[1].vedba, [1.08, 1.09, 1.10])
    assert first.battery_v == pytest.approx(3.7)


def test_integral_floats_count_as_integers_like_json_schema():
    doc = valid_document("farm-a", "gw-1", 7, NOW_MS - 600_000)
    doc["seq"] = 7.0
    doc["animals"][0]["t_ms"] = [float(t) for t in doc["animals"][0]["t_ms"]]
    batch = decode(orjson.dumps(doc))
    assert batch.seq == 7
    assert batch.animals[0].t_ms.dtype == np.int64
    assert int(batch.animals[0].t_ms[0]) == NOW_MS - 600_000


def test_time_window_edges():
    doc = valid_document("farm-a", "gw-1", 1, NOW_MS, samples=1)
    doc["animals"][0]["t_ms"] = [NOW_MS + FUTURE_MS]
    decode(orjson.dumps(doc))
    doc["animals"][0]["t_ms"] = [NOW_MS + FUTURE_MS + 1]
    assert reason_of(orjson.dumps(doc)) == "time_out_of_range"
    doc["animals"][0]["t_ms"] = [NOW_MS - AGE_MS]
    decode(orjson.dumps(doc))
    doc["animals"][0]["t_ms"] = [NOW_MS - AGE_MS - 1]
    assert reason_of(orjson.dumps(doc)) == "time_out_of_range"


def test_ids_use_ecma_regex_semantics():
    # Python's re '$' also matches before a final newline; the schema's ECMA-262 does not.
    doc = valid_document("farm-a", "gw-1", 1, NOW_MS - 600_000)
    doc["animals"][0]["animal"] = "cow-1\n"
    assert reason_of(orjson.dumps(doc)) == "schema"
    doc["animals"][0]["animal"] = "c" * 65
    assert reason_of(orjson.dumps(doc)) == "schema"
    doc["animals"][0]["animal"] = "c" * 64
    decode(orjson.dumps(doc))


def test_malformed_corpus_each_rejected_with_its_reason():
    cases = malformed_corpus("farm-a", "gw-1", NOW_MS)
    assert len(cases) == 200
    assert len({case.payload for case in cases}) == 200
    seen = Counter()
    for case in cases:
        got = reason_of(case.payload)
        assert got == case.reason, f"{case.description}: expected {case.reason}, got {got}"
        seen[got] += 1
    assert set(seen) == set(REASONS)


def test_corpus_cases_the_schema_can_express_are_schema_invalid_too():
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text()))
    checked = 0
    for case in malformed_corpus("farm-a", "gw-1", NOW_MS):
        try:
            document = json.loads(case.payload, parse_constant=_refuse)
        except ValueError:
            assert case.reason in {"not_json", "non_finite"}
            continue
        if case.reason in {"topic_mismatch", "length_mismatch"} or case.description in {
            "sample next year",
            "sample an hour ahead",
            "sample in 1970",
            "12000 samples over two animals",
            "overflowing number",
        }:
            continue  # rules beyond the schema (or a float the schema cannot see)
        assert not validator.is_valid(document), case.description
        checked += 1
    assert checked > 100


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("namazu/v1/farm-a/gw-1/activity", ("farm-a", "gw-1", "activity")),
        ("namazu/v1/f.1/g_2/status", ("f.1", "g_2", "status")),
        ("namazu/v1/f/g/raw", ("f", "g", "raw")),
    ],
)
def test_parse_topic(topic, expected):
    assert parse_topic(topic) == expected


@pytest.mark.parametrize(
    "topic",
    [
        "namazu/v2/f/g/activity",
        "namazu/v1/f/g/activity/extra",
        "namazu/v1/f/g/alarms",
        "namazu/v1/f g/g/activity",
        "namazu/v1//g/activity",
        "namazu/v1/f/g",
    ],
)
def test_parse_topic_rejects(topic):
    with pytest.raises(PayloadError) as info:
        parse_topic(topic)
    assert info.value.reason == "topic_mismatch"
    assert repr(topic) in info.value.detail


def test_activity_on_status_topic_is_topic_mismatch():
    doc = valid_document("farm-a", "gw-1", 1, NOW_MS - 600_000)
    assert reason_of(orjson.dumps(doc), "namazu/v1/farm-a/gw-1/status") == "topic_mismatch"


def test_deadletter_topic():
    assert deadletter_topic("namazu/v1/farm-a/gw-1/activity") == "namazu/v1/deadletter/farm-a/gw-1"
    assert deadletter_topic("garbage") == "namazu/v1/deadletter/unknown/unknown"


def test_decode_status_full_and_last_will():
    topic = "namazu/v1/farm-a/gw-1/status"
    full = {
        "schema": "namazu.status/1",
        "farm": "farm-a",
        "gateway": "gw-1",
        "online": True,
        "sent_ms": NOW_MS,
        "clock_offset_s": -1.25,
        "spool_depth": 12,
        "last_seq": 99,
    }
    status = decode_status(topic, orjson.dumps(full))
    assert status.online is True
    assert status.clock_offset_s == pytest.approx(-1.25)
    assert (status.spool_depth, status.last_seq, status.sent_ms) == (12, 99, NOW_MS)
    will = decode_status(topic, b'{"schema":"namazu.status/1","online":false}')
    assert will.online is False and will.sent_ms is None and will.clock_offset_s is None


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"offline", "not_json"),
        (b'{"schema":"namazu.status/2","online":true}', "schema_version"),
        (b'{"schema":"namazu.status/1","online":"yes"}', "schema"),
        (b'{"schema":"namazu.status/1","online":true,"gateway":"gw-9"}', "topic_mismatch"),
        (b'{"schema":"namazu.status/1","online":true,"clock_offset_s":NaN}', "non_finite"),
    ],
)
def test_decode_status_rejects(payload, reason):
    with pytest.raises(PayloadError) as info:
        decode_status("namazu/v1/farm-a/gw-1/status", payload)
    assert info.value.reason == reason


# --- contract: the fast decoder and the JSON Schema validator agree ------------------

SCHEMA_REASONS = set(REASONS) - {"topic_mismatch", "length_mismatch"}


def _refuse(token: str):
    raise ValueError(f"{token} is not JSON")


valid_segment = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
bad_segment = st.one_of(st.sampled_from(["", "-x", "a b", "x" * 65, "ü", "a/b"]), st.integers(0, 9))
epoch = st.integers(0, MAX_EPOCH_MS)
good_time = st.one_of(epoch, epoch.map(float))
bad_time = st.one_of(
    st.integers(-(2**40), -1),
    st.integers(MAX_EPOCH_MS + 1, 2**62),
    st.floats(0, 1e13, allow_nan=False).filter(lambda x: not x.is_integer()),
    st.booleans(),
    st.text(max_size=3),
    st.none(),
)
good_activity = st.one_of(st.floats(0, 10, allow_nan=False), st.integers(0, 5))
bad_activity = st.one_of(
    st.floats(-10, -1e-9, allow_nan=False), st.booleans(), st.none(), st.text(max_size=2)
)
good_seq = st.one_of(st.integers(0, 2**53 - 1), st.integers(0, 100).map(float))
bad_seq = st.one_of(st.integers(-5, -1), st.integers(2**53, 2**60), st.text(max_size=2))
good_battery = st.one_of(st.floats(0, 10), st.integers(0, 10))
bad_battery = st.one_of(st.floats(10.001, 100), st.integers(11, 99), st.text(), st.none())

#: Where a generated document is broken (None: nowhere, so it is valid).
DEFECTS = [None] * 6 + [
    "schema", "farm", "gateway", "seq", "sent_ms", "animals_empty", "animals_type",
    "drop_top", "extra_top", "animal", "species", "t_ms", "t_ms_empty", "odba", "vedba",
    "battery", "drop_animal_key", "extra_animal_key", "boot_id",
]  # fmt: skip


def _pick(draw, defect, name, good, bad):
    return draw(bad if defect == name else good)


@st.composite
def animal_entries(draw, defect):
    n = draw(st.integers(0 if defect == "t_ms_empty" else 1, 6)) if defect != "t_ms_empty" else 0
    times = [_pick(draw, None, "", good_time, bad_time) for _ in range(n)]
    odba = [draw(good_activity) for _ in range(n)]
    vedba = [draw(good_activity) for _ in range(n)]
    if n and defect in {"t_ms", "odba", "vedba"}:
        target = {"t_ms": times, "odba": odba, "vedba": vedba}[defect]
        target[draw(st.integers(0, n - 1))] = draw(bad_time if defect == "t_ms" else bad_activity)
    entry = {
        "animal": _pick(draw, defect, "animal", valid_segment, bad_segment),
        "species": draw(
            st.sampled_from(["horse", "Cow", 3, None])
            if defect == "species"
            else st.sampled_from(["cow", "sheep", "dog"])
        ),
        "t_ms": times,
        "odba": odba,
        "vedba": vedba,
    }
    if defect == "battery" or draw(st.booleans()):
        entry["battery_v"] = _pick(draw, defect, "battery", good_battery, bad_battery)
    if defect == "drop_animal_key":
        del entry[draw(st.sampled_from(["animal", "species", "t_ms", "odba", "vedba"]))]
    if defect == "extra_animal_key":
        entry["extra"] = 1
    return entry


@st.composite
def documents(draw):
    defect = draw(st.sampled_from(DEFECTS))
    n_animals = draw(st.integers(1, 4))
    broken = draw(st.integers(0, n_animals - 1))
    animals = [animal_entries(defect if i == broken else None) for i in range(n_animals)]
    doc = {
        "schema": draw(
            st.sampled_from(["namazu.activity/2", "namazu.status/1", 1, None])
            if defect == "schema"
            else st.just("namazu.activity/1")
        ),
        "farm": _pick(draw, defect, "farm", valid_segment, bad_segment),
        "gateway": _pick(draw, defect, "gateway", valid_segment, bad_segment),
        "seq": _pick(draw, defect, "seq", good_seq, bad_seq),
        "sent_ms": _pick(draw, defect, "sent_ms", good_time, bad_time),
        "animals": [draw(a) for a in animals],
    }
    if defect == "boot_id" or draw(st.booleans()):
        doc["boot_id"] = _pick(draw, defect, "boot_id", valid_segment, bad_segment)
    if defect == "animals_empty":
        doc["animals"] = []
    if defect == "animals_type":
        doc["animals"] = draw(st.sampled_from([{}, "cow", 1, [1]]))
    if defect == "drop_top":
        del doc[draw(st.sampled_from(sorted(doc)))]
    if defect == "extra_top":
        doc["note"] = "x"
    return doc


@given(doc=documents())
@settings(max_examples=examples(400), deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_decoder_agrees_with_json_schema(doc):
    validator = _VALIDATOR
    payload = orjson.dumps(doc)
    schema_valid = validator.is_valid(json.loads(payload, parse_constant=_refuse))
    farm, gateway = doc.get("farm"), doc.get("gateway")
    both_ok = all(isinstance(x, str) and parse_ok(x) for x in (farm, gateway))
    topic = f"namazu/v1/{farm}/{gateway}/activity" if both_ok else "namazu/v1/f/g/activity"
    # A window that admits every time the schema admits: only the schema decides.
    try:
        decode_activity(topic, payload, 0, MAX_EPOCH_MS + 1, 0)
    except PayloadError as exc:
        assert not schema_valid, f"decoder rejected a schema-valid document: {exc}"
        assert exc.reason in SCHEMA_REASONS
    else:
        assert schema_valid, "decoder accepted a document the schema rejects"


def parse_ok(segment: str) -> bool:
    try:
        parse_topic(f"namazu/v1/{segment}/x/activity")
    except PayloadError:
        return False
    return True


_VALIDATOR = jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text()))


@given(
    values=st.lists(
        st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999"]), min_size=1, max_size=3
    ),
    where=st.sampled_from(["odba", "vedba", "battery_v"]),
)
@settings(max_examples=examples(40), deadline=None)
def test_non_finite_tokens_are_non_finite(values, where):
    doc = valid_document("farm-a", "gw-1", 1, NOW_MS - 600_000, animals=1, samples=len(values))
    text = orjson.dumps(doc).decode()
    if where == "battery_v":
        text = text.replace('"battery_v":3.7', f'"battery_v":{values[0]}')
    else:
        start = text.index(f'"{where}":[') + len(where) + 4
        end = text.index("]", start)
        text = text[:start] + ",".join(values) + text[end:]
    assert reason_of(text.encode()) == "non_finite"


# --- poison: nesting, giant strings, huge key counts ------------------------------------


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def _doc_with(where: str, value_json: bytes) -> bytes:
    """A valid document whose ``where`` (``schema``, ``species``, ``farm``, ``extra``)
    is replaced by a raw JSON value."""
    doc = valid_document("farm-a", "gw-1", 7, NOW_MS - 600_000)
    marker = "\u0001MARK\u0001"
    if where == "species":
        doc["animals"][0]["species"] = marker
    elif where == "sample":
        doc["animals"][1]["odba"][0] = marker
    elif where == "battery":
        doc["animals"][0]["battery_v"] = marker
    elif where == "extra":
        doc["extra"] = marker
    else:
        doc[where] = marker
    return orjson.dumps(doc).replace(orjson.dumps(marker), value_json)


@pytest.mark.parametrize("where", ["schema", "species", "farm", "extra", "sample", "battery"])
@pytest.mark.parametrize("depth", [9, 1000, 1019])
def test_deep_nesting_is_refused_without_recursion(where, depth):
    payload = _doc_with(where, _nested(depth))
    with pytest.raises(PayloadError) as info:
        decode(payload)
    assert info.value.reason == "schema" and "nest deeper than" in info.value.detail


def test_deep_nesting_in_a_status_message_is_refused():
    status = b'{"schema": ' + _nested(1020) + b', "online": true}'
    with pytest.raises(PayloadError) as info:
        decode_status("namazu/v1/farm-a/gw-1/status", status)
    assert info.value.reason == "schema"
    deeper = b'{"schema": ' + _nested(5000) + b', "online": true}'  # beyond orjson's limit
    with pytest.raises(PayloadError) as info:
        decode_status("namazu/v1/farm-a/gw-1/status", deeper)
    assert info.value.reason == "not_json"


def test_nesting_up_to_the_limit_is_judged_by_the_schema():
    check_depth([[[[[[[[1]]]]]]]])  # 8 levels
    with pytest.raises(PayloadError):
        check_depth([[[[[[[[[1]]]]]]]]])  # 9
    check_depth({"a": [{"b": [1, 2, 3]}] * 1000})


@given(
    depth=st.integers(1, 1024),
    where=st.sampled_from(["schema", "species", "farm", "extra", "sample", "battery"]),
    opener=st.sampled_from([b"[", b'{"k":']),
)
@settings(max_examples=examples(60), deadline=None)
def test_any_nesting_anywhere_gives_a_reason_never_a_crash(depth, where, opener):
    closer = b"]" if opener == b"[" else b"}"
    value = opener * depth + b"1" + closer * depth
    with pytest.raises(PayloadError) as info:
        decode(_doc_with(where, value))
    assert info.value.reason in REASONS
    assert len(info.value.detail) < 400 and "\n" not in info.value.detail


@pytest.mark.parametrize("where", ["schema", "species", "farm", "extra"])
def test_giant_strings_give_short_details(where):
    payload = _doc_with(where, orjson.dumps("x" * 3_000_000))
    with pytest.raises(PayloadError) as info:
        decode(payload)
    assert info.value.reason in REASONS and len(info.value.detail) < 400


def test_huge_key_counts_give_short_details():
    doc = valid_document("farm-a", "gw-1", 7, NOW_MS - 600_000)
    doc.update({f"key-{i:06d}-" + "k" * 20: i for i in range(100_000)})
    with pytest.raises(PayloadError) as info:
        decode(orjson.dumps(doc))
    assert info.value.reason == "schema" and "and 99995 more" in info.value.detail
    assert len(info.value.detail) < 400
    animal_keys = valid_document("farm-a", "gw-1", 7, NOW_MS - 600_000)
    animal_keys["animals"][0].update({str(i): i for i in range(100_000)})
    with pytest.raises(PayloadError) as info:
        decode(orjson.dumps(animal_keys))
    assert len(info.value.detail) < 400


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=200),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=30,
)


@given(value=json_values)
@settings(max_examples=examples(200), deadline=None)
def test_show_is_short_and_total(value):
    text = show(value)
    assert isinstance(text, str) and len(text) <= 90


def test_refused_animals_are_named_and_the_rest_kept():
    doc = valid_document("farm-a", "gw-1", 7, NOW_MS - 600_000, animals=4)
    doc["animals"][1]["species"] = "horse"
    doc["animals"][2]["t_ms"][0] = NOW_MS + 3_600_000  # an hour ahead of the server
    doc["boot_id"] = "b-1"
    message = decode_activity_message(
        TOPIC, orjson.loads(orjson.dumps(doc)), NOW_MS, FUTURE_MS, AGE_MS
    )
    assert (message.seq, message.boot_id) == (7, "b-1")
    assert [(r.index, r.animal, r.reason) for r in message.rejected] == [
        (1, "gw-1-cow-001", "unknown_species"),
        (2, "gw-1-cow-002", "time_out_of_range"),
    ]
    assert [a.animal for a in message.batch.animals] == ["gw-1-cow-000", "gw-1-cow-003"]
    assert reason_of(orjson.dumps(doc)) == "unknown_species"  # the strict decoder: the first
    doc["animals"] = [doc["animals"][1]]
    alone = decode_activity_message(
        TOPIC, orjson.loads(orjson.dumps(doc)), NOW_MS, FUTURE_MS, AGE_MS
    )
    assert alone.batch is None and len(alone.rejected) == 1


def test_envelope_is_read_from_whatever_is_valid():
    assert read_envelope(TOPIC, {"seq": 5, "boot_id": "b"}) == Envelope("farm-a", "gw-1", 5, "b")
    assert read_envelope(TOPIC, {"seq": [5], "boot_id": {"x": 1}}) == Envelope(
        "farm-a", "gw-1", None, None
    )
    assert read_envelope(TOPIC, [1]) == Envelope("farm-a", "gw-1", None, None)
    assert read_envelope("namazu/v1/bad farm/gw/activity", {}) is None
