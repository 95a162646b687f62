"""The optional radio uplinks of an animal entry (LoRaWAN): the JSON Schema and the
ingest decoder agree, and ingest writes one ``uplink`` point per uplink."""

from __future__ import annotations

import copy

import jsonschema
import pytest

from namazu.firmware_bridge.payload import load_schema
from namazu.server.ingest.payload import PayloadError, validate_activity_document
from namazu.server.ingest.service import activity_lines
from tests.server.payload_cases import valid_document

T0 = 1_767_225_600_000
UPLINK = {"t_ms": T0, "f_cnt": 41, "rssi_dbm": -112.0, "snr_db": -3.5,
          "radio_gateway": "a840410000000001", "gateways": 2}  # fmt: skip


def with_uplinks(uplinks) -> dict:
    document = valid_document("farm-l", "lora", 1, T0, animals=1, samples=3)
    document["animals"][0]["uplinks"] = uplinks
    return document


def test_uplinks_are_kept_and_written_as_points():
    document = with_uplinks([UPLINK, {"t_ms": T0 + 180_000, "f_cnt": 42}])
    jsonschema.validate(document, load_schema())
    batch = validate_activity_document(document)
    assert batch.animals[0].uplinks[0] == UPLINK
    lines = [line for line in activity_lines(batch) if line.startswith("uplink,")]
    assert lines == [
        "uplink,animal=lora-cow-000,farm=farm-l,gateway=lora f_cnt=41i,rssi_dbm=-112.0,"
        f'snr_db=-3.5,radio_gateway="a840410000000001",gateways=2i {T0}',
        f"uplink,animal=lora-cow-000,farm=farm-l,gateway=lora f_cnt=42i {T0 + 180_000}",
    ]


@pytest.mark.parametrize(
    "uplinks",
    [
        [],
        [{"t_ms": T0}],
        [UPLINK | {"f_cnt": -1}],
        [UPLINK | {"f_cnt": 2**32}],
        [UPLINK | {"rssi_dbm": 90}],
        [UPLINK | {"snr_db": "x"}],
        [UPLINK | {"radio_gateway": ""}],
        [UPLINK | {"gateways": 65}],
        [UPLINK | {"extra": 1}],
        ["not an object"],
    ],
)
def test_schema_and_decoder_refuse_the_same_uplinks(uplinks):
    document = with_uplinks(copy.deepcopy(uplinks))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(document, load_schema())
    with pytest.raises(PayloadError) as info:
        validate_activity_document(document)
    assert "uplinks" in info.value.detail
