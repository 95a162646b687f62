"""The compact LoRaWAN uplink: Python codec and the JavaScript codec in deploy/lorawan/,
run by Node.js on the same test vectors."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from namazu.firmware_bridge.lorawan import (
    MAX_UPLINK_BYTES,
    ActivityUplink,
    LorawanError,
    decode_interval_downlink,
    decode_uplink,
    encode_interval_downlink,
    encode_uplink,
    uplink_from_object,
    uplink_to_object,
)

ROOT = Path(__file__).resolve().parents[2]
CODEC_JS = ROOT / "deploy" / "lorawan" / "namazu-codec.js"
RUNNER_JS = Path(__file__).with_name("run_codec.js")


def vectors() -> list[ActivityUplink]:
    """Uplinks covering every length, the edges of each field and saturation."""
    rng = np.random.default_rng(19)
    out = [
        ActivityUplink(0, 0, None, 0, (0.0,), (0.0,)),
        ActivityUplink(2**32 - 1, 65_535, 4.55, 255, (6.5535,) * 10, (6.5535,) * 10),
        ActivityUplink(1_767_225_600, 7, 3.71, 3, (0.00005, 0.00015), (0.00025, 1.23455)),
    ]
    for n in range(1, 11):
        odba = rng.lognormal(-3, 1, n)
        out.append(
            ActivityUplink(
                1_767_225_600 + 60 * n,
                int(rng.integers(0, 65_536)),
                float(np.round(rng.uniform(2.01, 4.55), 2)),
                int(rng.integers(0, 256)),
                tuple(float(x) for x in np.round(odba, 4)),
                tuple(float(x) for x in np.round(odba * 0.66, 4)),
            )
        )
    return out


def test_round_trip_and_size():
    for uplink in vectors():
        data = encode_uplink(uplink)
        assert len(data) == 9 + 4 * len(uplink.odba) <= MAX_UPLINK_BYTES <= 51
        back = decode_uplink(data)
        assert back.base_s == uplink.base_s and back.seq == uplink.seq
        assert back.config_id == uplink.config_id and back.battery_v == uplink.battery_v
        np.testing.assert_allclose(back.odba, uplink.odba, atol=0.5e-4)
        np.testing.assert_allclose(back.vedba, uplink.vedba, atol=0.5e-4)
        assert uplink_from_object(uplink_to_object(back)) == back


def test_saturation_and_battery_clipping():
    data = encode_uplink(ActivityUplink(60, 1, 9.0, 1, (12.0,), (0.5,)))
    back = decode_uplink(data)
    assert back.odba == (6.5535,) and back.battery_v == 4.55


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "bad_length"),
        (bytes(12), "bad_length"),
        (bytes(14), "bad_length"),
        (bytes(53), "bad_length"),
        (b"\x02" + bytes(12), "bad_version"),
    ],
)
def test_malformed_uplinks_are_named(data, reason):
    with pytest.raises(LorawanError) as info:
        decode_uplink(data)
    assert info.value.reason == reason


@pytest.mark.parametrize(
    "obj",
    [
        None,
        {"version": 2},
        {"version": 1, "base_time_s": -1, "seq": 0, "config_id": 0, "odba_g": [0], "vedba_g": [0]},
        {"version": 1, "base_time_s": 0, "seq": 0, "config_id": 0, "odba_g": [], "vedba_g": []},
        {
            "version": 1,
            "base_time_s": 0,
            "seq": 0,
            "config_id": 0,
            "odba_g": [0],
            "vedba_g": [0, 1],
        },
        {"version": 1, "base_time_s": 0, "seq": 0, "config_id": 0, "odba_g": ["x"], "vedba_g": [0]},
    ],
)
def test_malformed_decoded_objects_are_refused(obj):
    with pytest.raises(LorawanError):
        uplink_from_object(obj)


def test_interval_downlink():
    assert decode_interval_downlink(encode_interval_downlink(5, 17)) == (5, 17)
    for interval, config_id in [(0, 1), (11, 1), (5, 0), (5, 256)]:
        with pytest.raises(LorawanError):
            encode_interval_downlink(interval, config_id)


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_javascript_codec_matches_python_on_the_same_vectors():
    uplinks = vectors()
    encoded = [encode_uplink(u) for u in uplinks]
    payload = {
        "uplinks": [d.hex() for d in encoded] + ["02" + "00" * 12, "01" + "00" * 13],
        "objects": [uplink_to_object(decode_uplink(d)) for d in encoded],
        "downlinks": [
            {"interval_min": 5, "config_id": 17},
            {"interval_min": 11, "config_id": 1},
            {"interval_min": 10, "config_id": 255},
        ],
        "downlink_bytes": [encode_interval_downlink(5, 17).hex(), "020501"],
    }
    run = subprocess.run(
        ["node", str(RUNNER_JS), str(CODEC_JS)],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    result = json.loads(run.stdout)
    # The JavaScript decoder gives exactly what the Python decoder gives.
    for data, js in zip(encoded, result["decoded"], strict=False):
        assert js == {"data": uplink_to_object(decode_uplink(data))}
    assert "errors" in result["decoded"][-2] and "version" in result["decoded"][-2]["errors"][0]
    assert "errors" in result["decoded"][-1] and "bytes" in result["decoded"][-1]["errors"][0]
    assert "fPort 2" in result["wrong_port"]["errors"][0]
    # The JavaScript encoder gives the Python encoder's bytes.
    assert result["encoded"] == [d.hex() for d in encoded]
    js_down = result["downlinks"]
    assert js_down[0] == {"bytes": list(encode_interval_downlink(5, 17)), "fPort": 10}
    assert "errors" in js_down[1]
    assert bytes(js_down[2]["bytes"]) == encode_interval_downlink(10, 255)
    assert result["downlinks_decoded"][0] == {"data": {"interval_min": 5, "config_id": 17}}
    assert "errors" in result["downlinks_decoded"][1]
