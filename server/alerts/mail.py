"""Alert e-mails: the only module that speaks SMTP.

Messages are built with ``email.message.EmailMessage`` and ``email.policy.SMTP`` (CRLF
line ends, RFC 2047 encoding of non-ASCII headers). Header values never come straight
from data: every name that reaches a subject (animal, gateway, farm) passes through
``clean_header_text``, which removes CR, LF and every other control or format
character, so a crafted name cannot add a header or split the message. Bodies are
plain text plus HTML (every value ``html.escape``-d), and both say
"Research signal, not an earthquake prediction."

Transport: ``SmtpSender`` speaks plain SMTP, STARTTLS or implicit TLS (SSL), with
optional AUTH. Failures are split into ``MailTemporaryError`` (server unreachable,
4xx: try again later) and ``MailPermanentError`` (5xx: this message will never go).
"""

from __future__ import annotations

import html
import re
import smtplib
import ssl
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid
from typing import Any

DISCLAIMER = "Research signal, not an earthquake prediction."

#: A deliberately plain address check: one @, no whitespace, no control characters.
_ADDRESS = re.compile(r"^[^@\s<>,;:\"()\[\]\\]+@[A-Za-z0-9.-]+\.?[A-Za-z0-9-]*$")

MAX_NAME_CHARS = 80


class MailError(Exception):
    """Base class of e-mail failures."""


class MailAddressError(MailError, ValueError):
    """A recipient or sender address is not a plain ``local@domain`` address."""


class MailTemporaryError(MailError):
    """The mail server is unreachable or answered 4xx: keep the mail, retry later."""


class MailPermanentError(MailError):
    """The mail server refused the message with a 5xx code: retrying will not help."""


def clean_header_text(value: Any, max_chars: int = MAX_NAME_CHARS) -> str:
    """A name made safe for a header: control/format characters (CR, LF, TAB, NUL,
    bidi overrides...) become spaces, runs of spaces collapse, length is capped."""
    text = "".join(
        " " if unicodedata.category(ch) in {"Cc", "Cf", "Zl", "Zp"} else ch for ch in str(value)
    )
    text = " ".join(text.split())
    if len(text) > max_chars:
        text = text[: max_chars - 1] + "…"
    return text


def check_address(address: str) -> str:
    """The address unchanged when it is a plain ``local@domain``; MailAddressError else."""
    if not isinstance(address, str) or not _ADDRESS.match(address) or len(address) > 254:
        raise MailAddressError(f"not a plain e-mail address: {address!r}")
    return address


def build_message(
    sender: str,
    recipient: str,
    subject: str,
    text: str,
    html_body: str,
    message_id: str | None = None,
    date: datetime | None = None,
) -> EmailMessage:
    """A multipart/alternative message (text + HTML) with sanitised headers.

    subject : cleaned with ``clean_header_text`` (up to 200 characters).
    message_id : a stable ``<...>`` Message-ID (for de-duplication by the receiver);
        one is made when None. date : the Date header [UTC]; default now.
    Raises MailAddressError for a bad sender or recipient.
    """
    message = EmailMessage(policy=SMTP)
    message["From"] = check_address(sender)
    message["To"] = check_address(recipient)
    message["Subject"] = clean_header_text(subject, max_chars=200)
    message["Date"] = format_datetime(date or datetime.now(UTC))
    message["Message-ID"] = clean_header_text(message_id or make_msgid(domain="namazu"), 250)
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(text)
    message.add_alternative(html_body, subtype="html")
    return message


@dataclass(frozen=True)
class AlarmSummary:
    """What an alert e-mail says about one alarm (all times UTC ISO 8601)."""

    farm: str
    farm_name: str
    series: str
    kind: str
    severity: str
    start: str
    opened_at: str
    peak_ratio: float
    animals_reporting: int
    animals_total: int
    animals_involved: Sequence[str]
    log_hash: str | None

    @classmethod
    def from_alarm(cls, alarm: Mapping[str, Any], farm_name: str = "") -> AlarmSummary:
        """From ``Alarm.to_dict()``."""
        return cls(
            farm=str(alarm["farm"]),
            farm_name=farm_name or str(alarm["farm"]),
            series=str(alarm["series"]),
            kind=str(alarm["kind"]),
            severity=str(alarm.get("severity") or "info"),
            start=str(alarm["start"]),
            opened_at=str(alarm.get("opened_at") or alarm["start"]),
            peak_ratio=float(alarm.get("peak_ratio") or 0.0),
            animals_reporting=int(alarm.get("animals_reporting") or 0),
            animals_total=int(alarm.get("animals_total") or 0),
            animals_involved=tuple(alarm.get("animals_involved") or ()),
            log_hash=alarm.get("log_hash"),
        )


def _describe(kind: str, series: str) -> str:
    return {
        "animal": f"animal {series}",
        "species": f"species group {series.removeprefix('species:')}",
        "herd": "whole herd (collective activity)",
        "quorum": "herd quorum (many animals at once)",
    }.get(kind, series)


def render_alert(alarms: Sequence[AlarmSummary]) -> tuple[str, str, str]:
    """(subject, text, html) of an alert about one or more alarms of one farm.

    One alarm gives an alert; several give a digest. Every name is cleaned for the
    subject and escaped in the HTML.
    """
    if not alarms:
        raise ValueError("render_alert needs at least one alarm")
    first = alarms[0]
    farm = clean_header_text(first.farm_name)
    if len(alarms) == 1:
        subject = (
            f"[Namazu research] {first.severity} activity alarm at {farm}: "
            f"{clean_header_text(_describe(first.kind, first.series))}"
        )
    else:
        subject = f"[Namazu research] digest: {len(alarms)} activity alarms at {farm}"
    text_lines = [DISCLAIMER, ""]
    text_lines.append(
        "Sustained activity surges were detected by the a-priori rule. They are a research "
        "signal under evaluation; they do not predict an earthquake."
    )
    text_lines.append("")
    rows_html = []
    for alarm in alarms:
        what = clean_header_text(_describe(alarm.kind, alarm.series), 120)
        involved = ", ".join(clean_header_text(a, 40) for a in alarm.animals_involved[:20])
        more = len(alarm.animals_involved) - 20
        if more > 0:
            involved += f" and {more} more"
        text_lines += [
            f"- {clean_header_text(alarm.farm_name)}: {what} ({alarm.severity})",
            f"  start {alarm.start}, opened {alarm.opened_at}, "
            f"peak {alarm.peak_ratio:.2f}x baseline",
            f"  animals reporting {alarm.animals_reporting} of {alarm.animals_total}",
        ]
        if involved:
            text_lines.append(f"  animals involved: {involved}")
        if alarm.log_hash:
            text_lines.append(f"  alarm-log record SHA-256: {alarm.log_hash}")
        rows_html.append(
            "<tr>"
            + "".join(
                f"<td>{html.escape(str(cell))}</td>"
                for cell in (
                    clean_header_text(alarm.farm_name),
                    what,
                    alarm.severity,
                    alarm.start,
                    alarm.opened_at,
                    f"{alarm.peak_ratio:.2f}",
                    f"{alarm.animals_reporting} / {alarm.animals_total}",
                    involved,
                    alarm.log_hash or "",
                )
            )
            + "</tr>"
        )
    text_lines += [
        "",
        "The alarm-log hash lets anyone check with 'namazu verify-log' that the alarm was "
        "recorded before any earthquake it may later be compared with.",
        "",
        DISCLAIMER,
    ]
    header = "".join(
        f"<th>{name}</th>"
        for name in (
            "farm",
            "series",
            "severity",
            "start (UTC)",
            "opened (UTC)",
            "peak ratio",
            "reporting",
            "animals involved",
            "alarm-log SHA-256",
        )
    )
    html_body = (
        "<!DOCTYPE html><html><body>"
        f"<p><strong>{html.escape(DISCLAIMER)}</strong></p>"
        "<p>Sustained activity surges were detected by the a-priori rule. They are a "
        "research signal under evaluation; they do not predict an earthquake.</p>"
        f'<table border="1" cellpadding="4"><tr>{header}</tr>{"".join(rows_html)}</table>'
        "<p>The alarm-log hash lets anyone check with <code>namazu verify-log</code> that the "
        "alarm was recorded before any earthquake it may later be compared with.</p>"
        f"<p><strong>{html.escape(DISCLAIMER)}</strong></p>"
        "</body></html>"
    )
    return subject, "\n".join(text_lines) + "\n", html_body


class SmtpSender:
    """Delivers messages to one SMTP server.

    security : "none", "starttls" or "ssl" (implicit TLS).
    username/password : AUTH credentials (None = no AUTH).
    ssl_context : TLS context (default: system CAs with hostname checks).
    timeout_s : socket timeout [s].
    """

    def __init__(
        self,
        host: str,
        port: int,
        security: str = "starttls",
        username: str | None = None,
        password: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        timeout_s: float = 20.0,
    ):
        if security not in {"none", "starttls", "ssl"}:
            raise ValueError(f"mail.security must be none, starttls or ssl, got {security!r}")
        self.host = host
        self.port = port
        self.security = security
        self.username = username
        self.password = password
        self.ssl_context = ssl_context
        self.timeout_s = timeout_s

    @classmethod
    def from_config(cls, cfg: Any, ssl_context: ssl.SSLContext | None = None) -> SmtpSender:
        """Build from a ``namazu.server.core.config.MailConfig``."""
        return cls(
            cfg.host, cfg.port, cfg.security, cfg.username, cfg.password, ssl_context=ssl_context
        )

    def _context(self) -> ssl.SSLContext:
        return self.ssl_context or ssl.create_default_context()

    def _connect(self) -> smtplib.SMTP:
        if self.security == "ssl":
            client: smtplib.SMTP = smtplib.SMTP_SSL(
                self.host, self.port, timeout=self.timeout_s, context=self._context()
            )
        else:
            client = smtplib.SMTP(self.host, self.port, timeout=self.timeout_s)
        try:
            client.ehlo()
            if self.security == "starttls":
                client.starttls(context=self._context())
                client.ehlo()
            if self.username:
                client.login(self.username, self.password or "")
        except BaseException:
            _quietly_close(client)
            raise
        return client

    def send(self, message: EmailMessage) -> None:
        """Deliver one message; raise MailTemporaryError or MailPermanentError."""
        try:
            client = self._connect()
        except smtplib.SMTPAuthenticationError as exc:
            raise MailPermanentError(f"SMTP AUTH refused by {self.host}:{self.port}") from exc
        except (OSError, smtplib.SMTPException, ssl.SSLError) as exc:
            raise MailTemporaryError(
                f"SMTP server {self.host}:{self.port} unavailable: {exc}"
            ) from exc
        try:
            client.send_message(message)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            if all(400 <= code < 500 for code in codes):
                raise MailTemporaryError(f"recipient deferred: {exc.recipients}") from exc
            raise MailPermanentError(f"recipient refused: {exc.recipients}") from exc
        except smtplib.SMTPResponseException as exc:
            if 400 <= exc.smtp_code < 500:
                raise MailTemporaryError(f"SMTP {exc.smtp_code}: {exc.smtp_error!r}") from exc
            raise MailPermanentError(f"SMTP {exc.smtp_code}: {exc.smtp_error!r}") from exc
        except (OSError, smtplib.SMTPException) as exc:
            raise MailTemporaryError(f"SMTP delivery interrupted: {exc}") from exc
        finally:
            _quietly_close(client)


def _quietly_close(client: smtplib.SMTP) -> None:
    try:
        client.quit()
    except (OSError, smtplib.SMTPException):
        client.close()
