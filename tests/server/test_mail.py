"""namazu.server.alerts.mail against a real SMTP server (aiosmtpd) on loopback."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta

import pytest

from namazu.server.alerts.mail import (
    DISCLAIMER,
    AlarmSummary,
    MailAddressError,
    MailPermanentError,
    MailTemporaryError,
    SmtpSender,
    build_message,
    clean_header_text,
    render_alert,
)
from namazu.server.alerts.outbox import compose_due, enqueue_notifications
from namazu.server.store.state import Alarm, OutboxMail, Subscription, init_db, session_scope
from tests.server.smtp_fixtures import SMTP_PASSWORD, SMTP_USER, SmtpServer

EVIL_FARM = "Fattoria\r\nBcc: victim@example.org\r\nX-Injected: yes"
EVIL_ANIMAL = "cow-1\nSubject: fake\u202e\x00"


def _summary(**overrides) -> AlarmSummary:
    values = dict(
        farm="farm-a",
        farm_name="Farm A",
        series="herd",
        kind="herd",
        severity="critical",
        start="2024-05-01T02:00:00Z",
        opened_at="2024-05-01T02:44:00Z",
        peak_ratio=3.25,
        animals_reporting=20,
        animals_total=21,
        animals_surged=("cow-001", "cow-002"),
        log_hash="ab" * 32,
    )
    values.update(overrides)
    return AlarmSummary(**values)


@pytest.fixture
def starttls_server(tmp_path):
    server = SmtpServer("starttls", tmp_path, auth=True).start()
    yield server
    server.stop()


def test_starttls_with_auth_delivers_text_and_html(starttls_server):
    subject, text, html_body = render_alert([_summary()])
    message = build_message("namazu@example.org", "vet@example.org", subject, text, html_body)
    sender = SmtpSender(
        "127.0.0.1",
        starttls_server.port,
        "starttls",
        SMTP_USER,
        SMTP_PASSWORD,
        ssl_context=starttls_server.client_context,
    )
    sender.send(message)
    [received] = starttls_server.inbox.messages
    assert received.rcpt_tos == ["vet@example.org"]
    parsed = received.message
    assert parsed["Subject"].startswith("Unusual activity: the herd at Farm A at ")
    plain = parsed.get_body(("plain",)).get_content()
    rich = parsed.get_body(("html",)).get_content()
    assert DISCLAIMER in plain and DISCLAIMER in rich
    assert "ab" * 32 in plain and "3.2 times" in rich


def test_wrong_password_is_permanent_and_no_server_is_temporary(starttls_server):
    message = build_message("a@example.org", "b@example.org", "s", "t", "<p>t</p>")
    bad = SmtpSender(
        "127.0.0.1",
        starttls_server.port,
        "starttls",
        SMTP_USER,
        "wrong",
        ssl_context=starttls_server.client_context,
    )
    with pytest.raises(MailPermanentError, match="AUTH"):
        bad.send(message)
    starttls_server.stop()
    with pytest.raises(MailTemporaryError, match="unavailable"):
        SmtpSender("127.0.0.1", starttls_server.port, "none", timeout_s=2).send(message)
    assert starttls_server.inbox.messages == []


def test_implicit_tls(tmp_path):
    server = SmtpServer("ssl", tmp_path).start()
    try:
        message = build_message("a@example.org", "b@example.org", "hello", "t", "<p>t</p>")
        SmtpSender("127.0.0.1", server.port, "ssl", ssl_context=server.client_context).send(message)
        assert [m.message["Subject"] for m in server.inbox.messages] == ["hello"]
    finally:
        server.stop()


def test_names_cannot_inject_headers_or_recipients():
    server = SmtpServer("none").start()
    try:
        alarm = _summary(farm_name=EVIL_FARM, series=EVIL_ANIMAL, kind="animal")
        subject, text, html_body = render_alert([alarm])
        assert "\r" not in subject and "\n" not in subject
        message = build_message("namazu@example.org", "vet@example.org", subject, text, html_body)
        SmtpSender("127.0.0.1", server.port, "none").send(message)
        [received] = server.inbox.messages
        assert received.rcpt_tos == ["vet@example.org"]
        parsed = received.message
        header_names = {name.lower() for name in parsed}
        assert "bcc" not in header_names and "x-injected" not in header_names
        assert len(parsed.get_all("Subject")) == 1
        assert "Bcc: victim@example.org" in parsed["Subject"]  # kept as inert text
        rich = parsed.get_body(("html",)).get_content()
        assert "<script" not in render_alert([_summary(series="<script>x</script>")])[2]
        assert DISCLAIMER in rich
    finally:
        server.stop()


@pytest.mark.parametrize(
    "address",
    [
        "vet@example.org\r\nBcc: x@example.org",
        "no-at-sign",
        "a b@example.org",
        "",
        "vet@example.org\n",
        "v\x00et@example.org",
        "v\x7fet@example.org",
    ],
)
def test_bad_addresses_are_refused(address):
    with pytest.raises(MailAddressError):
        build_message("namazu@example.org", address, "s", "t", "<p>t</p>")


def test_clean_header_text_removes_controls_and_caps_length():
    assert clean_header_text("a\r\nb\tc\x00d\u202ee") == "a b c d e"
    assert len(clean_header_text("x" * 500)) == 80


ROME = dict(timezone="Europe/Rome", panel_url="https://namazu.example.org/")


def _footer(text: str) -> str:
    return text.split("\n-- \n", 1)[1]


def test_a_herd_alert_says_what_where_and_when_in_farm_time_first():
    alarm = _summary(
        alarm_id=12,
        declared_at="2024-05-01T02:45:00Z",
        animals_reporting=32,
        animals_surged=("cow-003", "sheep-007"),
        **ROME,
    )
    subject, text, html_body = render_alert([alarm])
    assert subject == "Unusual activity: the herd at Farm A at 04:45 CEST (research alert)"
    body, footer = text.split("\n-- \n")
    assert "Noticed at Wed 1 May 2024, 04:45 CEST (02:45 UTC)." in body
    assert "from 04:00 CEST (02:00 UTC)" in body
    assert "Animals that surged (2 of 32 reporting): cow-003, sheep-007" in body
    assert "See the alarm: https://namazu.example.org/alarms/12" in body
    assert "https://namazu.example.org/alarms/12#review" in body
    assert "not an earthquake prediction" in body
    for check in ("predators", "storms", "handling", "fences"):
        assert check in body
    # jargon and hashes only below the signature line
    for jargon in ("ab" * 32, "verify-log", "baseline;", "SHA-256"):
        assert jargon not in body and jargon in footer
    assert "a-priori" not in text
    assert "herd herd" not in text and "herd herd" not in subject
    assert 'href="https://namazu.example.org/alarms/12"' in html_body


def test_declaration_time_is_used_when_the_alarm_carries_it():
    alarm = {
        "farm": "farm-a", "series": "cow-7", "kind": "animal", "start": "2024-01-10T23:00:00Z",
        "opened_at": "2024-01-10T23:44:00Z", "declared_at": "2024-01-10T23:45:00Z",
        "animals_involved": ["cow-7"], "id": 5,
    }  # fmt: skip
    summary = AlarmSummary.from_alarm(alarm, "Farm A", "Europe/Rome")
    subject, text, _ = render_alert([summary])
    # 23:45 UTC is 00:45 the next day in Rome in winter: the UTC date is named
    assert "Noticed at Thu 11 Jan 2024, 00:45 CET (23:45 UTC on 10 Jan)." in text
    assert subject == "Unusual activity: cow-7 at Farm A at 00:45 CET (research alert)"
    assert "Animals that surged" not in text  # an animal alarm is about that animal
    assert "See the alarm" not in text  # no panel URL configured: no dead links
    surged = AlarmSummary.from_alarm(alarm | {"kind": "herd", "animals_surged": ["cow-9"]})
    assert surged.animals_surged == ("cow-9",)


def test_one_episode_of_many_alarms_is_one_short_entry():
    """A herd alarm and 35 animal alarms of the same night read as one episode."""
    herd = _summary(
        alarm_id=1, end="2024-05-01T04:00:00Z", animals_surged=(), animals_reporting=40, **ROME
    )
    animals = [
        _summary(
            alarm_id=2 + i,
            series=f"cow-{i:03d}",
            kind="animal",
            severity="info",
            start=f"2024-05-01T02:{i % 30:02d}:00Z",
            end="2024-05-01T03:30:00Z",
            animals_surged=(f"cow-{i:03d}",),
            log_hash=f"{i:064x}",
            **ROME,
        )  # fmt: skip
        for i in range(35)
    ]
    subject, text, html_body = render_alert([herd, *animals])
    assert subject.startswith("Unusual activity: the herd at Farm A at ")
    body, footer = text.split("\n-- \n")
    assert body.count("See the alarm:") == 1
    assert "Animals that surged (35 of 40 reporting): cow-000, cow-001, cow-002" in body
    assert "and 15 more" in body
    assert len(text.splitlines()) < 40
    assert f"{34:064x}" not in text  # member hashes stay on their pages
    assert "alarms #1, #2" in footer


def test_a_digest_has_one_entry_per_episode():
    night = [
        _summary(alarm_id=1, **ROME),
        _summary(alarm_id=2, series="cow-001", kind="animal", **ROME),
        _summary(
            alarm_id=3,
            series="cow-009",
            kind="animal",
            start="2024-05-01T09:00:00Z",
            opened_at="2024-05-01T09:45:00Z",
            **ROME,
        ),  # fmt: skip
    ]
    subject, text, html_body = render_alert(night)
    assert subject == "Unusual activity at Farm A: 2 episodes since 04:44 CEST (research alert)"
    assert "1. Unusual activity: the herd at Farm A" in text
    assert "2. Unusual activity: cow-009 at Farm A" in text
    assert text.count("See the alarm:") == 2


def test_html_and_text_say_the_same_and_fit_a_phone():
    subject, text, html_body = render_alert([_summary(alarm_id=4, **ROME)])
    visible = html.unescape(re.sub(r"<[^>]+>", "\n", html_body.split("<body>")[1]))
    for line in text.splitlines():
        words = line.removeprefix("- ").removeprefix("* ").strip()
        if words and words != "--" and not words.startswith(("See the alarm", "Tell the")):
            assert words.lower() in visible.lower(), words
    assert 'name="viewport"' in html_body and "max-width:600px" in html_body
    assert "<table" not in html_body and not re.search(r"\swidth=\"", html_body)


def test_compose_due_uses_farm_time_zone_and_panel_link(state_url):
    engine = init_db(state_url)
    opened = datetime(2024, 5, 1, 1, 10, tzinfo=UTC)
    with session_scope(engine) as session:
        session.add(Subscription(recipient="farmer@example.org", farm="*", species="*",
                                 min_severity="info"))  # fmt: skip
        alarm = Alarm(
            farm="farm-a", series="herd", kind="herd", severity="warning",
            start=opened - timedelta(minutes=45), last_anomalous=opened, opened_at=opened,
            peak_ratio=2.9, rule_version="v1", params={}, animals_involved=["cow-2"],
        )  # fmt: skip
        session.add(alarm)
        session.flush()
        enqueue_notifications(session, [alarm])
        alarm_id = alarm.id
    [mail_id] = compose_due(
        engine, opened, timedelta(minutes=60), {"farm-a": "Fattoria Rossi"},
        farm_timezones={"farm-a": "Europe/Rome"}, panel_url="https://panel.example.org",
    )  # fmt: skip
    with session_scope(engine) as session:
        mail = session.get(OutboxMail, mail_id)
        assert mail.subject.startswith("Unusual activity: the herd at Fattoria Rossi at 03:10 CEST")
        assert f"https://panel.example.org/alarms/{alarm_id}#review" in mail.text
        assert "cow-2" in mail.text
