"""The state store itself: table creation, alarm identity, UTC times, outbox order."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import inspect, select
from sqlalchemy.exc import IntegrityError, StatementError

from namazu.server.alerts.mail import MailPermanentError
from namazu.server.alerts.outbox import deliver_outbox
from namazu.server.store.state import (
    NUL_REPLACEMENT,
    Alarm,
    Checkpoint,
    OutboxMail,
    StateError,
    init_db,
    session_scope,
)

T = datetime(2026, 3, 1, 4, 0, tzinfo=UTC)


def _alarm(**changes) -> Alarm:
    fields = dict(farm="farm-a", series="herd", kind="herd", start=T, last_anomalous=T,
                  opened_at=T, rule_version="v1")  # fmt: skip
    fields.update(changes)
    return Alarm(**fields)


def _mail(i: int, **changes) -> OutboxMail:
    fields = dict(recipient=f"r{i}@example.org", farm="farm-a", subject=f"mail {i}", text="t",
                  html="<p>h</p>", message_id=f"<m{i}@namazu>", created=T,
                  next_attempt=T)  # fmt: skip
    fields.update(changes)
    return OutboxMail(**fields)


def test_init_db_is_idempotent_and_keeps_data(state_url):
    url = state_url
    engine = init_db(url)
    with session_scope(engine) as db:
        db.add(Checkpoint(name="detection:farm-a", time=T, value={"runs": {"herd|herd": [1, 2]}}))
    tables = set(inspect(engine).get_table_names())
    assert {"alarms", "outbox", "subscriptions", "checkpoints", "data_health"} <= tables
    assert init_db(url) is engine and init_db(engine) is engine
    assert set(inspect(engine).get_table_names()) == tables
    with session_scope(engine) as db:
        ckpt = db.get(Checkpoint, "detection:farm-a")
        assert ckpt.time == T and ckpt.time.tzinfo is UTC
        assert ckpt.value == {"runs": {"herd|herd": [1, 2]}}


def test_init_db_adds_new_nullable_columns_to_an_older_outbox(tmp_path):
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as con:  # the outbox as an earlier version created it
        con.execute(
            "CREATE TABLE outbox (id INTEGER PRIMARY KEY, recipient VARCHAR(254), "
            "farm VARCHAR(64), subject VARCHAR(998), text TEXT, html TEXT, "
            "message_id VARCHAR(255) UNIQUE, created DATETIME, attempts INTEGER, "
            "next_attempt DATETIME, sent_at DATETIME, last_error TEXT, alarm_ids JSON)"
        )
        con.execute(
            "INSERT INTO outbox VALUES (1, 'a@example.org', 'f', 's', 't', 'h', '<x@y>', "
            "'2026-03-01 04:00:00', 0, '2026-03-01 04:00:00', NULL, NULL, '[]')"
        )
    engine = init_db(f"sqlite:///{path}")
    columns = {c["name"] for c in inspect(engine).get_columns("outbox")}
    assert {"failed_at", "refused_attempts"} <= columns
    with session_scope(engine) as db:
        mail = db.get(OutboxMail, 1)
        assert mail.status == "queued" and mail.failed_at is None
        assert mail.created == T


def test_alarm_identity_is_unique_on_farm_series_kind_start(state_url):
    engine = init_db(state_url)
    with session_scope(engine) as db:
        db.add(_alarm())
        db.add(_alarm(start=T + timedelta(minutes=1)))  # another start: another alarm
        db.add(_alarm(kind="quorum", series="quorum"))  # another series: another alarm
        db.add(_alarm(farm="farm-b"))
    with (
        pytest.raises(IntegrityError, match="UNIQUE constraint failed|uq_alarm_identity"),
        session_scope(engine) as db,
    ):
        db.add(_alarm(peak_ratio=9.0))
    with session_scope(engine) as db:  # the failed transaction left nothing behind
        assert db.scalar(select(Alarm).where(Alarm.peak_ratio == 9.0)) is None
        assert len(db.scalars(select(Alarm)).all()) == 4


def test_a_nul_in_text_is_kept_as_the_replacement_character_on_every_backend(state_url):
    engine = init_db(state_url)
    with session_scope(engine) as db:
        db.add(_mail(1, subject="a\x00b", text="\x00"))
        db.add_all(_mail(i, subject=f"bulk \x00 {i}") for i in range(2, 6))  # one statement
    with session_scope(engine) as db:
        mail = db.scalars(select(OutboxMail).where(OutboxMail.subject == "a\x00b")).one()
        assert (mail.subject, mail.text) == (f"a{NUL_REPLACEMENT}b", NUL_REPLACEMENT)
        bulk = db.scalars(select(OutboxMail.subject).where(OutboxMail.id != mail.id)).all()
        assert sorted(bulk) == [f"bulk {NUL_REPLACEMENT} {i}" for i in range(2, 6)]


def test_times_are_utc_both_ways_and_naive_times_are_refused(state_url):
    engine = init_db(state_url)
    local = datetime(2026, 3, 1, 6, 0, tzinfo=timezone(timedelta(hours=2)))  # 04:00 UTC
    with session_scope(engine) as db:
        db.add(_alarm(start=local))
    with session_scope(engine) as db:
        stored = db.scalar(select(Alarm)).start
        assert stored == local == T and stored.tzinfo is UTC
    with pytest.raises(StatementError, match="naive datetime"), session_scope(engine) as db:
        db.add(_alarm(series="naive", start=datetime(2026, 3, 1)))


def test_bad_state_url_is_a_state_error():
    with pytest.raises(StateError, match="is not a SQLAlchemy URL"):
        init_db("not a url at all")


class _RecordingSender:
    """Records the order of delivery; refuses one recipient with a 5xx answer."""

    def __init__(self, refuse: str = ""):
        self.sent: list[str] = []
        self.refuse = refuse

    def send(self, message) -> None:
        if message["To"] == self.refuse:
            raise MailPermanentError("recipient refused: 550 no such user")
        self.sent.append(str(message["Subject"]))


def test_outbox_is_delivered_oldest_first_and_skips_sent_failed_and_waiting(state_url):
    engine = init_db(state_url)
    with session_scope(engine) as db:
        db.add_all(
            [
                _mail(1),
                _mail(2, sent_at=T),  # already sent
                _mail(3, failed_at=T, last_error="550"),  # failed for good
                _mail(4, next_attempt=T + timedelta(hours=1)),  # backing off
                _mail(5),
                _mail(6),
            ]
        )
    sender = _RecordingSender()
    assert deliver_outbox(engine, sender, "namazu@example.org", T) == (3, 0)
    assert sender.sent == ["mail 1", "mail 5", "mail 6"]
    assert deliver_outbox(engine, sender, "namazu@example.org", T + timedelta(hours=2)) == (1, 0)
    assert sender.sent[-1] == "mail 4"
    with session_scope(engine) as db:
        statuses = [m.status for m in db.scalars(select(OutboxMail).order_by(OutboxMail.id))]
    assert statuses == ["sent", "sent", "failed", "sent", "sent", "sent"]


def test_refused_mail_is_failed_after_the_configured_attempts(state_url):
    engine = init_db(state_url)
    with session_scope(engine) as db:
        db.add_all([_mail(1), _mail(2)])
    sender = _RecordingSender(refuse="r1@example.org")
    retry = timedelta(hours=6)
    now = T
    for attempt in (1, 2):
        assert deliver_outbox(engine, sender, "n@example.org", now, 100, 3, retry)[1] == 1
        with session_scope(engine) as db:
            mail = db.get(OutboxMail, 1)
            assert (mail.status, mail.attempts, mail.next_attempt) == (
                "queued",
                attempt,
                now + retry,
            )
        waiting = deliver_outbox(engine, sender, "n@example.org", now + retry / 2, 100, 3, retry)
        assert waiting == (0, 0)  # nothing is tried before the retry time
        now += retry
    assert deliver_outbox(engine, sender, "n@example.org", now, 100, 3, retry) == (0, 1)
    with session_scope(engine) as db:
        mail = db.get(OutboxMail, 1)
        assert mail.status == "failed" and mail.failed_at == now and mail.attempts == 3
        assert "550 no such user" in mail.last_error
    # never retried again, however long we wait; the other mail went out at once
    assert deliver_outbox(engine, sender, "n@example.org", now + timedelta(days=30)) == (0, 0)
    assert sender.sent == ["mail 2"]
    with pytest.raises(ValueError, match="max_refused_attempts must be >= 1"):
        deliver_outbox(engine, sender, "n@example.org", now, max_refused_attempts=0)
