"""``make bench``: run every benchmark and print one table (optionally write it to a file).

Each benchmark module exposes ``run(quick: bool = False) -> list[dict]`` (rows built with
``bench.common.result``); the detector and detection-tick scripts, which print their own
report, are adapted here. A benchmark that fails adds a row saying so and the run goes on.

    python -m bench.run_all [--quick] [--only ingest,timeline] [--write docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import format_table, machine_info, result

#: (short name, module) in the order of the benchmark list.
MODULES = [
    ("ingest", "bench.bench_ingest"),
    ("detector", "bench.bench_detector"),
    ("tick", "bench.bench_tick"),
    ("timeline", "bench.bench_timeline"),
    ("simulator", "bench.bench_simulator"),
    ("panel_load", "bench.bench_panel_load"),
    ("quality", "bench.bench_detection_quality"),
    ("network", "bench.bench_network"),
]

DOC_HEADER = """# Benchmarks

`make bench` (`python -m bench.run_all`) runs every benchmark on the local machine and
prints this table. Each figure is compared with a limit **measured in the same run on
the same machine** (or with the fixed target named in the row), so the ratios, not the
absolute numbers, are what carries over to other hardware. A ratio of 1 means "as good
as the limit"; for times it is limit / time.

All services share the same cores during a run (InfluxDB, Mosquitto, the Python
processes), so absolute rates on a 2-core machine are lower than on a server, and
figures move by 10-30 % between runs when anything else is busy.
"""


def detector_rows(quick: bool) -> list[dict[str, Any]]:
    """Baseline + rule + episodes over animals x 30 days x 1 min against the numpy reference."""
    import numpy as np
    import pandas as pd

    from bench import bench_detector as bd
    from namazu.analytics.params import RuleParams

    animals, days, chunk = (200 if quick else 1000), 30, 50
    per_day = 1440
    rng = np.random.default_rng(2017)
    index = pd.date_range("2017-01-01", periods=days * per_day, freq="1min", tz="UTC", unit="ns")
    detector_s = reference_s = 0.0
    for first in range(0, animals, chunk):
        count = min(chunk, animals - first)
        x = bd._chunk(rng, count, days * per_day)
        start = time.perf_counter()
        bd.detect_herd(x, index, per_day, RuleParams())
        detector_s += time.perf_counter() - start
        if first == 0:
            start = time.perf_counter()
            bd._reference_median(x, per_day, RuleParams().baseline_days)
            reference_s = (time.perf_counter() - start) * animals / count
    total = animals * days * per_day
    return [
        result(
            "4 detector",
            f"baseline + rule + episodes, {animals:,} animals x {days} d x 1 min",
            total / detector_s,
            "samples/s",
            total / reference_s,
            "numpy median of 7 lagged copies",
            f">= {bd.TARGET_SAMPLES_PER_S / 1e6:.0f} M samples/s (herd <= {bd.LIMIT_S:.0f} s)",
            note=f"{detector_s:.2f} s for the herd",
        )
    ]


def tick_rows(quick: bool) -> list[dict[str, Any]]:
    """One detection tick for 100 / 1,000 / 5,000 animals against the tick limits, then
    1,000 / 5,000 animals with a herd-wide episode whose alarms all open in the first
    timed tick (the limit applies to the slowest tick)."""
    from bench import bench_tick as bt
    from namazu.server.launch.stack import Stack

    sizes = [100, 1000] if quick else [100, 1000, 5000]
    rows = []
    with tempfile.TemporaryDirectory(prefix="namazu-bench-tick-") as tmp:
        stack = Stack(Path(tmp) / "stack").start()
        try:
            for n in sizes:
                durations = bt.run(n, 3 if quick else 5, Path(tmp), stack)
                median = statistics.median(durations)
                limit = bt.LIMITS_S.get(n, 2.0 * n / 1000)
                rows.append(
                    result(
                        "5 detection tick",
                        f"{n:,} animals, median of {len(durations)} ticks",
                        median,
                        "s",
                        limit,
                        "tick limit",
                        "ratio >= 1",
                        higher_is_better=False,
                        note=f"{median / n * 1e3:.2f} ms per animal; slowest "
                        f"{max(durations):.2f} s",
                    )
                )
            for n in [s for s in sizes if s in bt.LIMITS_S]:
                opened: list[int] = []
                durations = bt.run(
                    n, 3 if quick else 5, Path(tmp), stack, opening=True, opened=opened
                )
                slowest = max(durations)
                rows.append(
                    result(
                        "5 detection tick",
                        f"{n:,} animals, alarms opening, slowest of {len(durations)} ticks",
                        slowest,
                        "s",
                        bt.LIMITS_S[n],
                        "tick limit",
                        "ratio >= 1 (slowest tick)",
                        higher_is_better=False,
                        note=f"{max(opened):,} alarms opened in one tick; median "
                        f"{statistics.median(durations):.2f} s",
                    )
                )
            rows += history_rows(bt, stack, Path(tmp), quick)
        finally:
            stack.stop()
    return rows


def history_rows(bt: Any, stack: Any, workdir: Path, quick: bool) -> list[dict[str, Any]]:
    """The same tick with every minute of 7 and of 30 days stored: time flat in history."""
    rows = []
    n = 100
    ticks = 3 if quick else 5
    medians = {}
    for days in (7, 30):
        medians[days] = statistics.median(bt.run(n, ticks, workdir, stack, history_days=days))
    rows.append(
        result(
            "5 detection tick",
            f"{n:,} animals, 30 days of minute data stored, median of {ticks} ticks",
            medians[30],
            "s",
            medians[7],
            "same tick, 7 days stored",
            "ratio ~ 1 (flat in history)",
            higher_is_better=False,
            note=f"{n * 1440 * 30:,} stored samples vs {n * 1440 * 7:,}",
        )
    )
    return rows


ADAPTERS = {"detector": detector_rows, "tick": tick_rows}


def run_benchmarks(quick: bool, only: set[str] | None = None) -> list[dict[str, Any]]:
    """Run the selected benchmarks in order; a failure becomes a row naming the error."""
    rows: list[dict[str, Any]] = []
    for name, module_name in MODULES:
        if only and name not in only:
            continue
        print(f"running {name} ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        try:
            if name in ADAPTERS:
                rows += ADAPTERS[name](quick)
            else:
                module = importlib.import_module(module_name)
                rows += module.run(quick=quick)
        except Exception as exc:  # one broken benchmark must not hide the others
            traceback.print_exc()
            rows.append(result(name, f"FAILED: {type(exc).__name__}: {exc}"[:200], 0, ""))
        print(f"  {name} took {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return rows


def render(rows: list[dict[str, Any]], machine: dict[str, Any], quick: bool) -> str:
    """The Markdown report: machine, date and the table."""
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join(
        [
            f"Run {when}{' (quick sizes)' if quick else ''} on: {machine['cpu']}, "
            f"{machine['cores']} logical cores, {machine['ram_gib']} GiB RAM, "
            f"{machine['os']}, Python {machine['python']}.",
            "",
            format_table(rows),
        ]
    )


def write_doc(path: Path, report: str) -> None:
    """Replace the latest-results section of ``path`` (or create the file)."""
    start, end = "<!-- bench:latest:start -->", "<!-- bench:latest:end -->"
    block = f"{start}\n{report}\n{end}"
    text = path.read_text(encoding="utf-8") if path.exists() else DOC_HEADER
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip() + "\n\n## Latest results\n\n" + block + "\n"
    path.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks and print one table."""
    parser = argparse.ArgumentParser(prog="bench.run_all", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a few minutes)")
    parser.add_argument("--only", help="comma-separated subset: " + ",".join(n for n, _ in MODULES))
    parser.add_argument("--write", type=Path, help="also write the table into this Markdown file")
    args = parser.parse_args(argv)
    only = set(args.only.split(",")) if args.only else None
    if only and not only <= {n for n, _ in MODULES}:
        print(f"bench.run_all: unknown benchmark in --only {args.only!r}", file=sys.stderr)
        return 2
    rows = run_benchmarks(args.quick, only)
    report = render(rows, machine_info(), args.quick)
    print(report)
    if args.write:
        write_doc(args.write, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
