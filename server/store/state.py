"""The state store (SQLAlchemy 2): alarms, subscriptions, outbox, catalogue revisions,
job checkpoints and data health.

SQLite by default (one file under the data dir); any SQLAlchemy URL (PostgreSQL) when
several instances share the state. Every model lives on the one declarative ``Base``
(the web panel adds its users, reviews and farm events in ``namazu.server.store.models``), so
``init_db(url)`` creates every table at once.

All times are stored as UTC and come back as timezone-aware UTC ``datetime`` objects.
Text never holds U+0000 (PostgreSQL cannot): the store writes and compares U+FFFD in
its place, on every backend.

Usage::

    engine = init_db("sqlite:///var/state.sqlite")
    with session_scope(engine) as session:
        session.add(Alarm(...))
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    inspect,
)
from sqlalchemy import text as sql_text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.types import TypeDecorator

__all__ = [
    "ALARM_KINDS",
    "SEVERITIES",
    "STRONG_SURGE_FACTOR",
    "Alarm",
    "AlertNotification",
    "Base",
    "Checkpoint",
    "DataHealth",
    "DeadLetter",
    "MessageDigest",
    "OutboxMail",
    "QuakeRevision",
    "StateError",
    "alarm_severity",
    "Subscription",
    "get_session",
    "dispose_engine",
    "init_db",
    "make_engine",
    "session_scope",
    "severity_rank",
    "utcnow",
]

#: Kinds of alarm series: one animal, one species group, the herd's collective series,
#: the herd quorum (enough reporting animals anomalous at once).
ALARM_KINDS = ("animal", "species", "herd", "quorum")

#: Alarm severities in increasing order. An animal alarm is ``info``, a species-group
#: alarm ``warning``, a herd or quorum alarm ``critical``.
SEVERITIES = ("info", "warning", "critical")

SEVERITY_OF_KIND = {
    "animal": "info",
    "species": "warning",
    "herd": "critical",
    "quorum": "critical",
}

#: An animal alarm whose peak ratio at opening reaches this multiple of the rule's
#: threshold ratio (1 + increase_pct/100) is raised from ``info`` to ``warning``.
STRONG_SURGE_FACTOR = 2.0


def alarm_severity(kind: str, peak_ratio: float, increase_pct: float) -> str:
    """Severity of an alarm when it opens (what subscriptions filter on).

    kind : "animal", "species", "herd" or "quorum".
    peak_ratio : largest value / baseline of the run so far [-].
    increase_pct : the rule's threshold increase [%] (140 -> threshold ratio 2.4).
    Returns "critical" for herd and quorum alarms (the whole herd is restless),
    "warning" for a species group, or for one animal whose peak ratio is at least
    ``STRONG_SURGE_FACTOR`` times the threshold ratio (4.8 by default), and "info" for
    any other single-animal alarm. Raises ValueError for an unknown kind.
    """
    if kind not in SEVERITY_OF_KIND:
        raise ValueError(f"unknown alarm kind {kind!r}; valid: {', '.join(ALARM_KINDS)}")
    severity = SEVERITY_OF_KIND[kind]
    strong = STRONG_SURGE_FACTOR * (1.0 + increase_pct / 100.0)
    if severity == "info" and peak_ratio >= strong:
        return "warning"
    return severity


class StateError(Exception):
    """The state store cannot be opened (bad URL, unwritable file)."""


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def severity_rank(severity: str) -> int:
    """Rank of a severity name (0 = info); ValueError naming the valid names otherwise."""
    try:
        return SEVERITIES.index(severity)
    except ValueError:
        raise ValueError(f"unknown severity {severity!r}; valid: {', '.join(SEVERITIES)}") from None


class UTCDateTime(TypeDecorator):
    """A DateTime stored as naive UTC and returned as aware UTC (SQLite keeps no zone)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: state times must be timezone-aware")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    """Declarative base of every state-store table."""


class Alarm(Base):
    """One alarm: a run of anomalous samples of one series that reached min_duration.

    Identity is (farm, series, kind, start): re-processing the same window finds the
    same row instead of creating a second alarm.

    start, end : first and last anomalous sample of the episode [UTC].
    last_anomalous : last anomalous sample seen so far (equals ``end`` once closed) [UTC].
    declared_at : when the rule could first know the episode: the end of the sample at
        which the run's span reached min_duration [UTC]; nothing before it may be credited
        to the alarm. opened_at : when the alarm opened, equal to ``declared_at`` (older
        stores: the start of that sample) [UTC]; resolution_s : the grid step Δ the rule
        ran on [s]; closed_at : the first non-anomalous or missing sample [UTC].
    close_reason : "calm" (a sample below threshold), "gap" (a missing sample: never
        read as calm) or "no_baseline" (a sample whose baseline is undefined).
    peak_ratio : maximum of value / baseline over the episode [-].
    log_index, log_hash : the alarm's record in the alarm log; log_id : which log, the
        scheduler replica's id when several share the farms (None: the one log).
    animals_reporting : animals of the farm with data at ``opened_at`` [count].
    """

    __tablename__ = "alarms"
    __table_args__ = (
        UniqueConstraint("farm", "series", "kind", "start", name="uq_alarm_identity"),
        Index("ix_alarms_farm_start", "farm", "start"),
        Index("ix_alarms_state", "state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    farm: Mapped[str] = mapped_column(String(64))
    series: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16))
    species: Mapped[str | None] = mapped_column(String(16), nullable=True)
    severity: Mapped[str] = mapped_column(String(16), default="info")
    start: Mapped[datetime] = mapped_column(UTCDateTime)
    end: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_anomalous: Mapped[datetime] = mapped_column(UTCDateTime)
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime)
    declared_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    resolution_s: Mapped[int | None] = mapped_column(Integer, nullable=True)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    state: Mapped[str] = mapped_column(String(8), default="open")
    close_reason: Mapped[str | None] = mapped_column(String(16), nullable=True)
    peak_ratio: Mapped[float] = mapped_column(Float, default=0.0)
    animals_reporting: Mapped[int] = mapped_column(Integer, default=0)
    animals_total: Mapped[int] = mapped_column(Integer, default=0)
    animals_involved: Mapped[list[str]] = mapped_column(JSON, default=list)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    rule_version: Mapped[str] = mapped_column(String(64))
    log_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    log_index: Mapped[int | None] = mapped_column(Integer, nullable=True)
    log_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def to_dict(self) -> dict[str, Any]:
        """The alarm as JSON-ready values (times as ISO 8601 UTC strings)."""

        def iso(value: datetime | None) -> str | None:
            return None if value is None else value.isoformat().replace("+00:00", "Z")

        return {
            "id": self.id,
            "farm": self.farm,
            "series": self.series,
            "kind": self.kind,
            "species": self.species,
            "severity": self.severity,
            "start": iso(self.start),
            "end": iso(self.end),
            "last_anomalous": iso(self.last_anomalous),
            "opened_at": iso(self.opened_at),
            "declared_at": iso(self.declared_at),
            "resolution_s": self.resolution_s,
            "closed_at": iso(self.closed_at),
            "state": self.state,
            "close_reason": self.close_reason,
            "peak_ratio": self.peak_ratio,
            "animals_reporting": self.animals_reporting,
            "animals_total": self.animals_total,
            "animals_involved": list(self.animals_involved or []),
            "params": dict(self.params or {}),
            "rule_version": self.rule_version,
            "log_hash": self.log_hash,
            "log_index": self.log_index,
        }


class Subscription(Base):
    """An e-mail recipient's interest: a farm (or ``*``), a species (or ``*``) and a
    minimum severity (``info`` < ``warning`` < ``critical``)."""

    __tablename__ = "subscriptions"
    __table_args__ = (UniqueConstraint("recipient", "farm", "species", name="uq_subscription"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    recipient: Mapped[str] = mapped_column(String(254))
    farm: Mapped[str] = mapped_column(String(64), default="*")
    species: Mapped[str] = mapped_column(String(16), default="*")
    min_severity: Mapped[str] = mapped_column(String(16), default="info")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def to_dict(self) -> dict[str, Any]:
        """The subscription as JSON-ready values (time as ISO 8601 UTC)."""
        created = self.created_at
        return {
            "id": self.id,
            "recipient": self.recipient,
            "farm": self.farm,
            "species": self.species,
            "min_severity": self.min_severity,
            "active": bool(self.active),
            "created_at": None if created is None else created.isoformat().replace("+00:00", "Z"),
        }


class OutboxMail(Base):
    """A message waiting for (or done with) SMTP delivery; never deleted on failure.

    attempts : delivery attempts so far [count]; refused_attempts : those the server
    refused with a 5xx answer [count]; next_attempt : earliest retry [UTC];
    sent_at : set exactly once, when the server accepted the message [UTC];
    failed_at : set when the server refused the message for good (5xx after the
    configured number of attempts, or an unusable address) [UTC]; ``last_error`` then
    holds the server's answer and the mail is no longer retried.
    """

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_pending", "sent_at", "next_attempt"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    recipient: Mapped[str] = mapped_column(String(254))
    farm: Mapped[str] = mapped_column(String(64), default="")
    subject: Mapped[str] = mapped_column(String(998))
    text: Mapped[str] = mapped_column(Text)
    html: Mapped[str] = mapped_column(Text)
    message_id: Mapped[str] = mapped_column(String(255), unique=True)
    created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    alarm_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    refused_attempts: Mapped[int | None] = mapped_column(Integer, nullable=True, default=0)

    @property
    def status(self) -> str:
        """``sent``, ``failed`` (refused for good; ``last_error`` says why) or ``queued``."""
        if self.sent_at is not None:
            return "sent"
        if self.failed_at is not None:
            return "failed"
        return "queued"

    def to_dict(self) -> dict[str, Any]:
        """The mail's delivery record (no body), times as ISO 8601 UTC strings."""

        def iso(value: datetime | None) -> str | None:
            return None if value is None else value.isoformat().replace("+00:00", "Z")

        return {
            "id": self.id,
            "recipient": self.recipient,
            "farm": self.farm,
            "subject": self.subject,
            "status": self.status,
            "created": iso(self.created),
            "attempts": self.attempts,
            "refused_attempts": self.refused_attempts or 0,
            "next_attempt": iso(self.next_attempt),
            "sent_at": iso(self.sent_at),
            "failed_at": iso(self.failed_at),
            "last_error": self.last_error,
            "alarm_ids": list(self.alarm_ids or []),
        }


class AlertNotification(Base):
    """One alarm owed to one recipient; ``outbox_id`` is set once a mail carries it.

    The unique (recipient, alarm_id) pair makes enqueueing idempotent across restarts.
    """

    __tablename__ = "alert_notifications"
    __table_args__ = (UniqueConstraint("recipient", "alarm_id", name="uq_notification"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    recipient: Mapped[str] = mapped_column(String(254))
    farm: Mapped[str] = mapped_column(String(64))
    alarm_id: Mapped[int] = mapped_column(ForeignKey("alarms.id"))
    created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    outbox_id: Mapped[int | None] = mapped_column(ForeignKey("outbox.id"), nullable=True)


#: Longest catalogue source URL the store keeps whole [characters]; a longer one is
#: refused when configured (``namazu.server.catalogue.fdsn.resolve_service``).
MAX_SOURCE_URL = 2000


class QuakeRevision(Base):
    """One revision of one catalogue event as served by an FDSN service.

    A new row is stored whenever the served fields differ from the latest stored
    revision of the same (source, event_id); ``revision`` counts from 1.
    source : the service's name (``INGV``) or its whole URL [<= MAX_SOURCE_URL chars].
    time : origin time [UTC]; depth_km [km]; latitude/longitude [deg].
    """

    __tablename__ = "quake_revisions"
    __table_args__ = (
        UniqueConstraint("source", "event_id", "revision", name="uq_quake_revision"),
        Index("ix_quake_time", "time"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(String(MAX_SOURCE_URL))
    event_id: Mapped[str] = mapped_column(String(128))
    revision: Mapped[int] = mapped_column(Integer)
    fetched_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    time: Mapped[datetime] = mapped_column(UTCDateTime)
    latitude: Mapped[float] = mapped_column(Float)
    longitude: Mapped[float] = mapped_column(Float)
    depth_km: Mapped[float | None] = mapped_column(Float, nullable=True)
    magnitude: Mapped[float | None] = mapped_column(Float, nullable=True)
    mag_type: Mapped[str | None] = mapped_column(String(16), nullable=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    fields: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Checkpoint(Base):
    """A job's progress: the last processed time (and any small JSON state).

    name : the job's kind and what it runs on, e.g. ``detection:{farm}`` or
        ``catalog:{source URL}`` (hence as long as a source URL and its prefix).
    """

    __tablename__ = "checkpoints"

    name: Mapped[str] = mapped_column(String(MAX_SOURCE_URL + 64), primary_key=True)
    time: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    value: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DataHealth(Base):
    """Health of one gateway or animal: ``ok``, ``silent`` (no data for longer than
    stale_after_s) or ``offline`` (a gateway whose Last Will fired). Ingest adds one row
    per worker for its store path (farm ``_ingest``, kind ``store``): ``ok`` or the cause
    of refused writes (``credentials``, ``permission``, ``no_database``, ...)."""

    __tablename__ = "data_health"
    __table_args__ = (UniqueConstraint("farm", "kind", "name", name="uq_data_health"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    farm: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))  # "gateway" | "animal" | "store"
    name: Mapped[str] = mapped_column(String(128))
    species: Mapped[str | None] = mapped_column(String(16), nullable=True)
    gateway: Mapped[str | None] = mapped_column(String(64), nullable=True)
    last_seen: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="ok")
    since: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DeadLetter(Base):
    """A message ingest refused as a whole or in part, kept so it can be replayed.

    One row per (topic, payload SHA-256, reason): a redelivered or re-sent identical
    message raises ``count``. ``payload`` is the original message byte for byte.
    """

    __tablename__ = "dead_letters"
    __table_args__ = (
        UniqueConstraint("topic", "payload_sha256", "reason", name="uq_dead_letter"),
        Index("ix_dead_letters_received", "received_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    topic: Mapped[str] = mapped_column(String(512))
    farm: Mapped[str] = mapped_column(String(64))
    gateway: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text, default="")
    seq: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    boot_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    payload_sha256: Mapped[str] = mapped_column(String(64))
    payload_bytes: Mapped[int] = mapped_column(Integer)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    count: Mapped[int] = mapped_column(Integer, default=1)
    replays: Mapped[int] = mapped_column(Integer, default=0)
    replayed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class MessageDigest(Base):
    """The digest of the values first received under one activity sequence number, so
    that every ingest worker, before and after a restart, tells an identical re-send
    (silent) from a conflicting one (dead-lettered ``seq_conflict``).

    boot_id : the gateway's numbering epoch ("" for a gateway that sends none).
    digest : 16-byte BLAKE2b of the message's ``animals`` (see
        ``namazu.server.ingest.service.activity_digest``).
    first_seen : when the first copy was recorded [UTC]; rows older than
        ``ingest.seq_ledger_retention_days`` are pruned.
    """

    __tablename__ = "message_digests"
    __table_args__ = (Index("ix_message_digests_first_seen", "first_seen"),)

    farm: Mapped[str] = mapped_column(String(64), primary_key=True)
    gateway: Mapped[str] = mapped_column(String(64), primary_key=True)
    boot_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    digest: Mapped[bytes] = mapped_column(LargeBinary(16))
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


#: What the store writes (and compares) in place of U+0000 in text: PostgreSQL text
#: cannot hold NUL, so without it a NUL typed into a form (a user name at log-in, a
#: comment) failed there with an error while SQLite kept it; now both keep the same text.
NUL_REPLACEMENT = "\ufffd"


_CONTAINERS = (dict, list, tuple)


def _without_nul(value: Any) -> Any:
    """``value`` (a statement's parameters: str, dict, list or tuple of them) with every
    NUL character of its strings replaced by ``NUL_REPLACEMENT``; the same object when
    it has none (the common case costs one scan)."""
    if type(value) is str:
        return value.replace("\x00", NUL_REPLACEMENT) if "\x00" in value else value
    if isinstance(value, dict):
        for item in value.values():
            if type(item) in _CONTAINERS or (type(item) is str and "\x00" in item):
                return {key: _without_nul(item) for key, item in value.items()}
        return value
    if isinstance(value, (list, tuple)):
        return type(value)(_without_nul(item) for item in value)
    return value


def _replace_nul(
    _conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool
) -> tuple[str, Any]:
    return statement, _without_nul(parameters)


_ENGINES: dict[str, Engine] = {}


def make_engine(url: str) -> Engine:
    """An engine for a SQLAlchemy URL (one per URL per process, reused).

    SQLite files get their parent directory created, WAL journaling and a busy timeout
    so the scheduler and the panel can share one file. On every backend a NUL in a
    string parameter becomes ``NUL_REPLACEMENT``. Raises StateError on a bad URL.
    """
    if url in _ENGINES:
        return _ENGINES[url]
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StateError(f"state.url {url!r} is not a SQLAlchemy URL: {exc}") from exc
    kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            try:
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StateError(f"state.url {url!r}: cannot create directory: {exc}") from exc
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    else:
        kwargs["pool_pre_ping"] = True
    engine = create_engine(url, **kwargs)
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    event.listen(engine, "before_cursor_execute", _replace_nul, retval=True)
    _ENGINES[url] = engine
    return engine


def init_db(url: str | Engine) -> Engine:
    """Open the store and migrate it to the newest schema revision (idempotent); return
    the engine.

    The panel's tables (``namazu.server.store.models``) sit on the same ``Base`` and are
    registered when the ``store`` package is imported. The schema comes from the
    migrations (``namazu.server.store.migrate``); a table or nullable column that a model
    has and no revision yet creates is still added, so the store opens, while
    ``tests/server/test_migrations.py`` asks for the missing revision.
    """
    from namazu.server.store.migrate import upgrade

    engine = url if isinstance(url, Engine) else make_engine(url)
    upgrade(engine)
    Base.metadata.create_all(engine)
    _add_missing_columns(engine)
    return engine


def _add_missing_columns(engine: Engine) -> None:
    """Add nullable columns that newer versions put on existing tables (create_all only
    creates missing tables); a store made by an older version thus keeps working."""
    inspector = inspect(engine)
    for table in Base.metadata.sorted_tables:
        if not inspector.has_table(table.name):
            continue
        present = {column["name"] for column in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in present or not column.nullable:
                continue
            kind = column.type.compile(dialect=engine.dialect)
            with engine.begin() as connection:
                connection.execute(
                    sql_text(f'ALTER TABLE "{table.name}" ADD COLUMN "{column.name}" {kind}')
                )


def dispose_engine(url: str) -> None:
    """Close the pooled connections of ``url``'s engine and forget it (the next
    ``make_engine(url)`` opens a new one)."""
    engine = _ENGINES.pop(url, None)
    if engine is not None:
        _FACTORIES.pop(id(engine), None)
        engine.dispose()


_FACTORIES: dict[int, sessionmaker[Session]] = {}


def _factory(bind: Engine | sessionmaker[Session]) -> sessionmaker[Session]:
    if isinstance(bind, sessionmaker):
        return bind
    key = id(bind)
    if key not in _FACTORIES:
        _FACTORIES[key] = sessionmaker(bind=bind, expire_on_commit=False)
    return _FACTORIES[key]


#: Largest primary key the store can hold: its integer keys are at most signed 64-bit.
LARGEST_ROW_ID = 2**63 - 1
#: Largest ``Integer`` key on PostgreSQL, where that type is signed 32-bit (SQLite's
#: integer keys are 64-bit rowids whatever the declared type).
LARGEST_INTEGER_ID = 2**31 - 1


def largest_row_id(model: type[Base], dialect: str) -> int:
    """The largest primary key ``model``'s table can hold on ``dialect`` ("sqlite",
    "postgresql")."""
    key = inspect(model).primary_key[0]
    if dialect == "postgresql" and not isinstance(key.type, BigInteger):
        return LARGEST_INTEGER_ID
    return LARGEST_ROW_ID


def get_by_id(session: Session, model: type[Base], row_id: int) -> Any:
    """``session.get(model, row_id)``, or None for an id no row can have: negative, or
    beyond the key's integer type on the session's database, which the database would
    refuse with an error (PostgreSQL: "integer out of range") instead of finding none."""
    if not 0 <= row_id <= largest_row_id(model, session.get_bind().dialect.name):
        return None
    return session.get(model, row_id)


def get_session(bind: Engine | sessionmaker[Session]) -> Session:
    """A new session (objects stay readable after commit); the caller closes it."""
    return _factory(bind)()


@contextmanager
def session_scope(bind: Engine | sessionmaker[Session]) -> Iterator[Session]:
    """A transaction: commit on success, roll back on any exception, always close."""
    session = get_session(bind)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
