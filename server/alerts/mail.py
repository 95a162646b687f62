"""Alert e-mails: the only module that speaks SMTP.

Messages are built with ``email.message.EmailMessage`` and ``email.policy.SMTP`` (CRLF
line ends, RFC 2047 encoding of non-ASCII headers). Header values never come straight
from data: every name that reaches a subject (animal, gateway, farm) passes through
``clean_header_text``, which removes CR, LF and every other control or format
character, so a crafted name cannot add a header or split the message. Bodies are
plain text plus an equivalent HTML part (every value ``html.escape``-d), written for a
farmer woken at night: what happened and where in plain words, farm-local time first and
UTC after, a link to the alarm's page, what the signal means and does not mean
("Research signal, not an earthquake prediction."), what to check and where to record
it; hashes and rule details sit in a footer. Alarms of one episode make one entry.

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
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from namazu.analytics.episodes import group_episodes

DISCLAIMER = "Research signal, not an earthquake prediction."

#: A deliberately plain address check: one @, no whitespace, no control characters.
#: A plain local@domain: no space, control character, quoting or list syntax anywhere
#: (matched whole: ``$`` alone would let a trailing newline through).
_ADDRESS = re.compile(r"[^@\s<>,;:\"()\[\]\\\x00-\x1f\x7f]+@[A-Za-z0-9.-]+\.?[A-Za-z0-9-]*")

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
    if not isinstance(address, str) or not _ADDRESS.fullmatch(address) or len(address) > 254:
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
    """What an alert e-mail says about one alarm.

    start, opened_at, declared_at : ISO 8601 [UTC]; declared_at (when the rule could
    first know the episode) is shown when known, else opened_at.
    peak_ratio : highest activity / baseline over the episode [-].
    animals_surged : the animals that surged during the episode (for an animal alarm,
        the animal itself).
    timezone : IANA zone of the farm; times are shown in it first, UTC after.
    panel_url : base URL of the panel ("" when not configured: no links).
    """

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
    animals_surged: Sequence[str]
    log_hash: str | None
    alarm_id: int | None = None
    declared_at: str | None = None
    end: str | None = None
    timezone: str = "UTC"
    panel_url: str = ""
    rule_version: str = ""
    log_index: int | None = None

    @classmethod
    def from_alarm(
        cls,
        alarm: Mapping[str, Any],
        farm_name: str = "",
        timezone: str = "UTC",
        panel_url: str = "",
    ) -> AlarmSummary:
        """From ``Alarm.to_dict()``; ``animals_surged`` is used when the alarm carries
        it, else ``animals_involved``."""
        surged = alarm.get("animals_surged")
        if surged is None:
            surged = alarm.get("animals_involved") or ()
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
            animals_surged=tuple(str(a) for a in surged),
            log_hash=alarm.get("log_hash"),
            alarm_id=alarm.get("id"),
            declared_at=alarm.get("declared_at"),
            end=alarm.get("end") or alarm.get("last_anomalous"),
            timezone=timezone or "UTC",
            panel_url=panel_url or "",
            rule_version=str(alarm.get("rule_version") or ""),
            log_index=alarm.get("log_index"),
        )

    @property
    def noticed_at(self) -> str:
        """When the system knew of the episode [ISO 8601 UTC]."""
        return self.declared_at or self.opened_at

    def alarm_url(self) -> str:
        """The alarm's page in the panel, or "" without a panel URL or alarm id."""
        if not self.panel_url or self.alarm_id is None:
            return ""
        return f"{self.panel_url.rstrip('/')}/alarms/{int(self.alarm_id)}"


#: What the reader can check on the farm, in the order a farmer would walk it.
CHECKS = (
    "predators or stray dogs near the animals",
    "storms, thunder or strong wind",
    "handling: people, vehicles, transport, feeding or milking changes",
    "fences and gates: animals out, or something got in",
)

MEANING = (
    "This is a research signal: the animals moved much more than they usually do at "
    "this time of day. It is recorded so that researchers can later compare such surges "
    "with earthquakes. It is not an earthquake prediction and you need not act on it; "
    "most surges have ordinary causes."
)

VERIFY_NOTE = (
    "The SHA-256 is the alarm's record in the hash-chained alarm log; "
    "'namazu verify-log' shows it was recorded before any later comparison."
)

MAX_ANIMALS_LISTED = 20


def local_time(iso: str, timezone: str, with_date: bool = True) -> str:
    """``iso`` [UTC] as farm-local time first and UTC after, e.g.
    "Wed 1 May 2024, 04:44 CEST (02:44 UTC)"."""
    moment = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    local = moment.astimezone(zone)
    utc = moment.astimezone(UTC)
    clock = f"{local:%H:%M} {local.tzname()}"
    if with_date:
        clock = f"{local:%a} {local.day} {local:%b %Y}, {clock}"
    if zone.key == "UTC":
        return clock
    same_day = local.date() == utc.date()
    return f"{clock} ({utc:%H:%M} UTC{'' if same_day else f' on {utc.day} {utc:%b}'})"


def _who(episode: Sequence[AlarmSummary]) -> str:
    """Who surged in an episode, in plain words ("the herd", "cow-007", "3 animals")."""
    alarm = episode[0]
    if alarm.kind == "animal":
        n_animals = len({a.series for a in episode})
        return f"{n_animals} animals" if n_animals > 1 else clean_header_text(alarm.series, 60)
    if alarm.kind == "species":
        return f"the {clean_header_text(alarm.series.removeprefix('species:'), 30)}"
    if alarm.kind == "quorum":
        return "many animals at once"
    return "the herd"


def _surged(episode: Sequence[AlarmSummary]) -> list[str]:
    """The animals that surged in an episode, each once, sorted by name (numbers in
    names compare as numbers: cow-2 before cow-10)."""
    names = set()
    for alarm in episode:
        for name in [alarm.series] if alarm.kind == "animal" else alarm.animals_surged:
            names.add(clean_header_text(name, 40))
    return sorted(
        names, key=lambda n: [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", n)]
    )


def _episodes(alarms: Sequence[AlarmSummary]) -> list[list[AlarmSummary]]:
    """The alarms grouped into episodes (head first), oldest episode first."""
    rows = [
        {"farm": a.farm, "kind": a.kind, "start": a.start, "end": a.end or a.noticed_at, "i": i}
        for i, a in enumerate(alarms)
    ]
    grouped = group_episodes(rows)
    return [[alarms[int(row["i"])] for row in episode.alarms] for episode in reversed(grouped)]


@dataclass(frozen=True)
class _EpisodeText:
    """One episode in words: a headline, sentences, the animal list and the link."""

    headline: str
    sentences: list[str]
    animals: str
    url: str
    footer: str


def _describe_episode(episode: Sequence[AlarmSummary]) -> _EpisodeText:
    head = episode[0]
    farm = clean_header_text(head.farm_name)
    who = _who(episode)
    noticed = local_time(head.noticed_at, head.timezone)
    started = local_time(head.start, head.timezone, with_date=False)
    headline = f"Unusual activity: {who} at {farm}"
    sentences = [
        f"At {farm}, {who} moved much more than usual: from {started} activity rose to "
        f"{head.peak_ratio:.1f} times its usual level for that time of day.",
        f"Noticed at {noticed}.",
    ]
    surged = _surged(episode)
    animals = ""
    if head.kind != "animal" or len(surged) > 1:
        listed = ", ".join(surged[:MAX_ANIMALS_LISTED])
        if len(surged) > MAX_ANIMALS_LISTED:
            listed += f" and {len(surged) - MAX_ANIMALS_LISTED} more"
        reporting = (
            f" ({len(surged)} of {head.animals_reporting} reporting)"
            if head.animals_reporting
            else ""
        )
        animals = f"Animals that surged{reporting}: {listed or 'not recorded'}"
    ids = ", ".join(f"#{a.alarm_id}" for a in episode if a.alarm_id is not None)
    footer = (
        f"{farm}, {clean_header_text(head.series, 60)} ({head.kind}, {head.severity}); "
        f"alarms {ids or '-'}; rule {head.rule_version or '-'}; peak {head.peak_ratio:.2f}x "
        f"baseline; start {head.start}, declared {head.noticed_at} (UTC); alarm-log entry "
        f"{head.log_index if head.log_index is not None else '-'}, SHA-256 "
        f"{head.log_hash or '-'}"
    )
    if len(episode) > 1:
        footer += f"; the other {len(episode) - 1} alarms' hashes are on their pages"
    return _EpisodeText(headline, sentences, animals, head.alarm_url(), footer)


def _subject(episodes: list[list[AlarmSummary]]) -> str:
    head = episodes[0][0]
    farm = clean_header_text(head.farm_name)
    clock = local_time(head.noticed_at, head.timezone, with_date=False).split(" (")[0]
    if len(episodes) == 1:
        return f"Unusual activity: {_who(episodes[0])} at {farm} at {clock} (research alert)"
    return f"Unusual activity at {farm}: {len(episodes)} episodes since {clock} (research alert)"


_STYLE = (
    "body{margin:0;padding:12px;font:16px/1.45 -apple-system,'Segoe UI',Roboto,Arial,"
    "sans-serif;color:#1a1a1a;background:#fff}"
    ".wrap{max-width:600px;margin:0 auto}"
    "h1{font-size:20px;margin:0 0 8px}h2{font-size:17px;margin:20px 0 6px}"
    ".note{background:#fff6d6;border-left:4px solid #c9a400;padding:8px 10px}"
    ".episode{border-top:1px solid #ddd;padding-top:8px}"
    "a.button{display:inline-block;padding:10px 14px;margin:4px 0;background:#1f5fa8;"
    "color:#fff;text-decoration:none;border-radius:4px}"
    "ul{padding-left:20px}"
    "footer{margin-top:24px;font-size:12px;color:#666;overflow-wrap:anywhere;"
    "word-break:break-word}"
)


def render_alert(alarms: Sequence[AlarmSummary]) -> tuple[str, str, str]:
    """(subject, text, html) of an alert about one or more alarms of one farm.

    Alarms of one episode (a herd alarm and its animals' alarms) make one entry; several
    episodes make a digest. Times are farm-local first, UTC after. Every name is cleaned
    for the subject and escaped in the HTML; hashes and technical details are in a
    footer. The HTML is one column (max 600 px) that reads on a 390-px phone.
    """
    if not alarms:
        raise ValueError("render_alert needs at least one alarm")
    episodes = _episodes(alarms)
    texts = [_describe_episode(episode) for episode in episodes]
    subject = _subject(episodes)
    esc = html.escape

    lines = [DISCLAIMER, ""]
    parts = [f'<p class="note"><strong>{esc(DISCLAIMER)}</strong></p>']
    if len(texts) > 1:
        intro = f"{len(texts)} episodes of unusual animal activity:"
        lines += [intro, ""]
        parts.append(f"<h1>{esc(intro)}</h1>")
    for number, text in enumerate(texts, 1):
        title = text.headline if len(texts) == 1 else f"{number}. {text.headline}"
        lines += [title, *text.sentences]
        tag = "h1" if len(texts) == 1 else "h2"
        parts.append(f'<div class="episode"><{tag}>{esc(title)}</{tag}>')
        parts += [f"<p>{esc(sentence)}</p>" for sentence in text.sentences]
        if text.animals:
            lines.append(text.animals)
            parts.append(f"<p>{esc(text.animals)}</p>")
        if text.url:
            lines.append(f"See the alarm: {text.url}")
            parts.append(f'<p><a class="button" href="{esc(text.url)}">See the alarm</a></p>')
        lines.append("")
        parts.append("</div>")
    lines += ["WHAT IT MEANS", MEANING, "", "WHAT TO CHECK"]
    lines += [f"- {check}" for check in CHECKS]
    parts += [
        f"<h2>What it means</h2><p>{esc(MEANING)}</p>",
        "<h2>What to check</h2><ul>",
        *(f"<li>{esc(check)}</li>" for check in CHECKS),
        "</ul>",
    ]
    review = texts[0].url
    record = "Tell the researchers what you saw (or that all was calm)"
    if review:
        lines += ["", f"{record}: {review}#review"]
        parts.append(f'<p>{esc(record)}: <a href="{esc(review)}#review">record it here</a>.</p>')
    else:
        lines += ["", f"{record} on the alarm's page in the Namazu panel."]
        parts.append(f"<p>{esc(record)} on the alarm's page in the Namazu panel.</p>")
    lines += ["", "-- ", "Technical details (for researchers):"]
    lines += [f"* {text.footer}" for text in texts]
    lines.append(VERIFY_NOTE)
    parts.append(
        "<footer><p>Technical details (for researchers):</p>"
        + "".join(f"<p>{esc(text.footer)}</p>" for text in texts)
        + f"<p>{esc(VERIFY_NOTE)}</p></footer>"
    )
    html_body = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(subject)}</title><style>{_STYLE}</style></head>"
        f'<body><div class="wrap">{"".join(parts)}</div></body></html>'
    )
    return subject, "\n".join(lines) + "\n", html_body


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
