"""Alert decisions and the persistent outbox.

Three steps, each idempotent and restart-safe because every decision is a row in the
state store:

1. ``enqueue_notifications`` (inside the detection tick's transaction): for each opened
   alarm, one ``AlertNotification`` per matching subscription (farm or ``*``, species or
   ``*``, severity >= min_severity). Herd and quorum alarms match every species.
2. ``compose_due``: per recipient and farm, pending notifications become ONE mail when
   no mail went to that recipient for that farm within ``cooldown``; otherwise they wait
   and are sent together as a digest when the cooldown ends. A restless night thus gives
   at most one mail per recipient, farm and cooldown period.
3. ``deliver_outbox``: sends due mails; a mail is claimed (``next_attempt`` pushed by a
   lease) before sending and marked ``sent_at`` once accepted, so two workers do not
   send the same mail. Server down or 4xx: retried with exponential backoff, never
   dropped. 5xx (the server refuses this message or recipient): logged and retried
   after ``refused_retry`` (a day) until ``max_refused_attempts`` attempts were
   refused; the mail is then marked failed (``failed_at``, the server's answer in
   ``last_error``), stays visible in the outbox and is not retried again. A recipient
   address that is not a plain ``local@domain`` fails at once.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from namazu.server.alerts.mail import (
    AlarmSummary,
    MailAddressError,
    MailPermanentError,
    MailTemporaryError,
    SmtpSender,
    build_message,
    render_alert,
)
from namazu.server.core.metrics import MAILS_FAILED, MAILS_QUEUED, MAILS_SENT
from namazu.server.store.state import (
    Alarm,
    AlertNotification,
    OutboxMail,
    Subscription,
    session_scope,
    severity_rank,
)

log = logging.getLogger(__name__)

RETRY_BASE = timedelta(seconds=30)
RETRY_MAX = timedelta(hours=1)
PERMANENT_RETRY = timedelta(days=1)
CLAIM_LEASE = timedelta(minutes=5)


def subscription_matches(subscription: Subscription, alarm: Alarm) -> bool:
    """True when the subscription wants this alarm (farm, species, minimum severity)."""
    if not subscription.active:
        return False
    if subscription.farm not in ("*", alarm.farm):
        return False
    if subscription.species != "*" and alarm.species not in (None, subscription.species):
        return False
    return severity_rank(alarm.severity) >= severity_rank(subscription.min_severity)


def enqueue_notifications(session: Session, alarms: Sequence[Alarm]) -> int:
    """Record, for every opened alarm, which recipients are owed a mail; return how many
    new notifications were added (existing ones are kept: idempotent)."""
    if not alarms:
        return 0
    subscriptions = list(session.scalars(select(Subscription).where(Subscription.active)))
    added = 0
    for alarm in alarms:
        recipients = {s.recipient for s in subscriptions if subscription_matches(s, alarm)}
        for recipient in sorted(recipients):
            exists = session.scalars(
                select(AlertNotification).where(
                    AlertNotification.recipient == recipient,
                    AlertNotification.alarm_id == alarm.id,
                )
            ).first()
            if exists is None:
                session.add(
                    AlertNotification(recipient=recipient, farm=alarm.farm, alarm_id=alarm.id)
                )
                added += 1
    session.flush()
    return added


def compose_due(
    engine: Engine,
    now: datetime,
    cooldown: timedelta,
    farm_names: Mapping[str, str] | None = None,
    farm_timezones: Mapping[str, str] | None = None,
    panel_url: str = "",
) -> list[int]:
    """Turn pending notifications into outbox mails where the cooldown allows.

    now : the current (or simulated) time [UTC]. cooldown : minimum time between two
    mails to one recipient about one farm. farm_names : farm id -> display name.
    farm_timezones : farm id -> IANA zone (times are shown farm-local first).
    panel_url : the panel's base URL for links to alarm pages ("" = no links).
    Returns the ids of the mails created.
    """
    names = dict(farm_names or {})
    zones = dict(farm_timezones or {})
    created: list[int] = []
    with session_scope(engine) as session:
        pending = session.scalars(
            select(AlertNotification)
            .where(AlertNotification.outbox_id.is_(None))
            .order_by(AlertNotification.id)
        ).all()
        groups: dict[tuple[str, str], list[AlertNotification]] = defaultdict(list)
        for note in pending:
            groups[(note.recipient, note.farm)].append(note)
        for (recipient, farm), notes in groups.items():
            last = session.scalar(
                select(func.max(OutboxMail.created)).where(
                    OutboxMail.recipient == recipient, OutboxMail.farm == farm
                )
            )
            if last is not None and now - last < cooldown:
                continue
            alarms = [session.get(Alarm, n.alarm_id) for n in notes]
            summaries = [
                AlarmSummary.from_alarm(
                    a.to_dict(), names.get(farm, farm), zones.get(farm, "UTC"), panel_url
                )
                for a in alarms
                if a is not None
            ]
            subject, text, html_body = render_alert(summaries)
            key = hashlib.sha256(
                f"{recipient}|{','.join(str(n.id) for n in notes)}".encode()
            ).hexdigest()[:32]
            mail = OutboxMail(
                recipient=recipient,
                farm=farm,
                subject=subject,
                text=text,
                html=html_body,
                message_id=f"<alert-{key}@namazu>",
                created=now,
                next_attempt=now,
                alarm_ids=[n.alarm_id for n in notes],
            )
            session.add(mail)
            session.flush()
            for note in notes:
                note.outbox_id = mail.id
            created.append(mail.id)
        queued = session.scalar(
            select(func.count())
            .select_from(OutboxMail)
            .where(OutboxMail.sent_at.is_(None), OutboxMail.failed_at.is_(None))
        )
        MAILS_QUEUED.set(queued or 0)
    return created


def _backoff(attempts: int) -> timedelta:
    return min(RETRY_BASE * (2 ** max(0, attempts - 1)), RETRY_MAX)


def deliver_outbox(
    engine: Engine,
    sender: SmtpSender,
    mail_from: str,
    now: datetime,
    limit: int = 100,
    max_refused_attempts: int = 3,
    refused_retry: timedelta = PERMANENT_RETRY,
) -> tuple[int, int]:
    """Send the due outbox mails; return (sent, failed attempts).

    now : the current (or simulated) time [UTC]. limit : most mails tried per call.
    max_refused_attempts : attempts refused with 5xx after which a mail is marked
        failed for good [count, >= 1]. refused_retry : wait after a 5xx refusal.
    Stops at the first "server unavailable" failure (the rest wait for the next run).
    """
    if max_refused_attempts < 1:
        raise ValueError(f"max_refused_attempts must be >= 1, got {max_refused_attempts}")
    sent = failed = 0
    with session_scope(engine) as session:
        due = session.scalars(
            select(OutboxMail.id)
            .where(
                OutboxMail.sent_at.is_(None),
                OutboxMail.failed_at.is_(None),
                OutboxMail.next_attempt <= now,
            )
            .order_by(OutboxMail.id)
            .limit(limit)
        ).all()
    for mail_id in due:
        with session_scope(engine) as session:
            claimed = session.execute(
                update(OutboxMail)
                .where(
                    OutboxMail.id == mail_id,
                    OutboxMail.sent_at.is_(None),
                    OutboxMail.failed_at.is_(None),
                    OutboxMail.next_attempt <= now,
                )
                .values(next_attempt=now + CLAIM_LEASE)
            ).rowcount
        if claimed != 1:
            continue
        with session_scope(engine) as session:
            mail = session.get(OutboxMail, mail_id)
            assert mail is not None
            try:
                message = build_message(
                    mail_from,
                    mail.recipient,
                    mail.subject,
                    mail.text,
                    mail.html,
                    message_id=mail.message_id,
                    date=mail.created,
                )
                sender.send(message)
            except MailTemporaryError as exc:
                mail.attempts += 1
                mail.next_attempt = now + _backoff(mail.attempts)
                mail.last_error = str(exc)[:1000]
                failed += 1
                MAILS_FAILED.inc()
                log.warning("mail delayed", extra={"outbox_id": mail_id, "error": str(exc)})
                break
            except (MailPermanentError, MailAddressError) as exc:
                mail.attempts += 1
                mail.refused_attempts = (mail.refused_attempts or 0) + 1
                mail.last_error = str(exc)[:1000]
                final = (
                    isinstance(exc, MailAddressError)
                    or mail.refused_attempts >= max_refused_attempts
                )
                if final:
                    mail.failed_at = now
                else:
                    mail.next_attempt = now + refused_retry
                failed += 1
                MAILS_FAILED.inc()
                log.error(
                    "mail failed for good" if final else "mail refused; will retry",
                    extra={
                        "outbox_id": mail_id,
                        "recipient": mail.recipient,
                        "attempts": mail.attempts,
                        "error": str(exc),
                    },
                )
                continue
            mail.attempts += 1
            mail.sent_at = now
            mail.last_error = None
            sent += 1
            MAILS_SENT.inc()
    return sent, failed
