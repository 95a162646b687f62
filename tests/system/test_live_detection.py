"""The live service end to end on real InfluxDB, SQLite state and a real SMTP server.

Activity is written to InfluxDB with ``InfluxClient`` from the simulator's samples (the
same points the ingest service writes: measurement ``activity``, tags farm, gateway,
animal, species), because the ingest service is exercised by its own tests and the subject
here is what the scheduler does with stored data. Ticks run on a simulated clock
(``run_once`` / ``--replay``), hourly, so a simulated week takes seconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from firmware_bridge.simulator import Herd, UnrestEpisode
from server.alarmlog import verify
from server.config import NamazuConfig
from server.influx import InfluxClient, float_series_lines
from server.scheduler import build_services, mail_cycle, replay
from server.state import Alarm, Checkpoint, OutboxMail, Subscription, session_scope
from tests.conftest import PROJECT_ROOT
from tests.server.smtp_fixtures import SmtpServer

pytestmark = pytest.mark.services

T0 = datetime(2024, 5, 1, tzinfo=UTC)
EPISODE_START = T0 + timedelta(days=7, hours=2)
RECIPIENT = "vet@example.org"


def _write_herd(client: InfluxClient, herd: Herd, days: int) -> None:
    frame = herd.activity(T0, T0 + timedelta(days=days))
    lines: list[str] = []
    for (animal, species), group in frame.groupby(["animal", "species"]):
        tags = {"farm": herd.farm, "gateway": herd.gateway, "animal": animal, "species": species}
        columns = {"odba": group["odba"].to_numpy(), "vedba": group["vedba"].to_numpy()}
        lines += float_series_lines("activity", tags, columns, group["t_ms"].to_numpy())
    for i in range(0, len(lines), 50_000):
        client.write_lines(lines[i : i + 50_000])


@pytest.fixture(scope="module")
def activity_db(stack):
    """One database: farm-unrest (8 days, one episode on day 7), farm-calm (14 days)."""
    client = InfluxClient(stack.influx_url, "live_detection")
    client.create_database()
    episode = UnrestEpisode(EPISODE_START, duration_min=120, intensity=4.0)
    counts = {"cow": 10, "sheep": 6}
    _write_herd(client, Herd("farm-unrest", "gw-1", counts, seed=7, episodes=(episode,)), 8)
    _write_herd(client, Herd("farm-calm", "gw-2", counts, seed=11), 14)
    yield client
    client.drop_database()
    client.close()


def _config(tmp_path: Path, influx: InfluxClient, farm: str, smtp_port: int = 25) -> NamazuConfig:
    return NamazuConfig.model_validate(
        {
            "influx": {"url": influx.url, "database": influx.database},
            "farms": [{"id": farm, "name": f"Farm {farm}", "latitude": 43.0, "longitude": 13.0}],
            "state": {"url": f"sqlite:///{tmp_path}/state.sqlite"},
            "scheduler": {"alarm_log_path": str(tmp_path / "alarm-log.jsonl")},
            "mail": {
                "enabled": True,
                "host": "127.0.0.1",
                "port": smtp_port,
                "security": "none",
                "sender": "namazu@example.org",
                "cooldown_min": 60,
            },
        }
    )


def _subscribe(services, severity: str = "critical") -> None:
    with session_scope(services.engine) as session:
        session.add(Subscription(recipient=RECIPIENT, farm="*", species="*", min_severity=severity))


def _alarms(services) -> list[tuple]:
    with session_scope(services.engine) as session:
        return sorted(
            (a.kind, a.series, a.start, a.end, a.state, a.close_reason, round(a.peak_ratio, 6))
            for a in session.scalars(select(Alarm))
        )


def test_one_episode_gives_one_herd_alarm_and_one_mail(tmp_path, activity_db):
    smtp = SmtpServer("none").start()
    try:
        services = build_services(_config(tmp_path, activity_db, "farm-unrest", smtp.port))
        _subscribe(services)
        replay(services, T0 + timedelta(days=7), T0 + timedelta(days=8), timedelta(hours=1))
        alarms = _alarms(services)
        herd = [a for a in alarms if a[0] == "herd"]
        assert len(herd) == 1
        kind, _, start, end, state, reason, peak = herd[0]
        assert EPISODE_START <= start <= EPISODE_START + timedelta(minutes=15)
        assert end < EPISODE_START + timedelta(hours=2) and state == "closed"
        assert reason == "calm" and peak > 2.4
        assert len(smtp.inbox.messages) == 1
        message = smtp.inbox.messages[0].message
        assert smtp.inbox.messages[0].rcpt_tos == [RECIPIENT]
        assert "Research signal, not an earthquake prediction." in (
            message.get_body(("plain",)).get_content()
        )
        log_result = verify(tmp_path / "alarm-log.jsonl")
        assert log_result.ok and log_result.records == len(alarms)
        with session_scope(services.engine) as session:
            herd_row = session.scalars(select(Alarm).where(Alarm.kind == "herd")).one()
            assert herd_row.log_hash in message.get_body(("plain",)).get_content()
            assert herd_row.animals_reporting == herd_row.animals_total == 16
        points = activity_db.query(
            'SELECT "state", "peak_ratio" FROM "alarm" WHERE "farm" = \'farm-unrest\' '
            "AND \"kind\" = 'herd'"
        )
        assert points[0]["values"][0][1] == "closed"
    finally:
        smtp.stop()


def test_calm_farm_gives_no_alarm_over_a_week(tmp_path, activity_db):
    services = build_services(_config(tmp_path, activity_db, "farm-calm"))
    _subscribe(services, severity="info")
    replay(services, T0 + timedelta(days=7), T0 + timedelta(days=14), timedelta(hours=6))
    with session_scope(services.engine) as session:
        ckpt = session.get(Checkpoint, "detection:farm-calm")
        assert ckpt.time >= T0 + timedelta(days=14) - timedelta(minutes=3)
        assert session.scalar(select(OutboxMail.id)) is None
    collective = [a for a in _alarms(services) if a[0] != "animal"]
    assert collective == []
    baseline_points = activity_db.count("baseline", "baseline", "\"farm\" = 'farm-calm'")
    assert baseline_points > 7 * 24 * 60  # baselines were computed and written back


def test_smtp_outage_delays_mail_and_never_loses_or_duplicates_it(tmp_path, activity_db):
    smtp = SmtpServer("none")  # port reserved, server not running: an outage
    services = build_services(_config(tmp_path, activity_db, "farm-unrest", smtp.port))
    _subscribe(services)
    end = T0 + timedelta(days=7, hours=6)
    replay(services, T0 + timedelta(days=7), end, timedelta(hours=1))
    with session_scope(services.engine) as session:
        [mail] = session.scalars(select(OutboxMail)).all()
        assert mail.sent_at is None and mail.attempts >= 1 and "unavailable" in mail.last_error
        retry_at = mail.next_attempt
    smtp.start()
    try:
        assert mail_cycle(services, retry_at - timedelta(seconds=1)) == (0, 0)  # still backing off
        assert mail_cycle(services, retry_at) == (1, 0)
        assert mail_cycle(services, retry_at + timedelta(hours=2)) == (0, 0)
        assert len(smtp.inbox.messages) == 1
    finally:
        smtp.stop()


def _write_toml(path: Path, config: NamazuConfig) -> None:
    data = config.model_dump(mode="json")
    lines = []
    for section in ("influx", "state", "scheduler", "mail"):
        lines.append(f"[{section}]")
        for key, value in data[section].items():
            if value is not None:
                lines.append(f"{key} = {json.dumps(value)}")
    for farm in data["farms"]:
        lines.append("[[farms]]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in farm.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_sigkill_mid_run_then_restart_gives_the_same_alarms(tmp_path, activity_db):
    start, end, step = T0 + timedelta(days=7), T0 + timedelta(days=7, hours=8), "10min"
    reference_dir, killed_dir = tmp_path / "reference", tmp_path / "killed"
    reference_dir.mkdir()
    killed_dir.mkdir()
    reference = build_services(_config(reference_dir, activity_db, "farm-unrest"))
    replay(reference, start, end, timedelta(minutes=10))

    config = _config(killed_dir, activity_db, "farm-unrest")
    config_path = killed_dir / "config.toml"
    _write_toml(config_path, config)
    command = [
        sys.executable, "-m", "server.cli", "scheduler", "--config", str(config_path),
        "--replay", start.isoformat(), end.isoformat(), "--step", step, "--log-level", "ERROR",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    killed = build_services(config)
    proc = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env)  # noqa: S603
    try:
        deadline = time.monotonic() + 60
        target = EPISODE_START + timedelta(minutes=50)  # herd alarm open, not yet closed
        while time.monotonic() < deadline and proc.poll() is None:
            with session_scope(killed.engine) as session:
                ckpt = session.get(Checkpoint, "detection:farm-unrest")
                if ckpt is not None and ckpt.time >= target:
                    break
            time.sleep(0.02)
        assert proc.poll() is None, "the replay finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert subprocess.run(command, cwd=PROJECT_ROOT, env=env, timeout=120).returncode == 0
    assert _alarms(killed) == _alarms(reference)
    assert any(a[0] == "herd" for a in _alarms(reference))
    killed_log = verify(killed_dir / "alarm-log.jsonl")
    assert killed_log.ok and killed_log.records == len(_alarms(reference))
