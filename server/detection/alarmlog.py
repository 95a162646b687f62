"""The append-only, hash-chained alarm log and ``namazu verify-log``.

One JSON object per line (JSONL, UTF-8). Each record is::

    {"index": 0, "prev_hash": "000…0", "time_written": "2024-05-01T12:00:00.123456Z",
     "alarm": {...identity, start, opened_at, peak ratio, animals...},
     "rule_version": "namazu-rule/1", "params": {...RuleParams...},
     "data": {"series": [...], "window": [start, end], "resolution_s": 60,
              "sample_count": 123, "values_sha256": "…"},
     "key_id": "3f9a0c12d4e5b6a7", "signature": "<base64 Ed25519>", "hash": "…"}

``signature`` is the Ed25519 signature (``server.detection.logkeys``) of the record's
canonical JSON without ``signature`` and ``hash`` (every other field, ``key_id`` and any
field added later included), by the key ``key_id`` names. ``hash`` is the SHA-256 (hex)
of the record's canonical JSON without the ``hash`` key (keys sorted, no spaces, UTF-8).
``prev_hash`` is the previous record's ``hash`` (64 zeros for the first record), so
editing, inserting, reordering or deleting any record breaks the chain at that point.
A record is written when an alarm opens, before any e-mail leaves; e-mails carry the
record's hash, so the recipients' mailboxes are independent witnesses that the record
(and everything before it) existed at that time.
Deleting records at the end of the file is caught by comparing with what was recorded
elsewhere: every alarm in the state store carries the index and hash of its record
(``log_index``, ``log_hash``), and ``namazu verify-log`` checks by default that each of
them is in the log at its index; a head hash known from elsewhere (``--expect-head``,
e.g. one quoted in an e-mail) is checked too.

Without the signing key nobody can append a record that verifies, and the chain head is
time-stamped by an RFC 3161 TSA at every alarm opening (``timestamping``): a token for
record *i* proves that records 0..*i* existed at the TSA's time, and that time is the
earliest moment an alarm can be proven to have existed. A token for a record beyond the
end of the log proves that records were cut.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from namazu.server.detection import timestamping
from namazu.server.detection.logkeys import Keyring, LogKeyError, Signer

log = logging.getLogger(__name__)

GENESIS_HASH = "0" * 64
REQUIRED_KEYS = ("index", "prev_hash", "time_written", "alarm", "rule_version", "params", "data")
SIGNATURE_KEYS = ("key_id", "signature")


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


def signed_bytes(record: Mapping[str, Any]) -> bytes:
    """The bytes a record's signature covers: its canonical JSON without ``signature``
    and ``hash`` (every other field, present or future, is covered)."""
    return canonical_json({k: v for k, v in record.items() if k not in ("hash", "signature")})


def alarm_identity(alarm: Mapping[str, Any]) -> tuple[str, str, str, str]:
    """(farm, series, kind, start) — the identity of an alarm across restarts."""
    return (str(alarm["farm"]), str(alarm["series"]), str(alarm["kind"]), str(alarm["start"]))


def _utc_iso(now: datetime | None = None) -> str:
    stamp = (now or datetime.now(UTC)).astimezone(UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_written(text: Any) -> datetime | None:
    try:
        moment = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.astimezone(UTC) if moment.tzinfo is not None else None


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of ``verify``.

    ok : the whole chain is intact (and ends at ``expect_head`` when one was given).
    records : number of intact records before the first broken one [count].
    first_bad_index : 0-based line number of the first broken record, or None.
    reason : why that record is broken ("" when ok).
    head_hash : hash of the last intact record (GENESIS_HASH for an empty log).
    signatures_checked : every record's signature was checked against a keyring.
    tokens : every time-stamp token kept beside the log, checked (empty when no TSA
        CA was given: the tokens were then not checked).
    alarms : (index, alarm label, time_written) of every intact record.
    """

    ok: bool
    records: int
    first_bad_index: int | None
    reason: str
    head_hash: str
    signatures_checked: bool = False
    tokens: tuple[timestamping.TokenCheck, ...] = ()
    alarms: tuple[tuple[int, str, str], ...] = field(default=(), repr=False)

    def proven_by(self, index: int) -> datetime | None:
        """The earliest time [UTC] at which record ``index`` is proven to have existed:
        the earliest valid token over a record at ``index`` or after it (a later head
        covers every record before it); None when no token covers it."""
        return proof_time(self.tokens, index)


def proof_time(tokens: Sequence[timestamping.TokenCheck], index: int) -> datetime | None:
    """Earliest time of a valid token in ``tokens`` whose record index is ``index`` or
    later [UTC]; None when there is none."""
    times = [t.time for t in tokens if t.time is not None and not t.reason and t.index >= index]
    return min(times) if times else None


class AlarmLog:
    """Appender of one hash-chained JSONL log file.

    path : the log file; created (with its directory) on the first append.
    signer : signs every new record (None: records are written unsigned, and
        ``namazu verify-log`` refuses them unless told to check the chain only).
    on_append : called with the new head (index, hash) after records were appended and
        the lock released (the scheduler time-stamps the head there); its exceptions
        are logged, never raised: the record is written whatever happens to the stamp.
    Appends take an exclusive ``flock`` and are fsynced, so several processes may share
    the file. ``append`` is idempotent per alarm identity: appending an alarm whose
    (farm, series, kind, start) is already logged returns the existing record's hash.
    """

    def __init__(
        self,
        path: str | Path,
        signer: Signer | None = None,
        on_append: Callable[[int, str], Any] | None = None,
    ):
        self.path = Path(path)
        self.signer = signer
        self.on_append = on_append
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
                if self.signer is not None:
                    shared["key_id"] = canonical_json(self.signer.key_id)
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
                        line, prev_hash = _record_line(alarm, index, prev_hash, shared, self.signer)
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
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        if batch and self.on_append is not None:
            try:
                self.on_append(index, prev_hash)
            except Exception:  # noqa: BLE001 - the record stands; the hourly job retries
                log.warning("alarm log head not time-stamped", exc_info=True,
                            extra={"index": index, "hash": prev_hash})  # fmt: skip
        return entries


def _record_line(
    alarm: Mapping[str, Any],
    index: int,
    prev_hash: str,
    shared: Mapping[str, bytes],
    signer: Signer | None = None,
) -> tuple[list[bytes], str]:
    """The pieces of one record's line (canonical JSON with its signature and hash, then
    a newline) and its hash. Byte-identical to ``canonical_json`` of the whole record:
    keys sorted, the shared values spliced in already encoded."""
    try:
        values = {
            **shared,
            "alarm": canonical_json(dict(alarm)),
            "index": canonical_json(index),
            "prev_hash": canonical_json(prev_hash),
        }
    except (TypeError, ValueError) as exc:
        raise AlarmLogError(f"alarm record is not JSON-serialisable: {exc}") from exc
    if signer is not None:
        values["signature"] = canonical_json(signer.sign(b"".join(_object_pieces(values))))
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


def _record_problem(
    line: bytes, position: int, prev: str
) -> tuple[str, str, dict[str, Any] | None]:
    """("", hash, record) for an intact record at ``position`` after ``prev``;
    (reason, "", None) else. Signatures are checked by ``_signature_problem``."""
    if not line.endswith(b"\n"):
        return "incomplete last line (torn write or truncation)", "", None
    try:
        record = json.loads(line)
    except ValueError:
        return "not valid JSON", "", None
    if not isinstance(record, dict):
        return "not a JSON object", "", None
    missing = [key for key in (*REQUIRED_KEYS, "hash") if key not in record]
    if missing:
        return f"missing field(s): {', '.join(missing)}", "", None
    if record["index"] != position:
        return (
            f"index is {record['index']!r}, expected {position} "
            "(a record was deleted, inserted or reordered)",
            "",
            None,
        )
    if record["prev_hash"] != prev:
        return (
            "prev_hash does not match the previous record's hash "
            "(a record before it was deleted or replaced)",
            "",
            None,
        )
    try:
        actual = record_hash(record)
    except (TypeError, ValueError):
        return "content cannot be hashed", "", None
    if actual != record["hash"]:
        return "hash does not match the record's content (record was edited)", "", None
    return "", actual, record


def _signature_problem(
    record: Mapping[str, Any], keyring: Keyring, latest_written: datetime | None
) -> str:
    """ "" when the record is signed by a key of ``keyring`` valid at its
    ``time_written``, and that key had not been retired before a record earlier in the
    chain was written (``latest_written`` [UTC]); else the reason."""
    if any(key not in record for key in SIGNATURE_KEYS):
        return "not signed (no key_id/signature): it was not written by the scheduler's key"
    written = _parse_written(record["time_written"])
    if written is None:
        return f"time_written {record['time_written']!r} is not a UTC time"
    try:
        message = signed_bytes(record)
    except (TypeError, ValueError):
        return "content cannot be encoded"
    reason = keyring.check(str(record["key_id"]), message, str(record["signature"]), written)
    if reason:
        return reason
    key = keyring.keys[str(record["key_id"])]
    retired = key.valid_until
    if retired is not None and latest_written is not None and latest_written >= retired:
        return (
            f"signed with key {key.key_id}, retired at {_utc_iso(retired)}, "
            "after a record written later than that"
        )
    return ""


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
    keyring: Keyring | None = None,
    tsa_ca: str | Path | None = None,
) -> VerifyResult:
    """Check the whole log; name the first broken record.

    A record is broken when its line is not complete JSON, a field is missing, its
    ``index`` is not its position, its ``prev_hash`` is not the previous record's hash,
    its ``hash`` does not match its content, or (with ``keyring``) its signature is
    missing or invalid, by an unknown key, or by a key outside its validity. With
    ``expect_head``, the chain must also contain that hash (a head quoted elsewhere);
    with ``expected`` (e.g. the alarms of the state store), each of those records must be
    at its index with its hash. With ``tsa_ca`` (the CA file that certifies the TSA),
    every time-stamp token kept beside the log must verify over the hash of the record
    it names, and that record must exist. Each of these catches records deleted from the
    end. Raises FileNotFoundError when the file does not exist.
    """
    prev = GENESIS_HASH
    count = 0
    seen_head = expect_head is None
    latest_written: datetime | None = None
    wanted: dict[int, ExpectedRecord] = {}
    for record in sorted(expected, key=lambda r: r.index):
        wanted.setdefault(record.index, record)
    stamps: dict[int, list[Path]] = {}
    if tsa_ca is not None:
        for index, token in timestamping.stored_tokens(path):
            stamps.setdefault(index, []).append(token)
    checked: list[timestamping.TokenCheck] = []
    alarms: list[tuple[int, str, str]] = []

    def broken(position: int, reason: str) -> VerifyResult:
        return VerifyResult(
            False, count, position, reason, prev, keyring is not None, tuple(checked),
            tuple(alarms),
        )  # fmt: skip

    with Path(path).open("rb") as handle:
        for position, line in enumerate(handle):
            reason, digest, record = _record_problem(line, position, prev)
            if not reason and keyring is not None and record is not None:
                reason = _signature_problem(record, keyring, latest_written)
            if reason:
                return broken(position, reason)
            assert record is not None
            known = wanted.pop(position, None)
            if known is not None and known.hash != digest:
                return broken(
                    position,
                    f"hash {digest} differs from {known.hash} recorded for {known.label} "
                    "(the record was replaced)",
                )
            for token in stamps.pop(position, []):
                check = timestamping.check_token(token, digest, Path(tsa_ca or ""))
                checked.append(check)
                if check.reason:
                    return broken(position, f"time-stamp token {token.name} {check.reason}")
            written = _parse_written(record["time_written"])
            if written is not None and (latest_written is None or written > latest_written):
                latest_written = written
            prev = digest
            count += 1
            alarms.append((position, _record_label(record), str(record["time_written"])))
            if prev == expect_head:
                seen_head = True
    if stamps:
        index = min(stamps)
        return broken(
            count,
            f"record {index} is missing: time-stamp token {stamps[index][0].name} proves it "
            f"existed, but the log ends after {count} records: records were deleted from the "
            "end",
        )
    if wanted:
        missing = list(wanted.values())
        beyond = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        return broken(
            count,
            f"record {count} is missing: the log ends after {count} records but "
            f"{missing[0].label} is recorded at index {missing[0].index}{beyond}: "
            "records were deleted from the end",
        )
    if not seen_head:
        return broken(
            count, f"expected head {expect_head} not found: records were deleted from the end"
        )
    return VerifyResult(
        True, count, None, "", prev, keyring is not None, tuple(checked), tuple(alarms)
    )


def _record_label(record: Mapping[str, Any]) -> str:
    alarm = record.get("alarm")
    try:
        return "/".join(alarm_identity(alarm)) if isinstance(alarm, Mapping) else "?"
    except KeyError:
        return "?"


def replica_log_path(path: str | Path, replica_id: str | None) -> Path:
    """The alarm log of scheduler replica ``replica_id``: ``alarm-log.jsonl`` becomes
    ``alarm-log.<replica_id>.jsonl`` (each replica keeps its own chain); ``path`` itself
    without replicas."""
    path = Path(path)
    return path if replica_id is None else path.with_name(f"{path.stem}.{replica_id}{path.suffix}")


def state_records(url: str, log_id: str | None = None) -> list[ExpectedRecord]:
    """The log records the state store at ``url`` knows of: (log_index, log_hash) of
    every alarm logged in the log ``log_id`` (a scheduler replica's id; None: the one
    log of a single scheduler). Raises FileNotFoundError for a missing SQLite file (it
    is not created) and namazu.server.store.state.StateError when the store cannot be
    read."""
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
                ).where(
                    Alarm.log_index.is_not(None),
                    Alarm.log_hash.is_not(None),
                    Alarm.log_id.is_(None) if log_id is None else Alarm.log_id == log_id,
                )
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


class HeadStamper:
    """Time-stamps the log's chain head with an RFC 3161 TSA and keeps the tokens
    beside the log (``timestamping.token_directory``).

    log_path : the log. client : the TSA client.
    Called as ``stamper(index, head_hash)`` (``AlarmLog.on_append``) it stamps that head;
    ``stamp_head`` stamps the current head unless it already has a token (the hourly
    job: a head stamped once needs no second token).
    """

    def __init__(self, log_path: str | Path, client: timestamping.TimestampClient):
        self.log_path = Path(log_path)
        self.client = client

    def __call__(self, index: int, head_hash: str) -> Path:
        reply, when = self.client.stamp(head_hash)
        path = timestamping.save_token(self.log_path, index, head_hash, reply, when)
        log.info("alarm log head time-stamped",
                 extra={"index": index, "hash": head_hash, "tsa_time": _utc_iso(when)})  # fmt: skip
        return path

    def stamp_head(self, alarm_log: AlarmLog) -> Path | None:
        """Stamp the head of ``alarm_log`` unless it has a token; the token's path, or
        None when there was nothing to stamp."""
        index, head_hash = alarm_log.head()
        if index < 0:
            return None
        for token_index, token in timestamping.stored_tokens(self.log_path):
            if token_index == index and token.name.split("-")[1] == head_hash[:16]:
                return None
        return self(index, head_hash)


def load_signer(path: str | Path | None, log_path: str | Path) -> Signer | None:
    """The scheduler's signer from ``scheduler.alarm_log_signing_key`` (None when unset).
    LogKeyError when the key is unreadable or lies in the log's own directory (whoever
    can rewrite the log must not find the key beside it)."""
    if path is None:
        return None
    log_dir = Path(log_path).resolve().parent
    if Path(path).resolve().parent == log_dir:
        raise LogKeyError(
            f"signing key {path} lies in the alarm log's directory {log_dir}; "
            "keep it outside (e.g. /etc/namazu/keys/)"
        )
    return Signer.from_file(path)


def main(argv: list[str]) -> int:
    """``namazu verify-log [PATH] [--keys FILE | --chain-only] [--tsa-ca FILE]
    [--expect-head HASH] [--state URL | --no-state]``: check the alarm log's signatures,
    chain and time-stamps, that every alarm of the state store has its record, and print
    for each alarm the earliest time it is proven to have existed.

    Public keys come from ``--keys`` or ``scheduler.alarm_log_keyring``; the TSA's CA from
    ``--tsa-ca`` or ``scheduler.tsa_ca_file`` (without one the tokens are not checked and
    no alarm has a proven time). The state store is ``--state`` or, when the log comes
    from a configuration (no PATH, or ``--config`` / ``$NAMAZU_CONFIG`` given), that
    configuration's ``state.url``. Exit 0 when intact, 1 when broken (naming the first
    broken or missing record), 2 when a file is missing, no keyring is known (and
    ``--chain-only`` is not given) or the configuration is invalid.
    """
    parser = argparse.ArgumentParser(prog="namazu verify-log", description=main.__doc__)
    parser.add_argument("path", nargs="?", help="log file (default scheduler.alarm_log_path)")
    parser.add_argument("--config", help="TOML file (default $NAMAZU_CONFIG)")
    parser.add_argument("--keys", help="keyring of public keys (default from the config)")
    parser.add_argument(
        "--chain-only", action="store_true", help="do not check signatures (unsigned logs)"
    )
    parser.add_argument("--tsa-ca", help="CA file of the time-stamping authority")
    parser.add_argument("--expect-head", help="a head hash known from elsewhere (e.g. a mail)")
    parser.add_argument("--state", help="state store URL (default state.url of the config)")
    parser.add_argument(
        "--no-state", action="store_true", help="check the chain without the state store"
    )
    parser.add_argument(
        "--replica", help="the log of this scheduler replica (default scheduler.replica_id)"
    )
    args = parser.parse_args(argv)
    path, state_url, keys, tsa_ca = args.path, args.state, args.keys, args.tsa_ca
    replica = args.replica
    from_config = args.config or os.environ.get("NAMAZU_CONFIG")
    if path is None or from_config:
        from namazu.server.core.config import ConfigError, load_config

        try:
            config = load_config(args.config)
        except ConfigError as exc:
            print(f"namazu verify-log: invalid configuration: {exc}", file=sys.stderr)
            return 2
        replica = replica or config.scheduler.replica_id
        path = path or str(replica_log_path(config.scheduler.alarm_log_path, replica))
        state_url = state_url or config.state.url
        keys = keys or config.scheduler.alarm_log_keyring
        tsa_ca = tsa_ca or config.scheduler.tsa_ca_file
    keyring = None
    if not args.chain_only:
        if keys is None:
            print(
                "namazu verify-log: no public keys: give --keys FILE (or set "
                "scheduler.alarm_log_keyring), or --chain-only to check the chain alone",
                file=sys.stderr,
            )
            return 2
        try:
            keyring = Keyring.from_file(keys)
        except LogKeyError as exc:
            print(f"namazu verify-log: {exc}", file=sys.stderr)
            return 2
    if tsa_ca is not None and not Path(tsa_ca).is_file():
        print(f"namazu verify-log: TSA CA file {tsa_ca}: no such file", file=sys.stderr)
        return 2
    expected: list[ExpectedRecord] = []
    if state_url and not args.no_state:
        from namazu.server.store.state import StateError

        try:
            expected = state_records(state_url, log_id=replica)
        except FileNotFoundError:
            print(f"namazu verify-log: state store {state_url}: no such file", file=sys.stderr)
            return 2
        except StateError as exc:
            print(f"namazu verify-log: {exc}", file=sys.stderr)
            return 2
    try:
        result = verify(
            path, expect_head=args.expect_head, expected=expected, keyring=keyring, tsa_ca=tsa_ca
        )
    except FileNotFoundError:
        print(f"namazu verify-log: {path}: no such file", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"namazu verify-log: {path}: cannot read: {exc}", file=sys.stderr)
        return 2
    if not result.ok:
        print(
            f"{path}: BROKEN at record {result.first_bad_index}: {result.reason} "
            f"({result.records} intact records before it)"
        )
        return 1
    checks = ["signatures valid" if keyring else "signatures NOT checked (--chain-only)"]
    if tsa_ca is None:
        checks.append("time-stamps NOT checked (no TSA CA)")
    else:
        checks.append(f"{len(result.tokens)} time-stamp tokens valid")
    if expected:
        checks.append(f"{len(expected)} alarms of the state store present")
    print(f"{path}: OK, {result.records} records, head {result.head_hash}, {', '.join(checks)}")
    for index, label, written in result.alarms:
        proven = result.proven_by(index)
        proof = f"proven by {_utc_iso(proven)} (RFC 3161)" if proven else "not time-stamped"
        print(f"  record {index}: alarm {label}, written {written}, {proof}")
    return 0
