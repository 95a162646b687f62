"""Bridge: UDP/serial/simulator frames -> activity -> real Mosquitto; corrupt frames rejected."""

from __future__ import annotations

import collections
import socket
import struct
import threading
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from namazu.firmware_bridge.bridge import Bridge
from namazu.firmware_bridge.bridge import main as bridge_main
from namazu.firmware_bridge.frame import CollarFrame, FrameError, decode_frame, encode_frame
from namazu.firmware_bridge.publisher import GatewayPublisher
from namazu.firmware_bridge.simulator import Herd
from namazu.firmware_bridge.simulator import main as simulate_main
from namazu.firmware_bridge.sources import (
    SerialSource,
    SimulatorSource,
    SourceError,
    UdpSource,
    open_source,
)
from namazu.firmware_bridge.spool import Spool

DAY0 = datetime(2024, 5, 1, tzinfo=UTC)


def corruptions(good: bytes) -> dict[str, bytes]:
    """One corrupt variant of a valid frame per rejection reason."""
    flipped = bytearray(good)
    flipped[40] ^= 0x01
    magic = bytearray(good)
    magic[0] = 0
    version = bytearray(good[:-2])
    version[2] = 2
    many = bytearray(good)
    struct.pack_into("<H", many, 24, 4000)
    frame = decode_frame(good)
    rate = CollarFrame(**{**frame.__dict__, "sample_rate_hz": 900})
    return {
        "bad_crc": bytes(flipped),
        "truncated": good[:-7],
        "wrong_length": good + b"\x00\x00",
        "bad_magic": bytes(magic),
        "unsupported_version": bytes(version) + b"\x00\x00",
        "too_many_samples": bytes(many),
        "impossible_sample_rate": encode_frame(rate, validate=False),
    }


def test_udp_frames_with_corrupt_ones_interleaved(broker, tmp_path, subscriber_factory):
    sub = subscriber_factory(broker.mqtt_port)
    herd = Herd("f1", "gw-u", {"cow": 4, "dog": 2}, seed=3)
    end = DAY0 + timedelta(minutes=40)
    frames = list(herd.frames(DAY0, end))
    truth = herd.activity(DAY0, end)
    source = UdpSource("127.0.0.1", 0)
    spool = Spool(tmp_path / "spool.sqlite")
    publisher = GatewayPublisher("f1", "gw-u", spool, "127.0.0.1", broker.mqtt_port).start()
    bridge = Bridge(source, publisher, "gw-u", batch_samples=50, flush_interval_s=0.2)
    stop = threading.Event()
    runner = threading.Thread(target=bridge.run, args=(stop,))
    runner.start()
    expected = collections.Counter()
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for i, data in enumerate(frames):
            sender.sendto(data, ("127.0.0.1", source.port))
            if i % 12 == 5:
                reason, bad = list(corruptions(data).items())[(i // 12) % 7]
                sender.sendto(bad, ("127.0.0.1", source.port))
                expected[reason] += 1
        assert sub.wait_for(
            lambda s: (
                sum(len(a["t_ms"]) for d in s.activity() for a in d["animals"]) >= len(frames)
            ),
            20,
        )
    finally:
        stop.set()
        runner.join(10)
        sender.close()
        publisher.stop()
        source.close()
    assert bridge.rejected == expected and sum(expected.values()) >= 7
    assert bridge.frames_ok == len(frames) == len(truth)
    got = {
        (a["animal"], t): o
        for d in sub.activity()
        for a in d["animals"]
        for t, o in zip(a["t_ms"], a["odba"], strict=True)
    }
    want = dict(
        zip(zip(truth.animal, truth.t_ms.astype(int), strict=True), truth.odba, strict=True)
    )
    assert got.keys() == want.keys()
    np.testing.assert_allclose([got[k] for k in want], list(want.values()), atol=5e-4)


def test_serial_loopback_stream_with_garbage():
    herd = Herd("f1", "gw-s", {"sheep": 3}, seed=4)
    frames = list(herd.frames(DAY0, DAY0 + timedelta(minutes=10)))
    source = SerialSource("loop://", 115_200)
    try:
        stream = b"".join(b"\x00junk" + f for f in frames)
        items = []
        for i in range(0, len(stream), 1000):  # the loopback port buffers only a little
            source.write(stream[i : i + 1000])
            items += source.read(0.2)
        while (got := source.read(0.2)) != []:
            items += got
    finally:
        source.close()
    assert [encode_frame(x) for x in items if isinstance(x, CollarFrame)] == frames
    assert source.skipped_bytes == 5 * len(frames)
    assert not any(isinstance(x, FrameError) for x in items)


def test_simulator_source_ends_and_sources_parse_urls(tmp_path):
    herd = Herd("f1", "gw-x", {"cow": 2}, seed=1)
    src = SimulatorSource(herd, DAY0, DAY0 + timedelta(minutes=30), chunk=25)
    items = []
    while not src.exhausted:
        items += src.read(0)
    assert len(items) == 60 and all(isinstance(x, CollarFrame) for x in items)
    udp = open_source("udp://127.0.0.1:0")
    udp.close()
    for bad in ("tcp://x:1", "udp://nohost", "serial://", "simulator"):
        with pytest.raises(SourceError):
            open_source(bad)


def test_bridge_command_with_simulator_source(
    broker, receipts, tmp_path, subscriber_factory, capsys
):
    sub = subscriber_factory(broker.mqtt_port)
    code = bridge_main(
        [
            "--source",
            "simulator",
            "--farm",
            "f2",
            "--gateway",
            "gw-c",
            "--cows",
            "3",
            "--dogs",
            "1",
            "--start",
            "2024-05-01T00:00:00Z",
            "--duration-min",
            "30",
            "--mqtt-host",
            "127.0.0.1",
            "--mqtt-port",
            str(broker.mqtt_port),
            "--spool",
            str(tmp_path / "b.sqlite"),
            "--no-wait-for-ingest",  # a plain subscriber here, no ingest heartbeat
            "--batch-samples",
            "20",
            "--confirm",
            "receipt",
        ]
    )
    summary = capsys.readouterr().out
    assert code == 0 and '"samples_spooled": 120' in summary
    assert '"confirmation": "receipt"' in summary and '"all_confirmed": true' in summary
    assert '"messages_confirmed": 6' in summary and '"messages_unconfirmed": 0' in summary
    assert sub.wait_for(
        lambda s: sum(len(a["t_ms"]) for d in s.activity() for a in d["animals"]) >= 120
    )


def test_simulate_command_publishes_the_herd(
    broker, receipts, tmp_path, subscriber_factory, capsys
):
    sub = subscriber_factory(broker.mqtt_port)
    argv = [
        "--farm",
        "f3",
        "--gateway",
        "gw-sim",
        "--cows",
        "5",
        "--sheep",
        "3",
        "--dogs",
        "2",
        "--start",
        "2024-05-01T00:00:00Z",
        "--duration",
        "3h",
        "--speed",
        "0",
        "--episode",
        "2024-05-01T01:00:00Z,30,3,cow-001",
        "--seed",
        "9",
        "--mqtt-port",
        str(broker.mqtt_port),
        "--spool",
        str(tmp_path / "s.sqlite"),
        "--confirm",
        "receipt",
    ]
    assert simulate_main(argv) == 0
    out = capsys.readouterr().out
    assert "1800 samples" in out and "all stored by ingest" in out
    assert sub.wait_for(
        lambda s: sum(len(a["t_ms"]) for d in s.activity() for a in d["animals"]) >= 1800
    )
    docs = sub.activity()
    assert [d["seq"] for d in docs] == list(range(1, len(docs) + 1))
    assert {a["animal"] for d in docs for a in d["animals"]} >= {"gw-sim-dog-002", "gw-sim-cow-005"}
