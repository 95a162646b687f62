"""Frame sources of the bridge: serial line, UDP socket, simulator.

Every source has the same tiny contract: ``read(timeout_s)`` returns the frames (and
``FrameError`` objects for rejected candidates) that arrived within the timeout, in
arrival order, possibly none; ``exhausted`` turns True when no more can come (only
the simulator ends); ``acknowledge(frames)`` tells the collars that these frames are
in the gateway's disk spool; ``close()`` releases the device. ``open_source(url)``
builds one from ``udp://HOST:PORT``, ``serial:///dev/ttyUSB0[?baud=115200]`` or
``simulator``.

What each source guarantees when the gateway process is killed (SIGKILL, power cut):

- serial: the bridge writes an acknowledgement frame (``frame.encode_ack``) back on
  the line once a frame is spooled. A collar that keeps each frame until it is
  acknowledged and resends it loses nothing; a collar that ignores acknowledgements
  loses what was on the line or in the bridge's group commit (at most
  ``flush_interval_s``, 50 ms by default).
- UDP: the same acknowledgement, as one datagram to the address the frame came from.
  A collar that resends unacknowledged frames loses nothing; raw UDP without
  acknowledgements cannot be made safe (a datagram in the socket buffer or in the
  group commit is gone with the process, and UDP itself may drop datagrams).
- simulator: in-process, nothing to lose or acknowledge; a restarted bridge
  simulates its span again from the start. The simulated collars that do keep frames
  are ``simulator.CollarFleet`` (``namazu simulate --frames-to udp://HOST:PORT``).
"""

from __future__ import annotations

import collections
import socket
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import parse_qs, urlparse

from namazu.firmware_bridge.frame import (
    MAX_FRAME_SIZE,
    CollarFrame,
    FrameError,
    FrameKey,
    FrameReader,
    decode_frame,
    encode_acks,
    frame_key,
)

FrameItem = CollarFrame | FrameError


class SourceError(RuntimeError):
    """A frame source cannot be opened or its address is malformed."""


class FrameSource(Protocol):
    """What the bridge needs from a source."""

    exhausted: bool

    def read(self, timeout_s: float) -> list[FrameItem]: ...

    def acknowledge(self, frames: Sequence[CollarFrame]) -> None: ...

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

    def acknowledge(self, frames: Sequence[CollarFrame]) -> None:
        """Write acknowledgement frames naming ``frames`` on the line."""
        if frames:
            self._port.write(b"".join(encode_acks([frame_key(f) for f in frames])))

    def write(self, data: bytes) -> None:
        """Write raw bytes (loopback tests)."""
        self._port.write(data)

    def close(self) -> None:
        """Close the device."""
        self._port.close()


class UdpSource:
    """Collar frames from UDP datagrams, one frame per datagram.

    host, port : address to bind (port 0 = a free port; see ``.port``).
    ``acknowledge`` answers each sender with acknowledgement datagrams; the sender of
    a frame is remembered until then (at most ``MAX_ORIGINS`` frames, oldest first).
    """

    #: Frames whose sender is remembered while they wait for their acknowledgement.
    MAX_ORIGINS = 200_000

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
        self._origins: collections.OrderedDict[FrameKey, Any] = collections.OrderedDict()

    def read(self, timeout_s: float) -> list[FrameItem]:
        """Frames that arrived within ``timeout_s`` [s] (drains what is queued)."""
        out: list[FrameItem] = []
        self._sock.settimeout(timeout_s)
        try:
            data, sender = self._sock.recvfrom(MAX_FRAME_SIZE + 64)
        except (TimeoutError, BlockingIOError):  # a timeout of 0 makes the socket non-blocking
            return out
        out.append(self._take(data, sender))
        self._sock.setblocking(False)
        try:
            for _ in range(10_000):
                out.append(self._take(*self._sock.recvfrom(MAX_FRAME_SIZE + 64)))
        except BlockingIOError:
            pass
        return out

    def _take(self, data: bytes, sender: Any) -> FrameItem:
        item = _decode(data)
        if isinstance(item, CollarFrame):
            key = frame_key(item)
            self._origins[key] = sender
            self._origins.move_to_end(key)
            while len(self._origins) > self.MAX_ORIGINS:
                self._origins.popitem(last=False)
        return item

    def acknowledge(self, frames: Sequence[CollarFrame]) -> None:
        """Send each sender one acknowledgement datagram per 1,024 of its frames."""
        by_sender: dict[Any, list[FrameKey]] = {}
        for frame in frames:
            key = frame_key(frame)
            sender = self._origins.pop(key, None)
            if sender is not None:
                by_sender.setdefault(sender, []).append(key)
        for sender, keys in by_sender.items():
            for datagram in encode_acks(keys):
                try:
                    self._sock.sendto(datagram, sender)
                except OSError:  # a collar that left; it resends if it can
                    break

    def close(self) -> None:
        """Close the socket."""
        self._sock.close()


class SimulatorSource:
    """Frames of a simulated herd over [start, end), encoded and decoded like real ones."""

    def __init__(self, herd, start: datetime | int, end: datetime | int, chunk: int = 500):
        self._frames: Iterator[bytes] = herd.frames(start, end)
        self._chunk = chunk
        self.exhausted = False

    def acknowledge(self, frames: Sequence[CollarFrame]) -> None:
        """Nothing to tell: the simulated frames live in this process."""

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
