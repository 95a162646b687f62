"""Benchmark: the timeline API for one animal over 1 day, 30 days, 365 days and 3 years.

Starts a private InfluxDB (``namazu.server.launch.stack``), writes one animal's 1-minute
activity and its baseline rows for three years (1,576,800 samples each), and times
``GET /api/v1/timeline`` through the Flask app (bearer token, ``max_points=2000``, JSON
encoding included), warm: one discarded call, then ``--runs`` calls per range.

1. Before rollups: the 365-day range through the raw min/max path (the reference).
2. ``RollupJob`` creates and backfills the rollups (timed), then the raw points older
   than 90 days are deleted, as the shipped retention policy would.
3. After: 1 d, 30 d, 365 d and 3 years; the long ones read the rollups, and the 3-year
   range shows data far beyond the raw retention.

Targets: 30 d p95 <= 250 ms; 365 d p95 <= 150 ms.

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
from namazu.server.store.rollups import RollupJob
from namazu.server.store.state import init_db, session_scope

TARGET_P95_MS = 250.0
TARGET_365_P95_MS = 150.0
RAW_RETENTION_DAYS = 90
#: The rollups' policy as deploy/influxdb/retention.iql creates it (few, long shards).
ROLLUP_POLICY_DDL = (
    'CREATE RETENTION POLICY "rollups" ON "bench_timeline" DURATION INF REPLICATION 1 '
    "SHARD DURATION 52w"
)
FARM, ANIMAL = "bench-farm", "cow-001"
END = pd.Timestamp("2025-01-01T00:00:00Z")


def write_animal_days(client: InfluxClient, days: int, seed: int = 7) -> int:
    """One animal's 1-min activity and baseline rows over the ``days`` days before
    ``END``; returns the number of samples. ``seed`` seeds the activity noise."""
    index = pd.date_range(END - pd.Timedelta(days=days), END, freq="1min", inclusive="left")
    minutes = np.arange(index.size) % 1440
    rng = np.random.default_rng(seed)
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


def _time_range(http: Any, headers: dict, days: float, runs: int) -> tuple[list[float], Any]:
    start = END - pd.Timedelta(days=days)
    args = {"farm": FARM, "series": ANIMAL, "start": start.isoformat(),
            "end": END.isoformat(), "max_points": 2000}  # fmt: skip
    warm = http.get("/api/v1/timeline", query_string=args, headers=headers)
    if warm.status_code != 200:
        raise RuntimeError(f"timeline answered {warm.status_code}: {warm.text}")
    times_ms = []
    for _ in range(runs):
        t0 = time.perf_counter()
        response = http.get("/api/v1/timeline", query_string=args, headers=headers)
        times_ms.append((time.perf_counter() - t0) * 1000)
        assert response.status_code == 200
    return times_ms, response.json


def run(quick: bool = False, runs: int = 30) -> list[dict[str, Any]]:
    """Measure the timeline API; returns result rows (see bench.common)."""
    from namazu.server.web import create_app
    from namazu.server.web.auth import create_user, issue_token

    days_written = 200 if quick else 3 * 365 + 1
    ranges = (1, 30, 180) if quick else (1, 30, 365, 3 * 365)
    long_days = 180 if quick else 365
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="namazu-bench-timeline-") as tmp:
        stack = Stack(Path(tmp) / "stack").start()
        try:
            client = InfluxClient(stack.influx_url, "bench_timeline", timeout_s=600)
            client.create_database()
            client.query(ROLLUP_POLICY_DDL)
            started = time.perf_counter()
            samples = write_animal_days(client, days_written)
            print(f"wrote {samples:,} samples x 2 measurements in "
                  f"{time.perf_counter() - started:.1f} s", file=sys.stderr)  # fmt: skip
            state_url = f"sqlite:///{tmp}/state.sqlite"
            engine = init_db(state_url)
            with session_scope(engine) as db:
                token = issue_token(db, create_user(db, "bench", "viewer", "bench-password"))
            app = create_app(
                {
                    "influx": {
                        "url": stack.influx_url,
                        "database": "bench_timeline",
                        "rollup_retention_policy": "rollups",
                    },
                    "state": {"url": state_url},
                    "web": {"secret_key": "b" * 48},
                    "farms": [{"id": FARM, "latitude": 43.0, "longitude": 13.0}],
                }
            )
            http = app.test_client()
            headers = {"Authorization": f"Bearer {token}"}

            # 1. before: the long range through the raw min/max path
            before_ms, before = _time_range(http, headers, long_days, max(5, runs // 3))
            assert before["source"] == "raw", before["source"]
            before_p50, before_p95 = statistics.median(before_ms), _percentile(before_ms, 95)
            print(f"{long_days} d before rollups: p50 {before_p50:.1f} ms, "
                  f"p95 {before_p95:.1f} ms", file=sys.stderr)  # fmt: skip

            # 2. create and backfill the rollups, then expire the old raw points
            end_ms = int(END.value // 10**6)
            t0 = time.perf_counter()
            RollupJob(client, "rollups").run(end_ms)
            backfill_s = time.perf_counter() - t0
            cut = END - pd.Timedelta(days=RAW_RETENTION_DAYS)
            for measurement in ("activity", "baseline"):
                client.query(f"DELETE FROM \"{measurement}\" WHERE time < '{cut.isoformat()}'")
            rows.append(
                result(
                    "timeline",
                    f"rollup backfill of {days_written} days",
                    backfill_s,
                    "s",
                    higher_is_better=False,
                    note=f"{samples:,} samples x 2 measurements, 2 levels",
                )  # fmt: skip
            )

            # 3. after
            for days in ranges:
                times_ms, body = _time_range(http, headers, days, runs)
                points = len(body["activity"]["t"])
                first = next((t for t, v in zip(body["activity"]["t"], body["activity"]["v"],
                                                strict=True) if v is not None), None)  # fmt: skip
                shown_days = 0 if first is None else (end_ms - first) / 86_400_000
                p50, p95 = statistics.median(times_ms), _percentile(times_ms, 95)
                label = f"{days // 365} years" if days > 400 else f"{days} d"
                print(f"{label:>8}: p50 {p50:.1f} ms, p95 {p95:.1f} ms, {points} points, "
                      f"{body['source']}, {shown_days:.0f} d shown", file=sys.stderr)  # fmt: skip
                note = f"{points} points, {body['source']}"
                if days > RAW_RETENTION_DAYS:
                    note += f", {shown_days:.0f} d shown (raw kept {RAW_RETENTION_DAYS} d)"
                rows.append(result("timeline", f"{label} p50", p50, "ms",
                                   higher_is_better=False, note=note))  # fmt: skip
                limit = {30: TARGET_P95_MS, 365: TARGET_365_P95_MS}.get(days)
                rows.append(
                    result(
                        "timeline",
                        f"{label} p95",
                        p95,
                        "ms",
                        limit=limit,
                        limit_name="target" if limit else "",
                        target=f"<= {limit:g} ms" if limit else "",
                        higher_is_better=False,
                    )
                )
            after_p50 = next(r["value"] for r in rows if r["figure"] == f"{long_days} d p50")
            rows.append(
                result(
                    "timeline",
                    f"{long_days} d p50 from rollups vs the raw min/max path",
                    after_p50,
                    "ms",
                    limit=before_p50,
                    limit_name="raw min/max path, p50, same run",
                    target="ratio > 1 (rollups pay)",
                    higher_is_better=False,
                )
            )
            long_label = f"{long_days} d p95"
            after_p95 = next(r["value"] for r in rows if r["figure"] == long_label)
            rows.append(
                result(
                    "timeline",
                    f"{long_days} d p95 from rollups vs the raw min/max path",
                    after_p95,
                    "ms",
                    limit=before_p95,
                    limit_name="raw min/max path, p95, same run",
                    target="ratio > 1 (rollups pay)",
                    higher_is_better=False,
                )
            )
            # reference: the raw 30 days straight from InfluxDB
            start_ms = int((END - pd.Timedelta(days=30)).value // 10**6)
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
    """Print the table; exit 1 when the 30-day p95 exceeds 250 ms or the 365-day p95
    150 ms."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=30, help="timed calls per range")
    parser.add_argument("--quick", action="store_true", help="200 days of data, up to 180 d")
    args = parser.parse_args(argv)
    rows = run(quick=args.quick, runs=args.runs)
    print(machine_info())
    print(format_table(rows))
    p95 = {r["figure"]: r["value"] for r in rows}
    ok = p95["30 d p95"] <= TARGET_P95_MS
    if "365 d p95" in p95:
        ok = ok and p95["365 d p95"] <= TARGET_365_P95_MS
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
