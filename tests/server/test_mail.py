"""namazu.server.alerts.mail against a real SMTP server (aiosmtpd) on loopback."""

from __future__ import annotations

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
        animals_involved=("cow-001", "cow-002"),
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
    assert parsed["Subject"].startswith("[Namazu research] critical activity alarm at Farm A")
    plain = parsed.get_body(("plain",)).get_content()
    rich = parsed.get_body(("html",)).get_content()
    assert DISCLAIMER in plain and DISCLAIMER in rich
    assert "ab" * 32 in plain and "3.25" in rich


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
    "address", ["vet@example.org\r\nBcc: x@example.org", "no-at-sign", "a b@example.org", ""]
)
def test_bad_addresses_are_refused(address):
    with pytest.raises(MailAddressError):
        build_message("namazu@example.org", address, "s", "t", "<p>t</p>")


def test_clean_header_text_removes_controls_and_caps_length():
    assert clean_header_text("a\r\nb\tc\x00d\u202ee") == "a b c d e"
    assert len(clean_header_text("x" * 500)) == 80


def test_digest_lists_every_alarm():
    alarms = [_summary(series=f"cow-{i}", kind="animal", severity="info") for i in range(5)]
    subject, text, html_body = render_alert(alarms)
    assert subject == "[Namazu research] digest: 5 activity alarms at Farm A"
    assert all(f"animal cow-{i}" in text for i in range(5))
    assert html_body.count("<tr>") == 6
