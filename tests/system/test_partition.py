"""Detection partitioned by farm: two scheduler instances, each owning one farm with its
own state store and alarm log, open exactly the alarms one instance owning both does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from namazu.firmware_bridge.simulator import Herd, UnrestEpisode
from namazu.server.detection.alarmlog import AlarmLog
from namazu.server.detection.tick import DetectionJob
from namazu.server.store.influx import multi_series_lines
from namazu.server.store.state import Alarm, init_db, session_scope

NOW = datetime(2024, 5, 8, 12, 0, tzinfo=UTC)


def _write(influx, herd: Herd, start: datetime, end: datetime) -> int:
    frame = herd.activity(start, end).sort_values(["animal", "t_ms"], kind="stable")
    groups = list(frame.groupby(["animal", "species"], sort=False))
    tags = [
        {"farm": herd.farm, "gateway": herd.gateway, "animal": a, "species": s}
        for (a, s), _ in groups
    ]
    lines = multi_series_lines(
        "activity",
        tags,
        {
            "odba": [g["odba"].to_numpy() for _, g in groups],
            "vedba": [g["vedba"].to_numpy() for _, g in groups],
        },
        [g["t_ms"].to_numpy() for _, g in groups],
    )
    for i in range(0, len(lines), 100_000):
        influx.write_lines(lines[i : i + 100_000])
    return len(lines)


def _alarms(engine) -> set[tuple]:
    with session_scope(engine) as session:
        rows = session.execute(select(Alarm)).scalars().all()
        return {(a.farm, a.series, a.kind, a.start, a.end, round(a.peak_ratio, 9)) for a in rows}


def _job(influx, tmp_path, name: str, farms: list[str]) -> tuple[DetectionJob, object]:
    engine = init_db(f"sqlite:///{tmp_path}/state-{name}.sqlite")
    job = DetectionJob(
        influx,
        engine,
        AlarmLog(tmp_path / f"log-{name}.jsonl"),
        farms,
        settle_s=0,
        initial_lookback_s=6 * 3600,
    )
    return job, engine


@pytest.mark.services
def test_detection_split_by_farm_equals_one_instance_for_all_farms(influx, tmp_path):
    herds = [
        Herd(
            "farm-a",
            "gw-a",
            {"cow": 12},
            seed=1,
            episodes=(UnrestEpisode(NOW - timedelta(hours=3), 90, 4.0),),
        ),
        Herd(
            "farm-b",
            "gw-b",
            {"sheep": 8, "dog": 4},
            seed=2,
            episodes=(UnrestEpisode(NOW - timedelta(hours=5), 80, 4.0, ("sheep-002",)),),
        ),
    ]
    for herd in herds:
        assert _write(influx, herd, NOW - timedelta(days=8), NOW) > 100_000

    together, engine_all = _job(influx, tmp_path, "all", ["farm-a", "farm-b"])
    together.tick(NOW)
    split = []
    for farm in ("farm-a", "farm-b"):
        job, engine = _job(influx, tmp_path, farm, [farm])
        job.tick(NOW)
        split.append(engine)

    expected = _alarms(engine_all)
    assert {a[0] for a in expected} == {"farm-a", "farm-b"}  # both episodes found
    part_a, part_b = (_alarms(engine) for engine in split)
    assert {a[0] for a in part_a} == {"farm-a"} and {a[0] for a in part_b} == {"farm-b"}
    assert part_a | part_b == expected
