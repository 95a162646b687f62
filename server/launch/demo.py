"""``namazu demo``: the whole platform on one machine, one step per function.

1. start Mosquitto and InfluxDB under ``--data-dir`` on free ports (namazu.server.launch.stack);
2. start ingest in this process (namazu.server.ingest.service);
3. drive simulated herds through spooled gateway publishers, ``--days`` simulated
   days ending now, with one injected unrest episode on the last day (ground truth);
4. print, per animal, how many samples were published and how many are stored;
5. replay a real earthquake catalogue (the 2017 INGV catalogue of the study, shifted
   onto the simulated days) through a local FDSN event service, and let the
   scheduler's catalogue refresh fetch it;
6. run the scheduler's detection over the simulated days (alarms, hash-chained log);
7. create a demo admin with a random password and serve the panel, while the herds
   go on publishing in real time and the scheduler ticks every minute, until Ctrl-C.

``--no-serve`` stops after step 6 (tests); ``--days 0.1 --no-serve`` is a quick check of
the data path alone.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
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
#: The injected unrest episode: starts this long before the end of the simulated days.
EPISODE_BEFORE_END = timedelta(hours=10)
EPISODE_DURATION_MIN = 120.0
EPISODE_INTENSITY = 4.0
#: The replayed catalogue (relative to NAMAZU_DATA_DIR) and the day mapped onto day 1.
REPLAY_CATALOG = "wikelski2020/catalog_2017-01-17_2017-04-16.csv"
REPLAY_FROM = pd.Timestamp("2017-01-17T00:00:00Z")
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
        self.stack.stop()


def start_stack(data_dir: Path) -> Stack:
    """Mosquitto + InfluxDB under ``data_dir`` on free loopback ports."""
    if status(data_dir).get("running"):
        raise DemoError(
            f"a stack is already running under {data_dir}; stop it with "
            f"'namazu stack stop --data-dir {data_dir}' or choose another --data-dir"
        )
    stack = Stack(data_dir, shielded=True)
    try:
        return stack.start()
    except StackError as exc:
        stack.stop()
        raise DemoError(str(exc)) from exc


def demo_config(base: NamazuConfig, stack: Stack, web_port: int | None = None) -> NamazuConfig:
    """``base`` pointed at the demo stack: broker port, InfluxDB URL, own client id,
    state store and alarm log under the data directory, a panel on loopback over plain
    HTTP (so session cookies are not marked Secure; put TLS in front in production)."""
    data_dir = stack.data_dir
    signing_key, keyring = data_dir / "keys" / "alarm-log.key", data_dir / "keys" / "keyring.json"
    if not signing_key.exists():
        generate_signing_key(signing_key, keyring)
    return base.model_copy(
        update={
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
    ingest = IngestService(config, influx).start()
    run = DemoRun(stack, config, influx, ingest)
    if not ingest.wait_ready(15):
        run.stop()
        raise DemoError(f"ingest could not subscribe at 127.0.0.1:{stack.mqtt_port}")
    return run


def demo_episode(end: datetime, days: float) -> Any:
    """The injected unrest episode (every animal, both gateways), or None when the
    simulated span is too short for a baseline (fewer than 4 days)."""
    from namazu.firmware_bridge.simulator import UnrestEpisode

    if days < 4:
        return None
    return UnrestEpisode(end - EPISODE_BEFORE_END, EPISODE_DURATION_MIN, EPISODE_INTENSITY)


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
) -> pd.DataFrame:
    """Publish ``days`` of simulated activity ending at ``end`` (default now) from every
    demo gateway, with the demo episode injected.

    speed : simulated seconds per real second (0 = as fast as possible).
    Returns every published sample (columns animal, species, t_ms, odba, vedba).
    """
    from namazu.firmware_bridge.payload import batches_from_frame

    end = end or datetime.now(UTC).replace(second=0, microsecond=0)
    start = end - timedelta(days=days)
    episode = demo_episode(end, days)
    herds, gateways = start_gateways(run, farm, seed, spool_dir, (episode,) if episode else ())
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


def replay_catalog(run: DemoRun, start: datetime, now: datetime) -> Any:
    """Serve the study's real 2017 catalogue, shifted so that 2017-01-17 falls on the
    first simulated day, as a local FDSN event service; None when the data pack is
    absent (the demo then runs without earthquakes and says so)."""
    from namazu.server.catalogue.fdsn_replay import ReplayFdsnServer, shift_catalog
    from namazu.server.catalogue.files import read_catalog

    default = Path(__file__).resolve().parents[3] / "shared" / "data"
    path = Path(os.environ.get("NAMAZU_DATA_DIR", default)) / REPLAY_CATALOG
    if not path.exists():
        return None
    catalog = read_catalog(path)
    offset = pd.Timestamp(start).tz_convert("UTC").floor("D") - REPLAY_FROM
    shifted = shift_catalog(catalog, offset.to_pytimedelta())
    shifted = shifted[shifted["time"] <= pd.Timestamp(now)]
    server = ReplayFdsnServer(shifted, published_at=pd.Timestamp(now)).start()
    run.extras.append(server.stop)
    return server


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
        replay(services, start, end, timedelta(hours=1))
    finally:
        health_log.setLevel(level)
    return services


def alarm_summary(services: Any) -> list[str]:
    """One line per alarm in the state store (kind, series, start, state)."""
    from sqlalchemy import select

    from namazu.server.store.state import Alarm, session_scope

    with session_scope(services.engine) as session:
        alarms = session.scalars(select(Alarm).order_by(Alarm.start)).all()
        return [
            f"  {a.kind:<8} {a.series:<20} {a.start:%Y-%m-%d %H:%M} UTC  {a.state:<6} "
            f"peak {a.peak_ratio:.1f}x baseline"
            for a in alarms
        ]


def create_demo_user(config: NamazuConfig) -> str:
    """Create (or reset) the demo admin with a fresh random password; return it."""
    from sqlalchemy import select

    from namazu.server.store.models import User
    from namazu.server.store.state import init_db, session_scope
    from namazu.server.web.auth import create_user

    password = secrets.token_urlsafe(12)
    engine = init_db(config.state.url)
    with session_scope(engine) as db:
        existing = db.scalar(select(User).where(User.name == DEMO_USER))
        if existing is not None:
            db.delete(existing)
            db.flush()
        create_user(db, DEMO_USER, "admin", password)
    return password


def serve_panel(run: DemoRun) -> str:
    """Serve the panel in a thread; return its URL."""
    from werkzeug.serving import make_server

    from namazu.server.web import create_app

    app = create_app(run.config)
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
    try:
        base = load_config(args.config)
        data_dir = args.data_dir.resolve()
        print(f"starting Mosquitto and InfluxDB under {data_dir} ...")
        stack = start_stack(data_dir)
    except (ConfigError, DemoError) as exc:
        print(f"namazu demo: {exc}", file=sys.stderr)
        return 1
    run = None
    try:
        config = demo_config(base, stack, args.port)
        run = start_ingest(config, stack)
        farm = config.farms[0].id
        end = datetime.now(UTC).replace(second=0, microsecond=0)
        start = end - timedelta(days=args.days)
        print(f"publishing {args.days:g} simulated day(s) from {len(DEMO_GATEWAYS)} gateways ...")
        episode = demo_episode(end, args.days)
        if episode is not None:
            print(
                f"injected unrest episode (ground truth): {episode.start:%Y-%m-%d %H:%M} UTC, "
                f"{episode.duration_min:g} min, activity x{episode.intensity:g}, every animal"
            )
        began = time.monotonic()
        spools = data_dir / "spools"
        published = run_herds(run, farm, args.days, args.speed, args.seed, spools, end)
        wait_stored(run, len(published))
        elapsed = time.monotonic() - began
        complete = print_table(count_table(run, farm, published), elapsed)
        if args.days < 4:
            print("fewer than 4 simulated days: no baseline, so no detection is run")
            return 0 if complete else 1
        replay = replay_catalog(run, start, end)
        if replay is None:
            print("no catalogue replayed: the data pack was not found (NAMAZU_DATA_DIR)")
        else:
            print(
                f"replaying {len(replay.catalog)} real INGV events (2017, shifted onto the "
                f"simulated days) at {replay.base_url}"
            )
        print("running detection over the simulated days ...")
        services = run_detection(run, start, end, replay.base_url if replay else None)
        lines = alarm_summary(services)
        print(f"{len(lines)} alarm(s) opened; log: {run.config.scheduler.alarm_log_path}")
        print("\n".join(lines))
        if args.no_serve:
            return 0 if complete else 1
        password = create_demo_user(run.config)
        url = serve_panel(run)
        go_live(run, services, farm, args.seed, spools)
        print()
        print(f"panel:     {url}")
        print(f"login:     {DEMO_USER} / {password}")
        print(f"mosquitto: mqtt://127.0.0.1:{run.stack.mqtt_port}")
        print(f"influxdb:  {run.stack.influx_url} (database {run.config.influx.database})")
        print("the herds keep publishing in real time; press Ctrl-C to stop", flush=True)
        wait_for_interrupt()
        return 0 if complete else 1
    except DemoError as exc:
        print(f"namazu demo: {exc}", file=sys.stderr)
        return 1
    finally:
        if run is not None:
            run.stop()
        else:
            stack.stop()
