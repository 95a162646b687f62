"""``namazu scheduler``: the live service (APScheduler 3).

Jobs (cadences from ``[scheduler]``):

- ``detection`` every ``tick_s``: ``namazu.server.detection.tick.DetectionJob`` (alarms, log, e-mail
  queue), then ``namazu.server.detection.health.HealthJob`` (silent animals, offline gateways);
- ``mail`` every 30 s: ``namazu.server.alerts.outbox.compose_due`` + ``deliver_outbox``;
- ``rollup`` every 5 min: ``namazu.server.store.rollups.RollupJob`` (the panel's
  downsampled rollups, created and backfilled on the first run);
- ``catalog`` every ``catalog_refresh_s`` when ``catalog_sources`` is set.

Replicas: with ``scheduler.replica_id`` set, several schedulers share one state store
(PostgreSQL) and the farms through leases (``namazu.server.store.leases``): each tick a
replica renews its heartbeat and its share of the farms and ticks only those, each
farm's transaction fenced by its lease; mail, rollups and the catalogue run on whichever
replica holds that job's lease, so once. Each replica writes its own alarm log
(``alarm-log.<replica_id>.jsonl``) and checks it against the alarms it logged.

Every job runs with ``coalesce=True`` and ``max_instances=1`` (runs never overlap; a
backlog of missed runs collapses into one), and inside ``GuardedJob``: an exception is
logged and counted, and the job then sits out an exponentially growing backoff
(``tick × 2^(failures-1)``, at most ``max_backoff_s``) instead of killing the scheduler.

``run_once(services, now)`` runs the whole cycle at a given (possibly simulated) time;
``namazu scheduler --replay START END --step 1h`` drives it over a simulated clock (tests,
re-processing), resuming from the stored checkpoints after an interruption.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from namazu.server.alerts.mail import SmtpSender
from namazu.server.alerts.outbox import compose_due, deliver_outbox, enqueue_notifications
from namazu.server.catalogue.fdsn import FdsnClient
from namazu.server.catalogue.refresh import CatalogRefreshJob, FarmLocation
from namazu.server.core.config import ConfigError, NamazuConfig, load_config
from namazu.server.core.metrics import (
    ALARM_LOG_VERIFICATION_TIME,
    ALARM_LOG_VERIFIED,
    ALARMS_OPEN,
    SCHEDULER_TICK_FAILURES,
    SCHEDULER_TICK_SECONDS,
    MetricsServerError,
    start_metrics_server,
)
from namazu.server.core.reachability import Reachability
from namazu.server.core.systemd import watchdog
from namazu.server.detection.alarmlog import (
    AlarmLog,
    HeadStamper,
    Keyring,
    load_signer,
    replica_log_path,
    state_records,
    verify,
)
from namazu.server.detection.health import HealthJob, HealthReport
from namazu.server.detection.tick import DetectionJob, FarmTick
from namazu.server.detection.window import SliceWindow
from namazu.server.store.influx import InfluxClient, InfluxError, InfluxUnavailable
from namazu.server.store.influx_router import InfluxRouter
from namazu.server.store.leases import LeaseLost, Leases, farm_lease
from namazu.server.store.rollups import rollup_jobs
from namazu.server.store.state import Alarm, init_db

log = logging.getLogger(__name__)

MAIL_INTERVAL_S = 30.0
#: Cadence of the rollup job (``namazu.server.store.rollups``) [s].
ROLLUP_INTERVAL_S = 300.0


@dataclass
class Services:
    """Everything the jobs need, built once from the configuration.

    influx : the default InfluxDB instance (the earthquake catalogue); router : every
    instance, each farm's data read from and written to its own.
    """

    config: NamazuConfig
    influx: InfluxClient
    engine: Engine
    alarm_log: AlarmLog
    stamper: HeadStamper | None
    detection: DetectionJob
    health: HealthJob
    catalog: CatalogRefreshJob | None
    sender: SmtpSender | None
    cooldown: timedelta
    farm_names: dict[str, str] = field(default_factory=dict)
    leases: Leases | None = None
    router: InfluxRouter | None = None
    #: per instance name: reports of an instance the detection tick could not reach
    reach: dict[str, Reachability] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.router is None:
            self.router = InfluxRouter.single(self.influx)
        for name, client in self.router.instances().items():
            label = "InfluxDB" if name == "default" else f"InfluxDB instance {name!r}"
            self.reach.setdefault(name, Reachability(log, label, client.url))


def build_services(
    config: NamazuConfig,
    ssl_context: ssl.SSLContext | None = None,
    fdsn_factory: Callable[[str], FdsnClient] = FdsnClient,
    **detection_options: Any,
) -> Services:
    """Wire the jobs from the configuration (the state tables are created if missing).

    ssl_context : TLS context for SMTP (tests with a private CA).
    fdsn_factory : base URL -> FdsnClient. detection_options : DetectionJob overrides.
    """
    sched = config.scheduler
    router = InfluxRouter.from_config(config)
    influx = router.default
    engine = init_db(config.state.url)
    stamper = None
    if sched.tsa_url:
        from namazu.server.detection.timestamping import TimestampClient

        if sched.tsa_ca_file is None:
            raise ConfigError("scheduler.tsa_ca_file: needed with scheduler.tsa_url")
        client = TimestampClient(sched.tsa_url, sched.tsa_ca_file, sched.tsa_timeout_s)
        stamper = HeadStamper(sched.alarm_log_path, client)
    signer = load_signer(sched.alarm_log_signing_key, sched.alarm_log_path)
    if signer is None:
        log.warning("scheduler.alarm_log_signing_key is not set: alarm records are unsigned")
    log_path = replica_log_path(sched.alarm_log_path, sched.replica_id)
    alarm_log = AlarmLog(log_path, signer=signer, on_append=stamper)
    farms = [farm.id for farm in config.farms]
    leases = None
    if sched.replica_id is not None:
        leases = Leases(engine, sched.replica_id, sched.lease_ttl_s or LEASE_TICKS * sched.tick_s)

    def opened(session: Session, alarms: list[Alarm]) -> None:
        for alarm in alarms:
            alarm.log_id = sched.replica_id
        enqueue_notifications(session, alarms)

    detection = DetectionJob(
        router,
        engine,
        alarm_log,
        farms,
        params=config.rule_params(),
        resolution_s=sched.resolution_s,
        aggregate=sched.aggregate,
        on_open=opened,
        fence=None if leases is None else leases.fence,
        **detection_options,
    )
    detection.window = SliceWindow()  # the past days read once an hour, not every tick
    health = HealthJob(router, engine, farms, stale_after_s=sched.stale_after_s)
    catalog = None
    if sched.catalog_sources:
        catalog = CatalogRefreshJob(
            influx,
            engine,
            sched.catalog_sources,
            [FarmLocation(f.id, f.latitude, f.longitude) for f in config.farms],
            client_factory=fdsn_factory,
            min_magnitude=sched.catalog_min_magnitude,
            max_radius_km=sched.catalog_radius_km,
            history_days=sched.catalog_history_days,
        )
    sender = (
        SmtpSender.from_config(config.mail, ssl_context=ssl_context)
        if config.mail.enabled
        else None
    )
    return Services(
        config=config,
        influx=influx,
        engine=engine,
        alarm_log=alarm_log,
        stamper=stamper,
        detection=detection,
        health=health,
        catalog=catalog,
        sender=sender,
        cooldown=timedelta(minutes=config.mail.cooldown_min),
        farm_names={f.id: f.name or f.id for f in config.farms},
        leases=leases,
        router=router,
    )


#: Default lease time of a replica's farms [ticks]: a renewal may come a little late
#: without losing the farm, and a dead replica's farms move at most 2.25 ticks after it
#: died (the lease runs out, then the next tick of a survivor takes the farm).
LEASE_TICKS = 1.25


def detect(services: Services, now: datetime) -> tuple[list[FarmTick], HealthReport]:
    """The detection tick and the data health at ``now`` [UTC]: every configured farm,
    or, for a replica, the farms whose leases it holds (taken or renewed first; those
    past its share are ticked once more and then given back)."""
    leases = services.leases
    if leases is None:
        farms = list(services.detection.farms)
        handed_over: list[str] = []
    else:
        farms = leases.balance(list(services.farm_names), now, keep_excess=True)
        handed_over = leases.excess  # ticked once more, then given back: no tick unowned
        services.detection.farms = services.health.farms = farms
        if services.detection.window is not None:
            services.detection.window.forget(set(farms) | set(handed_over))
    ticks: list[FarmTick] = []

    def tick(farm: str) -> None:
        ticks.append(_tick(services, farm, now))
        if farm in handed_over:
            leases.release(farm_lease(farm))

    reached = _each_farm(services, farms + handed_over, tick)
    if leases is not None and services.detection.window is not None:
        services.detection.window.forget(set(farms))
    checked = [farm for farm in reached if farm in farms]
    return [t for t in ticks if t is not None], services.health.run(now, checked)


def _tick(services: Services, farm: str, now: datetime) -> FarmTick | None:
    """One farm's detection tick; None when a replica lost the farm's lease meanwhile."""
    try:
        return services.detection.tick_farm(farm, now)
    except LeaseLost as exc:
        log.warning(str(exc), extra={"farm": farm, "replica": services.leases.holder})
        return None


def _each_farm(services: Services, farms: list[str], body: Callable[[str], Any]) -> list[str]:
    """Run ``body(farm)`` for each farm; return the farms whose InfluxDB instance answered.

    The farms of an instance that cannot be reached (``InfluxUnavailable``) are skipped
    until the next tick, reported in one line per instance, so the farms of the other
    instances go on. When no farm could be run, the first error is raised (the job
    backs off as with a single instance).
    """
    router = services.router
    assert router is not None
    down: dict[str, InfluxUnavailable] = {}
    reached = []
    for farm in farms:
        name = router.instance_of(farm)
        if name in down:
            continue
        try:
            body(farm)
        except InfluxUnavailable as exc:
            down[name] = exc
            continue
        reached.append(farm)
    if down and not reached:
        raise next(iter(down.values()))
    for name in {router.instance_of(farm) for farm in reached}:
        services.reach[name].reached()
    tick_s = services.config.scheduler.tick_s
    for name, exc in down.items():
        skipped = [farm for farm in farms if router.instance_of(farm) == name]
        services.reach[name].failed(exc, tick_s, f"farms {', '.join(skipped)} skip this tick")
    return reached


def once(services: Services, name: str, body: Callable[[], Any], interval_s: float) -> Any:
    """Run a job that must run once across replicas: on the replica holding the job's
    lease (taken for three intervals, renewed at each run); always without replicas."""
    leases = services.leases
    if leases is not None and leases.take(f"job:{name}", datetime.now(UTC), 3 * interval_s) is None:
        return None
    return body()


def mail_cycle(services: Services, now: datetime) -> tuple[int, int]:
    """Compose due mails and deliver the outbox; return (sent, failed)."""
    config = services.config
    compose_due(
        services.engine,
        now,
        services.cooldown,
        services.farm_names,
        farm_timezones={f.id: f.timezone for f in config.farms},
        panel_url=config.web.base_url,
    )
    if services.sender is None:
        return 0, 0
    mail = services.config.mail
    return deliver_outbox(
        services.engine,
        services.sender,
        mail.sender,
        now,
        max_refused_attempts=mail.max_refused_attempts,
        refused_retry=timedelta(hours=mail.refused_retry_h),
    )


def publish_open_alarms(services: Services) -> dict[str, int]:
    """Set the ``namazu_alarms_open`` gauge per configured farm from the state store;
    returns {farm: open alarms}."""
    with Session(services.engine) as db:
        rows = db.execute(
            select(Alarm.farm, func.count()).where(Alarm.state == "open").group_by(Alarm.farm)
        ).all()
    counts = {farm: 0 for farm in services.farm_names} | {farm: int(n) for farm, n in rows}
    for farm, count in counts.items():
        ALARMS_OPEN.labels(farm=farm).set(count)
    return counts


def verify_alarm_log(services: Services) -> bool:
    """Check the alarm log's chain against the state store's alarms; export the result
    (``namazu_alarm_log_verified``) and log one ERROR naming the first broken record."""
    sched = services.config.scheduler
    path = services.alarm_log.path
    expected = state_records(services.config.state.url, log_id=sched.replica_id)
    keyring = Keyring.from_file(sched.alarm_log_keyring) if sched.alarm_log_keyring else None
    try:
        result = verify(path, expected=expected, keyring=keyring, tsa_ca=sched.tsa_ca_file)
        ok, reason = result.ok, f"record {result.first_bad_index}: {result.reason}"
    except FileNotFoundError:
        ok, reason = not expected, f"{path} is missing but {len(expected)} alarms are logged"
    ALARM_LOG_VERIFIED.set(1 if ok else 0)
    ALARM_LOG_VERIFICATION_TIME.set(time.time())
    if not ok:
        log.error(f"alarm log broken: {reason}", extra={"path": str(path)})
    return ok


def run_once(services: Services, now: datetime, catalog: bool = False) -> dict[str, Any]:
    """One full cycle at ``now`` [UTC]: detection, health, mail (and the catalogue)."""
    ticks, health = detect(services, now)
    publish_open_alarms(services)
    sent, failed = mail_cycle(services, now)
    refreshed = services.catalog.run(now) if catalog and services.catalog else []
    return {
        "ticks": ticks,
        "health": health,
        "mail_sent": sent,
        "mail_failed": failed,
        "catalog": refreshed,
    }


class GuardedJob:
    """A job body with logging, metrics and exponential backoff after failures.

    name : job label (metrics, logs). interval_s : the job's cadence [s].
    max_backoff_s : longest sit-out after repeated failures [s].
    clock : monotonic time source [s] (injectable for tests).
    store : reports an unreachable InfluxDB in one plain, rate-limited line (shared by
        the jobs) instead of a traceback per failure.
    """

    def __init__(
        self,
        name: str,
        body: Callable[[], Any],
        interval_s: float,
        max_backoff_s: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
        store: Reachability | None = None,
    ):
        self.store = store
        self.name = name
        self.body = body
        self.interval_s = interval_s
        self.max_backoff_s = max_backoff_s
        self.clock = clock
        self.failures = 0
        self.resume_at = 0.0

    def __call__(self) -> bool:
        """Run the body unless backing off; True when it ran and succeeded."""
        if self.clock() < self.resume_at:
            return False
        started = time.perf_counter()
        try:
            with watchdog.busy(f"job {self.name}"):
                self.body()
        except Exception as exc:  # noqa: BLE001 - a job failure must not stop the scheduler
            self.failures += 1
            wait = min(self.interval_s * 2 ** (self.failures - 1), self.max_backoff_s)
            self.resume_at = self.clock() + wait
            SCHEDULER_TICK_FAILURES.labels(job=self.name).inc()
            if self.store is not None and isinstance(exc, InfluxUnavailable):
                self.store.failed(exc, wait, f"job {self.name} backing off")
                return False
            log.error(
                "job failed; backing off",
                exc_info=True,
                extra={"job": self.name, "failures": self.failures, "backoff_s": wait,
                       "error": str(exc)},
            )  # fmt: skip
            return False
        finally:
            SCHEDULER_TICK_SECONDS.labels(job=self.name).observe(time.perf_counter() - started)
        if self.failures:
            log.info("job recovered", extra={"job": self.name, "after_failures": self.failures})
            if self.store is not None:
                self.store.reached()
        self.failures = 0
        self.resume_at = 0.0
        return True


def make_scheduler(services: Services, blocking: bool = True) -> Any:
    """An APScheduler with the detection, mail and catalogue jobs (not yet started)."""
    sched = services.config.scheduler
    scheduler_cls = BlockingScheduler if blocking else BackgroundScheduler
    scheduler = scheduler_cls(
        timezone=UTC,
        job_defaults={
            "coalesce": True,
            "max_instances": 1,
            "misfire_grace_time": int(max(1, sched.tick_s)),
        },
    )

    def detection() -> None:
        detect(services, datetime.now(UTC))
        publish_open_alarms(services)

    def mail() -> None:
        once(services, "mail", lambda: mail_cycle(services, datetime.now(UTC)), MAIL_INTERVAL_S)

    jobs: list[tuple[str, Callable[[], Any], float]] = [
        ("detection", detection, sched.tick_s),
        ("mail", mail, MAIL_INTERVAL_S),
        ("alarm-log", lambda: verify_alarm_log(services), sched.verify_log_s),
    ]
    rollups = rollup_jobs(services.router)

    def rollup() -> None:
        def run_all() -> None:
            now_ms = int(time.time() * 1000)
            for job in rollups:
                job.run(now_ms)

        once(services, "rollup", run_all, ROLLUP_INTERVAL_S)

    jobs.append(("rollup", rollup, ROLLUP_INTERVAL_S))
    if services.catalog is not None:
        catalog, refresh_s = services.catalog, sched.catalog_refresh_s

        def refresh() -> None:
            once(services, "catalog", lambda: catalog.run(datetime.now(UTC)), refresh_s)

        jobs.append(("catalog", refresh, refresh_s))
    if services.stamper is not None:
        stamper, alarm_log = services.stamper, services.alarm_log
        jobs.append(("timestamp", lambda: stamper.stamp_head(alarm_log), sched.tsa_interval_s))
    store = Reachability(log, "InfluxDB", services.config.influx.url)
    for name, body, interval in jobs:
        scheduler.add_job(
            GuardedJob(name, body, interval, store=store),
            "interval",
            seconds=interval,
            id=name,
            name=name,
            next_run_time=datetime.now(UTC),
        )
    if watchdog.interval_s:  # the executor must find a free thread this often
        scheduler.add_job(
            lambda: watchdog.beat("scheduler"),
            "interval",
            seconds=watchdog.interval_s / 4,
            id="watchdog",
            name="watchdog",
        )
    return scheduler


def _parse_time(text: str) -> datetime:
    stamp = pd.Timestamp(text)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.to_pydatetime()


def check_replay(start: datetime, end: datetime, step: timedelta) -> None:
    """ValueError unless ``step`` is positive and ``end`` is not before ``start``."""
    if step <= timedelta(0):
        raise ValueError(f"--step must be positive, got {step}")
    if end < start:
        raise ValueError("END is before START")


def replay(services: Services, start: datetime, end: datetime, step: timedelta) -> int:
    """Run ``run_once`` at start, start+step, ... <= end; return the number of cycles."""
    check_replay(start, end, step)
    now, cycles = start, 0
    while now <= end:
        run_once(services, now)
        cycles += 1
        now += step
    return cycles


def main(argv: list[str]) -> int:
    """``namazu scheduler [--config FILE] [--once] [--replay START END --step 1h]``."""
    parser = argparse.ArgumentParser(prog="namazu scheduler", description=__doc__.split("\n")[0])
    parser.add_argument("--config", help="TOML file (default $NAMAZU_CONFIG)")
    parser.add_argument("--once", action="store_true", help="run one cycle now and exit")
    parser.add_argument(
        "--replay", nargs=2, metavar=("START", "END"), help="drive cycles over a simulated clock"
    )
    parser.add_argument("--step", default="1h", help="replay step, e.g. 1min, 1h (default 1h)")
    parser.add_argument("--log-level", default="INFO", help="logging level")
    parser.add_argument("--log-format", choices=["json", "text"], default="json")
    args = parser.parse_args(argv)
    from namazu.server.core.logging_setup import LoggingConfigError, configure_logging

    try:
        configure_logging(args.log_level, json=args.log_format == "json")
    except LoggingConfigError as exc:
        print(f"namazu scheduler: {exc}", file=sys.stderr)
        return 2
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"namazu scheduler: invalid configuration: {exc}", file=sys.stderr)
        return 2
    try:
        services = build_services(config)
    except Exception as exc:  # noqa: BLE001 - one line, no traceback, for any start-up error
        print(f"namazu scheduler: cannot start: {exc}", file=sys.stderr)
        return 1
    if args.replay:
        try:
            start, end = (_parse_time(t) for t in args.replay)
            step = pd.Timedelta(args.step).to_pytimedelta()
            check_replay(start, end, step)
        except ValueError as exc:
            print(f"namazu scheduler: bad --replay/--step: {exc}", file=sys.stderr)
            return 2
    if args.replay or args.once:
        try:
            if args.replay:
                cycles = replay(services, start, end, step)
                print(f"replayed {cycles} cycles from {start.isoformat()} to {end.isoformat()}")
            else:
                run_once(services, datetime.now(UTC), catalog=services.catalog is not None)
        except InfluxError as exc:
            print(f"namazu scheduler: time-series store unavailable: {exc}", file=sys.stderr)
            return 1
        return 0
    if config.scheduler.metrics_port:
        try:
            start_metrics_server(config.scheduler.metrics_port, families=("scheduler",))
        except MetricsServerError as exc:
            print(f"namazu scheduler: {exc}", file=sys.stderr)
            return 1
    for client in services.router.instances().values():
        try:
            log.info(client.prepare())
        except InfluxError as exc:
            log.warning(
                "InfluxDB unavailable at start; jobs retry",
                extra={"error": str(exc), "url": client.url},
            )
    watchdog.start_from_environment("scheduler running")
    scheduler = make_scheduler(services, blocking=True)
    signal.signal(signal.SIGTERM, lambda *_: scheduler.shutdown(wait=False))
    log.info("scheduler started", extra={"farms": list(services.farm_names)})
    with contextlib.suppress(KeyboardInterrupt):
        scheduler.start()
    if services.leases is not None:  # stopped in order: the others take over at once
        services.leases.release_all()
    watchdog.stop()
    return 0
