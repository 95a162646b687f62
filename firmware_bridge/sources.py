"""Frame sources of the bridge: serial line, UDP socket, simulator.

Every source has the same tiny contract: ``read(timeout_s)`` returns the frames (and
``FrameError`` objects for rejected candidates) that arrived within the timeout, in
arrival order, possibly none; ``exhausted`` turns True when no more can come (only
the simulator ends); ``close()`` releases the device. ``open_source(url)`` builds one
from ``udp://HOST:PORT``, ``serial:///dev/ttyUSB0[?baud=115200]`` or ``simulator``.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import datetime
from typing import Protocol
from urllib.parse import parse_qs, urlparse

from namazu.firmware_bridge.frame import (
    MAX_FRAME_SIZE,
    CollarFrame,
    FrameError,
    FrameReader,
    decode_frame,
)

FrameItem = CollarFrame | FrameError


class SourceError(RuntimeError):
    """A frame source cannot be opened or its address is malformed."""


class FrameSource(Protocol):
    """What the bridge needs from a source."""

    exhausted: bool

    def read(self, timeout_s: float) -> list[FrameItem]: ...

    def close(self) -> None: ...


class SerialSource:
    """Collar frames from a serial device (byte stream, resynchronised on the magic).

    device : e.g. ``/dev/ttyUSB0`` (any pyserial URL such as ``loop://`` works too).
    baud : line speed [bit/s].
    """

    def __init__(self, device: str, baud: int = 115_200) -> None:
        import serial  # pyserial

        try:
            self._port = serial.serial_for_url(device, baudrate=baud, timeout=0.1)
        except (serial.SerialException, ValueError) as exc:
            raise SourceError(f"cannot open serial device {device}: {exc}") from exc
        self._reader = FrameReader()
        self.exhausted = False

    @property
    def skipped_bytes(self) -> int:
        """Garbage bytes skipped while resynchronising."""
        return self._reader.skipped_bytes

    def read(self, timeout_s: float) -> list[FrameItem]:
        """Frames completed within ``timeout_s`` [s]."""
        self._port.timeout = timeout_s
        first = self._port.read(1)
        if not first:
            return []
        rest = self._port.read(self._port.in_waiting) if self._port.in_waiting else b""
        return self._reader.feed(first + rest)

    def write(self, data: bytes) -> None:
        """Write raw bytes (loopback tests)."""
        self._port.write(data)

    def close(self) -> None:
        """Close the device."""
        self._port.close()


class UdpSource:
    """Collar frames from UDP datagrams, one frame per datagram.

    host, port : address to bind (port 0 = a free port; see ``.port``).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 9999) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        try:
            self._sock.bind((host, port))
        except OSError as exc:
            self._sock.close()
            raise SourceError(f"cannot bind UDP {host}:{port}: {exc}") from exc
        self.host, self.port = self._sock.getsockname()[:2]
        self.exhausted = False

    def read(self, timeout_s: float) -> list[FrameItem]:
        """Frames that arrived within ``timeout_s`` [s] (drains what is queued)."""
        out: list[FrameItem] = []
        self._sock.settimeout(timeout_s)
        try:
            data = self._sock.recv(MAX_FRAME_SIZE + 64)
        except TimeoutError:
            return out
        out.append(_decode(data))
        self._sock.setblocking(False)
        try:
            for _ in range(10_000):
                out.append(_decode(self._sock.recv(MAX_FRAME_SIZE + 64)))
        except BlockingIOError:
            pass
        return out

    def close(self) -> None:
        """Close the socket."""
        self._sock.close()


class SimulatorSource:
    """Frames of a simulated herd over [start, end), encoded and decoded like real ones."""

    def __init__(self, herd, start: datetime | int, end: datetime | int, chunk: int = 500):
        self._frames: Iterator[bytes] = herd.frames(start, end)
        self._chunk = chunk
        self.exhausted = False

    def read(self, timeout_s: float) -> list[FrameItem]:
        """The next frames (up to ``chunk``); never waits."""
        out: list[FrameItem] = []
        for data in self._frames:
            out.append(_decode(data))
            if len(out) >= self._chunk:
                return out
        self.exhausted = True
        return out

    def close(self) -> None:
        """Nothing to release."""


def _decode(data: bytes) -> FrameItem:
    try:
        return decode_frame(data)
    except FrameError as exc:
        return exc


def open_source(url: str, herd=None, start=None, end=None) -> FrameSource:
    """Build a source from ``udp://HOST:PORT``, ``serial:///dev/X?baud=N`` or ``simulator``."""
    if url == "simulator":
        if herd is None:
            raise SourceError("the simulator source needs a herd")
        return SimulatorSource(herd, start, end)
    parsed = urlparse(url)
    if parsed.scheme == "udp":
        if not parsed.hostname or parsed.port is None:
            raise SourceError(f"source {url!r}: expected udp://HOST:PORT")
        return UdpSource(parsed.hostname, parsed.port)
    if parsed.scheme == "serial":
        if not parsed.path:
            raise SourceError(f"source {url!r}: expected serial:///dev/DEVICE[?baud=N]")
        try:
            baud = int(parse_qs(parsed.query).get("baud", ["115200"])[0])
        except ValueError as exc:
            raise SourceError(f"source {url!r}: baud must be an integer") from exc
        return SerialSource(parsed.path, baud)
    raise SourceError(
        f"source {url!r}: unknown kind; use udp://HOST:PORT, serial:///dev/X or simulator"
    )
