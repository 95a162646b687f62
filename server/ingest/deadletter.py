"""Dead letters: the document ingest publishes, the archive that keeps them, and
``namazu deadletter list|replay|purge``.

Every message ingest refuses, as a whole or in part, goes two ways:

- published to ``namazu/v1/deadletter/{farm}/{gateway}`` (QoS 1) for whoever watches
  live; a dead letter never exceeds the broker's packet limit: when the original is too
  big, the document carries its first bytes (``payload_truncated: true``) with the
  original's ``payload_sha256`` and ``payload_bytes``;
- recorded in the state store's ``dead_letters`` table (the original byte for byte),
  before the message is acknowledged. That archive is what ``namazu deadletter replay``
  re-publishes, filtered by reason and time, once the cause is fixed (a farm added to
  the configuration, a retention policy extended, a decoder bug fixed). Replayed
  messages take the normal path again: stored if now valid, dead-lettered again if not.

A row is one (topic, payload SHA-256, reason): a redelivered copy raises its ``count``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import Engine, delete, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from namazu.server.core.cliargs import number_in_range
from namazu.server.store.state import DeadLetter, init_db, session_scope

#: Dead letters never exceed this many bytes unless the broker allows more.
DEFAULT_MAX_PACKET_BYTES = 4 * 1024 * 1024
#: Room left for the MQTT fixed header, topic and properties of a dead letter [bytes].
_PACKET_OVERHEAD_BYTES = 1024
#: Refused animals / points listed one by one in a dead letter (the rest are counted).
MAX_LISTED = 100


class DeadLetterError(Exception):
    """The dead-letter archive could not be read or written; the message says why."""


def sha256_hex(payload: bytes) -> str:
    """SHA-256 of a payload, hex."""
    return hashlib.sha256(payload).hexdigest()


def deadletter_document(
    topic: str,
    payload: bytes,
    received_ms: int,
    reason: str,
    detail: str,
    *,
    max_bytes: int = DEFAULT_MAX_PACKET_BYTES,
    extra: dict[str, Any] | None = None,
) -> bytes:
    """The JSON document published to ``namazu/v1/deadletter/{farm}/{gateway}``.

    Fields: ``reason``, ``detail``, ``topic``, ``received_ms`` [UTC ms], ``payload_b64``,
    ``payload_bytes``, ``payload_sha256``, ``payload_truncated``, plus ``extra`` (e.g.
    ``rejected_animals``). max_bytes : the broker's packet limit [bytes]; when the whole
    document would exceed it, ``payload_b64`` holds only the original's first bytes.
    """
    document: dict[str, Any] = {
        "reason": reason,
        "detail": detail[:2000],
        "topic": topic[:512],
        "received_ms": received_ms,
        "payload_bytes": len(payload),
        "payload_sha256": sha256_hex(payload),
        "payload_truncated": False,
        "payload_b64": "",
    }
    document.update(extra or {})
    head = orjson.dumps(document)
    budget = max_bytes - _PACKET_OVERHEAD_BYTES - len(head) - len(topic.encode())
    fits = max(0, budget) // 4 * 3  # base64 turns 3 bytes into 4 characters
    if len(payload) > fits:
        document["payload_truncated"] = True
        payload = payload[:fits]
    document["payload_b64"] = base64.b64encode(payload).decode("ascii")
    return orjson.dumps(document)


@dataclass(frozen=True)
class DeadLetterFilter:
    """Which archived dead letters to list or replay.

    reasons : reason codes (empty = all). since, until : received time bounds [UTC].
    farm, gateway : exact ids (None = any). replayed : also those replayed before.
    """

    reasons: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    farm: str | None = None
    gateway: str | None = None
    replayed: bool = False
    limit: int | None = None


class DeadLetterArchive:
    """The ``dead_letters`` table of the state store (any SQLAlchemy URL or engine)."""

    def __init__(self, url_or_engine: str | Engine):
        try:
            self.engine = init_db(url_or_engine)
        except SQLAlchemyError as exc:
            raise DeadLetterError(f"dead-letter archive unavailable: {exc}") from exc

    def record(
        self,
        topic: str,
        farm: str,
        gateway: str,
        payload: bytes,
        received_ms: int,
        reason: str,
        detail: str,
        seq: int | None = None,
        boot_id: str | None = None,
    ) -> None:
        """Keep one dead letter (a copy already kept raises its count). Raises
        DeadLetterError when the store cannot be written (the caller must retry)."""
        digest = sha256_hex(payload)
        received = datetime.fromtimestamp(received_ms / 1000, UTC)
        key = (
            (DeadLetter.topic == topic[:512])
            & (DeadLetter.payload_sha256 == digest)
            & (DeadLetter.reason == reason)
        )
        for _ in range(3):
            try:
                with session_scope(self.engine) as session:
                    changed = session.execute(
                        update(DeadLetter)
                        .where(key)
                        .values(count=DeadLetter.count + 1, last_received_at=received)
                    ).rowcount
                    if not changed:
                        session.add(
                            DeadLetter(
                                topic=topic[:512],
                                farm=farm[:64],
                                gateway=gateway[:64],
                                reason=reason[:32],
                                detail=detail[:2000],
                                seq=seq,
                                boot_id=boot_id,
                                payload=payload,
                                payload_sha256=digest,
                                payload_bytes=len(payload),
                                received_at=received,
                                last_received_at=received,
                            )
                        )
                return
            except IntegrityError:
                continue  # another worker inserted the same letter at once: count it
            except SQLAlchemyError as exc:
                raise DeadLetterError(f"dead-letter archive not writable: {exc}") from exc
        raise DeadLetterError("dead-letter archive: the same letter kept colliding")

    def select(self, which: DeadLetterFilter) -> list[DeadLetter]:
        """Archived dead letters matching ``which``, oldest first."""
        query = select(DeadLetter).order_by(DeadLetter.received_at, DeadLetter.id)
        if which.reasons:
            query = query.where(DeadLetter.reason.in_(which.reasons))
        if which.since is not None:
            query = query.where(DeadLetter.received_at >= which.since)
        if which.until is not None:
            query = query.where(DeadLetter.received_at < which.until)
        if which.farm is not None:
            query = query.where(DeadLetter.farm == which.farm)
        if which.gateway is not None:
            query = query.where(DeadLetter.gateway == which.gateway)
        if not which.replayed:
            query = query.where(DeadLetter.replayed_at.is_(None))
        if which.limit is not None:
            query = query.limit(which.limit)
        with session_scope(self.engine) as session:
            return list(session.scalars(query))

    def mark_replayed(self, ids: Sequence[int], when: datetime) -> None:
        """Note that these dead letters were re-published at ``when``."""
        with session_scope(self.engine) as session:
            session.execute(
                update(DeadLetter)
                .where(DeadLetter.id.in_(list(ids)))
                .values(replayed_at=when, replays=DeadLetter.replays + 1)
            )

    def purge(self, before: datetime) -> int:
        """Delete dead letters last received before ``before``; returns how many."""
        with session_scope(self.engine) as session:
            return session.execute(
                delete(DeadLetter).where(DeadLetter.last_received_at < before)
            ).rowcount


def replay(
    archive: DeadLetterArchive,
    which: DeadLetterFilter,
    publish: Any,
    dry_run: bool = False,
) -> list[DeadLetter]:
    """Re-publish the original payload of every matching dead letter to its topic.

    publish : callable(topic, payload) that returns once the broker acknowledged the
    message (QoS 1). Identical payloads on one topic are published once. Returns the
    letters replayed (those that would be, with ``dry_run``).
    """
    letters = archive.select(which)
    seen: set[tuple[str, str]] = set()
    chosen = []
    for letter in letters:
        key = (letter.topic, letter.payload_sha256)
        if key not in seen:
            seen.add(key)
            chosen.append(letter)
    if dry_run:
        return chosen
    published: set[tuple[str, str]] = set()
    try:
        for letter in chosen:
            publish(letter.topic, letter.payload)
            published.add((letter.topic, letter.payload_sha256))
    finally:
        ids = [x.id for x in letters if (x.topic, x.payload_sha256) in published]
        if ids:
            archive.mark_replayed(ids, datetime.now(UTC))
    return chosen


def _utc(text: str) -> datetime:
    """ISO-8601 text as an aware UTC datetime (a time without zone is read as UTC)."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO-8601 time") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _iso(value: datetime | None) -> str:
    return "" if value is None else value.isoformat(timespec="seconds").replace("+00:00", "Z")


def main(argv: list[str]) -> int:
    """``namazu deadletter list|replay|purge``: the archive of refused messages."""
    from namazu.server.core.config import ConfigError, load_config

    parser = argparse.ArgumentParser(prog="namazu deadletter", description=main.__doc__)
    parser.add_argument("--config", help="TOML config file (default $NAMAZU_CONFIG)")
    sub = parser.add_subparsers(dest="action", required=True)
    for name, text in (
        ("list", "list archived dead letters"),
        ("replay", "re-publish the original messages to their topics (QoS 1)"),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--reason", action="append", default=[], help="reason code (repeatable)")
        cmd.add_argument("--since", type=_utc, help="received at or after (ISO-8601, UTC)")
        cmd.add_argument("--until", type=_utc, help="received before (ISO-8601, UTC)")
        cmd.add_argument("--farm", help="only this farm")
        cmd.add_argument("--gateway", help="only this gateway")
        cmd.add_argument("--limit", type=number_in_range(int, 1), help="at most this many")
        cmd.add_argument(
            "--include-replayed", action="store_true", help="also letters replayed before"
        )
        if name == "replay":
            cmd.add_argument("--dry-run", action="store_true", help="only say what would go")
    purge = sub.add_parser("purge", help="delete dead letters last received before a time")
    group = purge.add_mutually_exclusive_group(required=True)
    group.add_argument("--before", type=_utc, help="ISO-8601 time (UTC)")
    group.add_argument("--older-than-days", type=float, help="age [days]")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        archive = DeadLetterArchive(config.state.url)
    except (ConfigError, DeadLetterError) as exc:
        print(f"namazu deadletter: {exc}", file=sys.stderr)
        return 1
    if args.action == "purge":
        before = args.before or datetime.now(UTC) - timedelta(days=args.older_than_days)
        print(f"purged {archive.purge(before)} dead letters last received before {_iso(before)}")
        return 0
    which = DeadLetterFilter(
        tuple(args.reason),
        args.since,
        args.until,
        args.farm,
        args.gateway,
        args.include_replayed,
        args.limit,
    )
    if args.action == "list":
        for letter in archive.select(which):
            replayed = _iso(letter.replayed_at) or "never"
            print(
                f"{letter.id}\t{_iso(letter.received_at)}\t{letter.reason}\t{letter.topic}\t"
                f"{letter.payload_bytes} B\tx{letter.count}\treplayed {replayed}"
                f"\t{letter.detail[:160]}"
            )
        return 0
    if args.dry_run:
        chosen = replay(archive, which, None, dry_run=True)
        print(f"would replay {len(chosen)} messages")
        return 0
    try:
        with _Publisher(config) as publisher:
            chosen = replay(archive, which, publisher.publish)
    except (OSError, TimeoutError) as exc:
        print(f"namazu deadletter: replay stopped: {exc}", file=sys.stderr)
        return 1
    print(f"replayed {len(chosen)} messages")
    return 0


class _Publisher:
    """A QoS 1 publisher that waits for each PUBACK (for ``replay``)."""

    def __init__(self, config: Any, timeout_s: float = 30.0):
        from namazu.server.ingest.mqtt import MqttConsumer

        self.timeout_s = timeout_s
        self._mqtt = MqttConsumer.from_config(
            config.mqtt,
            client_id=f"namazu-deadletter-replay-{int(time.time() * 1000)}",
            subscriptions=[],
            on_message=lambda _m: None,
            receive_maximum=1,
        )

    def __enter__(self) -> _Publisher:
        self._mqtt.start()
        if not self._mqtt.wait_ready(self.timeout_s):
            self._mqtt.stop(end_session=True)
            raise TimeoutError(f"broker not reached within {self.timeout_s:.0f} s")
        return self

    def __exit__(self, *exc: object) -> None:
        self._mqtt.stop(end_session=True)

    def publish(self, topic: str, payload: bytes) -> None:
        mid = self._mqtt.publish(topic, payload)
        deadline = time.monotonic() + self.timeout_s
        delivered: set[int] = set()
        while mid not in delivered:
            delivered.update(self._mqtt.take_delivered())
            if time.monotonic() > deadline:
                raise TimeoutError(f"broker did not acknowledge the replay to {topic}")
            time.sleep(0.005)
