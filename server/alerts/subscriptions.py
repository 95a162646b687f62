"""Alert e-mail subscriptions and the outbox, for admins (``namazu subscriptions``).

A subscription names a recipient, a farm (or ``*`` = every farm), a species (or ``*``)
and a minimum severity (``info`` < ``warning`` < ``critical``; how an alarm gets its
severity: ``namazu.server.store.state.alarm_severity`` and docs/live-detection.md). The functions
here are shared by the CLI and the panel's admin page, so both validate alike::

    namazu subscriptions add vet@example.org --farm demo-farm --species cow --min-severity warning
    namazu subscriptions add office@example.org --farm '*'        # every alarm, every farm
    namazu subscriptions list
    namazu subscriptions remove 3
    namazu subscriptions outbox [--status queued|sent|failed]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from namazu.server.alerts.mail import MailAddressError, check_address
from namazu.server.core.cliargs import number_in_range
from namazu.server.core.config import ConfigError, load_config
from namazu.server.ingest.payload import SPECIES
from namazu.server.store.state import (
    SEVERITIES,
    OutboxMail,
    StateError,
    Subscription,
    get_by_id,
    init_db,
    session_scope,
)

#: Species a subscription can name; ``all`` (or ``*``) means every species.
SUBSCRIPTION_SPECIES = (*SPECIES, "all")

#: Outbox states shown by ``namazu subscriptions outbox`` and the admin page.
OUTBOX_STATUSES = ("queued", "sent", "failed")

_FARM = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class SubscriptionError(ValueError):
    """A subscription cannot be added or removed; the message names the bad value."""


def normalise_farm(farm: str, known: Sequence[str] | None = None) -> str:
    """``*`` or a farm id (topic-segment syntax; one of ``known`` when given)."""
    farm = (farm or "").strip()
    if farm in ("*", "all"):
        return "*"
    if not _FARM.match(farm):
        raise SubscriptionError(f"farm {farm!r} is not a farm id (letters, digits, _ . -) or '*'")
    if known is not None and farm not in known:
        raise SubscriptionError(f"farm {farm!r} is not configured; known: {', '.join(known)}")
    return farm


def normalise_species(species: str) -> str:
    """``*`` for all/``*``/empty, else one of cow, sheep, dog."""
    species = (species or "").strip().lower()
    if species in ("", "*", "all"):
        return "*"
    if species not in SPECIES:
        raise SubscriptionError(
            f"species {species!r} is not one of {', '.join(SUBSCRIPTION_SPECIES)}"
        )
    return species


def normalise_severity(severity: str) -> str:
    """One of info, warning, critical (default info when empty)."""
    severity = (severity or "info").strip().lower()
    if severity not in SEVERITIES:
        raise SubscriptionError(
            f"minimum severity {severity!r} is not one of {', '.join(SEVERITIES)}"
        )
    return severity


def add_subscription(
    db: Session,
    recipient: str,
    farm: str,
    species: str = "*",
    min_severity: str = "info",
    known_farms: Sequence[str] | None = None,
) -> Subscription:
    """Add a subscription after validating every field; return the new row (with id).

    recipient : a plain ``local@domain`` address. farm : farm id or ``*``.
    species : cow, sheep, dog or ``all``/``*``. min_severity : info, warning, critical.
    known_farms : when given, the farm must be one of them.
    Raises SubscriptionError naming the bad value, or when the same recipient already
    subscribes to the same farm and species.
    """
    try:
        address = check_address((recipient or "").strip())
    except MailAddressError as exc:
        raise SubscriptionError(str(exc)) from exc
    row = Subscription(
        recipient=address,
        farm=normalise_farm(farm, known_farms),
        species=normalise_species(species),
        min_severity=normalise_severity(min_severity),
        active=True,
    )
    existing = db.scalar(
        select(Subscription).where(
            Subscription.recipient == row.recipient,
            Subscription.farm == row.farm,
            Subscription.species == row.species,
        )
    )
    if existing is not None:
        raise SubscriptionError(
            f"{row.recipient} already subscribes to farm {row.farm}, species {row.species} "
            f"(id {existing.id}); remove it first to change the severity"
        )
    db.add(row)
    db.flush()
    return row


def list_subscriptions(db: Session) -> list[Subscription]:
    """Every subscription, ordered by recipient, farm, species."""
    return list(
        db.scalars(
            select(Subscription).order_by(
                Subscription.recipient, Subscription.farm, Subscription.species
            )
        )
    )


def remove_subscription(db: Session, subscription_id: int) -> Subscription:
    """Delete one subscription by id and return it; SubscriptionError when absent.

    Mails already composed for the recipient stay in the outbox.
    """
    row = get_by_id(db, Subscription, subscription_id)
    if row is None:
        raise SubscriptionError(f"no subscription with id {subscription_id}")
    db.delete(row)
    db.flush()
    return row


def outbox_mails(db: Session, status: str | None = None, limit: int = 200) -> list[OutboxMail]:
    """The newest outbox mails (``status`` = queued, sent or failed filters) [count <= limit]."""
    query = select(OutboxMail)
    if status is not None:
        if status not in OUTBOX_STATUSES:
            raise SubscriptionError(
                f"outbox status {status!r} is not one of {', '.join(OUTBOX_STATUSES)}"
            )
        if status == "sent":
            query = query.where(OutboxMail.sent_at.is_not(None))
        elif status == "failed":
            query = query.where(OutboxMail.failed_at.is_not(None))
        else:
            query = query.where(OutboxMail.sent_at.is_(None), OutboxMail.failed_at.is_(None))
    return list(db.scalars(query.order_by(OutboxMail.id.desc()).limit(limit)))


def _row(sub: Subscription) -> dict[str, Any]:
    return sub.to_dict()


def main(argv: list[str]) -> int:
    """Entry point of ``namazu subscriptions add|list|remove|outbox``; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="namazu subscriptions", description="Manage alert e-mail subscriptions."
    )
    parser.add_argument("--config", help="TOML file (default $NAMAZU_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True)
    add = sub.add_parser("add", help="subscribe a recipient")
    add.add_argument("email", help="recipient address (local@domain)")
    add.add_argument("--farm", required=True, help="farm id, or '*' for every farm")
    add.add_argument(
        "--species", default="all", help=f"one of {', '.join(SUBSCRIPTION_SPECIES)} (default all)"
    )
    add.add_argument(
        "--min-severity", default="info", help=f"one of {', '.join(SEVERITIES)} (default info)"
    )
    listing = sub.add_parser("list", help="list subscriptions")
    listing.add_argument("--json", action="store_true", help="one JSON document")
    remove = sub.add_parser("remove", help="remove a subscription by id")
    remove.add_argument("id", type=int)
    outbox = sub.add_parser("outbox", help="list outbox mails (newest first)")
    outbox.add_argument("--status", choices=OUTBOX_STATUSES, help="only mails in this state")
    outbox.add_argument(
        "--limit", type=number_in_range(int, 1), default=50, help="most mails shown (default 50)"
    )
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        engine = init_db(config.state.url)
        with session_scope(engine) as db:
            if args.command == "add":
                row = add_subscription(
                    db,
                    args.email,
                    args.farm,
                    args.species,
                    args.min_severity,
                    known_farms=[f.id for f in config.farms] or None,
                )
                print(
                    f"subscription {row.id} added: {row.recipient} farm {row.farm} "
                    f"species {row.species} from {row.min_severity}"
                )
            elif args.command == "list":
                rows = [_row(s) for s in list_subscriptions(db)]
                if args.json:
                    print(json.dumps(rows, indent=2))
                for r in [] if args.json else rows:
                    print(
                        f"{r['id']}\t{r['recipient']}\t{r['farm']}\t{r['species']}\t"
                        f"{r['min_severity']}\t{'active' if r['active'] else 'inactive'}"
                    )
            elif args.command == "remove":
                row = remove_subscription(db, args.id)
                print(f"subscription {row.id} removed ({row.recipient}, farm {row.farm})")
            else:
                for mail in outbox_mails(db, args.status, args.limit):
                    m = mail.to_dict()
                    print(
                        f"{m['id']}\t{m['status']}\t{m['recipient']}\t{m['farm']}\t"
                        f"attempts {m['attempts']}\t{m['created']}\t{m['last_error'] or ''}"
                    )
    except (ConfigError, StateError, SubscriptionError) as exc:
        print(f"namazu subscriptions: {exc}", file=sys.stderr)
        return 1
    except SQLAlchemyError as exc:
        print(
            f"namazu subscriptions: state store error: {exc.__class__.__name__}: {exc}",
            file=sys.stderr,
        )
        return 1
    return 0
