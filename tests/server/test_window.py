"""The past days in memory (SliceWindow) on real InfluxDB: a tick sees exactly the rows
it would read from InfluxDB, gives the same alarms, and asks InfluxDB for the past days
once per chunk instead of at every tick."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from bench.common import activity_frame_lines
from namazu.firmware_bridge.simulator import Herd, UnrestEpisode
from namazu.server.detection.alarmlog import AlarmLog
from namazu.server.detection.tick import DetectionJob
from namazu.server.detection.window import SliceWindow
from namazu.server.store.influx import float_series_lines
from namazu.server.store.state import Alarm, init_db, session_scope

NOW = datetime(2024, 5, 8, 12, 0, tzinfo=UTC)
EPISODE = UnrestEpisode(NOW + timedelta(minutes=20), duration_min=60, intensity=6.0)


def _write(influx) -> None:
    herd = Herd("farm-w", "gw-1", {"cow": 3, "sheep": 2}, seed=3, episodes=(EPISODE,))
    lines: list[str] = []
    for k in range(8):  # the tick hours on each of the previous 7 days and today
        day = NOW - timedelta(days=k)
        frame = herd.activity(day - timedelta(minutes=30), day + timedelta(hours=3))
        lines += activity_frame_lines(frame, "farm-w")
    influx.write_lines(lines)


def _job(influx, tmp_path, name: str, state_url: str) -> DetectionJob:
    return DetectionJob(influx, init_db(state_url),
                        AlarmLog(tmp_path / f"{name}.jsonl"), ["farm-w"], resolution_s=60,
                        settle_s=0, initial_lookback_s=600)  # fmt: skip


def _sorted(frame):
    return frame.sort_values(["animal", "t_ms"]).reset_index(drop=True)


def test_the_window_reads_what_influxdb_holds_and_gives_the_same_alarms(
    influx, tmp_path, state_url
):
    """The plain job keeps its alarms in a SQLite file; the windowed one in ``state_url``
    (on the PostgreSQL run, the two backends must then agree too)."""
    _write(influx)
    plain = _job(influx, tmp_path, "plain", f"sqlite:///{tmp_path}/plain.sqlite")
    windowed = _job(influx, tmp_path, "window", state_url)
    windowed.window = window = SliceWindow(ahead_s=3600)
    start = int(NOW.timestamp() * 1000)
    for last, end in [(0, 1), (1, 8), (8, 9), (9, 70), (70, 75)]:  # minutes after NOW
        lo, hi = start + last * 60_000, start + end * 60_000
        expected = _sorted(plain.read_slices("farm-w", lo, hi))
        got = _sorted(windowed.read_slices("farm-w", lo, hi))
        assert len(expected) == 8 * 5 * (end - last)  # 5 animals, today and 7 days back
        assert got.to_dict("list") == expected.to_dict("list")
    assert window.chunk_reads == 3  # minutes 1-60 in one chunk; 10-70 and 71-75 go past it
    ticks = [NOW + timedelta(minutes=m) for m in range(5, 150, 5)]
    reads_before = window.chunk_reads
    for now in ticks:
        plain.tick(now)
        windowed.tick(now)

    def alarms(job):
        with session_scope(job.engine) as db:
            return sorted((a.kind, a.series, a.start, a.end, a.state)
                          for a in db.scalars(select(Alarm)))  # fmt: skip

    assert any(kind == "herd" for kind, *_ in alarms(plain))
    assert alarms(windowed) == alarms(plain)
    # 29 ticks over 145 min: the past days read once per hour of ticks (3), not 29 times
    assert window.chunk_reads - reads_before == 3


def test_a_farm_handed_over_is_dropped_by_its_old_owner_and_read_afresh_by_the_new(
    influx, tmp_path, state_url
):
    """Two replicas sharing leases in ``state_url``: the replica that gives a farm away drops its
    window, the one that takes it reads the past days afresh, and a farm that comes back
    after samples were written late into its past days is read again, not served from
    the window it had before."""
    from namazu.server.core.config import NamazuConfig
    from namazu.server.detection.scheduler import build_services, detect

    farms = ["farm-w", "farm-v"]
    herd = Herd("farm-v", "gw-1", {"cow": 3}, seed=4)
    _write(influx)
    lines: list[str] = []
    for k in range(8):
        day = NOW - timedelta(days=k)
        frame = herd.activity(day - timedelta(minutes=30), day + timedelta(hours=3))
        for animal, group in frame.groupby("animal"):
            tags = {"farm": "farm-v", "gateway": "gw-1", "animal": animal, "species": "cow"}
            lines += float_series_lines(
                "activity", tags, {"odba": group["odba"].to_numpy()}, group["t_ms"].to_numpy()
            )
    influx.write_lines(lines)

    def replica(name: str):
        config = NamazuConfig.model_validate({
            "influx": {"url": influx.url, "database": influx.database},
            "farms": [{"id": f, "latitude": 43.0, "longitude": 13.0} for f in farms],
            "state": {"url": state_url},
            "scheduler": {"alarm_log_path": str(tmp_path / "log.jsonl"), "tick_s": 60,
                          "resolution_s": 60, "replica_id": name},
        })  # fmt: skip
        return build_services(config, settle_s=0, initial_lookback_s=600)

    a, b = replica("a"), replica("b")
    minute = timedelta(minutes=1)
    detect(a, NOW)  # alone: both farms, both in its window
    assert sorted(a.detection.window.chunks) == sorted(farms)
    detect(b, NOW + minute)  # b is live now, but a still holds both
    detect(a, NOW + minute)  # a keeps its share, ticks the other once more, gives it away
    [given] = a.leases.excess
    assert set(a.detection.window.chunks) == set(farms) - {given}  # dropped
    reads = b.detection.window.chunk_reads
    detect(b, NOW + 2 * minute)
    assert b.detection.farms == [given] and b.detection.window.chunk_reads == reads + 1
    detect(a, NOW + 2 * minute)
    # a sample arrives late in the given farm's past day, in the minutes a reads next
    late = int((NOW - timedelta(days=1) + 2 * minute).timestamp() * 1000) + 30_000
    tags = {"farm": given, "gateway": "gw-1", "animal": "gw-1-cow-late", "species": "cow"}
    influx.write_lines(float_series_lines("activity", tags, {"odba": [9.0]}, [late]))
    now = NOW + 2 * minute  # b dies; a takes the farm back once b's leases ran out
    for _ in range(4):
        now += minute
        detect(a, now)
    assert given in a.detection.farms
    chunk = a.detection.window.chunks[given]
    assert chunk.lo_ms == int((NOW + 2 * minute).timestamp() * 1000)  # where b stopped
    rows = chunk.frame[chunk.frame["animal"] == "gw-1-cow-late"]
    assert rows["odba"].tolist() == [9.0]  # read afresh, not from the window it had


def test_the_farms_first_chunks_fall_due_at_different_ticks_after_a_catch_up(influx, tmp_path):
    """A first tick that catches up an hour still leaves each farm's next chunk read at a
    tick of its own: the first chunk reaches past the tick by a phase of the farm's."""
    farms = [f"farm-{i:02d}" for i in range(12)]
    job = DetectionJob(influx, init_db(f"sqlite:///{tmp_path}/s.sqlite"),
                       AlarmLog(tmp_path / "log.jsonl"), farms, resolution_s=60)  # fmt: skip
    job.window = window = SliceWindow(ahead_s=3600)
    start = int(NOW.timestamp() * 1000)
    for farm in farms:  # a first tick over the hour before NOW
        window.read(job, farm, start - 61 * 60_000, start - 60_000)
    ends = [window.chunks[farm].hi_ms for farm in farms]
    assert min(ends) >= start  # each covers the first tick at least
    due = {(end - start) // 60_000 for end in ends}  # minutes until its next read
    assert len(due) >= 6, due  # spread over the hour, not all at the next tick
