"""Benchmark: one detection tick for 1,000 and 5,000 animals at 1-min resolution.

Starts a private InfluxDB (``namazu.server.launch.stack``),
writes simulated activity for the slices a tick
reads (the new minutes and the same minutes on each of the previous 7 days, with an hour
of margin around them), then times consecutive 1-minute ticks, InfluxDB queries and
writes included. Limits: 2 s for 1,000 animals, 10 s for 5,000.

With ``--opening``, a herd-wide unrest episode (every animal x20) starts
44 min before the first timed tick; an untimed tick processes those 44 minutes,
so the episode reaches the rule's 45 min in the first timed tick and every animal's
alarm (and every species, herd and quorum alarm) opens in it: the tick that logs every
alarm and queues its mail. The limit then applies to the slowest tick.

With ``--window``, the past days come from ``SliceWindow`` (read once per hour of ticks,
in the first timed tick here) and each tick reads only its new minute from InfluxDB.

    .venv/bin/python -m bench.bench_tick [--animals 1000 5000] [--ticks 5] [--opening] [--window]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from namazu.firmware_bridge.simulator import Herd, UnrestEpisode
from namazu.server.detection.alarmlog import AlarmLog
from namazu.server.detection.tick import DetectionJob
from namazu.server.detection.window import SliceWindow
from namazu.server.launch.stack import Stack
from namazu.server.store.influx import InfluxClient, float_series_lines
from namazu.server.store.state import init_db

LIMITS_S = {1000: 2.0, 5000: 10.0}
NOW = datetime(2024, 5, 8, 12, 0, tzinfo=UTC)
#: Minutes of the injected episode processed before the first timed tick [min].
EPISODE_LEAD_MIN = 44
#: Activity multiplier of the injected episode [-].
EPISODE_INTENSITY = 20.0


def _write_frame(client: InfluxClient, herd: Herd, frame) -> int:
    """Write a simulator activity frame (sorted by animal) as ``activity`` points."""
    lines: list[str] = []
    for (name, species), group in frame.groupby(["animal", "species"], sort=False):
        tags = {"farm": herd.farm, "gateway": herd.gateway, "animal": name, "species": species}
        columns = {"odba": group["odba"].to_numpy(), "vedba": group["vedba"].to_numpy()}
        lines += float_series_lines("activity", tags, columns, group["t_ms"].to_numpy())
    for i in range(0, len(lines), 100_000):
        client.write_lines(lines[i : i + 100_000])
    return len(lines)


def _write(client: InfluxClient, herd: Herd, ticks: int) -> int:
    points = 0
    for k in range(8):
        day_now = NOW - timedelta(days=k)
        frame = herd.activity(
            day_now - timedelta(minutes=60), day_now + timedelta(minutes=ticks + 5)
        )
        animal = frame["animal"].to_numpy()
        order = np.argsort(animal, kind="stable")
        frame = frame.iloc[order]
        points += _write_frame(client, herd, frame)
    return points


def _write_history(client: InfluxClient, herd: Herd, ticks: int, days: int) -> int:
    """Every minute of the last ``days`` days and of the tick minutes, one day at a time."""
    points = 0
    start, end = NOW - timedelta(days=days), NOW + timedelta(minutes=ticks + 5)
    while start < end:
        stop = min(start + timedelta(days=1), end)
        frame = herd.activity(start, stop)
        frame = frame.iloc[np.argsort(frame["animal"].to_numpy(), kind="stable")]
        points += _write_frame(client, herd, frame)
        start = stop
    return points


def run(
    n_animals: int,
    ticks: int,
    workdir: Path,
    stack: Stack,
    history_days: int | None = None,
    opening: bool = False,
    opened: list[int] | None = None,
    window: bool = False,
) -> list[float]:
    """Durations of ``ticks`` consecutive 1-min ticks for a herd of ``n_animals`` [s].

    history_days : None stores only the slices a tick reads (the new minutes and the
        same minutes on each of the previous 7 days); a number stores every minute of
        that many days, to show that the tick time does not grow with stored history.
    opening : inject a herd-wide episode so that every alarm opens in the first timed
        tick (an untimed tick processes the episode's first ``EPISODE_LEAD_MIN`` minutes).
    opened : when given, receives the number of alarms opened by each timed tick [count].
    window : keep the past days in a ``SliceWindow`` (the scheduler's way).
    """
    suffix = "" if history_days is None else f"_h{history_days}"
    suffix += "_open" if opening else ""
    client = InfluxClient(stack.influx_url, f"bench_{n_animals}{suffix}", timeout_s=120)
    client.create_database()
    counts = {"cow": n_animals * 6 // 10, "sheep": n_animals * 3 // 10}
    counts["dog"] = n_animals - counts["cow"] - counts["sheep"]
    episodes: tuple[UnrestEpisode, ...] = ()
    if opening:
        lead = timedelta(minutes=EPISODE_LEAD_MIN)
        episodes = (UnrestEpisode(NOW - lead, EPISODE_LEAD_MIN + ticks + 10, EPISODE_INTENSITY),)
    herd = Herd("bench-farm", "gw-1", counts, seed=1, episodes=episodes)
    started = time.perf_counter()
    if history_days is None:
        points = _write(client, herd, ticks)
    else:
        points = _write_history(client, herd, ticks, history_days)
    print(f"  wrote {points:,} points in {time.perf_counter() - started:.1f} s")
    engine = init_db(f"sqlite:///{workdir}/state-{n_animals}{suffix}.sqlite")
    log_path = workdir / f"log-{n_animals}{suffix}.jsonl"
    job = DetectionJob(
        client,
        engine,
        AlarmLog(log_path),
        ["bench-farm"],
        resolution_s=60,
        settle_s=0,
        initial_lookback_s=EPISODE_LEAD_MIN * 60 if opening else 60,
    )
    if window:
        job.window = SliceWindow()
    # a tick at T judges the samples whose whole minute ended by T
    if opening:  # the episode's first minutes, up to one sample short of an alarm
        [warm] = job.tick(NOW)
        print(f"  untimed tick over {EPISODE_LEAD_MIN} min: {len(warm.opened)} alarms opened")
    durations = []
    for i in range(ticks):
        started = time.perf_counter()
        [result] = job.tick(NOW + timedelta(minutes=i + 1))
        durations.append(time.perf_counter() - started)
        if opened is not None:
            opened.append(len(result.opened))
        print(
            f"  tick {i}: {durations[-1]:.3f} s (read {result.read_s:.3f}, compute "
            f"{result.compute_s:.3f}, write {result.write_s:.3f}), {result.animals} animals, "
            f"{result.samples} new samples, {len(result.opened)} alarms opened"
        )
    if log_path.exists():
        print(f"  alarm log: {log_path.stat().st_size / 1e6:.1f} MB")
    client.drop_database()
    return durations


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit 1 when a tick exceeds its limit (the median tick; the
    slowest with ``--opening``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--animals", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--ticks", type=int, default=5)
    parser.add_argument(
        "--opening", action="store_true", help="every alarm opens in the first timed tick"
    )
    parser.add_argument("--window", action="store_true", help="past days from memory (SliceWindow)")
    args = parser.parse_args(argv)
    failed = False
    with tempfile.TemporaryDirectory(prefix="namazu-bench-") as tmp:
        workdir = Path(tmp)
        stack = Stack(workdir / "stack").start()
        try:
            for n in args.animals:
                print(f"{n} animals:")
                durations = run(
                    n, args.ticks, workdir, stack, opening=args.opening, window=args.window
                )
                limit = LIMITS_S.get(n, 2.0 * n / 1000)
                median = statistics.median(durations)
                judged = max(durations) if args.opening else median
                ratio = judged / limit
                print(
                    f"  median tick {median:.3f} s, max {max(durations):.3f} s, "
                    f"limit {limit:.1f} s on the {'slowest' if args.opening else 'median'} "
                    f"-> ratio {ratio:.2f} ({'OK' if ratio <= 1 else 'SLOW'})"
                )
                failed |= ratio > 1
        finally:
            stack.stop()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
