"""Benchmark: the timeline API for one animal over 1, 30 and 365 days of 1-minute data.

Starts a private InfluxDB (``namazu.server.launch.stack``),
writes one animal's 1-minute activity and its
baseline rows for a year (525,600 samples each), builds the panel with ``create_app`` and
times ``GET /api/v1/timeline`` through the Flask app (bearer token, ``max_points=2000``,
JSON encoding included), warm: one discarded call, then ``--runs`` calls per range.

Target: p95 <= 250 ms for 30 days. The reference measured in the same run is
the time to fetch the same 30 days of raw samples straight from InfluxDB, which is what
the panel would cost without server-side downsampling.

    .venv/bin/python -m bench.bench_timeline [--runs 30] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.common import format_table, machine_info, result
from namazu.server.launch.stack import Stack
from namazu.server.store import queries
from namazu.server.store.influx import InfluxClient, float_series_lines
from namazu.server.store.state import init_db, session_scope

TARGET_P95_MS = 250.0
FARM, ANIMAL = "bench-farm", "cow-001"
END = pd.Timestamp("2025-01-01T00:00:00Z")


def _write_year(client: InfluxClient, days: int) -> int:
    """One animal's activity and baseline rows over ``days`` days; returns samples."""
    index = pd.date_range(END - pd.Timedelta(days=days), END, freq="1min", inclusive="left")
    minutes = np.arange(index.size) % 1440
    rng = np.random.default_rng(7)
    odba = 0.1 + 0.05 * (1 + np.sin(2 * np.pi * minutes / 1440)) + rng.gamma(2.0, 0.01, index.size)
    baseline = 0.1 + 0.05 * (1 + np.sin(2 * np.pi * minutes / 1440)) + 0.02
    t_ms = index.as_unit("ms").asi8
    chunk = 100_000
    for k in range(0, index.size, chunk):
        part = slice(k, k + chunk)
        client.write_lines(
            float_series_lines(
                "activity",
                {"farm": FARM, "gateway": "gw-1", "animal": ANIMAL, "species": "cow"},
                {"odba": odba[part], "vedba": odba[part] * 0.8},
                t_ms[part],
            )
        )
        client.write_lines(
            float_series_lines(
                "baseline",
                {"farm": FARM, "series": ANIMAL},
                {
                    "baseline": baseline[part],
                    "threshold": baseline[part] * 2.4,
                    "value": odba[part],
                },
                t_ms[part],
            )
        )
    return int(index.size)


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def run(quick: bool = False, runs: int = 30) -> list[dict[str, Any]]:
    """Measure the timeline API; returns result rows (see bench.common)."""
    from namazu.server.web import create_app
    from namazu.server.web.auth import create_user, issue_token

    days_written = 31 if quick else 366
    ranges = (1, 30) if quick else (1, 30, 365)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="namazu-bench-timeline-") as tmp:
        stack = Stack(Path(tmp) / "stack").start()
        try:
            client = InfluxClient(stack.influx_url, "bench_timeline", timeout_s=120)
            client.create_database()
            started = time.perf_counter()
            samples = _write_year(client, days_written)
            print(f"wrote {samples:,} samples x 2 measurements in "
                  f"{time.perf_counter() - started:.1f} s", file=sys.stderr)  # fmt: skip
            state_url = f"sqlite:///{tmp}/state.sqlite"
            engine = init_db(state_url)
            with session_scope(engine) as db:
                token = issue_token(db, create_user(db, "bench", "viewer", "bench-password"))
            app = create_app(
                {
                    "influx": {"url": stack.influx_url, "database": "bench_timeline"},
                    "state": {"url": state_url},
                    "web": {"secret_key": "b" * 48},
                    "farms": [{"id": FARM, "latitude": 43.0, "longitude": 13.0}],
                }
            )
            http = app.test_client()
            headers = {"Authorization": f"Bearer {token}"}
            for days in ranges:
                start = END - pd.Timedelta(days=days)
                args = {
                    "farm": FARM,
                    "series": ANIMAL,
                    "start": start.isoformat(),
                    "end": END.isoformat(),
                    "max_points": 2000,
                }
                warm = http.get("/api/v1/timeline", query_string=args, headers=headers)
                if warm.status_code != 200:
                    raise RuntimeError(f"timeline answered {warm.status_code}: {warm.text}")
                times_ms = []
                for _ in range(runs):
                    t0 = time.perf_counter()
                    response = http.get("/api/v1/timeline", query_string=args, headers=headers)
                    times_ms.append((time.perf_counter() - t0) * 1000)
                    assert response.status_code == 200
                points = len(response.json["activity"]["t"])
                p50, p95 = statistics.median(times_ms), _percentile(times_ms, 95)
                print(f"{days:>3} d: p50 {p50:.1f} ms, p95 {p95:.1f} ms, {points} points",
                      file=sys.stderr)  # fmt: skip
                limit = TARGET_P95_MS if days == 30 else None
                rows.append(result("timeline", f"{days} d p50", p50, "ms", higher_is_better=False,
                                   note=f"{points} points"))  # fmt: skip
                rows.append(
                    result(
                        "timeline",
                        f"{days} d p95",
                        p95,
                        "ms",
                        limit=limit,
                        limit_name="target" if limit else "",
                        target="<= 250 ms" if days == 30 else "",
                        higher_is_better=False,
                    )
                )
            # reference: the raw 30 days straight from InfluxDB
            start_ms = int((END - pd.Timedelta(days=30)).value // 10**6)
            end_ms = int(END.value // 10**6)
            raw_times = []
            for _ in range(max(5, runs // 3)):
                t0 = time.perf_counter()
                frame = client.query_frame(*queries.activity_raw(FARM, ANIMAL, start_ms, end_ms))
                raw_times.append((time.perf_counter() - t0) * 1000)
            p95_30 = next(r["value"] for r in rows if r["figure"] == "30 d p95")
            rows.append(
                result(
                    "timeline",
                    "30 d p95 vs raw fetch of the same range",
                    p95_30,
                    "ms",
                    limit=statistics.median(raw_times),
                    limit_name=f"raw /query of {len(frame):,} samples, median",
                    target="ratio > 1 (downsampling pays)",
                    higher_is_better=False,
                )
            )
            client.drop_database()
            client.close()
        finally:
            stack.stop()
    return rows


def main(argv: list[str] | None = None) -> int:
    """Print the table; exit 1 when the 30-day p95 exceeds 250 ms."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=30, help="timed calls per range")
    parser.add_argument("--quick", action="store_true", help="31 days of data, 1 and 30 d")
    args = parser.parse_args(argv)
    rows = run(quick=args.quick, runs=args.runs)
    print(machine_info())
    print(format_table(rows))
    p95 = next(r["value"] for r in rows if r["figure"] == "30 d p95")
    return 0 if p95 <= TARGET_P95_MS else 1


if __name__ == "__main__":
    sys.exit(main())
