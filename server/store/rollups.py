"""Downsampled rollups of activity and baselines, so long ranges read few points and
ranges older than the raw retention still show.

Levels (``ROLLUP_STEPS_MS``): 15 min from the raw measurements, 3 h from the 15-min
rollup. Each rollup point holds, per series (tags kept) and bucket, activity
``lo``/``hi``/``mean`` [g] and ``samples``, or the baseline's mean ``baseline`` and
``threshold`` with the collective value's ``lo``/``hi``. They are written by InfluxDB
itself (SELECT ... INTO, ``namazu.server.store.queries.rollup_into``) into the
retention policy ``influx.rollup_retention_policy`` (a policy that outlives the raw one,
e.g. ``forever``; empty = the default policy).

``RollupJob.run(now)`` creates and backfills: a level with no bucket yet is built from
the first raw point (in ``BACKFILL_CHUNK_DAYS`` chunks); afterwards each run rebuilds
from ``REBUILD_LOOKBACK_MS`` before the last bucket up to ``now`` (the last, partial
bucket and late data from gateway spools are rewritten; a bucket written again is
overwritten); ``run(now, since_ms=...)`` (``namazu rollup --since``) rebuilds from a given
time. Idempotent and restart-safe: the rollups themselves are the checkpoint.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from namazu.server.store import queries

if TYPE_CHECKING:
    from namazu.server.store.influx_router import InfluxRouter

log = logging.getLogger(__name__)

#: Rollup steps, finest first [ms]; each coarser level is built from the one before.
ROLLUP_STEPS_MS = (15 * 60_000, 3 * 3_600_000)
#: Backfill window per SELECT ... INTO [days].
BACKFILL_CHUNK_DAYS = 30
#: How far before the last rollup bucket each run rebuilds (late data) [ms].
REBUILD_LOOKBACK_MS = 6 * 3_600_000
_DAY_MS = 86_400_000


@dataclass
class RollupRun:
    """What one run wrote: per (source, step) the range rebuilt [UTC ms] and statements."""

    ranges: dict[tuple[str, int], tuple[int, int]] = field(default_factory=dict)
    statements: int = 0


def _edge_ms(influx: Any, statement: tuple[str, dict[str, Any]]) -> int | None:
    frame = influx.query_frame(*statement)
    if frame.empty:
        return None
    return int(frame["time"].iloc[0].value // 1_000_000)


class RollupJob:
    """Creates, backfills and extends the rollups of one database.

    influx : ``InfluxClient``. retention_policy : where the rollups live ("" = default).
    """

    def __init__(self, influx: Any, retention_policy: str = ""):
        self.influx = influx
        self.retention_policy = retention_policy

    def _range_for(
        self, source: str, step_ms: int, finer_ms: int | None, now_ms: int, since_ms: int | None
    ):
        if since_ms is not None:
            return since_ms - since_ms % step_ms, now_ms
        last = _edge_ms(
            self.influx,
            queries.rollup_edge(source, step_ms, self.retention_policy, "last"),
        )
        if last is not None:
            return last - last % step_ms - REBUILD_LOOKBACK_MS, now_ms
        if finer_ms is None:
            first = _edge_ms(self.influx, queries.source_edge(source, "first"))
        else:
            first = _edge_ms(
                self.influx,
                queries.rollup_edge(source, finer_ms, self.retention_policy, "first"),
            )
        if first is None:
            return None
        return first - first % step_ms, now_ms

    def run(self, now_ms: int, since_ms: int | None = None) -> RollupRun:
        """Bring every level up to ``now_ms`` [UTC ms]; returns what was rebuilt.

        since_ms : rebuild from this time instead [UTC ms] (e.g. after data arrived
        later than ``REBUILD_LOOKBACK_MS``).
        """
        done = RollupRun()
        for source in queries.ROLLUP_SOURCES:
            finer: int | None = None
            for step_ms in ROLLUP_STEPS_MS:
                span = self._range_for(source, step_ms, finer, now_ms, since_ms)
                if span is not None:
                    lo, hi = span
                    hi = hi - hi % step_ms + step_ms  # include the current, partial bucket
                    chunk = max(step_ms, BACKFILL_CHUNK_DAYS * _DAY_MS // step_ms * step_ms)
                    for start in range(lo, hi, chunk):
                        self.influx.query(
                            *self._into(source, step_ms, start, min(start + chunk, hi), finer)
                        )
                        done.statements += 1
                    done.ranges[(source, step_ms)] = (lo, hi)
                finer = step_ms
        log.info("rollups updated", extra={"statements": done.statements})
        return done

    def _into(self, source: str, step_ms: int, start: int, end: int, finer: int | None):
        statement, params = queries.rollup_into(
            source,
            step_ms,
            start,
            end,
            self.influx.database,
            self.retention_policy,
            from_step_ms=finer,
        )
        return statement, "ms", params


def rollup_jobs(router: InfluxRouter) -> list[RollupJob]:
    """One rollup job per InfluxDB instance of ``router``, each with
    the instance's ``rollup_retention_policy``."""
    jobs = []
    for name, client in router.instances().items():
        config = router.config_of(name)
        jobs.append(RollupJob(client, config.rollup_retention_policy if config else ""))
    return jobs


def main(argv: list[str] | None = None) -> int:
    """``namazu rollup [--config FILE]``: create, backfill and extend the rollups once
    (in every InfluxDB instance)."""
    import argparse
    import sys
    import time
    from datetime import UTC, datetime

    from namazu.server.core.config import ConfigError, load_config
    from namazu.server.store.influx import InfluxError
    from namazu.server.store.influx_router import InfluxRouter

    parser = argparse.ArgumentParser(prog="namazu rollup", description=main.__doc__)
    parser.add_argument("--config", help="TOML configuration (default $NAMAZU_CONFIG)")
    parser.add_argument(
        "--since", help="rebuild from this UTC time (ISO 8601), e.g. after late data arrived"
    )
    args = parser.parse_args(argv)
    since_ms = None
    if args.since:
        try:
            stamp = datetime.fromisoformat(args.since.replace("Z", "+00:00"))
        except ValueError:
            print(f"namazu rollup: --since {args.since!r} is not an ISO 8601 time", file=sys.stderr)
            return 2
        stamp = stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
        since_ms = int(stamp.timestamp() * 1000)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"namazu rollup: {exc}", file=sys.stderr)
        return 2
    router = InfluxRouter.from_config(config)
    try:
        for name, job in zip(router.instances(), rollup_jobs(router), strict=True):
            done = job.run(int(time.time() * 1000), since_ms)
            where = f" ({name}: {job.influx.url})" if router.several else ""
            for (source, step_ms), (lo, hi) in sorted(done.ranges.items()):
                measurement = queries.rollup_measurement(source, step_ms)
                print(f"{measurement}: rebuilt {hi - lo} ms of data{where}")
            print(f"{done.statements} SELECT ... INTO statements{where}")
    except InfluxError as exc:
        print(f"namazu rollup: {exc}", file=sys.stderr)
        return 1
    finally:
        router.close()
    return 0
