"""The sequence ledger: the digest first received under each activity sequence number,
kept in the state store (``message_digests``) so that every ingest worker, before and
after a restart, tells an identical re-send from a conflicting one.

``claim(engine, entries, now)`` records a write batch's messages in one multi-row
insert-or-ignore (``INSERT ... ON CONFLICT DO NOTHING ... RETURNING`` on SQLite and
PostgreSQL) and reads back, in one select, the digest kept under each key it did not
insert: a key whose kept digest is another than the message's is a conflict, the first
values stay. Concurrent workers
are safe: the primary key lets exactly one first digest in.

``prune(engine, older_than)`` deletes the rows first seen before a time, which bounds
the table (``ingest.seq_ledger_retention_days``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Engine, delete, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite

from namazu.server.store.state import MessageDigest

__all__ = ["CHUNK_ROWS", "DigestKey", "claim", "prune"]

#: A message's identity: farm, gateway, boot_id ("" when the gateway sends none), seq.
DigestKey = tuple[str, str, str, int]

#: Keys per statement: SQLAlchemy's page of multi-row VALUES (``insertmanyvalues``),
#: well under SQLite's bound-parameter limit (32,766) at 6 parameters a row; a batch of
#: up to this many messages costs one insert and at most one select.
CHUNK_ROWS = 1_000


def _insert_ignoring_duplicates(engine: Engine):  # noqa: ANN202 - dialect-specific Insert
    if engine.dialect.name == "postgresql":
        return postgresql.insert(MessageDigest)
    if engine.dialect.name == "sqlite":
        return sqlite.insert(MessageDigest)
    raise ValueError(f"the sequence ledger needs SQLite or PostgreSQL, not {engine.dialect.name!r}")


def claim(
    engine: Engine, entries: Sequence[tuple[DigestKey, bytes]], now: datetime
) -> dict[DigestKey, bytes]:
    """Record each (key, 16-byte digest) not yet in the ledger, first seen at ``now``
    [aware UTC]; return the digest the ledger keeps under every key of ``entries`` (the
    entry's own unless another came first; within ``entries`` the earliest comes first).

    One insert-or-ignore with RETURNING per ``CHUNK_ROWS`` keys (sent as multi-row
    VALUES, a statement compiled once), and one select only for the keys it did not
    insert (re-sends). Raises SQLAlchemyError when the store fails: the caller must
    retry, never skip the check."""
    first: dict[DigestKey, bytes] = {}
    for key, digest in entries:
        first.setdefault(key, digest)  # within a batch too, the earliest comes first
    columns = (MessageDigest.farm, MessageDigest.gateway, MessageDigest.boot_id, MessageDigest.seq)
    statement = (
        _insert_ignoring_duplicates(engine)
        .on_conflict_do_nothing(index_elements=["farm", "gateway", "boot_id", "seq"])
        .returning(*columns)
    )
    kept: dict[DigestKey, bytes] = {}
    unique = list(first.items())
    for start in range(0, len(unique), CHUNK_ROWS):
        chunk = unique[start : start + CHUNK_ROWS]
        rows = [
            {
                "farm": farm,
                "gateway": gateway,
                "boot_id": boot_id,
                "seq": seq,
                "digest": digest,
                "first_seen": now,
            }
            for (farm, gateway, boot_id, seq), digest in chunk
        ]
        with engine.begin() as connection:
            inserted = {tuple(row) for row in connection.execute(statement, rows)}
            known = [key for key, _ in chunk if key not in inserted]
            if known:
                found = connection.execute(
                    select(*columns, MessageDigest.digest).where(tuple_(*columns).in_(known))
                )
                for farm, gateway, boot_id, seq, digest in found:
                    kept[(farm, gateway, boot_id, seq)] = bytes(digest)
        for key, digest in chunk:
            if key in inserted:
                kept[key] = digest
    return kept


def prune(engine: Engine, older_than: datetime) -> int:
    """Delete the ledger rows first seen before ``older_than`` [aware UTC]; returns how
    many went."""
    with engine.begin() as connection:
        result = connection.execute(
            delete(MessageDigest).where(MessageDigest.first_seen < older_than)
        )
        return result.rowcount or 0
