"""Cooldown and digest on a real SQLite state store: a restless night of alarms for one
farm gives one mail at the first alarm and one digest after the cooldown, never a mail
per alarm; another farm has its own cooldown."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from namazu.server.alerts.outbox import compose_due, enqueue_notifications
from namazu.server.store.state import Alarm, OutboxMail, Subscription, init_db, session_scope

T0 = datetime(2026, 11, 20, 1, 0, tzinfo=UTC)
COOLDOWN = timedelta(minutes=60)


def _open_alarm(engine, farm: str, series: str, opened: datetime) -> None:
    with session_scope(engine) as session:
        alarm = Alarm(
            farm=farm, series=series, kind="animal", species="cow", severity="warning",
            start=opened - timedelta(minutes=45), last_anomalous=opened, opened_at=opened,
            peak_ratio=3.1, rule_version="test", params={},
        )  # fmt: skip
        session.add(alarm)
        session.flush()
        enqueue_notifications(session, [alarm])


def _mails(engine) -> list[tuple[str, datetime, list[int]]]:
    with session_scope(engine) as session:
        return [
            (m.farm, m.created, list(m.alarm_ids))
            for m in session.scalars(select(OutboxMail).order_by(OutboxMail.id))
        ]


def test_a_restless_night_gives_one_mail_then_one_digest(state_url):
    engine = init_db(state_url)
    with session_scope(engine) as session:
        session.add(Subscription(recipient="vet@example.org", farm="*", species="*",
                                 min_severity="info"))  # fmt: skip
    _open_alarm(engine, "farm-a", "cow-1", T0)
    assert len(compose_due(engine, T0, COOLDOWN)) == 1
    for minutes, series in ((10, "cow-2"), (25, "cow-3"), (50, "cow-4")):
        _open_alarm(engine, "farm-a", series, T0 + timedelta(minutes=minutes))
        assert compose_due(engine, T0 + timedelta(minutes=minutes), COOLDOWN) == []
    _open_alarm(engine, "farm-b", "dog-1", T0 + timedelta(minutes=30))  # own cooldown
    assert len(compose_due(engine, T0 + timedelta(minutes=30), COOLDOWN)) == 1
    assert compose_due(engine, T0 + timedelta(minutes=59), COOLDOWN) == []
    assert len(compose_due(engine, T0 + timedelta(minutes=70), COOLDOWN)) == 1
    assert compose_due(engine, T0 + timedelta(minutes=140), COOLDOWN) == []  # nothing owed

    mails = _mails(engine)
    assert [(farm, created - T0) for farm, created, _ in mails] == [
        ("farm-a", timedelta(0)),
        ("farm-b", timedelta(minutes=30)),
        ("farm-a", timedelta(minutes=70)),
    ]
    first, _, digest = (ids for _, _, ids in mails)
    assert len(first) == 1 and len(digest) == 3  # cow-2, cow-3 and cow-4 in one digest
    with session_scope(engine) as session:
        subject = session.scalars(select(OutboxMail).order_by(OutboxMail.id)).all()[2].subject
    # overlapping alarms of three animals are one episode: one entry naming all three
    assert subject == "Unusual activity: 3 animals at farm-a at 01:10 UTC (research alert)"
