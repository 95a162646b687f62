"""The panel's tables on the state store's one ``Base``: users, API tokens, log-in
sessions, alarm reviews (annotations) and farm events.

The ``store`` package imports this module, so ``state.init_db`` creates these tables too.
All times are timezone-aware UTC.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from namazu.server.store.state import Base, UTCDateTime, utcnow

#: Roles in increasing order of power: a viewer reads, a reviewer also annotates alarms
#: and records farm events, an admin also manages users.
ROLES = ("viewer", "reviewer", "admin")

#: Review verdicts a reviewer may give an alarm.
VERDICTS = ("true", "false", "unsure")

#: Kinds of farm event (context that may explain activity).
EVENT_KINDS = (
    "housing_stable",
    "housing_pasture",
    "disturbance",
    "storm",
    "feeding_change",
    "other",
)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


class User(Base):
    """A panel user; ``password_hash`` is an argon2id hash (never the password)."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: where the user is told that their account is being guessed (optional)
    email: Mapped[str | None] = mapped_column(String(254), nullable=True)
    #: when that e-mail was last queued [UTC]
    guess_notice_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    def to_dict(self) -> dict[str, Any]:
        """Public fields (no hash)."""
        return {
            "id": self.id,
            "name": self.name,
            "role": self.role,
            "active": self.active,
            "created_at": _iso(self.created_at),
        }


class LoginFailure(Base):
    """One log-in attempt charged against an account: a failure, or an attempt whose
    password is being checked (refunded on success). ``account`` is the lower-cased
    name tried, ``address`` the client address, ``device`` the device id of a valid
    device cookie for that account (None: a client the account does not know). Rows
    older than the longest throttle window are deleted."""

    __tablename__ = "login_failures"
    __table_args__ = (
        Index("ix_login_failures_account", "account", "at"),
        Index("ix_login_failures_address", "address", "at"),
        Index("ix_login_failures_at", "at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account: Mapped[str] = mapped_column(String(64))
    address: Mapped[str] = mapped_column(String(64))
    device: Mapped[str | None] = mapped_column(String(32), nullable=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApiToken(Base):
    """A per-user API token; only its SHA-256 digest is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class LoginSession(Base):
    """A server-side log-in session; the cookie carries only its random id's digest.

    A fresh row is created at every log-in (so a session id fixed before log-in never
    becomes authenticated) and revoked at log-out.
    """

    __tablename__ = "login_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class Review(Base):
    """A reviewer's verdict on an alarm; who and when are kept with it."""

    __tablename__ = "reviews"
    __table_args__ = (Index("ix_reviews_alarm", "alarm_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alarm_id: Mapped[int] = mapped_column(ForeignKey("alarms.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    user_name: Mapped[str] = mapped_column(String(64))
    verdict: Mapped[str] = mapped_column(String(8))
    comment: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values."""
        return {
            "id": self.id,
            "alarm_id": self.alarm_id,
            "user": self.user_name,
            "verdict": self.verdict,
            "comment": self.comment,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
        }


class FarmEvent(Base):
    """Context recorded by users: housing, disturbances, storms, feeding changes.

    start, end : period of the event [UTC]; ``end`` None for an instant event.
    """

    __tablename__ = "farm_events"
    __table_args__ = (Index("ix_farm_events_farm_start", "farm", "start"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    farm: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    start: Mapped[datetime] = mapped_column(UTCDateTime)
    end: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    comment: Mapped[str] = mapped_column(Text, default="")
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    user_name: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values."""
        return {
            "id": self.id,
            "farm": self.farm,
            "kind": self.kind,
            "start": _iso(self.start),
            "end": _iso(self.end),
            "comment": self.comment,
            "user": self.user_name,
            "created_at": _iso(self.created_at),
        }
