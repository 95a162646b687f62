"""``namazu demo``: the whole platform on one machine, one step per function.

1. take the data directory for this demo alone (a lock: a second demo on the same
   directory is refused) and clear what a previous run left there (state store, alarm
   log, spools, e-mails, broker persistence, activity database);
2. start Mosquitto and InfluxDB under ``--data-dir`` on free ports
   (namazu.server.launch.stack), recorded in ``stack.json`` so that
   ``namazu stack status`` sees them;
3. start ingest in this process (namazu.server.ingest.service);
4. drive simulated herds through spooled gateway publishers, ``--days`` simulated days
   ending now, with injected unrest episodes (the ground truth, printed);
5. print, per animal, how many samples were published and how many are stored;
6. replay two real days of the study's 2017 INGV catalogue through a local FDSN event
   service, placed so that the research question has an answer on screen: the
   18 January 2017 sequence (M 5.1-5.5, 55-63 km away) follows one injected episode by
   six hours (hits), and the 3 February 2017 M 4.0 and M 4.2 near the farm come with no
   alarm before them (misses) and are followed by an episode 20 minutes after local
   shaking (a reaction, not a precursor);
7. start a local SMTP catcher with one subscription, run the scheduler's detection over
   the simulated days (alarms, hash-chained log, alert e-mails saved under
   ``<data-dir>/mail``);
8. create a demo admin with a random password and serve the panel, while the herds
   go on publishing in real time and the scheduler ticks every minute, until Ctrl-C.

``--no-serve`` stops after step 7 (tests); ``--days 0.1 --no-serve`` is a quick check of
the data path alone. The scenario needs ``--days`` >= 8 (the default); with 4 to 8 days a
single episode ten hours before the end is injected, and no catalogue is replayed.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import secrets
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from namazu.server.core.config import ConfigError, NamazuConfig, load_config
from namazu.server.detection.logkeys import generate as generate_signing_key
from namazu.server.ingest.service import IngestService
from namazu.server.launch.stack import Stack, StackError, free_port, port_open, status
from namazu.server.store.influx import InfluxClient

log = logging.getLogger(__name__)

#: Animals per demo gateway (species -> count).
DEMO_HERD = {"cow": 6, "sheep": 8, "dog": 2}
DEMO_GATEWAYS = ("gw-1", "gw-2")
CHUNK = timedelta(hours=1)
#: The single episode of a short demo (4 to 8 days): starts this long before the end.
EPISODE_BEFORE_END = timedelta(hours=10)
EPISODE_DURATION_MIN = 120.0
EPISODE_INTENSITY = 4.0
#: The scenario needs this many simulated days (baseline, hit day, reaction day).
SCENARIO_DAYS = 8.0
#: The replayed catalogue (relative to NAMAZU_DATA_DIR) and its two real days, each
#: placed on a simulated UTC day (days after the first simulated day).
REPLAY_CATALOG = "wikelski2020/catalog_2017-01-17_2017-04-16.csv"
REPLAY_DAYS = {
    pd.Timestamp("2017-01-18T00:00:00Z"): 5,  # M 5.1-5.5 at 55-63 km from 09:25 UTC
    pd.Timestamp("2017-02-03T00:00:00Z"): 7,  # M 4.0 03:47, M 4.2 04:10 at 3.5 km
}
#: The hit: cows and sheep (not the dogs) restless 03:20-05:20 on the 18 January day,
#: six hours before the first M >= 5 of the sequence.
HIT_START = timedelta(days=5, hours=3, minutes=20)
HIT = {"duration_min": 120.0, "intensity": 4.0, "species": ("cow", "sheep")}
#: The reaction: every animal restless from 04:30 on the 3 February day, twenty minutes
#: after the M 4.2 at 04:10 and nine after an M 2.5 at 04:21 (both within 4 km).
REACTION_START = timedelta(days=7, hours=4, minutes=30)
REACTION = {"duration_min": 120.0, "intensity": 4.0, "species": None}
DEMO_RECIPIENT = "researcher@example.org"
DEMO_USER = "demo"


class DemoError(RuntimeError):
    """The demo could not run (stack already running, a service failed to start)."""


@dataclass
class DemoRun:
    """What the demo started, so that it can be stopped in one place."""

    stack: Stack
    config: NamazuConfig
    influx: InfluxClient
    ingest: IngestService
    extras: list[Any] = field(default_factory=list)

    def stop(self) -> None:
        """Stop what was added on top (panel, scheduler, replay), ingest and the services."""
        for extra in reversed(self.extras):
            try:
                extra()
            except Exception:  # noqa: BLE001 - stopping must go on for the rest
                log.warning("demo: a component failed to stop", exc_info=True)
        self.ingest.stop(end_session=True)
        self.influx.close()
        self.stack.forget()
        self.stack.stop()


class DemoLock:
    """This demo's claim on its data directory: an exclusive ``flock`` on
    ``<data_dir>/demo.lock`` held for the demo's whole life (released by the kernel
    however the demo ends), so a second demo on the same directory is refused."""

    def __init__(self, data_dir: Path):
        self.path = Path(data_dir) / "demo.lock"
        self._handle: Any = None

    def acquire(self) -> DemoLock:
        """Take the lock; DemoError naming the running demo's pid when it is held."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 - held until release()
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "?"
            handle.close()
            raise DemoError(
                f"another demo is running on {self.path.parent} (pid {owner}); "
                "stop it first or choose another --data-dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._handle = handle
        return self

    def release(self) -> None:
        """Give the directory back (closing the file releases the lock)."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None


#: What a previous demo run leaves under its data directory (all cleared at start).
PREVIOUS_RUN = (
    "state.sqlite", "state.sqlite-wal", "state.sqlite-shm", "alarm-log.jsonl",
    "spools", "mail", "mosquitto/mosquitto.db",
)  # fmt: skip


def clear_previous_run(data_dir: Path) -> None:
    """Remove the state store, alarm log, spools, e-mails and broker persistence of an
    earlier demo, so every run starts from the same empty platform (its activity
    database is dropped once InfluxDB runs, in ``start_ingest``)."""
    for name in PREVIOUS_RUN:
        path = data_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def refuse_running_stack(data_dir: Path) -> None:
    """DemoError when a stack started by ``namazu stack start`` runs under ``data_dir``."""
    if status(data_dir).get("running"):
        raise DemoError(
            f"a stack is already running under {data_dir}; stop it with "
            f"'namazu stack stop --data-dir {data_dir}' or choose another --data-dir"
        )


def start_stack(data_dir: Path) -> Stack:
    """Mosquitto + InfluxDB under ``data_dir`` on free loopback ports, recorded in
    ``stack.json`` (``namazu stack status`` sees them; the file goes when they stop)."""
    refuse_running_stack(data_dir)
    stack = Stack(data_dir, shielded=True)
    try:
        stack.start()
    except StackError as exc:
        stack.stop()
        raise DemoError(str(exc)) from exc
    stack.record(started_by="namazu demo", demo_pid=os.getpid())
    return stack


def demo_config(
    base: NamazuConfig, stack: Stack, web_port: int | None = None, smtp_port: int | None = None
) -> NamazuConfig:
    """``base`` pointed at the demo stack: broker port, InfluxDB URL, own client id,
    state store and alarm log under the data directory, a panel on loopback over plain
    HTTP (so session cookies are not marked Secure; put TLS in front in production),
    and alert e-mails to the local SMTP catcher on ``smtp_port`` (when given)."""
    data_dir = stack.data_dir
    signing_key, keyring = data_dir / "keys" / "alarm-log.key", data_dir / "keys" / "keyring.json"
    if not signing_key.exists():
        generate_signing_key(signing_key, keyring)
    mail = base.mail
    if smtp_port is not None:
        mail = mail.model_copy(
            update={"enabled": True, "host": "127.0.0.1", "port": smtp_port, "security": "none",
                    "username": None, "password": None}
        )  # fmt: skip
    return base.model_copy(
        update={
            "mail": mail,
            "mqtt": base.mqtt.model_copy(update={"host": "127.0.0.1", "port": stack.mqtt_port}),
            "influx": base.influx.model_copy(update={"url": stack.influx_url}),
            "ingest": base.ingest.model_copy(update={"client_id": "namazu-demo-ingest"}),
            "state": base.state.model_copy(
                update={"url": f"sqlite:///{data_dir / 'state.sqlite'}"}
            ),
            "scheduler": base.scheduler.model_copy(
                update={
                    "alarm_log_path": data_dir / "alarm-log.jsonl",
                    "alarm_log_signing_key": signing_key,
                    "alarm_log_keyring": keyring,
                }
            ),
            "web": base.web.model_copy(
                update={
                    "host": "127.0.0.1",
                    "port": base.web.port if web_port is None else web_port,
                    "secure_cookies": False,
                    "secret_key": base.web.secret_key or secrets.token_urlsafe(32),
                }
            ),
        }
    )


def start_ingest(config: NamazuConfig, stack: Stack) -> DemoRun:
    """Start ingest in-process against the stack; waits until it is subscribed."""
    influx = InfluxClient.from_config(config.influx)
    influx.drop_database()  # a previous run's activity, baselines and quakes
    influx.create_database()
    ingest = IngestService(config, influx).start()
    run = DemoRun(stack, config, influx, ingest)
    if not ingest.wait_ready(15):
        run.stop()
        raise DemoError(f"ingest could not subscribe at 127.0.0.1:{stack.mqtt_port}")
    return run


@dataclass(frozen=True)
class GroundTruth:
    """One injected episode and what it stands for in the demo."""

    episode: Any  # namazu.firmware_bridge.simulator.UnrestEpisode
    role: str
    animals: list[str]

    def line(self) -> str:
        """The printed ground truth (the system test reads it back)."""
        ep = self.episode
        return (
            f"injected unrest episode (ground truth): {ep.start:%Y-%m-%d %H:%M} UTC, "
            f"{ep.duration_min:g} min, activity x{ep.intensity:g}, {len(self.animals)} animals "
            f"({self.role})"
        )


def demo_animals(species: tuple[str, ...] | None = None) -> list[str]:
    """Ids of the demo animals (both gateways), optionally of some species only."""
    return [
        f"{gw}-{sp}-{i:03d}"
        for gw in DEMO_GATEWAYS
        for sp, n in DEMO_HERD.items()
        if species is None or sp in species
        for i in range(1, n + 1)
    ]


def demo_episodes(start: datetime, end: datetime, days: float) -> list[GroundTruth]:
    """The injected episodes of a demo over [start, end].

    ``days`` >= SCENARIO_DAYS: the hit (cows and sheep, six hours before the replayed
    18 January 2017 sequence) and the reaction (every animal, after the replayed
    3 February 2017 local shaking), on the simulated UTC days the catalogue is placed
    on. 4 to 8 days: one episode of every animal ten hours before the end. Fewer: none
    (no baseline).
    """
    from namazu.firmware_bridge.simulator import UnrestEpisode

    if days < 4:
        return []
    if days < SCENARIO_DAYS:
        episode = UnrestEpisode(end - EPISODE_BEFORE_END, EPISODE_DURATION_MIN, EPISODE_INTENSITY)
        return [GroundTruth(episode, "every animal", demo_animals())]
    day0 = pd.Timestamp(start).tz_convert("UTC").floor("D").to_pydatetime()
    truth = []
    for offset, spec, role in (
        (HIT_START, HIT, "cows and sheep; six hours before the M 5.1 of the replayed sequence"),
        (REACTION_START, REACTION, "every animal; twenty minutes after local shaking"),
    ):
        species = spec["species"]
        animals = demo_animals(species)
        short = None if species is None else tuple(a.split("-", 2)[2] for a in animals)
        episode = UnrestEpisode(day0 + offset, spec["duration_min"], spec["intensity"], short)
        truth.append(GroundTruth(episode, role, animals))
    return truth


def start_gateways(
    run: DemoRun, farm: str, seed: int, spool_dir: Path, episodes: tuple = ()
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The demo herds (one per gateway, seeded) and their started, spooled publishers."""
    from namazu.firmware_bridge.publisher import GatewayPublisher
    from namazu.firmware_bridge.simulator import Herd
    from namazu.firmware_bridge.spool import Spool

    herds = {
        gw: Herd(farm, gw, DEMO_HERD, seed=seed + k, dropout_rate=0.01, episodes=episodes)
        for k, gw in enumerate(DEMO_GATEWAYS)
    }
    spool_dir.mkdir(parents=True, exist_ok=True)
    gateways = {
        gw: GatewayPublisher(
            farm,
            gw,
            Spool(spool_dir / f"spool-{gw}.sqlite"),
            port=run.stack.mqtt_port,
            wait_for_ingest=run.config.bridge.wait_for_ingest,
        ).start()
        for gw in DEMO_GATEWAYS
    }
    return herds, gateways


def run_herds(
    run: DemoRun,
    farm: str,
    days: float,
    speed: float,
    seed: int,
    spool_dir: Path,
    end: datetime | None = None,
    episodes: tuple = (),
) -> pd.DataFrame:
    """Publish ``days`` of simulated activity ending at ``end`` (default now) from every
    demo gateway, with ``episodes`` (UnrestEpisode) injected.

    speed : simulated seconds per real second (0 = as fast as possible).
    Returns every published sample (columns animal, species, t_ms, odba, vedba).
    """
    from namazu.firmware_bridge.payload import batches_from_frame

    end = end or datetime.now(UTC).replace(second=0, microsecond=0)
    start = end - timedelta(days=days)
    herds, gateways = start_gateways(run, farm, seed, spool_dir, tuple(episodes))
    published = []
    began = time.monotonic()
    try:
        t = start
        while t < end:
            chunk_end = min(t + CHUNK, end)
            for gw, herd in herds.items():
                frame = herd.activity(t, chunk_end, with_battery=True)
                gateways[gw].publish_batches(batches_from_frame(frame, farm, gw, 100))
                published.append(frame)
            if speed > 0:
                due = began + (chunk_end - start).total_seconds() / speed
                time.sleep(max(0.0, due - time.monotonic()))
            t = chunk_end
        for gw, publisher in gateways.items():
            if not publisher.wait_drained(120):
                log.warning("gateway spool not drained", extra={"gateway": gw})
    finally:
        for publisher in gateways.values():
            publisher.stop()
    frames = [f for f in published if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def wait_stored(run: DemoRun, samples: int, timeout_s: float = 60.0) -> bool:
    """Wait until ingest has written ``samples`` points; False on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if run.ingest.stats["written_points"] >= samples:
            return True
        time.sleep(0.1)
    return False


def count_table(run: DemoRun, farm: str, published: pd.DataFrame) -> pd.DataFrame:
    """Per animal: species, published and stored sample counts (within the published
    time range, so earlier runs in the same data directory do not count)."""
    first_ms, last_ms = int(published["t_ms"].min()), int(published["t_ms"].max())
    series = run.influx.query(
        f'SELECT count("odba") FROM "activity" WHERE "farm" = $farm AND time >= {first_ms}ms '
        f'AND time <= {last_ms}ms GROUP BY "animal"',
        params={"farm": farm},
    )
    stored = {s["tags"]["animal"]: int(s["values"][0][1]) for s in series}
    table = published.groupby(["animal", "species"]).size().rename("published").reset_index()
    table["stored"] = table["animal"].map(stored).fillna(0).astype(int)
    return table


def print_table(table: pd.DataFrame, elapsed_s: float) -> bool:
    """Print the count table and a summary; True when every sample is stored."""
    print(f"{'animal':<18} {'species':<8} {'published':>10} {'stored':>10}")
    for row in table.itertuples():
        mark = "" if row.published == row.stored else "  MISSING"
        print(f"{row.animal:<18} {row.species:<8} {row.published:>10} {row.stored:>10}{mark}")
    total_pub, total_st = int(table["published"].sum()), int(table["stored"].sum())
    rate = total_st / elapsed_s if elapsed_s > 0 else float("nan")
    print(f"{'total':<27} {total_pub:>10} {total_st:>10}   ({rate:,.0f} samples/s end to end)")
    return total_pub == total_st and bool((table["published"] == table["stored"]).all())


def scenario_catalog(catalog: pd.DataFrame, start: datetime) -> pd.DataFrame:
    """The real events of the ``REPLAY_DAYS`` days of ``catalog``, each day moved onto
    its simulated UTC day (counted from the day of ``start``), ids marked ``replay-``."""
    from namazu.server.catalogue.fdsn_replay import shift_catalog

    day0 = pd.Timestamp(start).tz_convert("UTC").floor("D")
    parts = []
    for real_day, sim_day in REPLAY_DAYS.items():
        inside = (catalog["time"] >= real_day) & (catalog["time"] < real_day + pd.Timedelta(days=1))
        offset = day0 + pd.Timedelta(days=sim_day) - real_day
        parts.append(shift_catalog(catalog[inside], offset.to_pytimedelta()))
    return pd.concat(parts, ignore_index=True).sort_values("time", kind="stable")


def replay_catalog(run: DemoRun, start: datetime, now: datetime) -> Any:
    """Serve the scenario's real 2017 events (``scenario_catalog``) as a local FDSN
    event service; None when the data pack is absent (the demo then runs without
    earthquakes and says so)."""
    from namazu.server.catalogue.fdsn_replay import ReplayFdsnServer
    from namazu.server.catalogue.files import read_catalog

    default = Path(__file__).resolve().parents[3] / "shared" / "data"
    path = Path(os.environ.get("NAMAZU_DATA_DIR", default)) / REPLAY_CATALOG
    if not path.exists():
        return None
    shifted = scenario_catalog(read_catalog(path), start)
    shifted = shifted[shifted["time"] <= pd.Timestamp(now)]
    server = ReplayFdsnServer(shifted, published_at=pd.Timestamp(now)).start()
    run.extras.append(server.stop)
    return server


class MailCatcher:
    """A local SMTP server (aiosmtpd) that saves every message it accepts as
    ``<directory>/NNNN.eml``, so the demo's alert e-mails can be opened."""

    def __init__(self, directory: Path):
        from aiosmtpd.controller import Controller

        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        """Store one accepted message (aiosmtpd handler API)."""
        number = len(list(self.directory.glob("*.eml"))) + 1
        (self.directory / f"{number:04d}.eml").write_bytes(bytes(envelope.content))
        return "250 Message accepted for delivery"

    def messages(self) -> list[Path]:
        """The saved messages, oldest first."""
        return sorted(self.directory.glob("*.eml"))

    def start(self) -> MailCatcher:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()


def subscribe(config: NamazuConfig, recipient: str = DEMO_RECIPIENT) -> None:
    """One subscription: ``recipient`` gets every critical (herd and quorum) alarm."""
    from namazu.server.store.state import Subscription, init_db, session_scope

    with session_scope(init_db(config.state.url)) as db:
        db.add(Subscription(recipient=recipient, farm="*", species="*", min_severity="critical"))


def run_detection(run: DemoRun, start: datetime, end: datetime, replay_url: str | None) -> Any:
    """Build the scheduler's services, fetch the catalogue once and drive detection
    hourly over the simulated span (as the live scheduler would have)."""
    from namazu.server.detection.scheduler import build_services, replay

    config = run.config
    if replay_url:
        config = config.model_copy(
            update={
                "scheduler": config.scheduler.model_copy(update={"catalog_sources": [replay_url]})
            }
        )
        run.config = config
    services = build_services(config)
    if services.catalog is not None:
        services.catalog.run(end)
    # While replaying, the gateways of the back-fill have just signed off and the first
    # hours have no data yet: data-health warnings would only be noise here.
    health_log = logging.getLogger("namazu.server.detection.health")
    level = health_log.level
    health_log.setLevel(logging.ERROR)
    try:
        # hourly cycles: an alert e-mail of the back-fill leaves at the first cycle after
        # its alarm's declaration (live, the scheduler ticks every minute)
        replay(services, start, end, timedelta(hours=1))
    finally:
        health_log.setLevel(level)
    return services


def alarm_summary(services: Any) -> list[str]:
    """One line per collective alarm (kind, series, first anomalous sample, declaration
    time, state, peak ratio, how many animals surged) and one line counting the
    single-animal alarms."""
    from sqlalchemy import select

    from namazu.server.store.state import Alarm, session_scope

    with session_scope(services.engine) as session:
        alarms = session.scalars(select(Alarm).order_by(Alarm.start, Alarm.kind, Alarm.id)).all()
        lines = [
            f"  {a.kind:<8} {a.series:<20} {a.start:%Y-%m-%d %H:%M} UTC  "
            f"declared {(a.declared_at or a.opened_at):%H:%M}  {a.state:<6} "
            f"peak {a.peak_ratio:.1f}x baseline, surged: {len(a.animals_involved or [])}"
            for a in alarms
            if a.kind != "animal"
        ]
        single = sum(a.kind == "animal" for a in alarms)
        lines.append(f"  and {single} single-animal alarm(s) (the panel's Alarms page lists them)")
        return lines


def create_demo_user(config: NamazuConfig) -> str:
    """Create the demo admin, or give the existing one a fresh random password (its
    reviews, farm events and sessions refer to it, so it is never deleted); return it."""
    from sqlalchemy import select

    from namazu.server.store.models import User
    from namazu.server.store.state import init_db, session_scope
    from namazu.server.web.auth import create_user, hash_password

    password = secrets.token_urlsafe(12)
    engine = init_db(config.state.url)
    with session_scope(engine) as db:
        existing = db.scalar(select(User).where(User.name == DEMO_USER))
        if existing is None:
            create_user(db, DEMO_USER, "admin", password)
        else:
            existing.password_hash = hash_password(password)
            existing.role = "admin"
    return password


def serve_panel(run: DemoRun) -> str:
    """Serve the panel in a thread; return its URL."""
    from werkzeug.serving import make_server

    from namazu.server.web import create_app

    app = create_app(run.config)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no access log on the console
    port = run.config.web.port
    if port == 0 or port_open(port):
        port = free_port()
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    run.extras.append(server.shutdown)
    return f"http://127.0.0.1:{port}/"


def wait_gateways_online(run: DemoRun, farm: str, timeout_s: float) -> bool:
    """Wait until every demo gateway's latest stored status says online."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        series = run.influx.query(
            'SELECT last("online") FROM "gateway_status" WHERE "farm" = $farm GROUP BY "gateway"',
            params={"farm": farm},
        )
        online = {s["tags"]["gateway"] for s in series if s["values"][0][1]}
        if online >= set(DEMO_GATEWAYS):
            return True
        time.sleep(0.2)
    return False


def go_live(run: DemoRun, services: Any, farm: str, seed: int, spool_dir: Path) -> None:
    """Keep the herds publishing every minute and the scheduler ticking, in threads."""
    from namazu.firmware_bridge.payload import batches_from_frame
    from namazu.server.detection.scheduler import make_scheduler

    herds, gateways = start_gateways(run, farm, seed, spool_dir)
    # The back-fill gateways signed off (status offline); let the live ones report
    # online before the first health check, so it does not flag a whole farm.
    wait_gateways_online(run, farm, timeout_s=15.0)
    scheduler = make_scheduler(services, blocking=False)
    scheduler.start()
    run.extras.append(lambda: scheduler.shutdown(wait=False))
    stop = threading.Event()

    def publish_every_minute() -> None:
        last = datetime.now(UTC).replace(second=0, microsecond=0)
        while not stop.wait(max(1.0, 60.0 - datetime.now(UTC).second)):
            now = datetime.now(UTC).replace(second=0, microsecond=0)
            if now <= last:
                continue
            for gw, herd in herds.items():
                gateways[gw].publish_batches(
                    batches_from_frame(herd.activity(last, now, with_battery=True), farm, gw)
                )
            last = now

    thread = threading.Thread(target=publish_every_minute, name="demo-live-herds", daemon=True)
    thread.start()

    def stop_live() -> None:
        stop.set()
        thread.join(timeout=5)
        for publisher in gateways.values():
            publisher.stop()

    run.extras.append(stop_live)


def wait_for_interrupt() -> None:
    """Block until Ctrl-C or SIGTERM."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()


def main(argv: list[str]) -> int:
    """``namazu demo``: local stack, simulated herds with an injected episode, a replayed
    catalogue, detection and the panel with a demo login."""
    parser = argparse.ArgumentParser(prog="namazu demo", description=main.__doc__)
    parser.add_argument("--config", help="TOML config file (farm ids, ingest tuning)")
    parser.add_argument("--data-dir", type=Path, default=Path("var/demo"), help="stack dir")
    parser.add_argument("--days", type=float, default=8.0, help="simulated days to publish")
    parser.add_argument(
        "--speed",
        type=float,
        default=0.0,
        help="simulated seconds per real second (0 = as fast as possible)",
    )
    parser.add_argument("--seed", type=int, default=1, help="simulator seed")
    parser.add_argument("--port", type=int, default=None, help="panel port (default web.port)")
    parser.add_argument(
        "--no-serve", action="store_true", help="stop after detection (do not serve the panel)"
    )
    args = parser.parse_args(argv)
    if not 0 < args.days <= 30:
        print("namazu demo: --days must be in (0, 30]", file=sys.stderr)
        return 2
    if args.speed < 0:
        print("namazu demo: --speed must be >= 0", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    data_dir = args.data_dir.resolve()
    lock = DemoLock(data_dir)
    try:
        base = load_config(args.config)
        lock.acquire()
    except (ConfigError, DemoError) as exc:
        print(f"namazu demo: {exc}", file=sys.stderr)
        return 1
    try:
        return _run(args, base, data_dir)
    finally:
        lock.release()


def _run(args: argparse.Namespace, base: NamazuConfig, data_dir: Path) -> int:
    """The demo's steps once its data directory is its own."""
    try:
        refuse_running_stack(data_dir)  # before clearing: never under a running stack
        clear_previous_run(data_dir)
        print(f"starting Mosquitto and InfluxDB under {data_dir} ...")
        stack = start_stack(data_dir)
    except DemoError as exc:
        print(f"namazu demo: {exc}", file=sys.stderr)
        return 1
    run = None
    catcher = None
    try:
        serve = not args.no_serve and args.days >= 4
        if args.days >= 4:
            catcher = MailCatcher(data_dir / "mail").start()
        config = demo_config(base, stack, args.port, catcher.port if catcher else None)
        run = start_ingest(config, stack)
        if catcher is not None:
            run.extras.insert(0, catcher.stop)
        farm = config.farms[0].id
        end = datetime.now(UTC).replace(second=0, microsecond=0)
        start = end - timedelta(days=args.days)
        print(f"publishing {args.days:g} simulated day(s) from {len(DEMO_GATEWAYS)} gateways ...")
        truth = demo_episodes(start, end, args.days)
        for item in truth:
            print(item.line())
        began = time.monotonic()
        spools = data_dir / "spools"
        published = run_herds(
            run, farm, args.days, args.speed, args.seed, spools, end, [t.episode for t in truth]
        )
        wait_stored(run, len(published))
        elapsed = time.monotonic() - began
        complete = print_table(count_table(run, farm, published), elapsed)
        if args.days < 4:
            print("fewer than 4 simulated days: no baseline, so no detection is run")
            return 0 if complete else 1
        replay = replay_catalog(run, start, end) if args.days >= SCENARIO_DAYS else None
        if replay is None:
            print(
                "no catalogue replayed: "
                + (
                    "the data pack was not found (NAMAZU_DATA_DIR)"
                    if args.days >= SCENARIO_DAYS
                    else f"the earthquake scenario needs --days >= {SCENARIO_DAYS:g}"
                )
            )
        else:
            print(
                f"replaying {len(replay.catalog)} real INGV events of 18 January and "
                f"3 February 2017 (placed on the simulated days "
                f"{', '.join(str(d + 1) for d in REPLAY_DAYS.values())}) at {replay.base_url}"
            )
        subscribe(run.config)
        print("running detection over the simulated days ...")
        services = run_detection(run, start, end, replay.base_url if replay else None)
        lines = alarm_summary(services)
        print(f"alarms opened (log: {run.config.scheduler.alarm_log_path}):")
        print("\n".join(lines))
        mails = catcher.messages() if catcher else []
        print(
            f"alert e-mails to {DEMO_RECIPIENT} (one subscription, critical alarms): "
            f"{len(mails)} caught by the local SMTP server"
            + (f"; read the first: {mails[0]}" if mails else "")
        )
        if not serve:
            return 0 if complete else 1
        password = create_demo_user(run.config)
        url = serve_panel(run)
        go_live(run, services, farm, args.seed, spools)
        print()
        print(f"mosquitto: mqtt://127.0.0.1:{run.stack.mqtt_port}")
        print(f"influxdb:  {run.stack.influx_url} (database {run.config.influx.database})")
        print(f"e-mails:   {catcher.directory if catcher else '-'} (one .eml file per message)")
        print("the herds keep publishing in real time; press Ctrl-C to stop")
        print(f"panel:     {url}")
        print(f"login:     {DEMO_USER} / {password}", flush=True)
        wait_for_interrupt()
        return 0 if complete else 1
    except DemoError as exc:
        print(f"namazu demo: {exc}", file=sys.stderr)
        return 1
    finally:
        if run is not None:
            run.stop()
        else:
            if catcher is not None:
                catcher.stop()
            stack.forget()
            stack.stop()
