"""Rollups on a real InfluxDB: the job creates and backfills them, long timelines read
them with every peak kept, and a range whose raw data is gone (beyond the raw retention)
still shows the finest data that exists."""

from __future__ import annotations

import pandas as pd
import pytest

from namazu.server.store import queries
from namazu.server.store.rollups import ROLLUP_STEPS_MS, RollupJob
from tests.server.web.seed import DAYS, FARM, START

END = START + pd.Timedelta(days=DAYS)
END_MS = int(END.value // 10**6)


@pytest.fixture(scope="module")
def rolled(panel):
    influx = panel.app.extensions["namazu"].influx
    first = RollupJob(influx).run(END_MS)
    return panel, influx, first


def _points(influx, measurement: str, where: str = "") -> int:
    field = "hi"
    return influx.count(measurement, field, where)


def test_the_job_backfills_every_level_then_only_extends(rolled):
    panel, influx, first = rolled
    for source in queries.ROLLUP_SOURCES:
        for step in ROLLUP_STEPS_MS:
            lo, hi = first.ranges[(source, step)]
            # baseline rows begin once three days of history exist
            first_row = START + pd.Timedelta(days=0 if source == "activity" else 3)
            assert lo <= int(first_row.value // 10**6) and hi >= END_MS, (source, step)
    # cow-1 over ten days at 15 min: 960 buckets less the 3-hour gap of day 5 (12)
    r15 = queries.rollup_measurement("activity", ROLLUP_STEPS_MS[0])
    assert _points(influx, r15, "\"animal\" = 'cow-1'") == DAYS * 96 - 12
    r3h = queries.rollup_measurement("activity", ROLLUP_STEPS_MS[1])
    # the 3-h gap straddles two 3-h buckets, neither of them empty
    assert _points(influx, r3h, "\"animal\" = 'cow-1'") == DAYS * 8
    again = RollupJob(influx).run(END_MS)
    assert again.statements == 2 * len(ROLLUP_STEPS_MS)  # one lookback window per level
    since = int((START + pd.Timedelta(days=2, minutes=7)).value // 10**6)
    rebuilt = RollupJob(influx).run(END_MS, since_ms=since)
    assert rebuilt.ranges[("activity", ROLLUP_STEPS_MS[0])][0] == since - 7 * 60_000
    assert _points(influx, r15, "\"animal\" = 'cow-1'") == DAYS * 96 - 12  # overwritten


def test_a_long_range_reads_the_rollup_and_keeps_the_peak(rolled, client_for):
    panel, _, _ = rolled
    client = client_for("viewer")
    args = {"farm": FARM, "series": "cow-1", "start": START.isoformat(), "end": END.isoformat()}
    body = client.get("/api/v1/timeline", query_string={**args, "max_points": 200}).json
    assert body["source"] == "rollup 15 min" and body["bucket_s"] % 900 == 0
    peak = max(v for v in body["activity"]["v"] if v is not None)
    assert peak == pytest.approx(float(panel.farm.cow1.max()))
    herd = client.get(
        "/api/v1/timeline", query_string={**args, "series": "herd", "max_points": 20}
    ).json
    assert herd["source"] == "rollup 180 min" and herd["baseline"]["t"]


def test_ranges_beyond_the_raw_retention_still_show(rolled, client_for):
    """The raw points of the first eight days are deleted, as the retention policy would;
    the rollups (in a policy that outlives the raw one) keep them visible."""
    panel, influx, _ = rolled
    cut = START + pd.Timedelta(days=8)
    for measurement in ("activity", "baseline"):
        influx.query(f"DELETE FROM \"{measurement}\" WHERE time < '{cut.isoformat()}'")
    client = client_for("viewer")
    day3 = START + pd.Timedelta(days=3, hours=6)
    zoom = {"farm": FARM, "series": "cow-1", "start": day3.isoformat(),
            "end": (day3 + pd.Timedelta(hours=2)).isoformat()}  # fmt: skip
    body = client.get("/api/v1/timeline", query_string=zoom).json
    # two hours of 1-min data were raw; now the finest data that exists: 15-min buckets
    assert body["source"] == "rollup 15 min"
    assert len([v for v in body["activity"]["v"] if v is not None]) == 2 * 8  # lo+hi each
    assert len(body["baseline"]["t"]) == 8
    recent = {**zoom, "start": (cut + pd.Timedelta(hours=6)).isoformat(),
              "end": (cut + pd.Timedelta(hours=8)).isoformat()}  # fmt: skip
    assert client.get("/api/v1/timeline", query_string=recent).json["source"] == "raw"


def test_a_missing_rollup_policy_falls_back_to_raw_data(panel, client_for, monkeypatch):
    handles = panel.app.extensions["namazu"]
    influx = handles.config.influx.model_copy(update={"rollup_retention_policy": "no_such"})
    monkeypatch.setattr(handles, "config", handles.config.model_copy(update={"influx": influx}))
    recent = START + pd.Timedelta(days=9)
    args = {"farm": FARM, "series": "cow-1", "start": recent.isoformat(),
            "end": END.isoformat(), "max_points": 50}  # fmt: skip
    response = client_for("viewer").get("/api/v1/timeline", query_string=args)
    assert response.status_code == 200 and response.json["source"] == "raw"
    assert response.json["activity"]["t"]
