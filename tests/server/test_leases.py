"""Leases in the state store (SQLite and PostgreSQL): each farm owned by exactly one
replica, the share follows the live replicas, a dead replica's farms move within two
ticks, a replica that lost a lease is fenced out of the farm's transaction, and a
job lease lets one replica run a job."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text

from namazu.server.detection.alarmlog import AlarmLog
from namazu.server.detection.tick import DetectionJob
from namazu.server.store.leases import Lease, LeaseLost, Leases
from namazu.server.store.state import Checkpoint, init_db, session_scope

T0 = datetime(2026, 3, 1, tzinfo=UTC)
TICK = timedelta(seconds=60)
FARMS = [f"farm-{i:02d}" for i in range(10)]


def _round(replicas: dict[str, Leases], now: datetime) -> dict[str, list[str]]:
    return {name: leases.balance(FARMS, now) for name, leases in replicas.items()}


def _assert_partition(owned: dict[str, list[str]]) -> None:
    every = [farm for farms in owned.values() for farm in farms]
    assert sorted(every) == FARMS, owned  # each farm exactly once


def test_farms_are_partitioned_and_follow_the_live_replicas(state_url):
    engine = init_db(state_url)
    ttl_s = 1.25 * TICK.total_seconds()  # the scheduler's default
    replicas = {name: Leases(engine, name, ttl_s) for name in ("a", "b", "c")}
    first = replicas["a"].balance(FARMS, T0)
    assert first == FARMS  # alone: every farm
    now = T0
    for _ in range(3):  # b and c join; a gives back its excess, they take it
        now += TICK
        owned = _round(replicas, now)
    _assert_partition(owned)
    assert max(len(farms) for farms in owned.values()) == 4  # ceil(10 / 3)
    del replicas["b"]  # killed: stops renewing, releases nothing
    taken_over = None
    for tick in (1, 2):
        now += TICK
        owned = _round(replicas, now)
        if sorted(f for farms in owned.values() for f in farms) == FARMS:
            taken_over = taken_over or tick
    assert taken_over is not None and taken_over <= 2
    for _ in range(2):  # once b's heartbeat ran out too, the shares even out
        now += TICK
        owned = _round(replicas, now)
        _assert_partition(owned)
    assert sorted(len(farms) for farms in owned.values()) == [5, 5]
    with session_scope(engine) as db:
        holders = {lease.holder for lease in db.scalars(select(Lease)) if lease.name[:5] == "farm:"}
    assert holders == {"a", "c"}


def test_a_replica_that_lost_its_lease_is_fenced_out(state_url, tmp_path):
    engine = init_db(state_url)
    stalled, other = Leases(engine, "a", 60), Leases(engine, "b", 60)
    assert stalled.balance(["farm-a"], T0) == ["farm-a"]
    first_token = stalled.tokens["farm:farm-a"]
    assert other.balance(["farm-a"], T0 + timedelta(seconds=30)) == []  # still a's
    later = T0 + timedelta(seconds=61)  # a stalled past its lease; b takes the farm over
    assert other.balance(["farm-a"], later) == ["farm-a"]
    assert other.tokens["farm:farm-a"] == first_token + 1
    job = DetectionJob(None, engine, AlarmLog(tmp_path / "log.jsonl"), ["farm-a"],
                       fence=stalled.fence)  # fmt: skip
    with pytest.raises(LeaseLost, match="replica a lost the lease of farm farm-a"):
        job.tick_farm("farm-a", later)  # stopped before it reads or writes anything
    with session_scope(engine) as db:
        assert db.get(Checkpoint, "detection:farm-a") is None
    with session_scope(engine) as db:
        other.fence(db, "farm-a")  # the holder passes
    with pytest.raises(LeaseLost), session_scope(engine) as db:
        stalled.fence(db, "farm-a")


def test_a_job_lease_lets_one_replica_run_the_job(state_url):
    engine = init_db(state_url)
    a, b = Leases(engine, "a", 60), Leases(engine, "b", 60)
    assert a.take("job:mail", T0, 90) is not None
    assert b.take("job:mail", T0 + timedelta(seconds=89), 90) is None
    assert a.take("job:mail", T0 + timedelta(seconds=60), 90) is not None  # renewed
    a.release_all()  # stopped in order: b takes it at once
    assert b.take("job:mail", T0 + timedelta(seconds=61), 90) is not None
    with pytest.raises(ValueError, match="1 to 64 characters"):
        Leases(engine, "", 60)


def test_farms_past_the_share_stay_held_until_given_back(state_url):
    """With keep_excess the farms a replica hands over stay held (and fenced) for one
    more tick of the giver; the others take them at their next tick: never unowned."""
    engine = init_db(state_url)
    a, b = Leases(engine, "a", 75), Leases(engine, "b", 75)
    assert a.balance(FARMS, T0, keep_excess=True) == FARMS and a.excess == []
    now = T0 + TICK
    assert b.balance(FARMS, now, keep_excess=True) == []  # all still held by a
    kept = a.balance(FARMS, now, keep_excess=True)
    assert len(kept) == 5 and len(a.excess) == 5 and not set(kept) & set(a.excess)
    assert b.balance(FARMS, now, keep_excess=True) == []  # handed-over farms are not free yet
    with session_scope(engine) as db:
        assert {lease.name: lease.holder for lease in db.scalars(select(Lease))
                if lease.name[:5] == "farm:"} == {f"farm:{f}": "a" for f in FARMS}  # fmt: skip
        for farm in a.excess:
            a.fence(db, farm)  # the giver's last tick of them is fenced as before
    for farm in a.excess:
        a.release(f"farm:{farm}")
    now += TICK
    taken = b.balance(FARMS, now, keep_excess=True)
    assert sorted(taken + a.balance(FARMS, now, keep_excess=True)) == FARMS
    assert sorted(taken) == sorted(set(FARMS) - set(kept))


def test_a_holder_silent_inside_its_transaction_lets_the_farm_go(request, tmp_path):
    """A replica cut off the network mid-tick leaves its transaction open and the farm's
    lease row locked: on PostgreSQL the server ends that transaction after the lease
    time, so the replica taking the farm over waits for the lock only that long."""
    import threading

    from sqlalchemy.exc import DBAPIError
    from sqlalchemy.orm import Session

    from namazu.server.store.leases import farm_lease
    from tests.conftest import fresh_state_store

    with fresh_state_store(request, "postgresql", tmp_path, migrated=True) as url:
        engine = init_db(url)
        silent, other = Leases(engine, "a", 0.5), Leases(engine, "b", 0.5)
        now = datetime.now(UTC)
        assert silent.balance(["farm-a"], now) == ["farm-a"]
        first_token = silent.tokens["farm:farm-a"]
        session = Session(engine)
        silent.fence(session, "farm-a")  # the row is locked; then a says nothing more
        taken: list[int | None] = []
        taker = threading.Thread(
            target=lambda: taken.append(other.take(farm_lease("farm-a"), now + TICK)),
            daemon=True,
        )
        taker.start()
        taker.join(timeout=60)  # a guard against a hang, not a measured time
        assert taken == [first_token + 1]  # b took the farm once a's transaction ended
        with pytest.raises(DBAPIError):  # a's transaction was ended by the server
            session.commit()
        session.close()
        engine.dispose()


def test_a_holder_stalled_inside_a_statement_lets_the_farm_go(request, tmp_path):
    """A statement of the fenced transaction that does not finish (here a sleep; over a
    cut network, the rest of its messages that never come) is cancelled after the lease
    time, and with it the row lock goes."""
    from sqlalchemy.exc import DBAPIError
    from sqlalchemy.orm import Session

    from namazu.server.store.leases import farm_lease
    from tests.conftest import fresh_state_store

    with fresh_state_store(request, "postgresql", tmp_path, migrated=True) as url:
        engine = init_db(url)
        stalled, other = Leases(engine, "a", 0.5), Leases(engine, "b", 0.5)
        now = datetime.now(UTC)
        assert stalled.balance(["farm-a"], now) == ["farm-a"]
        first_token = stalled.tokens["farm:farm-a"]
        with Session(engine) as session:
            stalled.fence(session, "farm-a")
            with pytest.raises(DBAPIError, match="statement timeout"):
                session.execute(text("SELECT pg_sleep(600)"))
            session.rollback()
        assert other.take(farm_lease("farm-a"), now + TICK) == first_token + 1
        engine.dispose()
