"""Gateway disk spool: every outgoing MQTT message is stored here before it is sent.

A message leaves the spool only when its delivery is confirmed: by an ingest receipt
saying it is stored (``confirm_ranges``, the default end-to-end mode) or, for a broker
without Namazu ingest, by the broker's PUBACK (``ack_many``). Sequence numbers come
from an SQLite ``AUTOINCREMENT`` key, so they are never reused, not even after every
message was confirmed and deleted or after a reboot.

Identity: each spool file gets a random ``boot_id`` when it is created, kept in the
file. Messages carry it, so the server can tell a gateway that lost its spool (new
boot id, numbering from 1 again) from one that replays old sequence numbers.

Disk budget (``max_bytes``, payload bytes): when an append would exceed it, the append
is refused with ``SpoolFull`` and nothing already stored is touched. The spool holds
data that was acknowledged to collars and not yet confirmed stored, so dropping the
oldest would lose acknowledged data; refusing the newest lets collars that keep
unacknowledged frames hold them (see ``bridge.py``). ``full`` reports the state until
a confirmation frees space.

Durability: WAL journal with ``synchronous=FULL``. In WAL mode ``NORMAL`` survives a
killed process but may lose the last commits on power loss; a gateway's typical
failure is a power cut and the spool holds the only copy of the data, so each
append transaction is fsynced. The cost is one fsync per *transaction*:
``append_built`` stores many messages in one, and confirmations are applied in
groups. Losing a confirmation only causes a duplicate resend, which the server's
idempotent writes absorb.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


class SpoolError(RuntimeError):
    """The spool file cannot be opened or written."""


class SpoolFull(SpoolError):
    """An append would exceed the spool's disk budget; nothing was stored."""


@dataclass(frozen=True, slots=True)
class SpooledMessage:
    """One stored message: its sequence number, MQTT topic and payload bytes."""

    seq: int
    topic: str
    payload: bytes


class Spool:
    """SQLite-backed FIFO of MQTT messages keyed by a persistent sequence number.

    path : SQLite file (created with its parent directory when missing).
    max_bytes : disk budget, total payload bytes held [B]; None = unlimited.
    Thread-safe: one connection guarded by a lock.
    """

    def __init__(self, path: str | Path, max_bytes: int | None = None) -> None:
        if max_bytes is not None and max_bytes <= 0:
            raise ValueError(f"max_bytes={max_bytes}; must be positive or None")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._full = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30.0
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('boot_id', ?), "
                "('boot_id_from_seq', ?)",
                (uuid.uuid4().hex, str(self._next_seq_locked())),
            )
            self._db.execute("COMMIT")
            meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
            self.boot_id: str = meta["boot_id"]
            #: Messages below this seq were spooled before the spool had a boot id (a
            #: spool older than boot ids): their receipts carry none.
            self.boot_id_from_seq = int(meta["boot_id_from_seq"])
            count, size = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(length(payload)), 0) FROM messages"
            ).fetchone()
            self._count, self._bytes = int(count), int(size)
        except sqlite3.Error as exc:
            raise SpoolError(f"cannot open spool {self.path}: {exc}") from exc

    # --- writing -----------------------------------------------------------------
    def append(self, topic: str, payload: bytes) -> int:
        """Store one message durably; return its sequence number (>= 1)."""
        return self.append_built(topic, [lambda _seq: payload])[0]

    def append_built(self, topic: str, builders: Sequence[Callable[[int], bytes]]) -> list[int]:
        """Store several messages in one durable transaction.

        builders : callables receiving the message's sequence number and returning the
            payload bytes (so that a payload can embed its own sequence number).
        Returns the sequence numbers, ascending. Raises SpoolFull (nothing stored)
        when the messages would take the spool beyond ``max_bytes``.
        """
        seqs: list[int] = []
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    seq = self._next_seq_locked()
                    added = 0
                    for build in builders:
                        payload = build(seq)
                        added += len(payload)
                        if self.max_bytes is not None and self._bytes + added > self.max_bytes:
                            self._full = True
                            raise SpoolFull(
                                f"spool {self.path}: {self._bytes + added:,} payload bytes "
                                f"would exceed the budget of {self.max_bytes:,}"
                            )
                        self._db.execute(
                            "INSERT INTO messages (seq, topic, payload) VALUES (?, ?, ?)",
                            (seq, topic, payload),
                        )
                        seqs.append(seq)
                        seq += 1
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise SpoolError(f"spool {self.path}: append failed: {exc}") from exc
            self._bytes += added
            self._count += len(seqs)
        return seqs

    def ack(self, seq: int) -> None:
        """Delete the message with this sequence number (its delivery is confirmed)."""
        self.ack_many([seq])

    def ack_many(self, seqs: Iterable[int]) -> int:
        """Delete several confirmed messages in one transaction; return how many."""
        return self.confirm_ranges((int(s), int(s)) for s in seqs)

    def confirm_ranges(self, ranges: Iterable[tuple[int, int]]) -> int:
        """Delete the messages whose seq lies in any inclusive ``(first, last)`` range,
        in one transaction (ranges may overlap or name deleted messages); return how
        many were deleted."""
        rows = [(int(lo), int(hi)) for lo, hi in ranges if int(lo) <= int(hi)]
        if not rows:
            return 0
        deleted = freed = 0
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                for lo, hi in rows:
                    sizes = self._db.execute(
                        "DELETE FROM messages WHERE seq BETWEEN ? AND ? RETURNING length(payload)",
                        (lo, hi),
                    ).fetchall()
                    deleted += len(sizes)
                    freed += sum(int(s[0]) for s in sizes)
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise SpoolError(f"spool {self.path}: confirmation failed: {exc}") from exc
            self._bytes -= freed
            self._count -= deleted
            if freed:
                self._full = False
        return deleted

    # --- reading -----------------------------------------------------------------
    def pending(self, limit: int = 1000, after_seq: int = 0) -> list[SpooledMessage]:
        """Up to ``limit`` unconfirmed messages with seq > ``after_seq``, in seq order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, topic, payload FROM messages WHERE seq > ? ORDER BY seq LIMIT ?",
                (int(after_seq), int(limit)),
            ).fetchall()
        return [SpooledMessage(int(s), str(t), bytes(p)) for s, t, p in rows]

    def get(self, seqs: Iterable[int]) -> list[SpooledMessage]:
        """The messages with these sequence numbers still in the spool, in seq order."""
        wanted = sorted({int(s) for s in seqs})
        out: list[SpooledMessage] = []
        with self._lock:
            for i in range(0, len(wanted), 500):
                chunk = wanted[i : i + 500]
                marks = ",".join("?" * len(chunk))
                out += [
                    SpooledMessage(int(s), str(t), bytes(p))
                    for s, t, p in self._db.execute(
                        f"SELECT seq, topic, payload FROM messages WHERE seq IN ({marks}) "
                        "ORDER BY seq",
                        chunk,
                    )
                ]
        return out

    def depth(self) -> int:
        """Number of unconfirmed messages [messages] (counted at open, then kept)."""
        return self._count

    @property
    def bytes(self) -> int:
        """Payload bytes held [B] (what the budget ``max_bytes`` counts)."""
        return self._bytes

    @property
    def full(self) -> bool:
        """True after an append was refused for the budget, until a confirmation frees
        space."""
        return self._full

    def next_seq(self) -> int:
        """The sequence number the next appended message will get."""
        with self._lock:
            return self._next_seq_locked()

    def last_seq(self) -> int:
        """The highest sequence number ever handed out (0 before the first)."""
        return self.next_seq() - 1

    def _next_seq_locked(self) -> int:
        row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'messages'").fetchone()
        return (int(row[0]) if row else 0) + 1

    def close(self) -> None:
        """Close the database (idempotent)."""
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._db.close()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
