"""Benchmark: what a heavy request's slot costs the panel, per backend.

Starts a private PostgreSQL (``namazu.server.launch.postgres``, TCP on loopback) and
times ``--rounds`` take-and-give-back cycles of one slot (a per-user and a global one)
with the lock files of one host (``FileSlots``, SQLite state store) and with advisory
locks on a connection of the request's own (``AdvisoryLockSlots``, PostgreSQL state
store), and one refused attempt (every global slot held elsewhere) of each. Prints the
median and 95th percentile [ms].

    .venv/bin/python -m bench.bench_heavy_slots [--rounds 300]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from namazu.server.launch.postgres import PostgresServer
from namazu.server.web.limits import AdvisoryLockSlots, FileSlots


def _timed(action: Callable[[], None], rounds: int) -> tuple[float, float]:
    """Median and 95th percentile of ``action``'s duration [ms]."""
    durations = []
    for _ in range(rounds):
        started = time.perf_counter()
        action()
        durations.append(1000 * (time.perf_counter() - started))
    return float(np.median(durations)), float(np.percentile(durations, 95))


def measure(slots: FileSlots | AdvisoryLockSlots, rounds: int) -> dict[str, tuple[float, float]]:
    """Times of a granted take + give_back and of a refused take [ms] on ``slots``
    (global limit 2, per user 1)."""

    def granted() -> None:
        token = slots.take(1)
        assert token is not None
        slots.give_back(token)

    def refused() -> None:
        assert slots.take(4) is None

    times = {"granted": _timed(granted, rounds)}
    held = [slots.take(2), slots.take(3)]  # both global slots, held by two other users
    assert None not in held
    try:
        times["refused"] = _timed(refused, rounds)
    finally:
        for token in held:
            slots.give_back(token)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="namazu-slots-") as directory:
        rows = {"lock files (SQLite store)": measure(FileSlots(2, 1, Path(directory)), args.rounds)}
    server = PostgresServer.temporary().start()
    try:
        url = server.create_database("bench_slots")
        rows["advisory locks (PostgreSQL store)"] = measure(
            AdvisoryLockSlots(2, 1, url), args.rounds
        )
    finally:
        server.stop(remove=True)
    print(f"{'backend':36} {'granted + freed [ms]':>22} {'refused [ms]':>16}")
    for name, row in rows.items():
        granted, refused = row["granted"], row["refused"]
        print(f"{name:36} {granted[0]:>9.2f} (p95 {granted[1]:5.2f}) "
              f"{refused[0]:>6.2f} (p95 {refused[1]:5.2f})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
