"""Benchmark: the panel's memory under 10 concurrent heavy requests, and the latency of
a light request meanwhile.

Starts a private InfluxDB (``namazu.server.launch.stack``), writes one animal's 1-minute
activity and baseline rows over 400 days (576,000 samples each), and runs ``namazu web``
(gunicorn, the shipped defaults: one worker, 8 threads) as its own processes, so the RSS
measured is the panel's alone. Ten viewer accounts each send one
heavy request at once — four 400-day Movebank exports, three 400-day timeline exports,
three 90-day evaluations at 1-minute resolution asking for 2,000 shifts — read every
byte, while an eleventh client sends ``GET /api/v1/farms`` every 50 ms. Run twice:

- ``limited``: the shipped limits (``web.heavy_global_limit`` 2, per user 1, shift cap
  500): what beyond the limits is refused (429 + Retry-After) is counted;
- ``unlimited``: limits raised to 10, so all ten run at once (what streaming alone bounds).

Figures: peak RSS of the panel (``namazu web``: gunicorn master and workers) [MiB] against
the documented bound (``MEMORY_BOUND_MIB``, for one worker), its growth over the RSS before the load
(``GROWTH_BOUND_MIB``), the light request's p50 and max
latency [ms] against the 100 ms target, and the heavy requests answered 200 / 429.

    .venv/bin/python -m bench.bench_panel_load [--quick] [--workers N]
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.bench_timeline import ANIMAL, END, FARM, write_animal_days
from bench.common import PeakRss, format_table, machine_info, result
from namazu.server.launch.stack import Stack, free_port, port_open
from namazu.server.store.influx import InfluxClient
from namazu.server.store.state import init_db, session_scope
from namazu.server.web.auth import create_user, issue_token

#: The documented bound of the panel's resident memory (gunicorn master and one worker,
#: ``namazu web`` defaults) under this load [MiB] ...
MEMORY_BOUND_MIB = 400.0
#: ... and of its growth over the same processes at rest, measured in the same run [MiB].
GROWTH_BOUND_MIB = 100.0
LIGHT_TARGET_MS = 100.0


def _heavy_paths(days: int) -> list[str]:
    start = (END - pd.Timedelta(days=days)).strftime("%Y-%m-%dT%H:%MZ")
    start90 = (END - pd.Timedelta(days=min(days, 90))).strftime("%Y-%m-%dT%H:%MZ")
    end = END.strftime("%Y-%m-%dT%H:%MZ")
    move = f"/api/v1/export/movebank.csv?farm={FARM}&animal={ANIMAL}&start={start}&end={end}"
    line = f"/api/v1/export/timeline.csv?farm={FARM}&series={ANIMAL}&start={start}&end={end}"
    evaluation = (
        f"/api/v1/evaluation?farm={FARM}&start={start90}&end={end}&resolution_min=1&n_shifts=2000"
    )
    return [move] * 4 + [line] * 3 + [evaluation] * 3


def _get(port: int, token: str, path: str) -> tuple[int, int]:
    """(status, body bytes) of a GET that reads the whole body."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        connection.request("GET", path, headers={"Authorization": f"Bearer {token}"})
        response = connection.getresponse()
        size = 0
        while chunk := response.read(1 << 16):
            size += len(chunk)
        return response.status, size
    finally:
        connection.close()


def _run_load(
    directory: Path, influx_url: str, database: str, tokens: list[str], limits: dict[str, Any],
    days: int, workers: int = 1,
) -> dict[str, Any]:  # fmt: skip
    """Start the panel with ``limits``, fire the load, return the figures."""
    port = free_port()
    config = directory / f"panel-{limits['heavy_global_limit']}.toml"
    config.write_text(
        f'[influx]\nurl = "{influx_url}"\ndatabase = "{database}"\n'
        f'[state]\nurl = "sqlite:///{directory / "state.sqlite"}"\n'
        f'[web]\nsecret_key = "{"b" * 48}"\n'
        + "".join(f"{key} = {value}\n" for key, value in limits.items())
        + f'[[farms]]\nid = "{FARM}"\nlatitude = 43.0\nlongitude = 13.0\n'
    )
    panel = subprocess.Popen(
        [sys.executable, "-m", "namazu.server.cli", "web", "--config", str(config),
         "--port", str(port), "--workers", str(workers)],
        stdout=subprocess.DEVNULL, stderr=(directory / "panel.log").open("ab"),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not port_open(port):
            if panel.poll() is not None or time.monotonic() > deadline:
                log = (directory / "panel.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"namazu web did not start:\n{log}")
            time.sleep(0.1)
        _get(port, tokens[0], "/api/v1/farms")  # warm: imports, first connection
        rss = PeakRss([panel.pid], interval_s=0.05)
        idle_mib = rss.rss_mib(panel.pid)
        statuses: list[int] = []
        latencies: list[float] = []
        done = threading.Event()

        def heavy(token: str, path: str) -> None:
            statuses.append(_get(port, token, path)[0])

        def light() -> None:
            while not done.is_set():
                started = time.perf_counter()
                status, _ = _get(port, tokens[-1], "/api/v1/farms")
                if status == 200:
                    latencies.append((time.perf_counter() - started) * 1000)
                time.sleep(0.05)

        with rss:
            threads = [
                threading.Thread(target=heavy, args=(token, path))
                for token, path in zip(tokens, _heavy_paths(days), strict=False)
            ]
            prober = threading.Thread(target=light)
            started = time.perf_counter()
            for thread in threads:
                thread.start()
            prober.start()
            for thread in threads:
                thread.join()
            elapsed = time.perf_counter() - started
            done.set()
            prober.join()
        return {
            "idle_mib": idle_mib,
            "peak_mib": rss.peak_mib[panel.pid],
            "ok": statuses.count(200),
            "refused": statuses.count(429),
            "other": ", ".join(
                f"{statuses.count(code)} x {code}" for code in sorted(set(statuses) - {200, 429})
            )
            or "none",
            "light_p50_ms": statistics.median(latencies) if latencies else float("nan"),
            "light_p95_ms": float(np.percentile(latencies, 95)) if latencies else float("nan"),
            "light_max_ms": max(latencies) if latencies else float("nan"),
            "light_n": len(latencies),
            "elapsed_s": elapsed,
        }
    finally:
        panel.terminate()
        panel.wait(timeout=30)


def run(quick: bool = False, workers: int = 1) -> list[dict]:
    """Both scenarios; rows for ``bench.run_all``. ``workers``: gunicorn worker
    processes of the panel (the limits hold over all of them)."""
    days = 60 if quick else 400
    rows = []
    with tempfile.TemporaryDirectory(prefix="namazu-bench-load-") as tmp:
        directory = Path(tmp)
        stack = Stack(directory / "stack").start()
        try:
            influx = InfluxClient(stack.influx_url, "bench_load")
            influx.create_database()
            samples = write_animal_days(influx, days, seed=11)
            engine = init_db(f"sqlite:///{directory / 'state.sqlite'}")
            with session_scope(engine) as db:
                tokens = [
                    issue_token(db, create_user(db, f"viewer{k:02d}", "viewer", "x" * 12))
                    for k in range(11)
                ]
            scenarios = {
                "limited": {"heavy_global_limit": 2, "heavy_per_user_limit": 1,
                            "evaluation_max_shifts": 500},
                "unlimited": {"heavy_global_limit": 10, "heavy_per_user_limit": 10,
                              "evaluation_max_shifts": 500},
            }  # fmt: skip
            for name, limits in scenarios.items():
                figures = _run_load(
                    directory, stack.influx_url, "bench_load", tokens, limits, days, workers
                )
                label = f"panel load ({name}, {samples:,} samples, {workers} worker(s))"
                rows += [
                    result(label, "peak RSS of the panel, 10 heavy requests",
                           figures["peak_mib"], "MiB", MEMORY_BOUND_MIB, "documented bound",
                           higher_is_better=False, target=f"<= {MEMORY_BOUND_MIB:.0f} MiB"),
                    result(label, "RSS growth over the panel at rest",
                           figures["peak_mib"] - figures["idle_mib"], "MiB", GROWTH_BOUND_MIB,
                           "documented bound", higher_is_better=False,
                           target=f"<= {GROWTH_BOUND_MIB:.0f} MiB"),
                    result(label, "RSS before the load", figures["idle_mib"], "MiB"),
                    result(label, "light request p50 during the load",
                           figures["light_p50_ms"], "ms", LIGHT_TARGET_MS, "target",
                           higher_is_better=False, target=f"< {LIGHT_TARGET_MS:.0f} ms"),
                    result(label, "light request p95 during the load",
                           figures["light_p95_ms"], "ms", LIGHT_TARGET_MS, "target",
                           higher_is_better=False, target=f"< {LIGHT_TARGET_MS:.0f} ms"),
                    result(label, f"light request max ({figures['light_n']} requests)",
                           figures["light_max_ms"], "ms", LIGHT_TARGET_MS, "target",
                           higher_is_better=False, target=f"< {LIGHT_TARGET_MS:.0f} ms"),
                    result(label, "heavy requests answered 200", figures["ok"], "count",
                           note=f"{figures['refused']} answered 429; other: {figures['other']}"),
                    result(label, "wall time of the load", figures["elapsed_s"], "s"),
                ]  # fmt: skip
        finally:
            stack.stop()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="60 days instead of 400")
    parser.add_argument(
        "--workers", type=int, default=1, help="gunicorn worker processes of the panel"
    )
    args = parser.parse_args(argv)
    print(machine_info())
    print(format_table(run(quick=args.quick, workers=args.workers)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
