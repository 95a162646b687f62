"""Collar binary frame v1: pure encoder, decoder and stream splitter.

One frame carries one accelerometer burst of one collar. Little-endian; the layout
is documented byte by byte in ``docs/collar-frame.md``::

    off size type   field
      0    2 bytes  magic "NZ" (0x4E 0x5A)
      2    1 u8     version (1)
      3    1 u8     species code (1 cow, 2 sheep, 3 dog)
      4    4 u32    collar id
      8    4 u32    frame sequence number (per collar, wraps)
     12    8 i64    first-sample UTC time [ms since 1970-01-01T00:00:00Z]
     20    2 u16    sample rate [Hz] (1..400)
     22    2 u16    scale [counts per g] (full scale = 32767 / scale g)
     24    2 u16    n samples (1..1024)
     26    2 u16    battery [mV]
     28  6*n i16    x, y, z interleaved, n times [counts]
  28+6n    2 u16    CRC-16/CCITT-FALSE over bytes 0 .. 27+6n

Decoding never trusts a frame: every defect raises ``FrameError(reason, detail)``
with a machine-readable reason (``FRAME_ERROR_REASONS``).

The gateway answers with acknowledgement frames (same byte order) once the frames they
name are in its disk spool; a collar that implements them keeps each frame until it is
acknowledged and resends it otherwise::

    off size type   field
      0    2 bytes  magic "NA" (0x4E 0x41)
      2    1 u8     version (1)
      3    2 u16    n acknowledged frames (1..1024)
      5  9*n        n times: u8 species code, u32 collar id, u32 frame sequence number
  5+9n     2 u16    CRC-16/CCITT-FALSE over bytes 0 .. 4+9n

A collar is known by its species code and collar id together (the gateway names the
animal ``{gateway}-{species}-{collar id}``), so both are in the acknowledgement.
"""

from __future__ import annotations

import binascii
import struct
from dataclasses import dataclass, field

import numpy as np

MAGIC = b"NZ"
VERSION = 1
HEADER = struct.Struct("<2sBBIIqHHHH")
HEADER_SIZE = HEADER.size  # 28 bytes
CRC_SIZE = 2
MIN_SAMPLE_RATE_HZ = 1
MAX_SAMPLE_RATE_HZ = 400
MAX_SAMPLES = 1024
MAX_FRAME_SIZE = HEADER_SIZE + 6 * MAX_SAMPLES + CRC_SIZE

#: Species codes carried in byte 3.
SPECIES_CODES: dict[int, str] = {1: "cow", 2: "sheep", 3: "dog"}
SPECIES_BY_NAME: dict[str, int] = {name: code for code, name in SPECIES_CODES.items()}

FRAME_ERROR_REASONS = (
    "bad_magic",
    "unsupported_version",
    "truncated",
    "wrong_length",
    "bad_crc",
    "impossible_sample_rate",
    "too_many_samples",
    "bad_scale",
    "unknown_species",
)


class FrameError(ValueError):
    """A collar frame was rejected.

    reason : machine-readable code, one of ``FRAME_ERROR_REASONS``.
    detail : one-line human explanation.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, eq=False)
class CollarFrame:
    """One decoded burst.

    collar_id : collar number (u32).
    species : "cow", "sheep" or "dog".
    seq : frame sequence number of this collar (u32, wraps).
    t0_ms : first-sample UTC time [ms since epoch].
    sample_rate_hz : accelerometer sample rate [Hz].
    scale_counts_per_g : sensitivity [counts/g].
    battery_mv : battery voltage [mV].
    samples : int16 array, shape (n, 3): x, y, z [counts].
    """

    collar_id: int
    species: str
    seq: int
    t0_ms: int
    sample_rate_hz: int
    scale_counts_per_g: int
    battery_mv: int
    samples: np.ndarray = field(repr=False)

    @property
    def n_samples(self) -> int:
        """Samples in the burst."""
        return int(self.samples.shape[0])

    def acceleration_g(self) -> np.ndarray:
        """Burst acceleration, shape (n, 3) [g]."""
        return self.samples.astype(np.float64) / float(self.scale_counts_per_g)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CollarFrame):
            return NotImplemented
        return (
            self.collar_id == other.collar_id
            and self.species == other.species
            and self.seq == other.seq
            and self.t0_ms == other.t0_ms
            and self.sample_rate_hz == other.sample_rate_hz
            and self.scale_counts_per_g == other.scale_counts_per_g
            and self.battery_mv == other.battery_mv
            and np.array_equal(self.samples, other.samples)
        )

    __hash__ = None  # type: ignore[assignment]


def crc16_ccitt_false(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no xor-out)."""
    return binascii.crc_hqx(data, 0xFFFF)


def frame_size(n_samples: int) -> int:
    """Total bytes of a frame with ``n_samples`` samples."""
    return HEADER_SIZE + 6 * n_samples + CRC_SIZE


def _check_fields(rate: int, scale: int, n: int, species_code: int) -> None:
    if not MIN_SAMPLE_RATE_HZ <= rate <= MAX_SAMPLE_RATE_HZ:
        raise FrameError(
            "impossible_sample_rate",
            f"sample rate {rate} Hz outside {MIN_SAMPLE_RATE_HZ}..{MAX_SAMPLE_RATE_HZ} Hz",
        )
    if scale == 0:
        raise FrameError("bad_scale", "scale of 0 counts per g")
    if n > MAX_SAMPLES:
        raise FrameError("too_many_samples", f"{n} samples; at most {MAX_SAMPLES}")
    if n == 0:
        raise FrameError("truncated", "frame declares 0 samples")
    if species_code not in SPECIES_CODES:
        raise FrameError("unknown_species", f"species code {species_code} is not 1, 2 or 3")


def encode_frame(frame: CollarFrame, validate: bool = True) -> bytes:
    """Serialise a frame (pure). ``validate=False`` lets tests build impossible frames."""
    samples = np.asarray(frame.samples)
    if samples.ndim != 2 or samples.shape[1] != 3:
        raise FrameError("wrong_length", f"samples must have shape (n, 3), got {samples.shape}")
    code = SPECIES_BY_NAME.get(frame.species, 0)
    n = samples.shape[0]
    if validate:
        _check_fields(frame.sample_rate_hz, frame.scale_counts_per_g, n, code)
    head = HEADER.pack(
        MAGIC,
        VERSION,
        code,
        frame.collar_id & 0xFFFFFFFF,
        frame.seq & 0xFFFFFFFF,
        int(frame.t0_ms),
        frame.sample_rate_hz,
        frame.scale_counts_per_g,
        n,
        frame.battery_mv,
    )
    body = head + samples.astype("<i2").tobytes()
    return body + struct.pack("<H", crc16_ccitt_false(body))


def decode_frame(data: bytes) -> CollarFrame:
    """Decode exactly one frame (pure).

    data : the frame's bytes, nothing before or after.
    Raises FrameError with reason bad_magic, unsupported_version, truncated,
    wrong_length, bad_crc, impossible_sample_rate, too_many_samples, bad_scale or
    unknown_species.
    """
    data = bytes(data)
    if len(data) < HEADER_SIZE:
        if len(data) >= 2 and data[:2] != MAGIC:
            raise FrameError("bad_magic", f"starts with {data[:2].hex()}, expected 4e5a")
        raise FrameError("truncated", f"{len(data)} bytes, shorter than the 28-byte header")
    magic, version, code, collar, seq, t0, rate, scale, n, battery = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise FrameError("bad_magic", f"starts with {magic.hex()}, expected 4e5a")
    if version != VERSION:
        raise FrameError("unsupported_version", f"version {version}; this decoder reads 1")
    if n > MAX_SAMPLES:
        raise FrameError("too_many_samples", f"{n} samples; at most {MAX_SAMPLES}")
    expected = frame_size(n)
    if len(data) < expected:
        raise FrameError("truncated", f"{len(data)} bytes, {n} samples need {expected}")
    if len(data) > expected:
        raise FrameError("wrong_length", f"{len(data)} bytes, {n} samples need {expected}")
    (crc,) = struct.unpack_from("<H", data, expected - CRC_SIZE)
    actual = crc16_ccitt_false(data[: expected - CRC_SIZE])
    if crc != actual:
        raise FrameError("bad_crc", f"CRC {crc:04x} in frame, {actual:04x} computed")
    _check_fields(rate, scale, n, code)
    samples = np.frombuffer(data, dtype="<i2", count=3 * n, offset=HEADER_SIZE)
    return CollarFrame(
        collar_id=collar,
        species=SPECIES_CODES[code],
        seq=seq,
        t0_ms=t0,
        sample_rate_hz=rate,
        scale_counts_per_g=scale,
        battery_mv=battery,
        samples=samples.astype(np.int16).reshape(n, 3),
    )


ACK_MAGIC = b"NA"
ACK_HEADER = struct.Struct("<2sBH")
ACK_ENTRY = struct.Struct("<BII")
#: Frames one acknowledgement names at most (a datagram of about 9 kB).
MAX_ACK_ENTRIES = 1024


FrameKey = tuple[int, int, int]


def frame_key(frame: CollarFrame) -> FrameKey:
    """What an acknowledgement names a frame by: (species code, collar id, frame seq)."""
    return (SPECIES_BY_NAME[frame.species], frame.collar_id & 0xFFFFFFFF, frame.seq & 0xFFFFFFFF)


def encode_ack(keys: list[FrameKey]) -> bytes:
    """Serialise one acknowledgement frame naming ``keys`` (species code, collar id,
    frame seq), 1..1024 of them."""
    if not 1 <= len(keys) <= MAX_ACK_ENTRIES:
        raise FrameError("wrong_length", f"{len(keys)} entries; an ack names 1..{MAX_ACK_ENTRIES}")
    body = ACK_HEADER.pack(ACK_MAGIC, VERSION, len(keys)) + b"".join(
        ACK_ENTRY.pack(k & 0xFF, c & 0xFFFFFFFF, s & 0xFFFFFFFF) for k, c, s in keys
    )
    return body + struct.pack("<H", crc16_ccitt_false(body))


def encode_acks(keys: list[FrameKey]) -> list[bytes]:
    """Acknowledgement frames naming every key, at most ``MAX_ACK_ENTRIES`` per frame."""
    return [encode_ack(keys[i : i + MAX_ACK_ENTRIES]) for i in range(0, len(keys), MAX_ACK_ENTRIES)]


def ack_size(n_entries: int) -> int:
    """Total bytes of an acknowledgement frame naming ``n_entries`` frames."""
    return ACK_HEADER.size + ACK_ENTRY.size * n_entries + CRC_SIZE


def decode_ack(data: bytes) -> list[FrameKey]:
    """Decode exactly one acknowledgement frame (pure); returns its (species code, collar
    id, frame seq) keys. Raises FrameError (bad_magic, unsupported_version, truncated, wrong_length,
    bad_crc)."""
    data = bytes(data)
    if len(data) < ACK_HEADER.size:
        raise FrameError("truncated", f"{len(data)} bytes, shorter than the 5-byte ack header")
    magic, version, n = ACK_HEADER.unpack_from(data)
    if magic != ACK_MAGIC:
        raise FrameError("bad_magic", f"starts with {magic.hex()}, expected 4e41")
    if version != VERSION:
        raise FrameError("unsupported_version", f"ack version {version}; this decoder reads 1")
    if not 1 <= n <= MAX_ACK_ENTRIES:
        raise FrameError("wrong_length", f"ack names {n} frames; 1..{MAX_ACK_ENTRIES}")
    size = ack_size(n)
    if len(data) != size:
        reason = "truncated" if len(data) < size else "wrong_length"
        raise FrameError(reason, f"{len(data)} bytes, an ack of {n} frames needs {size}")
    (crc,) = struct.unpack_from("<H", data, size - CRC_SIZE)
    actual = crc16_ccitt_false(data[: size - CRC_SIZE])
    if crc != actual:
        raise FrameError("bad_crc", f"CRC {crc:04x} in ack, {actual:04x} computed")
    step = ACK_ENTRY.size
    return [ACK_ENTRY.unpack_from(data, ACK_HEADER.size + step * i) for i in range(n)]


class AckReader:
    """Split a byte stream (the collar's side of a serial line) into acknowledgements.

    ``feed(data)`` returns the (species code, collar id, frame seq) keys of every acknowledgement
    completed so far; damaged candidates are skipped byte by byte (the gateway resends
    nothing, the collar simply resends the frame later). Memory is bounded by one
    acknowledgement of ``MAX_ACK_ENTRIES``.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[FrameKey]:
        """Add bytes; return the acknowledged keys completed so far, in stream order."""
        buf = self._buffer
        buf += data
        out: list[FrameKey] = []
        while True:
            start = buf.find(ACK_MAGIC)
            if start < 0:
                del buf[: len(buf) - (1 if buf.endswith(ACK_MAGIC[:1]) else 0)]
                return out
            del buf[:start]
            if len(buf) < ACK_HEADER.size:
                return out
            _, version, n = ACK_HEADER.unpack_from(buf)
            if version != VERSION or not 1 <= n <= MAX_ACK_ENTRIES:
                del buf[:1]
                continue
            size = ack_size(n)
            if len(buf) < size:
                return out
            try:
                out += decode_ack(bytes(buf[:size]))
                del buf[:size]
            except FrameError:
                del buf[:1]


class FrameReader:
    """Split a byte stream (serial line) into frames, resynchronising on the magic.

    ``feed(data)`` returns the frames completed so far, and FrameError objects for
    candidates that failed (a candidate with a bad CRC is skipped by one byte, so a
    false magic inside garbage costs nothing). Bytes skipped while hunting for the
    magic are counted in ``skipped_bytes``. Memory is bounded by ``MAX_FRAME_SIZE``.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.skipped_bytes = 0

    def feed(self, data: bytes) -> list[CollarFrame | FrameError]:
        """Add bytes; return completed frames and rejected candidates, in stream order."""
        self._buffer += data
        out: list[CollarFrame | FrameError] = []
        buf = self._buffer
        while True:
            start = buf.find(MAGIC)
            if start < 0:
                keep = 1 if buf.endswith(MAGIC[:1]) else 0
                self.skipped_bytes += len(buf) - keep
                del buf[: len(buf) - keep]
                break
            if start:
                self.skipped_bytes += start
                del buf[:start]
            if len(buf) < HEADER_SIZE:
                break
            _, version, code, _, _, _, rate, scale, n, _ = HEADER.unpack_from(buf)
            try:
                if version != VERSION:
                    raise FrameError("unsupported_version", f"version {version}")
                # Sanity of the header before waiting for a body of n samples: a false
                # magic in garbage or a cut frame must not hold back the frames behind it.
                _check_fields(rate, scale, n, code)
            except FrameError as exc:
                out.append(exc)
                self.skipped_bytes += 1
                del buf[:1]
                continue
            size = frame_size(n)
            if len(buf) < size:
                break
            try:
                out.append(decode_frame(bytes(buf[:size])))
                del buf[:size]
            except FrameError as exc:
                out.append(exc)
                self.skipped_bytes += 1
                del buf[:1]
        return out

    @property
    def buffered(self) -> int:
        """Bytes held while waiting for the rest of a frame."""
        return len(self._buffer)
