"""Subscriptions: validation, matching by severity, and ``namazu subscriptions``."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from namazu.server.alerts.outbox import enqueue_notifications, subscription_matches
from namazu.server.alerts.subscriptions import (
    SubscriptionError,
    add_subscription,
    list_subscriptions,
    outbox_mails,
    remove_subscription,
)
from namazu.server.cli import main as namazu
from namazu.server.store.state import (
    Alarm,
    AlertNotification,
    OutboxMail,
    Subscription,
    alarm_severity,
    init_db,
    session_scope,
)

T = datetime(2026, 3, 1, 4, 0, tzinfo=UTC)


@pytest.fixture
def engine(state_url):
    return init_db(state_url)


@pytest.fixture
def config_file(tmp_path, state_url):
    path = tmp_path / "namazu.toml"
    path.write_text(
        f'[state]\nurl = "{state_url}"\n'
        '[[farms]]\nid = "farm-a"\nlatitude = 43.0\nlongitude = 13.0\n'
        '[[farms]]\nid = "farm-b"\nlatitude = 44.0\nlongitude = 12.0\n',
        encoding="utf-8",
    )
    return path


def test_add_normalises_and_rejects_bad_values_naming_them(engine):
    with session_scope(engine) as db:
        row = add_subscription(db, " vet@example.org ", "all", "ALL", "Warning")
        assert (row.recipient, row.farm, row.species, row.min_severity) == (
            "vet@example.org", "*", "*", "warning",
        )  # fmt: skip
        cow = add_subscription(db, "vet@example.org", "farm-a", "cow", known_farms=["farm-a"])
        assert (cow.farm, cow.species, cow.min_severity) == ("farm-a", "cow", "info")
    cases = [
        (("not-an-address", "farm-a"), {}, "not a plain e-mail address"),
        (("a@b.org\r\nBcc: x@y.org", "farm-a"), {}, "not a plain e-mail address"),
        (("a@b.org", "farm a"), {}, "farm 'farm a' is not a farm id"),
        (("a@b.org", "farm-z"), {"known_farms": ["farm-a"]}, "farm 'farm-z' is not configured"),
        (("a@b.org", "farm-a", "horse"), {}, "species 'horse' is not one of cow, sheep, dog"),
        (("a@b.org", "farm-a", "cow", "urgent"), {}, "minimum severity 'urgent'"),
        (("vet@example.org", "farm-a", "cow"), {}, r"already subscribes .* \(id 2\)"),
    ]
    for args, kwargs, message in cases:
        with session_scope(engine) as db, pytest.raises(SubscriptionError, match=message):
            add_subscription(db, *args, **kwargs)
    with session_scope(engine) as db:
        assert [s.id for s in list_subscriptions(db)] == [1, 2]
        assert remove_subscription(db, 1).recipient == "vet@example.org"
        with pytest.raises(SubscriptionError, match="no subscription with id 1"):
            remove_subscription(db, 1)
        assert [s.id for s in list_subscriptions(db)] == [2]


def test_severity_comes_from_kind_and_peak_ratio():
    assert alarm_severity("animal", 2.5, 140) == "info"
    assert alarm_severity("animal", 4.79, 140) == "info"
    assert alarm_severity("animal", 4.8, 140) == "warning"  # 2 x the 2.4 threshold ratio
    assert alarm_severity("animal", 4.0, 100) == "warning"  # threshold ratio 2.0
    assert alarm_severity("species", 2.4, 140) == "warning"
    assert alarm_severity("species", 50.0, 140) == "warning"
    assert alarm_severity("herd", 2.4, 140) == "critical"
    assert alarm_severity("quorum", 1.0, 140) == "critical"
    with pytest.raises(ValueError, match="unknown alarm kind 'flock'"):
        alarm_severity("flock", 3.0, 140)


def _alarm(kind: str, series: str, species: str | None, peak: float) -> Alarm:
    return Alarm(
        farm="farm-a",
        series=series,
        kind=kind,
        species=species,
        severity=alarm_severity(kind, peak, 140),
        start=T,
        last_anomalous=T,
        opened_at=T,
        peak_ratio=peak,
        rule_version="test",
    )


def test_subscriptions_receive_only_what_they_asked_for(engine):
    with session_scope(engine) as db:
        add_subscription(db, "all@example.org", "*", "all", "info")
        add_subscription(db, "cows@example.org", "farm-a", "cow", "warning")
        add_subscription(db, "herd@example.org", "farm-a", "sheep", "critical")
        add_subscription(db, "other@example.org", "farm-b", "all", "info")
        alarms = [
            _alarm("animal", "gw-cow-001", "cow", 3.0),  # info
            _alarm("animal", "gw-cow-002", "cow", 6.0),  # warning (strong surge)
            _alarm("species", "species:sheep", "sheep", 3.0),  # warning, sheep
            _alarm("herd", "herd", None, 3.0),  # critical, every species
        ]
        db.add_all(alarms)
        db.flush()
        subs = list_subscriptions(db)
        wanted = {
            a.series: sorted(s.recipient for s in subs if subscription_matches(s, a))
            for a in alarms
        }
        assert wanted == {
            "gw-cow-001": ["all@example.org"],
            "gw-cow-002": ["all@example.org", "cows@example.org"],
            "species:sheep": ["all@example.org"],
            "herd": ["all@example.org", "cows@example.org", "herd@example.org"],
        }
        assert enqueue_notifications(db, alarms) == 7
        assert enqueue_notifications(db, alarms) == 0  # idempotent
        assert db.query(AlertNotification).count() == 7


def test_cli_add_list_remove_and_errors(config_file, capsys):
    base = ["subscriptions", "--config", str(config_file)]
    assert namazu([*base, "add", "vet@example.org", "--farm", "farm-a", "--species", "cow",
                   "--min-severity", "warning"]) == 0  # fmt: skip
    assert "subscription 1 added: vet@example.org farm farm-a species cow" in (
        capsys.readouterr().out
    )
    assert namazu([*base, "add", "office@example.org", "--farm", "*"]) == 0
    capsys.readouterr()
    assert namazu([*base, "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    keys = ("id", "recipient", "farm", "species", "min_severity")
    assert [tuple(r[k] for k in keys) for r in listed] == [
        (2, "office@example.org", "*", "*", "info"),
        (1, "vet@example.org", "farm-a", "cow", "warning"),
    ]
    for argv, message in [
        (["add", "vet@example.org", "--farm", "farm-x"], "farm 'farm-x' is not configured"),
        (["add", "vet@example.org", "--farm", "farm-a", "--species", "goat"], "species 'goat'"),
        (["add", "vet@example.org", "--farm", "farm-a", "--min-severity", "high"], "'high'"),
        (["remove", "99"], "no subscription with id 99"),
        (["remove", str(2**70)], f"no subscription with id {2**70}"),
        (["remove", str(2**31)], f"no subscription with id {2**31}"),  # past 32-bit keys
    ]:
        assert namazu([*base, *argv]) == 1, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1
    assert namazu([*base, "remove", "1"]) == 0
    assert "subscription 1 removed" in capsys.readouterr().out
    assert namazu([*base, "list"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("2\toffice@example.org\t*\t*\tinfo")


def test_cli_outbox_shows_failed_mails_with_their_reason(config_file, state_url, capsys):
    engine = init_db(state_url)
    with session_scope(engine) as db:
        for i, (sent, failed) in enumerate([(T, None), (None, T), (None, None)]):
            db.add(
                OutboxMail(
                    recipient=f"r{i}@example.org", farm="farm-a", subject=f"s{i}", text="t",
                    html="h", message_id=f"<m{i}@namazu>", sent_at=sent, failed_at=failed,
                    attempts=3 if failed else 1,
                    last_error="recipient refused: 550 no such user" if failed else None,
                )
            )  # fmt: skip
    with session_scope(engine) as db:
        assert [m.status for m in outbox_mails(db)] == ["queued", "failed", "sent"]
        assert [m.recipient for m in outbox_mails(db, "failed")] == ["r1@example.org"]
        with pytest.raises(SubscriptionError, match="outbox status 'lost'"):
            outbox_mails(db, "lost")
    base = ["subscriptions", "--config", str(config_file)]
    assert namazu([*base, "outbox", "--status", "failed"]) == 0
    [line] = capsys.readouterr().out.strip().splitlines()
    assert line.startswith("2\tfailed\tr1@example.org\tfarm-a\tattempts 3")
    assert line.endswith("recipient refused: 550 no such user")
    # SQLite reads LIMIT -1 as "no limit", PostgreSQL refuses it: the command asks for >= 1
    with pytest.raises(SystemExit) as refused:
        namazu([*base, "outbox", "--limit", "-1"])
    assert refused.value.code == 2
    assert "argument --limit: must be >= 1, got -1" in capsys.readouterr().err


def test_cli_bad_config_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('[state]\nurl = "nonsense://"\n', encoding="utf-8")
    assert namazu(["subscriptions", "--config", str(bad), "list"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("namazu subscriptions:") and len(err.strip().splitlines()) == 1


def test_subscription_row_round_trips(engine):
    with session_scope(engine) as db:
        db.add(Subscription(recipient="x@example.org", farm="*", species="*"))
    with session_scope(engine) as db:
        [row] = list_subscriptions(db)
        data = row.to_dict()
        assert data["min_severity"] == "info" and data["active"] is True
        assert data["created_at"].endswith("Z")
