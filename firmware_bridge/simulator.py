"""Simulated herds: per-minute collar activity with a known ground truth (``namazu simulate``).

Model of one animal's activity (ODBA [g]) at time t, all factors multiplicative::

    odba = diurnal(local hour + individual phase)   species profile, hourly means [g]
         * individual level                          lognormal, fixed per animal
         * day level                                 lognormal, per animal and day
         * herd factor ** coupling                   smooth, shared by the whole gateway
         * own mood                                  smooth, per animal
         * sensor noise                              lognormal, per sample
         * unrest multiplier                         ``UnrestEpisode.intensity`` inside episodes
         + bouts                                     short bursts (dogs: alert at night)
    vedba = odba * ~0.66

Every random number is a counter-based hash of (seed, animal, time index), never a
stateful generator, so a span gives the same values however it is chunked and a test
can regenerate the ground truth. Everything is vectorised: a week of 100 animals at
1 min (about 10^6 samples) takes a fraction of a second.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import logging
import socket
import sys
import threading
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import orjson
import pandas as pd

from namazu.firmware_bridge.frame import (
    SPECIES_BY_NAME,
    AckReader,
    CollarFrame,
    FrameKey,
    decode_frame,
    encode_frame,
    frame_key,
)

log = logging.getLogger(__name__)

MS_PER_DAY = 86_400_000
MS_PER_HOUR = 3_600_000


@dataclass(frozen=True)
class SpeciesProfile:
    """Behaviour parameters of one species.

    hourly_odba_g : 24 mean ODBA values [g] for local hours 0..23 (value at hh:30;
        interpolated circularly in between).
    individual_sigma : lognormal spread of an animal's overall level [-].
    day_sigma : lognormal spread of an animal's level from day to day [-].
    noise_sigma : lognormal per-sample sensor and behaviour noise [-].
    phase_sigma_h : spread of an animal's daily timing [h].
    herd_coupling : exponent of the shared herd factor (0 = independent) [-].
    mood_sigma : spread of the animal's own slow (30 min) variation [-].
    bout_odba_g : extra ODBA during a bout [g].
    hourly_bout_prob : 24 probabilities that a 10-min slot holds a bout, by local hour.
    vedba_ratio : mean VeDBA / ODBA [-].
    battery_period_days : battery drain cycle (full 4.15 V to 3.40 V, then replaced) [d].
    """

    name: str
    hourly_odba_g: tuple[float, ...]
    individual_sigma: float = 0.15
    day_sigma: float = 0.08
    noise_sigma: float = 0.25
    phase_sigma_h: float = 0.3
    herd_coupling: float = 1.0
    mood_sigma: float = 0.12
    bout_odba_g: float = 0.0
    hourly_bout_prob: tuple[float, ...] = (0.0,) * 24
    vedba_ratio: float = 0.66
    battery_period_days: float = 60.0

    def __post_init__(self) -> None:
        if len(self.hourly_odba_g) != 24 or len(self.hourly_bout_prob) != 24:
            raise ValueError(f"profile {self.name}: hourly tables need 24 values")


SPECIES_PROFILES: dict[str, SpeciesProfile] = {
    # Dairy cows: night rest, milking ~05:00 and ~17:00 (walk to the parlour, handling),
    # feeding after each milking, rumination rest around midday.
    "cow": SpeciesProfile(
        name="cow",
        hourly_odba_g=(
            0.040,
            0.036,
            0.035,
            0.038,
            0.080,
            0.230,
            0.200,
            0.170,
            0.140,
            0.120,
            0.100,
            0.075,
            0.070,
            0.080,
            0.100,
            0.120,
            0.170,
            0.240,
            0.200,
            0.150,
            0.110,
            0.075,
            0.055,
            0.045,
        ),
        herd_coupling=1.0,
        bout_odba_g=0.10,
        hourly_bout_prob=(0.01,) * 24,
        battery_period_days=60.0,
    ),
    # Sheep: grazing bouts at dawn and dusk, midday lying, quiet night; strong flocking.
    "sheep": SpeciesProfile(
        name="sheep",
        hourly_odba_g=(
            0.030,
            0.028,
            0.028,
            0.030,
            0.045,
            0.110,
            0.190,
            0.200,
            0.170,
            0.120,
            0.085,
            0.070,
            0.065,
            0.070,
            0.085,
            0.110,
            0.160,
            0.200,
            0.210,
            0.150,
            0.080,
            0.050,
            0.038,
            0.032,
        ),
        individual_sigma=0.12,
        herd_coupling=1.2,
        noise_sigma=0.28,
        bout_odba_g=0.08,
        hourly_bout_prob=(0.01,) * 24,
        battery_period_days=45.0,
    ),
    # Farm dogs: irregular, sleep in blocks, short intense bouts; alert (more bouts) at night.
    "dog": SpeciesProfile(
        name="dog",
        hourly_odba_g=(
            0.045,
            0.040,
            0.040,
            0.040,
            0.045,
            0.060,
            0.090,
            0.110,
            0.100,
            0.080,
            0.070,
            0.060,
            0.060,
            0.060,
            0.070,
            0.085,
            0.100,
            0.110,
            0.100,
            0.085,
            0.070,
            0.060,
            0.055,
            0.050,
        ),
        individual_sigma=0.25,
        day_sigma=0.15,
        noise_sigma=0.40,
        phase_sigma_h=1.0,
        herd_coupling=0.3,
        mood_sigma=0.30,
        bout_odba_g=0.35,
        hourly_bout_prob=(
            0.14,
            0.14,
            0.12,
            0.12,
            0.10,
            0.08,
            0.10,
            0.10,
            0.08,
            0.06,
            0.06,
            0.06,
            0.06,
            0.06,
            0.06,
            0.08,
            0.10,
            0.10,
            0.08,
            0.08,
            0.10,
            0.12,
            0.14,
            0.14,
        ),
        battery_period_days=30.0,
    ),
}


def species_profile(name: str) -> SpeciesProfile:
    """The profile of a species; ValueError naming the valid species otherwise."""
    try:
        return SPECIES_PROFILES[name]
    except KeyError:
        valid = ", ".join(sorted(SPECIES_PROFILES))
        raise ValueError(f"unknown species {name!r}; valid: {valid}") from None


@dataclass(frozen=True)
class UnrestEpisode:
    """An injected period of unrest: activity multiplied by ``intensity``.

    start : UTC start (timezone-aware; naive is read as UTC).
    duration_min : length [min].
    intensity : activity multiplier [-], e.g. 3.0.
    animals : animal ids (full ids or the part after the gateway, e.g. "cow-003");
        None = every animal of the herd.
    """

    start: datetime
    duration_min: float
    intensity: float
    animals: tuple[str, ...] | None = None

    @property
    def start_ms(self) -> int:
        """Start, UTC epoch [ms]."""
        return _to_ms(self.start)

    @property
    def end_ms(self) -> int:
        """End (exclusive), UTC epoch [ms]."""
        return self.start_ms + int(round(self.duration_min * 60_000))

    def covers(self, animal_id: str) -> bool:
        """True when the episode affects this animal."""
        if self.animals is None:
            return True
        return any(animal_id == a or animal_id.endswith("-" + a) for a in self.animals)


def parse_episode(text: str) -> UnrestEpisode:
    """Parse ``"START,DURATION_MIN,INTENSITY[,animal;animal]"`` (START ISO 8601, UTC default)."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) not in (3, 4):
        raise ValueError(f"episode {text!r}: expected START,DURATION_MIN,INTENSITY[,animal;animal]")
    try:
        start = _parse_time(parts[0])
        duration = float(parts[1])
        intensity = float(parts[2])
    except ValueError as exc:
        raise ValueError(f"episode {text!r}: {exc}") from exc
    if duration <= 0 or intensity <= 0:
        raise ValueError(f"episode {text!r}: duration and intensity must be positive")
    animals = tuple(a for a in parts[3].split(";") if a) if len(parts) == 4 else None
    return UnrestEpisode(start, duration, intensity, animals or None)


# --- counter-based random numbers ------------------------------------------------------
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on a uint64 array (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


def _hash(*keys: np.ndarray | int) -> np.ndarray:
    """Hash of broadcast integer keys to uint64 (order matters)."""
    acc = np.zeros(1, dtype=np.uint64)
    for key in keys:
        arr = np.atleast_1d(np.asarray(key))
        arr = (
            arr.view(np.uint64) if arr.dtype == np.uint64 else arr.astype(np.int64).view(np.uint64)
        )
        acc = _mix(acc * _GOLDEN + arr + _GOLDEN)
    return acc


def _keyed(base: np.ndarray, index: np.ndarray) -> np.ndarray:
    """One hash per (base key, integer index) pair, broadcast; a single mixing pass."""
    index = np.atleast_1d(np.asarray(index, dtype=np.int64)).view(np.uint64)
    return _mix(base + index * _GOLDEN)


def _uniform_from(h: np.ndarray) -> np.ndarray:
    """Uniform numbers in (0, 1) from uint64 hashes."""
    return ((h >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53


def _normal_pair(h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two independent standard normals per uint64 hash (Box-Muller on its halves)."""
    u1 = ((h >> np.uint64(32)).astype(np.float64) + 0.5) * 2.0**-32
    u2 = ((h & np.uint64(0xFFFFFFFF)).astype(np.float64) + 0.5) * 2.0**-32
    radius = np.sqrt(-2.0 * np.log(u1))
    angle = 2.0 * np.pi * u2
    return radius * np.cos(angle), radius * np.sin(angle)


def _normal_from(h: np.ndarray) -> np.ndarray:
    """One standard normal per uint64 hash."""
    return _normal_pair(h)[0]


def _per_block(
    seed: int, akey: np.ndarray, stream: int, grid: np.ndarray, block_ms: int, uniform=False
) -> np.ndarray:
    """A random number per animal and time block (day, 10-min slot...), shape (G, A)."""
    block = grid // block_ms
    first = int(block[0])
    index = np.arange(first, int(block[-1]) + 1, dtype=np.int64)
    h = _keyed(_hash(seed, akey, stream)[None, :], index[:, None])
    values = _uniform_from(h) if uniform else _normal_from(h)
    return values[block - first]


def _smooth_normal(base: np.ndarray, grid: np.ndarray, knot_ms: int) -> np.ndarray:
    """Slowly varying standard-normal-like noise between hashed knots.

    base : uint64 key(s), shape (K,) — one independent series per key.
    grid : sample times [ms], shape (G,). Returns shape (G, K).
    """
    j = grid // knot_ms
    first = int(j[0])
    knots = np.arange(first, int(j[-1]) + 2, dtype=np.int64)
    values = _normal_from(_keyed(np.atleast_1d(base)[None, :], knots[:, None]))
    w = ((grid - j * knot_ms) / knot_ms)[:, None]
    w = w * w * (3.0 - 2.0 * w)
    n0 = values[j - first]
    n1 = values[j - first + 1]
    out = (n0 * (1.0 - w) + n1 * w) / np.sqrt((1.0 - w) ** 2 + w**2)
    return out


def _circular_table(table: np.ndarray, hour: np.ndarray) -> np.ndarray:
    """Interpolate per-animal hourly tables (A, 24) at local hours (G, A); value at hh:30."""
    x = (hour - 0.5) % 24.0
    i0 = np.floor(x).astype(np.int64)
    frac = x - i0
    i1 = (i0 + 1) % 24
    rows = np.arange(table.shape[0])[None, :]
    return table[rows, i0] * (1.0 - frac) + table[rows, i1] * frac


def _string_key(text: str) -> int:
    return zlib.crc32(text.encode("utf-8"))


def _to_ms(value: datetime | pd.Timestamp | int) -> int:
    if isinstance(value, int | np.integer):
        return int(value)
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize("UTC")
    return int(stamp.tz_convert("UTC").as_unit("ns").value // 1_000_000)


def _parse_time(text: str) -> datetime:
    stamp = pd.Timestamp(text)
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize("UTC")
    return stamp.tz_convert("UTC").to_pydatetime()


# --- the herd -------------------------------------------------------------------------
@dataclass
class Herd:
    """A gateway's simulated animals.

    farm, gateway : ids (topic segments); animal ids are ``f"{gateway}-{species}-{n:03d}"``.
    counts : species -> number of animals.
    seed : random seed; same seed, same data.
    resolution_s : sample spacing [s].
    episodes : injected unrest (ground truth).
    dropout_rate : fraction of samples lost (half single samples, half 15-min gaps) [-].
    clock_drift_ppm : collar clock drift bound [ppm]; collars resync at 00:00 UTC.
    tz_offset_h : farm local time minus UTC [h] (diurnal profiles are in local time).
    profiles : species -> SpeciesProfile replacing ``SPECIES_PROFILES`` for this herd
        (e.g. a profile without per-sample noise, for a ceiling measurement); None = the
        standard profiles.
    """

    farm: str
    gateway: str
    counts: dict[str, int]
    seed: int = 0
    resolution_s: int = 60
    episodes: tuple[UnrestEpisode, ...] = ()
    dropout_rate: float = 0.0
    clock_drift_ppm: float = 0.0
    tz_offset_h: float = 1.0
    profiles: dict[str, SpeciesProfile] | None = None
    _ids: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        for species, n in self.counts.items():
            species_profile(species)
            if n < 0:
                raise ValueError(f"counts[{species!r}] = {n}; must be >= 0")
        if self.resolution_s <= 0:
            raise ValueError(f"resolution_s = {self.resolution_s}; must be > 0")
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError(f"dropout_rate = {self.dropout_rate}; must be in [0, 1)")
        animals = sorted(
            (f"{self.gateway}-{species}-{i:03d}", species, i)
            for species, n in self.counts.items()
            for i in range(1, n + 1)
        )
        self._animals = animals
        self._ids = np.array([a[0] for a in animals], dtype=object)
        table = SPECIES_PROFILES | (self.profiles or {})
        profiles = [table[a[1]] for a in animals]

        def vector(attr: str) -> np.ndarray:
            return np.array([getattr(pr, attr) for pr in profiles], dtype=np.float64)

        self._params: dict[str, np.ndarray] = {
            "key": np.array([_string_key(a[0]) for a in animals], dtype=np.int64),
            "species": np.array([a[1] for a in animals], dtype=object),
            "hourly_odba_g": np.array([pr.hourly_odba_g for pr in profiles]).reshape(-1, 24),
            "hourly_bout_prob": np.array([pr.hourly_bout_prob for pr in profiles]).reshape(-1, 24),
        }
        for attr in (
            "individual_sigma",
            "day_sigma",
            "noise_sigma",
            "phase_sigma_h",
            "herd_coupling",
            "mood_sigma",
            "bout_odba_g",
            "vedba_ratio",
            "battery_period_days",
        ):
            self._params[attr] = vector(attr)

    @property
    def animals(self) -> list[tuple[str, str]]:
        """(animal id, species) of every animal, sorted by id."""
        return [(a, s) for a, s, _ in self._animals]

    def _grid(self, start: datetime | int, end: datetime | int) -> np.ndarray:
        res = self.resolution_s * 1000
        start_ms, end_ms = _to_ms(start), _to_ms(end)
        first = -(-start_ms // res)
        last = -(-end_ms // res)
        return np.arange(first, last, dtype=np.int64) * res

    def clock_offset_s(self, t_ms: int) -> float:
        """The gateway's own clock offset at ``t_ms`` (drift since the daily sync) [s]."""
        return self.clock_drift_ppm * 1e-6 * (t_ms % MS_PER_DAY) / 1000.0

    def activity(
        self, start: datetime | int, end: datetime | int, with_battery: bool = False
    ) -> pd.DataFrame:
        """Activity samples with times in [start, end).

        start, end : UTC datetimes (naive = UTC) or epoch [ms].
        with_battery : add a ``battery_v`` column [V].
        Returns a DataFrame with columns animal, species, t_ms (int64 UTC epoch [ms],
        as the collar reports it, i.e. with clock drift), odba [g], vedba [g], sorted by
        t_ms then animal. Deterministic for the seed, independent of chunking.
        """
        grid = self._grid(start, end)
        n_animals = len(self._animals)
        if n_animals == 0 or grid.size == 0:
            return self._empty(with_battery)
        seed = self.seed
        p = self._params
        akey = p["key"]
        t2 = grid[:, None]  # (G, 1); per-animal vectors are (A,), samples (G, A)

        phase_h = p["phase_sigma_h"] * _normal_from(_hash(seed, akey, 11))
        hour = (grid[:, None] / MS_PER_HOUR + self.tz_offset_h + phase_h) % 24.0
        level = _circular_table(p["hourly_odba_g"], hour)

        log_factor = p["individual_sigma"] * _normal_from(_hash(seed, akey, 12))
        log_factor = log_factor + p["day_sigma"] * _per_block(seed, akey, 13, grid, MS_PER_DAY)
        herd_key = _string_key(f"{self.farm}/{self.gateway}")
        herd = _smooth_normal(_hash(seed, herd_key, 14), grid, 2 * MS_PER_HOUR)[:, 0]
        log_factor = log_factor + (0.15 * p["herd_coupling"]) * herd[:, None]
        mood = _smooth_normal(_hash(seed, akey, 15), grid, 30 * 60_000)
        log_factor = log_factor + p["mood_sigma"] * mood
        noise, jitter = _normal_pair(_keyed(_hash(seed, akey, 16), t2))
        sigma = p["noise_sigma"]
        log_factor = log_factor + sigma * noise - 0.5 * sigma * sigma
        odba = level * np.exp(log_factor)

        slot_ms = 10 * 60_000
        bout_p = _circular_table(p["hourly_bout_prob"], hour)
        slot_u = _per_block(seed, akey, 17, grid, slot_ms, uniform=True)
        amplitude = np.exp(0.3 * _per_block(seed, akey, 18, grid, slot_ms))
        odba = odba + (slot_u < bout_p) * p["bout_odba_g"] * amplitude

        for episode in self.episodes:
            hit = np.array([episode.covers(a[0]) for a in self._animals])
            inside = (grid >= episode.start_ms) & (grid < episode.end_ms)
            odba[np.ix_(inside, hit)] *= episode.intensity

        odba = np.clip(odba, 0.002, 3.0)
        vedba = odba * (p["vedba_ratio"] * np.exp(0.04 * jitter))

        reported = np.broadcast_to(t2, odba.shape)
        if self.clock_drift_ppm:
            ppm = self.clock_drift_ppm * (2.0 * _uniform_from(_hash(seed, akey, 19)) - 1.0)
            reported = t2 + np.round(ppm * 1e-6 * (t2 % MS_PER_DAY)).astype(np.int64)

        keep = None
        if self.dropout_rate > 0:
            single = _uniform_from(_keyed(_hash(seed, akey, 20), t2)) < self.dropout_rate / 2
            block = _per_block(seed, akey, 21, grid, 15 * 60_000, uniform=True)
            keep = ~(single | (block < self.dropout_rate / 2))

        animal_idx = np.broadcast_to(np.arange(n_animals), odba.shape)
        columns: dict[str, np.ndarray] = {
            "animal": self._ids[animal_idx],
            "species": p["species"][animal_idx],
            "t_ms": np.asarray(reported, dtype=np.int64),
            "odba": odba,
            "vedba": vedba,
        }
        if with_battery:
            columns["battery_v"] = self._battery(grid, akey, p["battery_period_days"])
        if keep is None:
            columns = {k: v.ravel() for k, v in columns.items()}
        else:
            columns = {k: v[keep] for k, v in columns.items()}
            animal_idx = animal_idx[keep]
        frame = pd.DataFrame(columns)
        if self.clock_drift_ppm:
            order = np.lexsort((animal_idx.ravel(), columns["t_ms"]))
            frame = frame.iloc[order].reset_index(drop=True)
        return frame

    def _battery(self, grid: np.ndarray, akey: np.ndarray, period_days: np.ndarray) -> np.ndarray:
        period_ms = period_days * MS_PER_DAY
        phase = _uniform_from(_hash(self.seed, akey, 22)) * period_ms
        cycle = ((grid[:, None] + phase) % period_ms) / period_ms
        return 4.15 - 0.75 * cycle

    def _empty(self, with_battery: bool) -> pd.DataFrame:
        columns = {
            "animal": np.array([], dtype=object),
            "species": np.array([], dtype=object),
            "t_ms": np.array([], dtype=np.int64),
            "odba": np.array([], dtype=np.float64),
            "vedba": np.array([], dtype=np.float64),
        }
        if with_battery:
            columns["battery_v"] = np.array([], dtype=np.float64)
        return pd.DataFrame(columns)

    def frames(
        self,
        start: datetime | int,
        end: datetime | int,
        sample_rate_hz: int = 10,
        burst_samples: int = 30,
        scale_counts_per_g: int = 4096,
        chunk_ms: int = MS_PER_HOUR,
    ) -> Iterator[bytes]:
        """Raw collar frames (``namazu.firmware_bridge.frame`` v1), one per activity sample.

        Each burst is gravity (a fixed collar tilt per animal) plus Gaussian dynamic
        acceleration scaled so that the burst's ODBA equals the simulated ODBA
        (to within int16 quantisation, 1/scale g). Frames come in time order;
        ``t0_ms`` is the sample time, the collar id is the number in the animal id.
        """
        start_ms, end_ms = _to_ms(start), _to_ms(end)
        number = {a: (s, i) for a, s, i in self._animals}
        for lo in range(start_ms, end_ms, chunk_ms):
            df = self.activity(lo, min(lo + chunk_ms, end_ms), with_battery=True)
            if df.empty:
                continue
            rng = np.random.default_rng([self.seed & 0xFFFFFFFF, lo // 1000])
            n = len(df)
            dyn = rng.standard_normal((n, burst_samples, 3))
            dyn -= dyn.mean(axis=1, keepdims=True)
            raw_odba = np.abs(dyn).sum(axis=2).mean(axis=1)
            dyn *= (df["odba"].to_numpy() / raw_odba)[:, None, None]
            keys = np.array([_string_key(a) for a in df["animal"]], dtype=np.int64)
            tilt = 0.2 * np.stack(_normal_pair(_hash(self.seed, keys, 24)), axis=1)
            gravity = np.column_stack([tilt, np.sqrt(np.clip(1 - (tilt**2).sum(1), 0, 1))])
            counts = np.round((dyn + gravity[:, None, :]) * scale_counts_per_g)
            counts = np.clip(counts, -32768, 32767).astype(np.int16)
            battery_mv = np.round(df["battery_v"].to_numpy() * 1000).astype(int)
            period = self.resolution_s * 1000
            for i, (animal, t_ms) in enumerate(zip(df["animal"], df["t_ms"], strict=True)):
                species, collar = number[animal]
                frame = CollarFrame(
                    collar_id=collar,
                    species=species,
                    seq=int(t_ms // period) & 0xFFFFFFFF,
                    t0_ms=int(t_ms),
                    sample_rate_hz=sample_rate_hz,
                    scale_counts_per_g=scale_counts_per_g,
                    battery_mv=int(battery_mv[i]),
                    samples=counts[i],
                )
                yield encode_frame(frame)


class UdpCollarLink:
    """The collars' radio as a UDP socket: frames to the gateway, acknowledgements back.

    host, port : the bridge's UDP source. The socket is unconnected, so a gateway that is
    down costs nothing but the frames' resends.
    """

    def __init__(self, host: str, port: int) -> None:
        self._address = (host, port)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1" if host in {"127.0.0.1", "localhost"} else "", 0))

    def send(self, data: bytes) -> None:
        """Send one frame (one datagram); a full socket buffer just loses it (resent later)."""
        with contextlib.suppress(OSError):
            self._sock.sendto(data, self._address)

    def receive(self, timeout_s: float) -> bytes:
        """Bytes of the acknowledgements that arrive within ``timeout_s`` [s] (b"" if none)."""
        self._sock.settimeout(timeout_s)
        try:
            return self._sock.recv(65536)
        except (TimeoutError, BlockingIOError, ConnectionRefusedError):
            return b""

    def close(self) -> None:
        """Close the socket."""
        self._sock.close()


class CollarFleet:
    """Simulated collars that keep every frame until the gateway acknowledges it.

    frames : frame bytes in time order (e.g. ``Herd.frames``).
    link : the radio: ``send(bytes)``, ``receive(timeout_s) -> bytes`` (acknowledgement
        frames, ``frame.encode_ack``), ``close()``; e.g. ``UdpCollarLink``.
    rate_hz : new frames per second for the whole fleet (0 = as fast as memory allows).
    memory : frames held unacknowledged at most; while it is full no new frame is sent
        (the collars keep sampling into their own storage) [frames].
    resend_after_s : an unacknowledged frame is sent again after this long [s].
    Counters in ``stats``: ``sent`` (first sends), ``resent``, ``acked``,
    ``ack_unknown`` (acknowledgements of frames not held, e.g. repeated ones).
    """

    def __init__(
        self,
        frames: Iterable[bytes],
        link,
        rate_hz: float = 0.0,
        memory: int = 5000,
        resend_after_s: float = 1.0,
    ) -> None:
        self._frames = iter(frames)
        self.link = link
        self.rate_hz = rate_hz
        self.memory = memory
        self.resend_after_s = resend_after_s
        self._held: collections.OrderedDict[FrameKey, tuple[bytes, float]] = (
            collections.OrderedDict()
        )
        self._reader = AckReader()
        self.stats = {"sent": 0, "resent": 0, "acked": 0, "ack_unknown": 0}

    @property
    def held(self) -> int:
        """Frames sent and not yet acknowledged [frames]."""
        return len(self._held)

    def run(self, timeout_s: float, stop: threading.Event | None = None) -> bool:
        """Send every frame and wait for every acknowledgement; False on time-out or stop."""
        t0 = time.monotonic()
        exhausted = False
        while True:
            now = time.monotonic()
            if (stop is not None and stop.is_set()) or now - t0 > timeout_s:
                return False
            while not exhausted and len(self._held) < self.memory:
                if self.rate_hz and self.stats["sent"] >= (now - t0) * self.rate_hz + 1:
                    break
                data = next(self._frames, None)
                if data is None:
                    exhausted = True
                    break
                self._held[frame_key(decode_frame(data))] = (data, now)
                self.link.send(data)
                self.stats["sent"] += 1
            for key, (data, sent) in list(self._held.items()):
                if now - sent < self.resend_after_s:
                    break  # held in order of their last send
                self._held[key] = (data, now)
                self._held.move_to_end(key)
                self.link.send(data)
                self.stats["resent"] += 1
            for key in self._reader.feed(self.link.receive(0.005)):
                if self._held.pop(key, None) is None:
                    self.stats["ack_unknown"] += 1
                else:
                    self.stats["acked"] += 1
            if exhausted and not self._held:
                return True


def animal_id(gateway: str, species: str, collar_id: int) -> str:
    """The animal id the simulator and the bridge give a collar."""
    if species not in SPECIES_BY_NAME:
        raise ValueError(f"unknown species {species!r}")
    return f"{gateway}-{species}-{collar_id:03d}"


# --- namazu simulate ------------------------------------------------------------------
def _parse_duration(text: str) -> timedelta:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip()
    try:
        if text[-1] in units:
            return timedelta(seconds=float(text[:-1]) * units[text[-1]])
        return timedelta(minutes=float(text))
    except (ValueError, IndexError) as exc:
        raise ValueError(f"duration {text!r}: use e.g. 90m, 2h, 3d or minutes") from exc


def build_parser() -> argparse.ArgumentParser:
    """Options of ``namazu simulate``."""
    p = argparse.ArgumentParser(
        prog="namazu simulate",
        description="Drive a simulated herd through a gateway publisher into MQTT.",
    )
    p.add_argument("--farm", default="demo-farm")
    p.add_argument("--gateway", default="gw-1")
    p.add_argument("--cows", type=int, default=20)
    p.add_argument("--sheep", type=int, default=0)
    p.add_argument("--dogs", type=int, default=0)
    p.add_argument("--start", help="UTC start, ISO 8601 (default: now)")
    span = p.add_mutually_exclusive_group()
    span.add_argument("--days", type=float, help="simulated span [days]")
    span.add_argument("--duration", help="simulated span, e.g. 90m, 6h, 2d (default 1h)")
    p.add_argument(
        "--speed", type=float, default=0.0, help="1 = real time, N = N x faster, 0 = max"
    )
    p.add_argument(
        "--episode",
        action="append",
        default=[],
        help='unrest "START,DURATION_MIN,INTENSITY[,animal;animal]" (repeatable)',
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resolution-s", type=int, default=60)
    p.add_argument("--dropout-rate", type=float, default=0.0)
    p.add_argument("--clock-drift-ppm", type=float, default=0.0)
    p.add_argument("--batch-samples", type=int, default=100)
    p.add_argument("--mqtt-host", default="127.0.0.1")
    p.add_argument("--mqtt-port", type=int, default=1883)
    p.add_argument("--spool", default="var/simulate-spool.sqlite")
    p.add_argument("--drain-timeout-s", type=float, default=120.0)
    p.add_argument(
        "--confirm",
        choices=("receipt", "puback"),
        default="receipt",
        help="free the spool on an ingest receipt saying it is stored (default) or on "
        "the broker's PUBACK (a broker without Namazu ingest)",
    )
    p.add_argument(
        "--frames-to",
        metavar="udp://HOST:PORT",
        help="instead of publishing, send the herd as collar frames to a bridge's UDP "
        "source; the collars keep each frame until it is acknowledged and resend it",
    )
    p.add_argument("--frame-rate", type=float, default=0.0, help="frames per second (0 = at once)")
    from namazu.firmware_bridge.lorawan_sim import add_arguments as add_lorawan_arguments

    add_lorawan_arguments(p)
    p.add_argument(
        "--wait-for-ingest",
        action="store_true",
        help="after every (re)connect, hold the spool until an ingest heartbeat arrives "
        "(as namazu bridge does by default; closes the broker-restart window)",
    )
    return p


def main(argv: list[str]) -> int:
    """``namazu simulate``: publish a simulated herd's activity through the gateway path."""
    from namazu.firmware_bridge.payload import batches_from_frame
    from namazu.firmware_bridge.publisher import GatewayPublisher
    from namazu.firmware_bridge.spool import Spool, SpoolError

    args = build_parser().parse_args(argv)
    try:
        start = _parse_time(args.start) if args.start else datetime.now(UTC)
        span = (
            timedelta(days=args.days)
            if args.days is not None
            else _parse_duration(args.duration or "1h")
        )
        episodes = tuple(parse_episode(e) for e in args.episode)
        counts = {"cow": args.cows, "sheep": args.sheep, "dog": args.dogs}
        herd = Herd(
            args.farm,
            args.gateway,
            {k: v for k, v in counts.items() if v > 0},
            seed=args.seed,
            resolution_s=args.resolution_s,
            episodes=episodes,
            dropout_rate=args.dropout_rate,
            clock_drift_ppm=args.clock_drift_ppm,
        )
        if args.frames_to:
            return send_frames(herd, start, start + span, args.frames_to, args.frame_rate)
        if args.lorawan:
            from namazu.firmware_bridge.lorawan_sim import publish_fleet

            return publish_fleet(args, start, span)
        spool = Spool(args.spool)
    except (ValueError, SpoolError) as exc:
        print(f"namazu simulate: {exc}", file=sys.stderr)
        return 2
    if args.speed < 0:
        print("namazu simulate: --speed must be >= 0", file=sys.stderr)
        return 2
    start_ms = _to_ms(start)
    end_ms = start_ms + int(span.total_seconds() * 1000)
    publisher = GatewayPublisher(
        args.farm,
        args.gateway,
        spool,
        args.mqtt_host,
        args.mqtt_port,
        clock_offset_s=lambda: herd.clock_offset_s(time.time_ns() // 1_000_000),
        wait_for_ingest=args.wait_for_ingest,
        confirm=args.confirm,
    ).start()
    wall0 = time.monotonic()
    samples = messages = 0
    step_ms = herd.resolution_s * 1000 if args.speed > 0 else 6 * MS_PER_HOUR
    try:
        for lo in range(start_ms, end_ms, step_ms):
            hi = min(lo + step_ms, end_ms)
            if args.speed > 0:
                due = wall0 + (lo - start_ms) / 1000.0 / args.speed
                time.sleep(max(0.0, due - time.monotonic()))
            df = herd.activity(lo, hi, with_battery=True)
            batches = list(
                batches_from_frame(df, args.farm, args.gateway, max_samples=args.batch_samples)
            )
            publisher.publish_batches(batches)
            samples += len(df)
            messages += len(batches)
        drained = publisher.wait_drained(args.drain_timeout_s)
    except KeyboardInterrupt:
        drained = False
    finally:
        publisher.stop()
        spool.close()
    elapsed = time.monotonic() - wall0
    confirmed = "stored by ingest" if args.confirm == "receipt" else "accepted by the broker"
    outcome = f"all {confirmed}" if drained else f"NOT all {confirmed} (kept in the spool)"
    print(
        f"simulated {len(herd.animals)} animals, {samples} samples in {messages} messages, "
        f"{elapsed:.1f} s, {outcome}"
    )
    return 0 if drained else 1


def send_frames(
    herd: Herd, start: datetime, end: datetime, url: str, rate_hz: float, timeout_s: float = 3600
) -> int:
    """Send a herd's collar frames over [start, end) to ``udp://HOST:PORT`` through a
    ``CollarFleet``; print the counters; 0 once every frame is acknowledged."""
    from urllib.parse import urlparse

    parsed = urlparse(url)
    if parsed.scheme != "udp" or not parsed.hostname or parsed.port is None:
        raise ValueError(f"--frames-to {url!r}: expected udp://HOST:PORT")
    link = UdpCollarLink(parsed.hostname, parsed.port)
    fleet = CollarFleet(herd.frames(start, end), link, rate_hz=rate_hz)
    try:
        complete = fleet.run(timeout_s)
    except KeyboardInterrupt:
        complete = False
    finally:
        link.close()
    print(orjson.dumps(dict(fleet.stats, held=fleet.held, complete=complete)).decode(), flush=True)
    return 0 if complete else 1


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    raise SystemExit(main(sys.argv[1:]))
