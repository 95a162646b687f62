"""sd_notify over a real unix datagram socket: readiness, the watchdog ping while the
workers beat, and the trigger (plus one ERROR naming the worker) when one stalls."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import uuid

import pytest

from namazu.server.core.systemd import Notifier, Watchdog, watchdog_interval_s


@pytest.fixture
def notify_socket(tmp_path):
    """A bound datagram socket standing in for systemd's; yields (path, receive)."""
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(20)

    def receive() -> str:
        return sock.recv(4096).decode()

    yield path, receive
    sock.close()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_notifier_sends_one_datagram_per_message(notify_socket):
    path, receive = notify_socket
    notifier = Notifier(path)
    assert notifier.send("READY=1", "STATUS=up")
    assert receive() == "READY=1\nSTATUS=up"


def test_abstract_socket_names_start_with_an_at_sign():
    name = f"namazu-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(20)
        assert Notifier("@" + name).send("READY=1")
        assert sock.recv(100) == b"READY=1"


def test_without_notify_socket_nothing_is_sent():
    assert not Notifier.from_environment({}).enabled
    assert Notifier(None).send("READY=1") is False


def test_watchdog_interval_from_the_environment():
    pid = str(os.getpid())
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": pid}) == 30.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval_s({}) is None


def test_pings_while_workers_beat_and_triggers_when_one_stalls(notify_socket, caplog):
    path, receive = notify_socket
    clock = FakeClock()
    dog = Watchdog(Notifier(path), interval_s=10, clock=clock)
    dog.beat("writer")
    with dog.busy("job tick"):
        clock.now += 9
        dog.beat("writer")
        assert dog.check() is True
        assert receive() == "WATCHDOG=1"
        clock.now += 11  # "job tick" has run for 20 s, the writer beat 11 s ago
        with caplog.at_level(logging.ERROR, logger="namazu.server.core.systemd"):
            assert dog.check() is False
            assert dog.check() is False  # reported once, triggered every time
    assert receive() == "WATCHDOG=trigger\nSTATUS=stalled: job tick, writer"
    assert receive() == "WATCHDOG=trigger\nSTATUS=stalled: job tick, writer"
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [
        "worker thread stalled: job tick for 20 s, writer for 11 s; "
        "asking systemd to restart the service"
    ]
    dog.beat("writer")  # the job has ended (no longer watched), the writer is back
    assert dog.check() is True
    assert receive() == "WATCHDOG=1"


def test_started_from_the_environment_it_is_ready_pings_and_stops(notify_socket):
    path, receive = notify_socket
    dog = Watchdog()
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(os.getpid())}
    dog.start_from_environment("test running", environ=env)
    try:
        assert receive() == "READY=1\nSTATUS=test running"
        dog.beat("worker")
        assert receive() == "WATCHDOG=1"  # from the watchdog thread, every 0.1 s
    finally:
        dog.stop("done")
    messages = []
    while not messages or messages[-1] != "STOPPING=1\nSTATUS=done":
        messages.append(receive())
    assert set(messages[:-1]) <= {"WATCHDOG=1", "WATCHDOG=trigger\nSTATUS=stalled: worker"}


@pytest.mark.services
def test_the_bridge_process_reports_readiness_and_stopping(stack, tmp_path, notify_socket):
    path, receive = notify_socket
    env = {
        **os.environ,
        "NOTIFY_SOCKET": path,
        "WATCHDOG_USEC": "500000",
        "NAMAZU_BRIDGE__SPOOL_PATH": str(tmp_path / "spool.sqlite"),
    }
    env.pop("NAMAZU_CONFIG", None)
    env.pop("WATCHDOG_PID", None)
    proc = subprocess.run(
        [sys.executable, "-m", "namazu.server.cli", "bridge", "--source", "simulator",
         "--cows", "2", "--duration-min", "30", "--mqtt-port", str(stack.mqtt_port),
         "--no-wait-for-ingest", "--confirm", "puback"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    messages = [receive()]
    while messages[-1].split("\n")[0] != "STOPPING=1":
        messages.append(receive())
    assert messages[0].startswith("READY=1\nSTATUS=bridge demo-farm/gw-1 running")
