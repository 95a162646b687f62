"""Where the CPU goes in one end-to-end ingest run (row 1 of the benchmark table).

Runs the same measurement as the one-worker ingest row (1,000,000 samples in messages of
100, one ``namazu ingest`` worker, a private Mosquitto + InfluxDB) and reports the CPU
time [s] each process used during it: InfluxDB, Mosquitto, the ingest worker (start-up
included) and this process (the publishing client and the clock polls), next to the
wall time. With 2 cores, CPU time / wall time above ~2 means the cores were saturated.

    .venv/bin/python -m bench.ingest_cpu [--samples 1000000]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import psutil

from bench.bench_ingest import FARM, payloads, synthetic_points
from namazu.server.launch.stack import Stack
from tests.chaos.harness import measure_ingest


def _cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def measure(n_samples: int) -> dict[str, float]:
    """CPU seconds per process and the wall time [s] of one one-worker ingest run."""
    with tempfile.TemporaryDirectory(prefix="namazu-cpu-") as tmp:
        stack = Stack(Path(tmp) / "stack").start()
        try:
            messages = payloads(synthetic_points(n_samples))
            services = {name: psutil.Process(p.pid) for name, p in stack._procs.items()}
            services["bench"] = psutil.Process(os.getpid())
            before = {name: _cpu_s(p) for name, p in services.items()}
            run = measure_ingest(stack, Path(tmp), messages, n_samples, FARM)
            out = {name: _cpu_s(p) - before[name] for name, p in services.items()}
            out["ingest"] = run["workers_cpu_s"]
            out["wall_s"] = run["seconds"]
            out["samples_per_s"] = run["samples_per_s"]
            return out
        finally:
            stack.stop()


def main(argv: list[str] | None = None) -> int:
    """Print the CPU seconds per process of one run."""
    parser = argparse.ArgumentParser(prog="bench.ingest_cpu", description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1_000_000, help="samples published")
    args = parser.parse_args(argv)
    got = measure(args.samples)
    print(f"{args.samples:,} samples in {got['wall_s']:.2f} s ({got['samples_per_s']:,.0f}/s)")
    for name in ("influxd", "ingest", "bench", "mosquitto"):
        print(f"  {name:<10} {got[name]:6.2f} CPU-s")
    total = sum(got[n] for n in ("influxd", "ingest", "bench", "mosquitto"))
    print(f"  total      {total:6.2f} CPU-s = {total / got['wall_s']:.2f} cores busy on average")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
