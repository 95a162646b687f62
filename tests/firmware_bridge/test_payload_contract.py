"""Contract: the gateway's encoder, the JSON Schema files and the server's decoder agree."""

from __future__ import annotations

import jsonschema
import numpy as np
import orjson
import pytest

from namazu.firmware_bridge.payload import (
    activity_topic,
    batches_from_frame,
    encode_activity,
    encode_status,
    load_schema,
    status_topic,
)
from namazu.firmware_bridge.simulator import Herd
from namazu.server.ingest.payload import PayloadError, decode_activity, decode_status

NOW_MS = 1_714_600_000_000
DAY_MS = 86_400_000


@pytest.fixture(scope="module")
def batches():
    herd = Herd("farm.a", "gw_7", {"cow": 5, "sheep": 3, "dog": 2}, seed=11, dropout_rate=0.05)
    df = herd.activity(NOW_MS - 2 * 3_600_000, NOW_MS, with_battery=True)
    return df, list(batches_from_frame(df, "farm.a", "gw_7", max_samples=250))


def test_every_encoded_batch_is_schema_valid_and_decodes_to_the_same_samples(batches):
    df, chunks = batches
    validator = jsonschema.Draft202012Validator(load_schema())
    decoded = []
    for seq, animals in enumerate(chunks, start=1):
        payload = encode_activity("farm.a", "gw_7", seq, NOW_MS, animals)
        validator.validate(orjson.loads(payload))
        batch = decode_activity(
            activity_topic("farm.a", "gw_7"), payload, NOW_MS, 300_000, 400 * DAY_MS
        )
        assert (batch.farm, batch.gateway, batch.seq, batch.sent_ms) == (
            "farm.a",
            "gw_7",
            seq,
            NOW_MS,
        )
        for a in batch.animals:
            decoded += [
                (a.animal, a.species, int(t), o, v)
                for t, o, v in zip(a.t_ms, a.odba, a.vedba, strict=True)
            ]
            assert a.battery_v is not None and 3.3 < a.battery_v < 4.2
    got = sorted(decoded)
    want = sorted(zip(df.animal, df.species, df.t_ms.astype(int), df.odba, df.vedba, strict=True))
    assert [g[:3] for g in got] == [w[:3] for w in want]
    np.testing.assert_allclose([g[3] for g in got], [w[3] for w in want], atol=1e-6)
    np.testing.assert_allclose([g[4] for g in got], [w[4] for w in want], atol=1e-6)


def test_server_rejects_a_payload_on_the_wrong_gateway_topic(batches):
    payload = encode_activity("farm.a", "gw_7", 1, NOW_MS, batches[1][0])
    with pytest.raises(PayloadError) as info:
        decode_activity(activity_topic("farm.a", "gw_8"), payload, NOW_MS, 300_000, DAY_MS)
    assert info.value.reason == "topic_mismatch"


@pytest.mark.parametrize("online", [True, False])
def test_status_round_trip(online):
    payload = encode_status("farm.a", "gw_7", online, NOW_MS, 1.25, 17, 0 if online else 42)
    jsonschema.validate(orjson.loads(payload), load_schema("status-v1.schema.json"))
    status = decode_status(status_topic("farm.a", "gw_7"), payload)
    assert status.online is online
    assert status.clock_offset_s == 1.25 and status.spool_depth == 17
    assert status.last_seq == (0 if online else 42) and status.sent_ms == NOW_MS


def test_status_with_an_unmeasured_clock_offset_round_trips_as_null():
    payload = encode_status("farm.a", "gw_7", True, NOW_MS, None, 0, 0)
    document = orjson.loads(payload)
    assert document["clock_offset_s"] is None
    jsonschema.validate(document, load_schema("status-v1.schema.json"))
    assert decode_status(status_topic("farm.a", "gw_7"), payload).clock_offset_s is None
