"""Benchmark: the lease work of scheduler replicas on PostgreSQL, for the capacity table.

Starts a private PostgreSQL (``namazu.server.launch.postgres``), then ``--replicas``
replicas (``namazu.server.store.leases.Leases``, one process, one after another) share
``--farms`` farms over simulated ticks: every tick each replica balances (heartbeat,
renewals, takes) and fences each of its farms in a transaction of its own, as the
scheduler does. One replica is killed after the third tick. Prints the time of the lease
work per tick and per farm, the ticks until every farm was owned again, and checks that
no farm ever had two owners.

    .venv/bin/python -m bench.bench_leases [--farms 2000] [--replicas 10] [--ticks 6]
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime, timedelta

from namazu.server.launch.postgres import PostgresServer
from namazu.server.store.leases import Leases
from namazu.server.store.state import init_db, session_scope

T0 = datetime(2026, 3, 1, tzinfo=UTC)
TICK = timedelta(seconds=60)


def run(url: str, n_farms: int, n_replicas: int, ticks: int) -> dict[str, float]:
    """Lease work per tick [s] and per farm [ms]; ticks until the kill was healed."""
    engine = init_db(url)
    farms = [f"farm-{i:05d}" for i in range(n_farms)]
    replicas = {f"r{i}": Leases(engine, f"r{i}", 1.25 * TICK.total_seconds())
                for i in range(n_replicas)}  # fmt: skip
    now, healed_after, durations = T0, None, []
    for tick in range(ticks):
        started = time.perf_counter()
        owners: dict[str, str] = {}
        for name, leases in replicas.items():
            for farm in leases.balance(farms, now):
                if farm in owners:
                    raise AssertionError(f"{farm} owned by {owners[farm]} and {name}")
                owners[farm] = name
                with session_scope(engine) as db:
                    leases.fence(db, farm)
        durations.append(time.perf_counter() - started)
        print(f"  tick {tick}: {durations[-1]:.2f} s, {len(owners)} of {n_farms} farms owned")
        if tick == 2:
            replicas.pop(next(iter(replicas)))  # killed without a word
            killed_at = tick
        elif tick > 2 and healed_after is None and len(owners) == n_farms:
            healed_after = tick - killed_at
        now += TICK
    steady = sorted(durations[1:3])[0]
    print(f"  lease work per tick: {steady:.2f} s = {1000 * steady / n_farms:.2f} ms per farm; "
          f"every farm owned again {healed_after} tick(s) after the kill")  # fmt: skip
    return {"per_tick_s": steady, "per_farm_ms": 1000 * steady / n_farms}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--farms", type=int, default=2000)
    parser.add_argument("--replicas", type=int, default=10)
    parser.add_argument("--ticks", type=int, default=6)
    args = parser.parse_args(argv)
    server = PostgresServer.temporary().start()
    try:
        server.create_database("bench_leases")
        run(server.url("bench_leases"), args.farms, args.replicas, args.ticks)
    finally:
        server.stop(remove=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
