"""Gateway disk spool: every outgoing MQTT message is stored here before it is sent.

A message leaves the spool only after the broker's PUBACK (``ack``). Sequence
numbers come from an SQLite ``AUTOINCREMENT`` key, so they are never reused, not even
after every message was acknowledged and deleted or after a reboot.

Durability: WAL journal with ``synchronous=FULL``. In WAL mode ``NORMAL`` survives a
killed process but may lose the last commits on power loss; a gateway's typical
failure is a power cut and the spool holds the only copy of the data, so each
append transaction is fsynced. The cost is one fsync per *transaction*:
``append_built`` stores many messages in one, and the publisher acknowledges in
groups (``ack_many``). Losing an acknowledgement only causes a duplicate resend,
which the server's idempotent writes absorb.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL
);
"""


class SpoolError(RuntimeError):
    """The spool file cannot be opened or written."""


@dataclass(frozen=True, slots=True)
class SpooledMessage:
    """One stored message: its sequence number, MQTT topic and payload bytes."""

    seq: int
    topic: str
    payload: bytes


class Spool:
    """SQLite-backed FIFO of MQTT messages keyed by a persistent sequence number.

    path : SQLite file (created with its parent directory when missing).
    Thread-safe: one connection guarded by a lock.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30.0
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
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
        Returns the sequence numbers, ascending.
        """
        seqs: list[int] = []
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    seq = self._next_seq_locked()
                    for build in builders:
                        payload = build(seq)
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
        return seqs

    def ack(self, seq: int) -> None:
        """Delete the message with this sequence number (the broker acknowledged it)."""
        self.ack_many([seq])

    def ack_many(self, seqs: Iterable[int]) -> int:
        """Delete several acknowledged messages in one transaction; return how many."""
        rows = [(int(s),) for s in seqs]
        if not rows:
            return 0
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                cursor = self._db.executemany("DELETE FROM messages WHERE seq = ?", rows)
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise SpoolError(f"spool {self.path}: ack failed: {exc}") from exc
        return cursor.rowcount

    # --- reading -----------------------------------------------------------------
    def pending(self, limit: int = 1000, after_seq: int = 0) -> list[SpooledMessage]:
        """Up to ``limit`` unacknowledged messages with seq > ``after_seq``, in seq order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, topic, payload FROM messages WHERE seq > ? ORDER BY seq LIMIT ?",
                (int(after_seq), int(limit)),
            ).fetchall()
        return [SpooledMessage(int(s), str(t), bytes(p)) for s, t, p in rows]

    def depth(self) -> int:
        """Number of unacknowledged messages [messages]."""
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM messages").fetchone()[0])

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
