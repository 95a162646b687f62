"""Collar frame v1 and its acknowledgement: round trip, every rejection reason, stream
resynchronisation."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from namazu.firmware_bridge.frame import (
    HEADER_SIZE,
    AckReader,
    CollarFrame,
    FrameError,
    FrameReader,
    crc16_ccitt_false,
    decode_ack,
    decode_frame,
    encode_ack,
    encode_acks,
    encode_frame,
    frame_size,
)


def make_frame(n: int = 30, seed: int = 0, **overrides) -> CollarFrame:
    rng = np.random.default_rng(seed)
    fields = dict(
        collar_id=7,
        species="cow",
        seq=41,
        t0_ms=1_714_521_600_000,
        sample_rate_hz=10,
        scale_counts_per_g=4096,
        battery_mv=3712,
        samples=rng.integers(-32768, 32767, size=(n, 3)).astype(np.int16),
    )
    fields.update(overrides)
    return CollarFrame(**fields)


def reason_of(data: bytes) -> str:
    with pytest.raises(FrameError) as info:
        decode_frame(data)
    return info.value.reason


def with_crc(body: bytes) -> bytes:
    return body + struct.pack("<H", crc16_ccitt_false(body))


def test_crc_is_ccitt_false_check_value():
    assert crc16_ccitt_false(b"123456789") == 0x29B1


def test_round_trip_keeps_every_field():
    frame = make_frame(n=64, species="dog", collar_id=123_456, seq=2**32 - 1, battery_mv=4150)
    data = encode_frame(frame)
    assert len(data) == frame_size(64) == HEADER_SIZE + 6 * 64 + 2
    assert data[:2] == b"NZ"
    assert decode_frame(data) == frame


def test_acceleration_in_g_uses_the_scale():
    samples = np.array([[4096, -2048, 0]] * 4, dtype=np.int16)
    frame = decode_frame(encode_frame(make_frame(n=4, samples=samples)))
    np.testing.assert_allclose(frame.acceleration_g()[0], [1.0, -0.5, 0.0])


def test_bad_magic():
    data = bytearray(encode_frame(make_frame()))
    data[0] = ord("X")
    assert reason_of(bytes(data)) == "bad_magic"


def test_unsupported_version():
    data = bytearray(encode_frame(make_frame()))
    data[2] = 9
    assert reason_of(with_crc(bytes(data[:-2]))) == "unsupported_version"


def test_truncated_header_and_body():
    data = encode_frame(make_frame())
    assert reason_of(data[:10]) == "truncated"
    assert reason_of(data[:-5]) == "truncated"


def test_wrong_length_when_bytes_follow():
    assert reason_of(encode_frame(make_frame()) + b"\x00") == "wrong_length"


def test_bad_crc_on_a_flipped_bit():
    data = bytearray(encode_frame(make_frame()))
    data[HEADER_SIZE + 5] ^= 0x10
    assert reason_of(bytes(data)) == "bad_crc"


@pytest.mark.parametrize("rate", [0, 401, 65535])
def test_impossible_sample_rate(rate):
    data = encode_frame(make_frame(sample_rate_hz=rate), validate=False)
    assert reason_of(data) == "impossible_sample_rate"


def test_too_many_samples_declared():
    data = bytearray(encode_frame(make_frame(n=4)))
    struct.pack_into("<H", data, 24, 5000)
    assert reason_of(bytes(data)) == "too_many_samples"


def test_unknown_species_and_zero_scale():
    assert reason_of(encode_frame(make_frame(species="cat"), validate=False)) == "unknown_species"
    assert reason_of(encode_frame(make_frame(scale_counts_per_g=0), validate=False)) == "bad_scale"


def test_encoder_refuses_impossible_frames():
    with pytest.raises(FrameError, match="impossible_sample_rate"):
        encode_frame(make_frame(sample_rate_hz=1000))


def test_reader_resynchronises_after_garbage_and_false_magic():
    frames = [make_frame(n=20, seed=i, seq=i) for i in range(5)]
    encoded = [encode_frame(f) for f in frames]
    corrupt = bytearray(encode_frame(make_frame(n=20, seed=99)))
    corrupt[40] ^= 0xFF
    stream = (
        b"\x00\xffgarbage NZ\x01\x01 more garbage"
        + encoded[0]
        + encoded[1][:17]  # a frame cut short by a line glitch
        + encoded[2]
        + bytes(corrupt)
        + b"NZ"
        + encoded[3]
        + b"\x13\x37"
        + encoded[4]
    )
    reader = FrameReader()
    out = []
    for i in range(0, len(stream), 13):  # arrives in small pieces, as from a UART
        out += reader.feed(stream[i : i + 13])
    good = [x for x in out if isinstance(x, CollarFrame)]
    assert [f.seq for f in good] == [0, 2, 3, 4]
    assert good == [frames[0], frames[2], frames[3], frames[4]]
    reasons = {x.reason for x in out if isinstance(x, FrameError)}
    assert "bad_crc" in reasons
    assert reader.skipped_bytes > 0
    assert reader.buffered < HEADER_SIZE


def test_ack_round_trip_split_into_frames_of_at_most_1024():
    keys = [(1 + i % 3, i, 1_000_000 + i) for i in range(2500)]
    acks = encode_acks(keys)
    assert len(acks) == 3 and [len(decode_ack(a)) for a in acks] == [1024, 1024, 452]
    assert [k for a in acks for k in decode_ack(a)] == keys
    with pytest.raises(FrameError):
        encode_ack([])


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda a: a[:-1], "truncated"),
        (lambda a: a + b"\x00", "wrong_length"),
        (lambda a: b"NZ" + a[2:], "bad_magic"),
        (lambda a: a[:2] + b"\x02" + a[3:], "unsupported_version"),
        (lambda a: a[:6] + bytes([a[6] ^ 1]) + a[7:], "bad_crc"),
        (lambda a: a[:3], "truncated"),
    ],
)
def test_ack_rejections(mutate, reason):
    with pytest.raises(FrameError) as info:
        decode_ack(mutate(encode_ack([(1, 7, 42), (2, 7, 43)])))
    assert info.value.reason == reason


def test_ack_reader_skips_garbage_and_damaged_acks_and_joins_split_ones():
    good = encode_ack([(1, 5, 100)])
    damaged = bytearray(encode_ack([(2, 6, 200)]))
    damaged[-1] ^= 0xFF
    stream = b"\x00NAxx" + bytes(damaged) + good + b"N" + encode_ack([(3, 7, 300)])
    reader = AckReader()
    keys = []
    for i in range(0, len(stream), 4):
        keys += reader.feed(stream[i : i + 4])
    assert keys == [(1, 5, 100), (3, 7, 300)]
