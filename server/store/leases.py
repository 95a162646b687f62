"""Leases in the state store: several scheduler replicas share the farms, each farm
owned by exactly one replica at a time, and a job that must run once (mail, catalogue,
rollups) by one replica.

One row per leased name (``farm:<id>``, ``job:<name>``, ``replica:<id>``): the holder,
when the lease runs out, and a fencing token that grows by one whenever the lease
changes hands. Taking a lease is one conditional UPDATE (free, expired or already
mine), so two replicas never both succeed, on PostgreSQL (row lock) as on SQLite (one
writer at a time).

Fencing: ``fence(session, farm)`` runs first in the transaction that writes a farm's
alarms and checkpoint. It updates the farm's row only if this replica still holds it
with the token it was given, and so locks the row until that transaction ends: a
replica that lost the lease (it stalled, and another took the farm over) raises
``LeaseLost`` before it reads or writes anything, and nobody can take the lease over
while a tick of its holder is committing.

Sharing: every replica renews ``replica:<id>`` each tick; ``balance`` counts the live
replicas, keeps at most its share (ceil(farms / replicas)) of the farms, gives back the
excess (with ``keep_excess``, as the scheduler does, after ticking it once more, so a
farm handed over misses no tick), and takes free or expired farms up to its share in an
order of its own (rendezvous hashing, so replicas rarely race for the same farm); past
its share it also takes farms whose holder's lease ran out, so none waits unowned. With
a lease time of 1.25 ticks, a killed replica's farms are taken over at most 2.25 ticks
after it died.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import BigInteger, Engine, String, case, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from namazu.server.store.state import Base, UTCDateTime, session_scope

__all__ = ["Lease", "LeaseLost", "Leases"]

#: A replica's heartbeat lasts this many lease times: it still counts as live for a
#: moment after its farm leases ran out, so the survivors' shares do not shrink first.
HEARTBEAT_FACTOR = 1.5

#: Expiry of a lease nobody holds.
NEVER = datetime(1970, 1, 1, tzinfo=UTC)


class Lease(Base):
    """One leased name. holder : replica id, None when free; token : fencing token,
    +1 at each change of holder [count]; expires_at, renewed_at [UTC]."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(160), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(64), nullable=True)
    token: Mapped[int] = mapped_column(BigInteger, default=0)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    renewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class LeaseLost(Exception):
    """This replica no longer holds a lease it was working under."""


def farm_lease(farm: str) -> str:
    return f"farm:{farm}"


@dataclass
class Leases:
    """The leases of one replica.

    holder : this replica's id (stable across restarts: a restarted replica finds its
    unexpired leases again). ttl_s : how long a lease lasts without renewal [s].
    """

    engine: Engine
    holder: str
    ttl_s: float
    tokens: dict[str, int] = field(default_factory=dict)
    #: farms past this replica's share still held after ``balance(keep_excess=True)``
    excess: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.holder or len(self.holder) > 64:
            raise ValueError(f"replica id {self.holder!r}: 1 to 64 characters")
        if self.ttl_s <= 0:
            raise ValueError(f"lease time {self.ttl_s} s: must be > 0")

    def _ensure(self, names: Iterable[str]) -> None:
        with self.engine.connect() as connection:
            present = set(connection.scalars(select(Lease.name).where(Lease.name.in_(names))))
        for name in names:
            if name in present:
                continue
            try:
                with session_scope(self.engine) as session:
                    session.add(Lease(name=name, holder=None, token=0, expires_at=NEVER))
            except IntegrityError:
                pass  # another replica created it first

    def take(self, name: str, now: datetime, ttl_s: float | None = None) -> int | None:
        """Take or renew ``name`` until now + ttl; its fencing token, or None when
        another replica holds it."""
        self._ensure([name])
        mine = Lease.holder == self.holder
        statement = (
            update(Lease)
            .where(Lease.name == name, or_(mine, Lease.expires_at <= now))
            .values(
                token=case((mine, Lease.token), else_=Lease.token + 1),
                holder=self.holder,
                expires_at=now + timedelta(seconds=ttl_s or self.ttl_s),
                renewed_at=now,
            )
            .returning(Lease.token)
        )
        with self.engine.begin() as connection:
            token = connection.scalar(statement)
        if token is None:
            self.tokens.pop(name, None)
            return None
        self.tokens[name] = int(token)
        return int(token)

    def release(self, name: str) -> None:
        """Give ``name`` back at once (if still mine)."""
        with self.engine.begin() as connection:
            connection.execute(
                update(Lease)
                .where(Lease.name == name, Lease.holder == self.holder)
                .values(holder=None, expires_at=NEVER)
            )
        self.tokens.pop(name, None)

    def release_all(self) -> None:
        """Give every lease back (a replica that stops in order)."""
        for name in list(self.tokens):
            self.release(name)
        self.release(f"replica:{self.holder}")

    def live_replicas(self, now: datetime) -> list[str]:
        """Ids of the replicas whose heartbeat has not run out."""
        with self.engine.connect() as connection:
            names = connection.scalars(
                select(Lease.name).where(Lease.name.like("replica:%"), Lease.expires_at > now)
            )
            return sorted(name.partition(":")[2] for name in names)

    def _preference(self, farm: str) -> str:
        return hashlib.sha256(f"{self.holder}|{farm}".encode()).hexdigest()

    def balance(self, farms: Sequence[str], now: datetime, keep_excess: bool = False) -> list[str]:
        """Renew the heartbeat and this replica's share of ``farms``; return the farms
        it owns now, in the configured order.

        keep_excess : the farms past the share stay held (unrenewed, in ``excess``) for
            the caller to tick once more and then ``release``: the others take them at
            their next tick, so a farm handed over misses no tick. False gives them back
            at once."""
        self.take(f"replica:{self.holder}", now, HEARTBEAT_FACTOR * self.ttl_s)
        share = math.ceil(len(farms) / max(1, len(self.live_replicas(now))))
        self._ensure([farm_lease(f) for f in farms])
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(Lease.name, Lease.holder, Lease.expires_at).where(
                    Lease.name.in_([farm_lease(f) for f in farms])
                )
            ).all()
        holders = {name: (holder, expires) for name, holder, expires in rows}
        ranked = sorted(farms, key=self._preference)
        owned = [f for f in ranked if holders[farm_lease(f)][0] == self.holder]
        self.excess = [f for f in farms if f in owned[share:]] if keep_excess else []
        for farm in [] if keep_excess else owned[share:]:
            self.release(farm_lease(farm))
        owned = [f for f in owned[:share] if self.take(farm_lease(f), now) is not None]
        free = [
            farm
            for farm in ranked
            if holders[farm_lease(farm)][0] != self.holder
            and (holders[farm_lease(farm)][0] is None or holders[farm_lease(farm)][1] <= now)
        ]
        for farm in free:
            # given back farms up to the share; past it, farms whose holder's lease ran
            # out too (so none waits unowned while the survivors' shares adjust)
            if len(owned) >= share and holders[farm_lease(farm)][0] is None:
                continue
            if self.take(farm_lease(farm), now) is not None:
                owned.append(farm)
        return [f for f in farms if f in owned]

    def fence(self, session: Session, farm: str) -> None:
        """Inside the transaction that writes ``farm``'s results: hold its lease row
        until that transaction ends, or raise LeaseLost when the lease changed hands
        since this replica took it.

        On PostgreSQL the transaction may then wait on this replica for at most the
        lease time — idle between statements, inside one statement (a message of the
        extended protocol still to come, a result not acknowledged): a replica cut off
        the network mid-tick would otherwise keep the row locked until the server
        noticed the dead connection (hours), and every replica trying to take the farm
        over would wait on that lock. The server ends such a transaction; its writes
        roll back."""
        name = farm_lease(farm)
        token = self.tokens.get(name)
        if session.get_bind().dialect.name == "postgresql":
            limit = str(max(1, int(self.ttl_s * 1000)))  # [ms], for this transaction
            session.execute(
                text(
                    "SELECT set_config('idle_in_transaction_session_timeout', :ms, true), "
                    "set_config('statement_timeout', :ms, true), "
                    "set_config('tcp_user_timeout', :ms, true)"
                ),
                {"ms": limit},
            )
        done = session.execute(
            update(Lease)
            .where(Lease.name == name, Lease.holder == self.holder, Lease.token == token)
            .values(token=Lease.token)
        )
        if token is None or done.rowcount != 1:
            self.tokens.pop(name, None)
            raise LeaseLost(f"replica {self.holder} lost the lease of farm {farm}")
