"""The past days a detection tick compares with, kept in memory per farm.

A tick judges its new span against the same span on each of the previous
``baseline_days`` days. Reading all of those slices from InfluxDB at every tick makes the
read about (baseline_days + 1) times the new data, and most of its cost is per series
and per statement, not per row. ``SliceWindow`` reads the new span from InfluxDB at every
tick (late samples of the last minutes still count, as before) and the past days in
chunks of ``ahead_s`` of the tick's time, once per chunk: a farm ticked every minute
asks InfluxDB for 1 slice per tick and for the 7 past slices of the next hour once an
hour, so the read follows the new data. A farm's first chunk reaches past the end of
the first tick's span (which may catch up an hour) by a phase drawn from the farm's id,
so the farms of one scheduler read their chunks at different ticks.

Samples written into a past day after its chunk was read (more than a day late) are not
seen until the next chunk; ``namazu scheduler`` is otherwise unchanged. The window holds
baseline_days × ahead_s / Δ steps per animal: 7 × 60 × 5,000 animals ≈ 2.1 M values
(≈ 50 MB as a frame) for a 5,000-animal farm at Δ = 1 min.

Usage::

    job.window = SliceWindow(ahead_s=3600)
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

__all__ = ["SliceWindow"]

MS_PER_DAY = 86_400_000


@dataclass
class _Chunk:
    lo_ms: int  # covered span of the tick's own time [lo_ms, hi_ms)
    hi_ms: int
    frame: pd.DataFrame  # rows of the past slices, at their own times


@dataclass
class SliceWindow:
    """Past-day slices per farm, fetched ``ahead_s`` ahead [s]; counts its reads."""

    ahead_s: float = 3600.0
    chunks: dict[str, _Chunk] = field(default_factory=dict)
    chunk_reads: int = 0

    def read(self, job: Any, farm: str, last_ckpt_ms: int, end_ms: int) -> pd.DataFrame:
        """What ``DetectionJob.read_slices`` returns, the past days from memory."""
        lo, hi = last_ckpt_ms + job.res_ms, end_ms + job.res_ms
        days = job.params.baseline_days
        fresh = job.read_spans(farm, [(lo, hi)])
        if days == 0:
            return fresh
        chunk = self.chunks.get(farm)
        if chunk is None or lo < chunk.lo_ms or hi > chunk.hi_ms:
            steps = max(1, int(self.ahead_s * 1000) // job.res_ms)
            if chunk is None:  # a farm's first chunk ends at a phase of its own past the
                # tick (a first tick may catch up an hour), so the farms' chunks fall due apart
                ahead = hi + zlib.crc32(farm.encode()) % steps * job.res_ms
            else:
                ahead = max(hi, lo + steps * job.res_ms)
            ahead = min(ahead, lo + MS_PER_DAY)  # slices of two days never overlap
            spans = [(lo - k * MS_PER_DAY, ahead - k * MS_PER_DAY) for k in range(1, days + 1)]
            chunk = _Chunk(lo, ahead, job.read_spans(farm, spans))
            self.chunks[farm] = chunk
            self.chunk_reads += 1
        times = chunk.frame["t_ms"].to_numpy()
        past = chunk.frame[(times - lo) % MS_PER_DAY < hi - lo] if len(times) else chunk.frame
        if not len(past):
            return fresh
        return pd.concat([fresh, past], ignore_index=True) if len(fresh) else past

    def forget(self, keep: set[str]) -> None:
        """Drop the farms not in ``keep`` (a replica that gave farms away)."""
        for farm in set(self.chunks) - keep:
            del self.chunks[farm]
