"""The append-only, hash-chained alarm log and ``namazu verify-log``.

One JSON object per line (JSONL, UTF-8). Each record is::

    {"index": 0, "prev_hash": "000…0", "time_written": "2024-05-01T12:00:00.123456Z",
     "alarm": {...identity, start, opened_at, peak ratio, animals...},
     "rule_version": "namazu-rule/1", "params": {...RuleParams...},
     "data": {"series": [...], "window": [start, end], "resolution_s": 60,
              "sample_count": 123, "values_sha256": "…"},
     "hash": "…"}

``hash`` is the SHA-256 (hex) of the record's canonical JSON without the ``hash`` key
(keys sorted, no spaces, UTF-8). ``prev_hash`` is the previous record's ``hash``
(64 zeros for the first record), so editing, inserting, reordering or deleting any record
breaks the chain at that point. A record is written when an alarm opens, before any
e-mail leaves; e-mails carry the record's hash, so the recipients' mailboxes are
independent witnesses that the record (and everything before it) existed at that time.
Deleting records at the end of the file is caught by comparing with what was recorded
elsewhere: every alarm in the state store carries the index and hash of its record
(``log_index``, ``log_hash``), and ``namazu verify-log`` checks by default that each of
them is in the log at its index; a head hash known from elsewhere (``--expect-head``,
e.g. one quoted in an e-mail) is checked too.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

GENESIS_HASH = "0" * 64
REQUIRED_KEYS = ("index", "prev_hash", "time_written", "alarm", "rule_version", "params", "data")


class AlarmLogError(Exception):
    """The alarm log cannot be appended to (damaged tail, unwritable file)."""


def canonical_json(value: Any) -> bytes:
    """Canonical JSON bytes: sorted keys, no whitespace, UTF-8, NaN refused."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def record_hash(record: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of a record's canonical JSON, without its ``hash`` key."""
    body = {key: value for key, value in record.items() if key != "hash"}
    return hashlib.sha256(canonical_json(body)).hexdigest()


def alarm_identity(alarm: Mapping[str, Any]) -> tuple[str, str, str, str]:
    """(farm, series, kind, start) — the identity of an alarm across restarts."""
    return (str(alarm["farm"]), str(alarm["series"]), str(alarm["kind"]), str(alarm["start"]))


def _utc_iso(now: datetime | None = None) -> str:
    stamp = (now or datetime.now(UTC)).astimezone(UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of ``verify``.

    ok : the whole chain is intact (and ends at ``expect_head`` when one was given).
    records : number of intact records before the first broken one [count].
    first_bad_index : 0-based line number of the first broken record, or None.
    reason : why that record is broken ("" when ok).
    head_hash : hash of the last intact record (GENESIS_HASH for an empty log).
    """

    ok: bool
    records: int
    first_bad_index: int | None
    reason: str
    head_hash: str


class AlarmLog:
    """Appender of one hash-chained JSONL log file.

    path : the log file; created (with its directory) on the first append.
    Appends take an exclusive ``flock`` and are fsynced, so several processes may share
    the file. ``append`` is idempotent per alarm identity: appending an alarm whose
    (farm, series, kind, start) is already logged returns the existing record's hash.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._known: dict[tuple[str, str, str, str], tuple[int, str]] | None = None
        self._scanned_bytes = 0
        self._head: tuple[int, str] = (-1, GENESIS_HASH)

    def _scan(self) -> None:
        """Read records appended since the last scan (by this or another process)."""
        if self._known is None:
            self._known = {}
            self._scanned_bytes = 0
            self._head = (-1, GENESIS_HASH)
        if not self.path.exists():
            return
        with self.path.open("rb") as handle:
            handle.seek(self._scanned_bytes)
            for line in handle:
                if not line.endswith(b"\n"):
                    raise AlarmLogError(
                        f"alarm log {self.path}: last record is incomplete; "
                        "run 'namazu verify-log' before appending"
                    )
                self._scanned_bytes += len(line)
                try:
                    record = json.loads(line)
                    identity = alarm_identity(record["alarm"])
                    entry = (int(record["index"]), str(record["hash"]))
                except (ValueError, KeyError, TypeError) as exc:
                    raise AlarmLogError(
                        f"alarm log {self.path}: unreadable record after byte "
                        f"{self._scanned_bytes - len(line)}; run 'namazu verify-log'"
                    ) from exc
                self._known[identity] = entry
                self._head = entry

    def find(self, alarm: Mapping[str, Any]) -> tuple[int, str] | None:
        """(index, hash) of the record of this alarm identity, or None."""
        self._scan()
        assert self._known is not None
        return self._known.get(alarm_identity(alarm))

    def head(self) -> tuple[int, str]:
        """(index, hash) of the last record; (-1, GENESIS_HASH) for an empty log."""
        self._scan()
        return self._head

    def append(
        self,
        alarm: Mapping[str, Any],
        rule_version: str,
        params: Mapping[str, Any],
        data: Mapping[str, Any],
        now: datetime | None = None,
    ) -> tuple[int, str]:
        """Append one alarm record; return its (index, hash).

        alarm : JSON-ready alarm fields; must hold farm, series, kind and start.
        rule_version, params : the rule that produced it.
        data : summary of the input samples (series, window, sample count, SHA-256).
        now : the write time recorded as ``time_written`` (default: the clock) [UTC].
        """
        [entry] = self.append_many([alarm], rule_version, params, data, now)
        return entry

    def append_many(
        self,
        alarms: Sequence[Mapping[str, Any]],
        rule_version: str,
        params: Mapping[str, Any],
        data: Mapping[str, Any],
        now: datetime | None = None,
    ) -> list[tuple[int, str]]:
        """Append one record per alarm, in order, under one lock with one fsync.

        The records are exactly those of ``append`` called once per alarm (same chain,
        same bytes); all of them share ``rule_version``, ``params``, ``data`` and the
        write time ``now`` [UTC]. An alarm whose identity is already logged (or appears
        earlier in ``alarms``) gets the existing record's (index, hash) and no new
        record. Returns (index, hash) per alarm, in the order given.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise AlarmLogError(f"alarm log {self.path}: cannot open: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._scan()
            assert self._known is not None
            try:
                # the parts shared by every record are encoded once
                shared = {
                    "data": canonical_json(dict(data)),
                    "params": canonical_json(dict(params)),
                    "rule_version": canonical_json(rule_version),
                    "time_written": canonical_json(_utc_iso(now)),
                }
            except (TypeError, ValueError) as exc:
                raise AlarmLogError(f"alarm record is not JSON-serialisable: {exc}") from exc
            index, prev_hash = self._head
            entries: list[tuple[int, str]] = []
            batch: dict[tuple[str, str, str, str], tuple[int, str]] = {}
            size = 0
            try:
                for alarm in alarms:
                    identity = alarm_identity(alarm)
                    existing = self._known.get(identity) or batch.get(identity)
                    if existing is None:
                        index += 1
                        line, prev_hash = _record_line(alarm, index, prev_hash, shared)
                        size += _write_all(fd, line)
                        existing = batch[identity] = (index, prev_hash)
                    entries.append(existing)
                if batch:
                    os.fsync(fd)
            except OSError as exc:  # the next scan reads whatever reached the file
                raise AlarmLogError(f"alarm log {self.path}: cannot write: {exc}") from exc
            self._known.update(batch)
            self._scanned_bytes += size
            if batch:
                self._head = (index, prev_hash)
            return entries
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def _record_line(
    alarm: Mapping[str, Any], index: int, prev_hash: str, shared: Mapping[str, bytes]
) -> tuple[list[bytes], str]:
    """The pieces of one record's line (canonical JSON with its hash, then a newline)
    and its hash. Byte-identical to ``canonical_json`` of the whole record: keys sorted,
    the shared values spliced in already encoded."""
    try:
        values = {
            **shared,
            "alarm": canonical_json(dict(alarm)),
            "index": canonical_json(index),
            "prev_hash": canonical_json(prev_hash),
        }
    except (TypeError, ValueError) as exc:
        raise AlarmLogError(f"alarm record is not JSON-serialisable: {exc}") from exc
    digest = hashlib.sha256()
    for piece in _object_pieces(values):
        digest.update(piece)
    record_digest = digest.hexdigest()
    values["hash"] = canonical_json(record_digest)
    return [*_object_pieces(values), b"\n"], record_digest


def _object_pieces(encoded: Mapping[str, bytes]) -> list[bytes]:
    """Canonical JSON of an object whose values are already encoded, as pieces."""
    pieces = []
    for key in sorted(encoded):
        pieces += [b"," if pieces else b"{", canonical_json(key), b":", encoded[key]]
    return [*pieces, b"}"] if pieces else [b"{}"]


def _write_all(fd: int, pieces: list[bytes]) -> int:
    """Write every byte of ``pieces`` to ``fd`` (retrying short writes); return the
    number of bytes written [B]."""
    data = memoryview(b"".join(pieces))
    size = len(data)
    while data:
        data = data[os.write(fd, data) :]
    return size


def iter_records(path: str | Path) -> Iterator[dict[str, Any]]:
    """The log's records in order (raises ValueError on an unreadable line)."""
    with Path(path).open("rb") as handle:
        for number, line in enumerate(handle):
            try:
                yield json.loads(line)
            except ValueError as exc:
                raise ValueError(f"record {number}: not JSON") from exc


def _record_problem(line: bytes, position: int, prev: str) -> tuple[str, str]:
    """("", hash) for an intact record at ``position`` after ``prev``; (reason, "") else."""
    if not line.endswith(b"\n"):
        return "incomplete last line (torn write or truncation)", ""
    try:
        record = json.loads(line)
    except ValueError:
        return "not valid JSON", ""
    if not isinstance(record, dict):
        return "not a JSON object", ""
    missing = [key for key in (*REQUIRED_KEYS, "hash") if key not in record]
    if missing:
        return f"missing field(s): {', '.join(missing)}", ""
    if record["index"] != position:
        return (
            f"index is {record['index']!r}, expected {position} "
            "(a record was deleted, inserted or reordered)",
            "",
        )
    if record["prev_hash"] != prev:
        return (
            "prev_hash does not match the previous record's hash "
            "(a record before it was deleted or replaced)",
            "",
        )
    try:
        actual = record_hash(record)
    except (TypeError, ValueError):
        return "content cannot be hashed", ""
    if actual != record["hash"]:
        return "hash does not match the record's content (record was edited)", ""
    return "", actual


@dataclass(frozen=True)
class ExpectedRecord:
    """A record known from elsewhere: the log must hold ``hash`` at ``index``.

    index : 0-based record index. hash : the record's hash (hex).
    label : what recorded it, for messages (e.g. "alarm farm-a/herd/herd/2024-05-01T…").
    """

    index: int
    hash: str
    label: str


def verify(
    path: str | Path,
    expect_head: str | None = None,
    expected: Sequence[ExpectedRecord] = (),
) -> VerifyResult:
    """Check the whole chain; name the first broken record.

    A record is broken when its line is not complete JSON, a field is missing, its
    ``index`` is not its position, its ``prev_hash`` is not the previous record's hash,
    or its ``hash`` does not match its content. With ``expect_head``, the chain must
    also contain that hash (a head quoted elsewhere); with ``expected`` (e.g. the
    alarms of the state store), each of those records must be at its index with its
    hash. Either catches records deleted from the end: the first missing record is
    named. Raises FileNotFoundError when the file does not exist.
    """
    prev = GENESIS_HASH
    count = 0
    seen_head = expect_head is None
    wanted: dict[int, ExpectedRecord] = {}
    for record in sorted(expected, key=lambda r: r.index):
        wanted.setdefault(record.index, record)
    with Path(path).open("rb") as handle:
        for position, line in enumerate(handle):
            reason, digest = _record_problem(line, position, prev)
            if reason:
                return VerifyResult(False, count, position, reason, prev)
            known = wanted.pop(position, None)
            if known is not None and known.hash != digest:
                reason = (
                    f"hash {digest} differs from {known.hash} recorded for {known.label} "
                    "(the record was replaced)"
                )
                return VerifyResult(False, count, position, reason, prev)
            prev = digest
            count += 1
            if prev == expect_head:
                seen_head = True
    if wanted:
        missing = list(wanted.values())
        beyond = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        return VerifyResult(
            False,
            count,
            count,
            f"record {count} is missing: the log ends after {count} records but "
            f"{missing[0].label} is recorded at index {missing[0].index}{beyond}: "
            "records were deleted from the end",
            prev,
        )
    if not seen_head:
        return VerifyResult(
            False,
            count,
            count,
            f"expected head {expect_head} not found: records were deleted from the end",
            prev,
        )
    return VerifyResult(True, count, None, "", prev)


def state_records(url: str) -> list[ExpectedRecord]:
    """The log records the state store at ``url`` knows of: (log_index, log_hash) of
    every logged alarm. Raises FileNotFoundError for a missing SQLite file (it is not
    created) and namazu.server.store.state.StateError when the store cannot be read."""
    from sqlalchemy import inspect, select
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    from namazu.server.store.state import Alarm, StateError, get_session, make_engine

    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StateError(f"state.url {url!r} is not a SQLAlchemy URL: {exc}") from exc
    database = parsed.database if parsed.get_backend_name() == "sqlite" else None
    on_disk = bool(database) and database != ":memory:" and not database.startswith("file:")
    if on_disk and not Path(database).exists():
        raise FileNotFoundError(database)
    engine = make_engine(url)
    try:
        if not inspect(engine).has_table(Alarm.__tablename__):
            return []
        with get_session(engine) as session:
            rows = session.execute(
                select(
                    Alarm.log_index,
                    Alarm.log_hash,
                    Alarm.farm,
                    Alarm.series,
                    Alarm.kind,
                    Alarm.start,
                ).where(Alarm.log_index.is_not(None), Alarm.log_hash.is_not(None))
            ).all()
    except SQLAlchemyError as exc:
        raise StateError(f"state store {url}: cannot read the alarms: {exc}") from exc
    return [
        ExpectedRecord(
            int(index),
            str(digest),
            f"alarm {farm}/{series}/{kind}/{_utc_iso(start).replace('.000000Z', 'Z')}",
        )
        for index, digest, farm, series, kind, start in rows
    ]


def main(argv: list[str]) -> int:
    """``namazu verify-log [PATH] [--expect-head HASH] [--state URL | --no-state]``:
    check the alarm log's chain and that every alarm of the state store has its record.

    The state store is ``--state`` or, when the log comes from a configuration (no PATH,
    or ``--config`` / ``$NAMAZU_CONFIG`` given), that configuration's ``state.url``.
    Exit 0 when intact, 1 when broken (naming the first broken or missing record), 2 when
    a file is missing or the configuration is invalid.
    """
    parser = argparse.ArgumentParser(prog="namazu verify-log", description=main.__doc__)
    parser.add_argument("path", nargs="?", help="log file (default scheduler.alarm_log_path)")
    parser.add_argument("--config", help="TOML file (default $NAMAZU_CONFIG)")
    parser.add_argument("--expect-head", help="a head hash known from elsewhere (e.g. a mail)")
    parser.add_argument("--state", help="state store URL (default state.url of the config)")
    parser.add_argument(
        "--no-state", action="store_true", help="check the chain without the state store"
    )
    args = parser.parse_args(argv)
    path, state_url = args.path, args.state
    if path is None or (state_url is None and (args.config or os.environ.get("NAMAZU_CONFIG"))):
        from namazu.server.core.config import ConfigError, load_config

        try:
            config = load_config(args.config)
        except ConfigError as exc:
            print(f"namazu verify-log: invalid configuration: {exc}", file=sys.stderr)
            return 2
        path = path or str(config.scheduler.alarm_log_path)
        state_url = state_url or config.state.url
    expected: list[ExpectedRecord] = []
    if state_url and not args.no_state:
        from namazu.server.store.state import StateError

        try:
            expected = state_records(state_url)
        except FileNotFoundError:
            print(f"namazu verify-log: state store {state_url}: no such file", file=sys.stderr)
            return 2
        except StateError as exc:
            print(f"namazu verify-log: {exc}", file=sys.stderr)
            return 2
    try:
        result = verify(path, expect_head=args.expect_head, expected=expected)
    except FileNotFoundError:
        print(f"namazu verify-log: {path}: no such file", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"namazu verify-log: {path}: cannot read: {exc}", file=sys.stderr)
        return 2
    if result.ok:
        against = f", {len(expected)} alarms of the state store present" if expected else ""
        print(f"{path}: OK, {result.records} records, head {result.head_hash}{against}")
        return 0
    print(
        f"{path}: BROKEN at record {result.first_bad_index}: {result.reason} "
        f"({result.records} intact records before it)"
    )
    return 1
