"""``namazu demo``: the whole live data path on one machine, one step per function.

1. start Mosquitto and InfluxDB under ``--data-dir`` on free ports (server.stack);
2. start ingest in this process (server.ingest);
3. drive simulated herds through spooled gateway publishers, a simulated day (or
   ``--days``) ending now, as fast as possible or at ``--speed``;
4. print, per animal, how many samples were published and how many are stored;
5. stop everything, or keep it running with ``--keep-running`` until Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from server.config import ConfigError, NamazuConfig, load_config
from server.influx import InfluxClient
from server.ingest import IngestService
from server.stack import Stack, StackError, status

log = logging.getLogger(__name__)

#: Animals per demo gateway (species -> count).
DEMO_HERD = {"cow": 6, "sheep": 8, "dog": 2}
DEMO_GATEWAYS = ("gw-1", "gw-2")
CHUNK = timedelta(hours=1)


class DemoError(RuntimeError):
    """The demo could not run (stack already running, a service failed to start)."""


@dataclass
class DemoRun:
    """What the demo started, so that it can be stopped in one place."""

    stack: Stack
    config: NamazuConfig
    influx: InfluxClient
    ingest: IngestService

    def stop(self) -> None:
        """Stop ingest (its session ends) and the services."""
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
    stack = Stack(data_dir)
    try:
        return stack.start()
    except StackError as exc:
        stack.stop()
        raise DemoError(str(exc)) from exc


def demo_config(base: NamazuConfig, stack: Stack) -> NamazuConfig:
    """``base`` pointed at the demo stack (broker port, InfluxDB URL, own client id)."""
    return base.model_copy(
        update={
            "mqtt": base.mqtt.model_copy(update={"host": "127.0.0.1", "port": stack.mqtt_port}),
            "influx": base.influx.model_copy(update={"url": stack.influx_url}),
            "ingest": base.ingest.model_copy(update={"client_id": "namazu-demo-ingest"}),
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


def run_herds(
    run: DemoRun, farm: str, days: float, speed: float, seed: int, spool_dir: Path
) -> pd.DataFrame:
    """Publish ``days`` of simulated activity ending now from every demo gateway.

    speed : simulated seconds per real second (0 = as fast as possible).
    Returns every published sample (columns animal, species, t_ms, odba, vedba).
    """
    from firmware_bridge.payload import batches_from_frame
    from firmware_bridge.publisher import GatewayPublisher
    from firmware_bridge.simulator import Herd
    from firmware_bridge.spool import Spool

    end = datetime.now(UTC).replace(second=0, microsecond=0)
    start = end - timedelta(days=days)
    herds = {
        gw: Herd(farm, gw, DEMO_HERD, seed=seed + k, dropout_rate=0.01)
        for k, gw in enumerate(DEMO_GATEWAYS)
    }
    spool_dir.mkdir(parents=True, exist_ok=True)
    gateways = {
        gw: GatewayPublisher(
            farm, gw, Spool(spool_dir / f"spool-{gw}.sqlite"), port=run.stack.mqtt_port
        ).start()
        for gw in DEMO_GATEWAYS
    }
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


def wait_for_interrupt(run: DemoRun) -> None:
    """Keep the stack and ingest running until Ctrl-C or SIGTERM."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(f"mosquitto: mqtt://127.0.0.1:{run.stack.mqtt_port}")
    print(f"influxdb:  {run.stack.influx_url} (database {run.config.influx.database})")
    print("running; press Ctrl-C to stop")
    stop.wait()


def main(argv: list[str]) -> int:
    """``namazu demo``: local stack + simulated herds + ingest; prints stored vs published."""
    parser = argparse.ArgumentParser(prog="namazu demo", description=main.__doc__)
    parser.add_argument("--config", help="TOML config file (farm ids, ingest tuning)")
    parser.add_argument("--data-dir", type=Path, default=Path("var/demo"), help="stack dir")
    parser.add_argument("--days", type=float, default=1.0, help="simulated days to publish")
    parser.add_argument(
        "--speed",
        type=float,
        default=0.0,
        help="simulated seconds per real second (0 = as fast as possible)",
    )
    parser.add_argument("--seed", type=int, default=1, help="simulator seed")
    parser.add_argument("--keep-running", action="store_true", help="stay up until Ctrl-C")
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
        config = demo_config(base, stack)
        run = start_ingest(config, stack)
        farm = config.farms[0].id
        print(f"publishing {args.days:g} simulated day(s) from {len(DEMO_GATEWAYS)} gateways ...")
        began = time.monotonic()
        published = run_herds(run, farm, args.days, args.speed, args.seed, data_dir / "spools")
        wait_stored(run, len(published))
        elapsed = time.monotonic() - began
        complete = print_table(count_table(run, farm, published), elapsed)
        if args.keep_running:
            wait_for_interrupt(run)
        return 0 if complete else 1
    except DemoError as exc:
        print(f"namazu demo: {exc}", file=sys.stderr)
        return 1
    finally:
        if run is not None:
            run.stop()
        else:
            stack.stop()
