"""The live service end to end on real Mosquitto, InfluxDB, SQLite state and SMTP.

Activity takes the production path: ``namazu.firmware_bridge.simulator.Herd`` ->
``namazu.firmware_bridge.publisher.GatewayPublisher`` (disk spool, QoS 1) -> Mosquitto ->
``namazu.server.ingest.service.IngestService`` -> InfluxDB.
The scheduler then runs on a simulated clock
(``run_once`` / ``--replay``), hourly, so a simulated week takes seconds: detection ->
alarms, log and notifications in the state store -> outbox -> a real SMTP server
(aiosmtpd). The simulated days lie in May 2024, so ingest is configured to accept
samples that old.

Only the gap tests at the end write activity straight to InfluxDB: they are unit tests
of one tick over a hand-made hole in the data.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from bench.common import activity_frame_lines
from namazu.firmware_bridge.payload import batches_from_frame
from namazu.firmware_bridge.publisher import GatewayPublisher
from namazu.firmware_bridge.simulator import Herd, UnrestEpisode
from namazu.firmware_bridge.spool import Spool
from namazu.server.alerts.subscriptions import outbox_mails
from namazu.server.core.config import NamazuConfig
from namazu.server.detection.alarmlog import AlarmLog, verify
from namazu.server.detection.health import HealthJob
from namazu.server.detection.scheduler import build_services, mail_cycle, replay
from namazu.server.detection.tick import DetectionJob
from namazu.server.ingest.service import IngestService
from namazu.server.store.influx import InfluxClient
from namazu.server.store.state import (
    Alarm,
    Checkpoint,
    DataHealth,
    OutboxMail,
    Subscription,
    init_db,
    session_scope,
)
from tests.conftest import PROJECT_ROOT
from tests.server.ingest_support import make_config, wait_for
from tests.server.smtp_fixtures import Inbox, SmtpServer

pytestmark = pytest.mark.services

T0 = datetime(2024, 5, 1, tzinfo=UTC)  # fixed dates: the same simulated herd every run
EPISODE_START = T0 + timedelta(days=7, hours=2)
RECIPIENT = "vet@example.org"
REFUSED = "nobody@example.org"
COUNTS = {"cow": 10, "sheep": 6}


def _publish_herds(stack, client: InfluxClient, spool_dir: Path, herds: list[tuple]) -> int:
    """Send each (herd, days) through its gateway, Mosquitto and ingest; wait until every
    sample is stored. Returns the number of samples."""
    config = make_config(
        stack.mqtt_port, stack.influx_url, client.database, batch_max_age_s=0.2,
        max_age_days=36_500,  # the simulated 2024 days are older than the default limit
    )  # fmt: skip
    service = IngestService(config, client).start()
    gateways: list[GatewayPublisher] = []
    total = 0
    started = time.perf_counter()
    try:
        assert service.wait_ready(10), "ingest did not connect"
        for herd, days in herds:
            frame = herd.activity(T0, T0 + timedelta(days=days))
            total += len(frame)
            gateway = GatewayPublisher(
                herd.farm,
                herd.gateway,
                Spool(spool_dir / f"{herd.farm}-{herd.gateway}.sqlite"),
                port=stack.mqtt_port,
                client_id=f"live-{uuid.uuid4().hex[:8]}",
            ).start()
            gateways.append(gateway)
            gateway.publish_batches(
                batches_from_frame(frame, herd.farm, herd.gateway, max_samples=5000)
            )
        for gateway in gateways:
            assert gateway.wait_drained(120), "a gateway spool did not drain"
        wait_for(lambda: service.stats["written_points"] >= total, 120, "every sample stored")
        assert service.stats["rejected"] == 0, service.stats["rejected_by_reason"]
    finally:
        for gateway in gateways:
            gateway.stop()
        service.stop(end_session=True)
    elapsed = time.perf_counter() - started
    print(f"\nlive detection data: {total} samples via MQTT + ingest in {elapsed:.1f} s")
    return total


@pytest.fixture(scope="module")
def activity_db(stack, tmp_path_factory):
    """One database filled through the real path: farm-unrest (8 days, one episode on
    day 7) and farm-calm (14 days, no episode)."""
    client = InfluxClient(stack.influx_url, "live_detection_" + uuid.uuid4().hex[:6])
    client.create_database()
    episode = UnrestEpisode(EPISODE_START, duration_min=120, intensity=4.0)
    herds = [
        (Herd("farm-unrest", "gw-1", COUNTS, seed=7, episodes=(episode,)), 8),
        (Herd("farm-calm", "gw-2", COUNTS, seed=11), 14),
    ]
    total = _publish_herds(stack, client, tmp_path_factory.mktemp("spools"), herds)
    stored = client.query('SELECT count("odba") FROM "activity"')
    assert stored[0]["values"][0][1] == total
    yield client
    client.drop_database()
    client.close()


def _config(
    tmp_path: Path,
    influx: InfluxClient,
    farm: str,
    smtp_port: int = 25,
    state_url: str | None = None,
    **mail,
) -> NamazuConfig:
    """The scheduler's configuration; the state store is ``state_url``, by default a
    SQLite file under ``tmp_path``."""
    return NamazuConfig.model_validate(
        {
            "influx": {"url": influx.url, "database": influx.database},
            "farms": [{"id": farm, "name": f"Farm {farm}", "latitude": 43.0, "longitude": 13.0}],
            "state": {"url": state_url or f"sqlite:///{tmp_path}/state.sqlite"},
            "scheduler": {"alarm_log_path": str(tmp_path / "alarm-log.jsonl")},
            "mail": {
                "enabled": True,
                "host": "127.0.0.1",
                "port": smtp_port,
                "security": "none",
                "sender": "namazu@example.org",
                "cooldown_min": 60,
                **mail,
            },
        }
    )


def _subscribe(services, severity: str = "critical", recipient: str = RECIPIENT) -> None:
    with session_scope(services.engine) as session:
        session.add(Subscription(recipient=recipient, farm="*", species="*", min_severity=severity))


def _alarms(services) -> list[tuple]:
    with session_scope(services.engine) as session:
        return sorted(
            (a.kind, a.series, a.start, a.end, a.state, a.close_reason, round(a.peak_ratio, 6))
            for a in session.scalars(select(Alarm))
        )


def test_one_episode_gives_one_herd_alarm_and_one_mail(tmp_path, activity_db, state_url):
    smtp = SmtpServer("none").start()
    try:
        config = _config(tmp_path, activity_db, "farm-unrest", smtp.port, state_url)
        services = build_services(config)
        _subscribe(services)
        # hourly, then every 5 min around the episode (as the live scheduler ticks)
        replay(services, T0 + timedelta(days=7), EPISODE_START, timedelta(hours=1))
        five = timedelta(minutes=5)
        replay(services, EPISODE_START + five, EPISODE_START + timedelta(hours=3), five)
        replay(services, EPISODE_START + timedelta(hours=4), T0 + timedelta(days=8),
               timedelta(hours=1))  # fmt: skip
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
            # declared (and opened) at the end of the step in which the run reached 45 min
            declared = herd_row.declared_at
            assert declared == herd_row.opened_at == herd_row.start + timedelta(minutes=45)
            assert herd_row.resolution_s == 900
        # the e-mail leaves at the first cycle after the step's end + 2 min settle
        sent = parsedate_to_datetime(message["Date"])
        assert declared + timedelta(minutes=2) <= sent <= declared + timedelta(minutes=7)
        stamp = declared.isoformat().replace("+00:00", "Z")
        assert f"declared {stamp}" in message.get_body(("plain",)).get_content()
        records = [json.loads(line) for line in (tmp_path / "alarm-log.jsonl").open()]
        [logged] = [r["alarm"] for r in records if r["alarm"]["kind"] == "herd"]
        assert logged["declared_at"] == stamp and logged["resolution_s"] == 900
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
        # the last 15-min step whose window had ended 2 min (settle) before the last cycle
        assert ckpt.time == T0 + timedelta(days=14) - timedelta(minutes=30)
        assert session.scalar(select(OutboxMail.id)) is None
    collective = [a for a in _alarms(services) if a[0] != "animal"]
    assert collective == []
    baseline_points = activity_db.count("baseline", "baseline", "\"farm\" = 'farm-calm'")
    assert baseline_points > 7 * 24 * 60  # baselines were computed and written back


def test_smtp_outage_delays_mail_and_never_loses_or_duplicates_it(tmp_path, activity_db, state_url):
    smtp = SmtpServer("none")  # port reserved, server not running: an outage
    services = build_services(_config(tmp_path, activity_db, "farm-unrest", smtp.port, state_url))
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
        lines += [f"{k} = {json.dumps(v)}" for k, v in farm.items() if v is not None]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_sigkill_mid_run_then_restart_gives_the_same_alarms(tmp_path, activity_db, state_url):
    """The reference run keeps its state in a SQLite file, the killed scheduler process
    in ``state_url`` (on the PostgreSQL run, both backends must agree too)."""
    start, end, step = T0 + timedelta(days=7), T0 + timedelta(days=7, hours=8), "10min"
    reference_dir, killed_dir = tmp_path / "reference", tmp_path / "killed"
    reference_dir.mkdir()
    killed_dir.mkdir()
    reference = build_services(_config(reference_dir, activity_db, "farm-unrest"))
    replay(reference, start, end, timedelta(minutes=10))

    config = _config(killed_dir, activity_db, "farm-unrest", state_url=state_url)
    config_path = killed_dir / "config.toml"
    _write_toml(config_path, config)
    command = [
        sys.executable, "-m", "namazu.server.cli", "scheduler", "--config", str(config_path),
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


class RefusingInbox(Inbox):
    """The test SMTP server's handler, answering 550 to RCPT for one address."""

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        if address == REFUSED:
            return "550 5.1.1 <nobody@example.org>: mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"


def test_recipient_refused_with_550_is_marked_failed_after_n_attempts(tmp_path, activity_db):
    smtp = SmtpServer("none")
    smtp.inbox = RefusingInbox()
    smtp.start()
    try:
        config = _config(
            tmp_path, activity_db, "farm-unrest", smtp.port,
            max_refused_attempts=2, refused_retry_h=1.0,
        )  # fmt: skip
        services = build_services(config)
        _subscribe(services)
        _subscribe(services, recipient=REFUSED)
        replay(services, T0 + timedelta(days=7), T0 + timedelta(days=8), timedelta(hours=1))
        assert [m.rcpt_tos for m in smtp.inbox.messages] == [[RECIPIENT]]
        with session_scope(services.engine) as session:
            mails = {m.recipient: m for m in outbox_mails(session)}
            assert mails[RECIPIENT].status == "sent"
            refused = mails[REFUSED]
            assert refused.status == "failed" and refused.attempts == 2
            assert "550" in refused.last_error and "mailbox unavailable" in refused.last_error
            assert [m.id for m in outbox_mails(session, "failed")] == [refused.id]
            failed_at = refused.failed_at
        # a failed mail is never tried again
        assert mail_cycle(services, failed_at + timedelta(days=30)) == (0, 0)
        with session_scope(services.engine) as session:
            assert session.get(OutboxMail, refused.id).attempts == 2
        assert len(smtp.inbox.messages) == 1
    finally:
        smtp.stop()


# ------------------------------------------------------------------ gaps (tick unit tests)

GAP_DAY = T0 + timedelta(days=7)
INTENSE = 8.0  # every single animal stays above threshold for the whole episode


def _write_direct(client: InfluxClient, herd: Herd, keep) -> list[str]:
    """Write the herd's 8 days straight to InfluxDB, keeping rows where keep(frame)."""
    frame = herd.activity(T0, T0 + timedelta(days=8))
    frame = frame[keep(frame)]
    client.write_lines(activity_frame_lines(frame, herd.farm, herd.gateway, ("odba", "vedba")))
    return [a for a, _ in herd.animals]


def _ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def test_animals_that_stop_reporting_close_with_gap_and_are_never_read_as_calm(
    tmp_path, influx, state_url
):
    """Unrest 02:00-04:00 on day 7 for all six cows. Cows 1-3 fall silent at 03:00,
    cows 4-6 at 05:00. The silent cows' alarms close with "gap"; the herd (mean of the
    reporting animals) stays in alarm while cows 4-6 are restless and closes
    "calm" only when they calm down; no sample of the silent spans is written back as a
    value, and the data-health job flags every silent cow."""
    episode = UnrestEpisode(GAP_DAY + timedelta(hours=2), duration_min=120, intensity=INTENSE)
    herd = Herd("farm-gap", "gw-9", {"cow": 6}, seed=5, episodes=(episode,))
    animals = herd.animals
    early = [a for a, _ in animals[:3]]
    stop_early, stop_all = GAP_DAY + timedelta(hours=3), GAP_DAY + timedelta(hours=5)

    def keep(frame):
        t = frame["t_ms"].to_numpy()
        silent = np.where(frame["animal"].isin(early), _ms(stop_early), _ms(stop_all))
        return t < silent

    _write_direct(influx, herd, keep)
    engine = init_db(state_url)
    job = DetectionJob(
        influx, engine, AlarmLog(tmp_path / "log.jsonl"), ["farm-gap"], resolution_s=60,
        initial_lookback_s=8 * 3600, max_catchup_s=8 * 3600,
    )  # fmt: skip
    [tick] = job.tick(GAP_DAY + timedelta(hours=8, minutes=3))  # the minute to 08:00 done
    assert tick.last_ms == _ms(GAP_DAY + timedelta(hours=8))
    with session_scope(engine) as session:
        alarms = {(a.kind, a.series): a for a in session.scalars(select(Alarm))}
    for animal in early:
        alarm = alarms[("animal", animal)]
        assert alarm.close_reason == "gap", animal
        assert alarm.closed_at == stop_early and alarm.end == stop_early - timedelta(minutes=1)
    herd_alarm = alarms[("herd", "herd")]
    assert herd_alarm.animals_reporting == herd_alarm.animals_total == 6
    assert herd_alarm.end >= episode.start + timedelta(minutes=115)  # not cut at 03:00
    assert herd_alarm.close_reason == "calm" and herd_alarm.closed_at <= stop_all
    assert all(a.state == "closed" for a in alarms.values())
    assert all(a.close_reason != "calm" for (k, s), a in alarms.items() if s in early)
    # alarm points carry the reason; nothing after the silence is written back as a value
    reasons = influx.query(
        'SELECT "close_reason" FROM "alarm" WHERE "farm" = \'farm-gap\' GROUP BY "series"'
    )
    by_series = {item["tags"]["series"]: item["values"][0][1] for item in reasons}
    assert {by_series[a] for a in early} == {"gap"}
    after = f"time >= {_ms(stop_all)}ms"
    written = influx.query(
        f'SELECT count("value") FROM "baseline" WHERE "farm" = \'farm-gap\' AND {after}'
    )
    assert written == []
    silent_early = influx.query(
        'SELECT count("value") FROM "baseline" WHERE "farm" = \'farm-gap\' '
        f'AND time >= {_ms(stop_early)}ms GROUP BY "series"'
    )
    assert not {item["tags"]["series"] for item in silent_early} & set(early)
    # data health: every cow silent 10 min after its last sample, points in InfluxDB
    health = HealthJob(influx, engine, ["farm-gap"], stale_after_s=600)
    report = health.run(stop_all + timedelta(minutes=11))
    flagged = sorted(name for _, kind, name, status in report.flagged if status == "silent")
    assert flagged == sorted(a for a, _ in animals)
    with session_scope(engine) as session:
        rows = session.scalars(select(DataHealth).where(DataHealth.kind == "animal")).all()
        assert {r.name: r.status for r in rows} == {a: "silent" for a, _ in animals}
    summary = influx.query(
        'SELECT "animals_silent", "animals_ok" FROM "health" '
        "WHERE \"farm\" = 'farm-gap' AND \"kind\" = 'farm'"
    )
    assert summary[0]["values"][-1][1:] == [6, 0]
    points = influx.query(
        'SELECT last("status") FROM "health" WHERE "farm" = \'farm-gap\' '
        'AND "kind" = \'animal\' GROUP BY "subject"'
    )
    assert {p["tags"]["subject"]: p["values"][0][1] for p in points} == {
        a: "silent" for a, _ in animals
    }


def test_a_farm_that_goes_silent_closes_open_alarms_with_gap(tmp_path, influx, state_url):
    """A tick whose whole span has no data for the farm: open alarms close with "gap",
    and a later tick with data again does not reopen them as calm."""
    episode = UnrestEpisode(GAP_DAY + timedelta(hours=2), duration_min=240, intensity=INTENSE)
    herd = Herd("farm-hole", "gw-8", {"sheep": 4}, seed=9, episodes=(episode,))
    hole = (GAP_DAY + timedelta(hours=3), GAP_DAY + timedelta(hours=5))

    def keep(frame):
        t = frame["t_ms"].to_numpy()
        return (t < _ms(hole[0])) | (t >= _ms(hole[1]))

    _write_direct(influx, herd, keep)
    engine = init_db(state_url)
    job = DetectionJob(
        influx, engine, AlarmLog(tmp_path / "log.jsonl"), ["farm-hole"], resolution_s=60,
        initial_lookback_s=3 * 3600, max_catchup_s=3 * 3600,
    )  # fmt: skip
    settle = timedelta(minutes=3)  # 2 min, plus the minute of the last sample itself
    job.tick(hole[0] - timedelta(minutes=1) + settle)  # up to 02:59: alarms open at ~02:45
    with session_scope(engine) as session:
        assert session.scalars(select(Alarm).where(Alarm.kind == "herd")).one().state == "open"
    [inside] = job.tick(hole[0] + timedelta(hours=1) + settle)  # 03:00-04:00: no data at all
    assert inside.animals == 4 and inside.samples == 0 and inside.closed
    with session_scope(engine) as session:
        alarms = session.scalars(select(Alarm)).all()
        assert {a.kind for a in alarms} >= {"animal", "species", "herd", "quorum"}
        assert {a.close_reason for a in alarms} == {"gap"}
        assert all(a.closed_at == hole[0] for a in alarms)
    job.tick(hole[1] + timedelta(hours=1) + settle)  # 04:00-06:00: data is back at 05:00
    with session_scope(engine) as session:
        first = {a.id: a.close_reason for a in alarms}
        again = {a.id: a.close_reason for a in session.scalars(select(Alarm)) if a.id in first}
        assert again == first  # the gap-closed alarms stay closed with "gap"


_GATEWAY_PROC = """
import sys, time
from namazu.firmware_bridge.publisher import GatewayPublisher
from namazu.firmware_bridge.spool import Spool
gw = GatewayPublisher("farm-will", "gw-w", Spool(sys.argv[2]), "127.0.0.1", int(sys.argv[1]),
                      client_id="live-will-gw", keepalive_s=5)
now = time.time_ns() // 1_000_000 // 60_000 * 60_000
t = [now - 60_000 * k for k in range(10, 0, -1)]
gw.publish_batches([[{"animal": "gw-w-cow-001", "species": "cow", "t_ms": t,
                      "odba": [0.1] * 10, "vedba": [0.07] * 10}]])
gw.start()
while not gw.wait_drained(0.5):
    pass
print("drained", flush=True)
time.sleep(120)
"""


def _gateway_online(client: InfluxClient) -> bool | None:
    """The last stored ``online`` of gateway gw-w (None before any status)."""
    series = client.query(
        'SELECT last("online") FROM "gateway_status" WHERE "farm" = \'farm-will\''
    )
    return series[0]["values"][0][1] if series else None


def test_gateway_whose_last_will_fires_is_flagged_offline_with_its_animals(stack, influx, tmp_path):
    """A live gateway process is SIGKILLed: Mosquitto publishes its Last Will, ingest
    stores it, and the next health run flags the gateway and its animals offline."""
    config = make_config(stack.mqtt_port, stack.influx_url, influx.database)
    service = IngestService(config, influx).start()
    proc = None
    try:
        assert service.wait_ready(10)
        command = [sys.executable, "-c", _GATEWAY_PROC, str(stack.mqtt_port),
                   str(tmp_path / "spool.sqlite")]  # fmt: skip
        proc = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True)  # noqa: S603
        assert proc.stdout.readline().strip() == "drained"
        wait_for(lambda: service.stats["written_points"] >= 10, 15, "activity stored")
        wait_for(lambda: _gateway_online(influx) is True, 15, "online status stored")
        engine = init_db(f"sqlite:///{tmp_path}/state.sqlite")
        health = HealthJob(influx, engine, ["farm-will"], stale_after_s=600)
        first = health.run(datetime.now(UTC))
        assert first.flagged == []
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        wait_for(lambda: _gateway_online(influx) is False, 15, "Last Will stored")
        report = health.run(datetime.now(UTC))
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc is not None:
            proc.stdout.close()
        service.stop(end_session=True)
    assert sorted(report.flagged) == [
        ("farm-will", "animal", "gw-w-cow-001", "offline"),
        ("farm-will", "gateway", "gw-w", "offline"),
    ]
    points = influx.query(
        'SELECT last("status") FROM "health" WHERE "farm" = \'farm-will\' GROUP BY "subject"'
    )
    assert {p["tags"]["subject"]: p["values"][0][1] for p in points} == {
        "gw-w": "offline", "gw-w-cow-001": "offline",
    }  # fmt: skip
    summary = influx.query(
        'SELECT "animals_offline", "gateways_offline", "animals_ok" FROM "health" '
        "WHERE \"farm\" = 'farm-will' AND \"kind\" = 'farm'"
    )
    assert [row[1:] for row in summary[0]["values"]] == [[0, 0, 1], [1, 1, 0]]
