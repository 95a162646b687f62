"""Collar acknowledgements: a frame is acknowledged only once it is in the gateway spool,
so collars that keep unacknowledged frames (``CollarFleet``) lose nothing when the bridge
is SIGKILLed; a full spool acknowledges nothing. Real Mosquitto, real UDP sockets, a
real pseudo-terminal for the serial line, ``namazu bridge`` as its own process."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import tty
from datetime import UTC, datetime, timedelta

import numpy as np

from namazu.firmware_bridge.bridge import Bridge
from namazu.firmware_bridge.frame import decode_frame
from namazu.firmware_bridge.processing import activity_from_frames
from namazu.firmware_bridge.publisher import GatewayPublisher
from namazu.firmware_bridge.simulator import CollarFleet, Herd, UdpCollarLink
from namazu.firmware_bridge.sources import SerialSource, UdpSource
from namazu.firmware_bridge.spool import Spool
from tests.firmware_bridge.test_receipts import wait_until

DAY0 = datetime(2024, 5, 1, tzinfo=UTC)
PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def expected_activity(frames: list[bytes], gateway: str) -> dict[tuple[str, int], tuple]:
    """(animal, t_ms) -> (odba, vedba) as the bridge computes and rounds them (6 decimals,
    ``encode_activity``'s numpy rounding)."""
    df = activity_from_frames([decode_frame(f) for f in frames], gateway)
    odba, vedba = np.round(df.odba.to_numpy(), 6), np.round(df.vedba.to_numpy(), 6)
    return {
        (a, int(t)): (float(o), float(v))
        for a, t, o, v in zip(df.animal, df.t_ms, odba, vedba, strict=True)
    }


def received_activity(sub) -> dict[tuple[str, int], tuple]:
    return {
        (a["animal"], t): (o, v)
        for doc in sub.activity()
        for a in doc["animals"]
        for t, o, v in zip(a["t_ms"], a["odba"], a["vedba"], strict=True)
    }


class FdCollarLink:
    """The collars' end of a serial line (the master side of a pseudo-terminal)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def send(self, data: bytes) -> None:
        os.write(self.fd, data)

    def receive(self, timeout_s: float) -> bytes:
        ready, _, _ = select.select([self.fd], [], [], timeout_s)
        return os.read(self.fd, 65536) if ready else b""

    def close(self) -> None:
        os.close(self.fd)


def run_bridge(source, publisher, gateway: str):
    bridge = Bridge(source, publisher, gateway, batch_samples=50)
    stop = threading.Event()
    thread = threading.Thread(target=bridge.run, args=(stop,), daemon=True)
    thread.start()
    return bridge, stop, thread


def test_serial_line_frames_are_acknowledged_once_spooled(broker, receipts, tmp_path):
    herd = Herd("f1", "gw-s", {"cow": 3, "sheep": 2}, seed=5)
    frames = list(herd.frames(DAY0, DAY0 + timedelta(minutes=60)))
    master, slave = os.openpty()
    tty.setraw(slave)
    source = SerialSource(os.ttyname(slave), 115_200)
    spool = Spool(tmp_path / "spool.sqlite")
    publisher = GatewayPublisher(
        "f1", "gw-s", spool, port=broker.mqtt_port, confirm="receipt"
    ).start()
    bridge, stop, thread = run_bridge(source, publisher, "gw-s")
    fleet = CollarFleet(frames, FdCollarLink(master), memory=100, resend_after_s=2.0)
    try:
        assert fleet.run(60)
        assert publisher.wait_drained(30)
    finally:
        stop.set()
        thread.join(10)
        publisher.stop()
        source.close()
        os.close(slave)
        fleet.link.close()
    assert fleet.stats["acked"] == len(frames) == 300
    assert bridge.samples_spooled == bridge.frames_ok == len(frames)  # each spooled once


def test_full_spool_acknowledges_nothing_and_the_collars_keep_the_frames(
    broker, receipts, tmp_path
):
    herd = Herd("f1", "gw-f", {"cow": 2}, seed=6)
    frames = list(herd.frames(DAY0, DAY0 + timedelta(minutes=20)))
    source = UdpSource("127.0.0.1", 0)
    spool = Spool(tmp_path / "spool.sqlite", max_bytes=10)  # smaller than any message
    publisher = GatewayPublisher(
        "f1", "gw-f", spool, port=broker.mqtt_port, confirm="receipt"
    ).start()
    bridge, stop, thread = run_bridge(source, publisher, "gw-f")
    fleet = CollarFleet(frames, UdpCollarLink("127.0.0.1", source.port), resend_after_s=0.3)
    try:
        assert not fleet.run(2.0)  # nothing acknowledged
        assert fleet.stats["acked"] == 0 and fleet.held == len(frames) == 40
        assert fleet.stats["resent"] > 0 and bridge.dropped_spool_full >= len(frames)
        assert spool.depth() == 0 and spool.full
        spool.max_bytes = None  # the operator gives the spool room
        assert fleet.run(30)  # the kept frames arrive now
        assert publisher.wait_drained(30)
    finally:
        stop.set()
        thread.join(10)
        publisher.stop()
        source.close()
        fleet.link.close()
    assert bridge.samples_spooled == len(frames)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_bridge(port: int, udp_port: int, spool, log) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NAMAZU_")}
    argv = [
        sys.executable,
        "-m",
        "namazu.server.cli",
        "bridge",
        f"--source=udp://127.0.0.1:{udp_port}",
        "--farm=f1",
        "--gateway=gw-k",
        f"--mqtt-port={port}",
        f"--spool={spool}",
        "--batch-samples=50",
        "--confirm=receipt",
        "--no-wait-for-ingest",  # the receipt responder is no ingest worker
    ]
    return subprocess.Popen(argv, cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def test_bridge_sigkill_loses_no_frame_of_collars_that_keep_them(
    broker, receipts, tmp_path, subscriber_factory
):
    sub = subscriber_factory(broker.mqtt_port)
    herd = Herd("f1", "gw-k", {"cow": 6, "dog": 2}, seed=7)
    frames = list(herd.frames(DAY0, DAY0 + timedelta(minutes=300)))  # 2,400 frames
    udp_port = free_udp_port()
    spool = tmp_path / "spool.sqlite"
    log = open(tmp_path / "bridge.log", "ab")  # noqa: SIM115
    bridge = start_bridge(broker.mqtt_port, udp_port, spool, log)
    fleet = CollarFleet(
        frames, UdpCollarLink("127.0.0.1", udp_port), rate_hz=500, resend_after_s=0.5
    )
    done = threading.Event()
    runner = threading.Thread(target=lambda: done.set() if fleet.run(120) else None)
    runner.start()
    kills = 0
    try:
        for threshold in (600, 1500):
            assert wait_until(lambda t=threshold: fleet.stats["acked"] >= t, 60)
            bridge.send_signal(signal.SIGKILL)
            bridge.wait(10)
            kills += 1
            time.sleep(0.3)
            bridge = start_bridge(broker.mqtt_port, udp_port, spool, log)
        runner.join(120)
        assert done.is_set(), f"collars still hold {fleet.held} frames"
        want = expected_activity(frames, "gw-k")
        assert sub.wait_for(lambda s: received_activity(s).keys() >= want.keys(), 30)
        bridge.send_signal(signal.SIGTERM)
        assert bridge.wait(40) == 0
    finally:
        if bridge.poll() is None:
            bridge.kill()
        log.close()
    got = received_activity(sub)
    assert kills == 2 and fleet.stats["resent"] > 0  # the kills cost resends
    assert got.keys() == want.keys()  # 0 missing, nothing extra
    wrong = [k for k in want if got[k] != want[k]]
    assert wrong == [] and len(got) == len(frames)
    with Spool(spool) as left:
        assert left.depth() == 0  # every spooled message confirmed by a receipt
