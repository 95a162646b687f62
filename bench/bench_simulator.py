"""Benchmark: simulator and gateway frame path against their limits.

- a week of 100 animals at 1 min (about 10^6 samples) must take well under a second
  (limit 1.0 s);
- frames generated, encoded, decoded and turned into ODBA/VeDBA must keep up with 100
  collars at one burst per second with a 20x margin (limit 2,000 frames/s).

    .venv/bin/python -m bench.bench_simulator
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.common import format_table, result
from namazu.firmware_bridge.frame import decode_frame
from namazu.firmware_bridge.processing import activity_from_frames
from namazu.firmware_bridge.simulator import Herd

WEEK_LIMIT_S = 1.0
FRAMES_LIMIT_PER_S = 2000.0


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Time the simulator week and the frame path; rows for ``bench.common.format_table``."""
    herd = Herd("bench", "gw-1", {"cow": 60, "sheep": 30, "dog": 10}, seed=1)
    start = datetime(2024, 5, 1, tzinfo=UTC)
    herd.activity(start, start + timedelta(hours=1))  # warm up
    t0 = time.perf_counter()
    df = herd.activity(start, start + timedelta(days=7))
    week_s = time.perf_counter() - t0
    minutes = 10 if quick else 60
    t0 = time.perf_counter()
    frames = [decode_frame(b) for b in herd.frames(start, start + timedelta(minutes=minutes))]
    activity_from_frames(frames, "gw-1")
    rate = len(frames) / (time.perf_counter() - t0)
    return [
        result(
            "simulator",
            f"week of 100 animals ({len(df):,} samples)",
            week_s,
            "s",
            WEEK_LIMIT_S,
            "1 s",
            "ratio >= 1",
            higher_is_better=False,
        ),
        result(
            "simulator",
            "frames simulated+encoded+decoded+ODBA",
            rate,
            "frames/s",
            FRAMES_LIMIT_PER_S,
            "100 collars x 1 Hz x 20",
            "ratio >= 1",
        ),
    ]


if __name__ == "__main__":
    print(format_table(run()))
