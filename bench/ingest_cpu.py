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
import contextlib
import os
import tempfile
import threading
import time
from pathlib import Path

import psutil

from bench.bench_ingest import FARM, payloads, synthetic_points
from server.stack import Stack
from tests.chaos import harness


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
            me = psutil.Process(os.getpid())
            before = {name: _cpu_s(p) for name, p in services.items()} | {"bench": _cpu_s(me)}
            workers: list[psutil.Process] = []
            last: dict[int, float] = {}
            done = threading.Event()
            start = harness.IngestWorker.start

            def start_and_watch(worker):
                started = start(worker)
                workers.append(psutil.Process(worker.pid))
                return started

            def watch() -> None:  # a worker's CPU time is gone once it exits
                while not done.is_set():
                    for proc in workers:
                        with contextlib.suppress(psutil.NoSuchProcess):
                            last[proc.pid] = _cpu_s(proc)
                    time.sleep(0.05)

            harness.IngestWorker.start = start_and_watch
            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            try:
                run = harness.measure_ingest(stack, Path(tmp), messages, n_samples, FARM)
            finally:
                harness.IngestWorker.start = start
                done.set()
                watcher.join()
            out = {name: _cpu_s(p) - before[name] for name, p in services.items()}
            out["bench"] = _cpu_s(me) - before["bench"]
            out["ingest"] = sum(last.values())
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
