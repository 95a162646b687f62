"""Ingest, broker-path and gateway benchmarks (rows 1, 2 and 6 of the `make bench` table).

1. End-to-end samples/s: gateway messages of 100 samples -> Mosquitto (QoS 1) ->
   ``namazu ingest`` -> InfluxDB, against the raw InfluxDB limit: the same points
   written straight to ``/write`` in 50,000-point batches by a minimal client.
2. Broker path: messages/s through the ingest subscriber against Mosquitto's rate to
   a minimal paho subscriber for the same messages.
6. Gateway: spool write and drain rates, peak RSS of ``namazu bridge`` with 500 collars.

Run alone: ``python -m bench.bench_ingest [--quick]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import requests

from bench.common import PeakRss, Stopwatch, format_table, result
from namazu.firmware_bridge.payload import activity_topic, encode_activity

FARM = "bench-farm"
SAMPLES_PER_MESSAGE = 100
RAW_BATCH_POINTS = 50_000
MINUTE_MS = 60_000
#: Alternating runs of the raw limit and of one ingest worker; medians are compared.
PAIRED_RUNS = 3


def synthetic_points(
    n_samples: int, n_gateways: int = 10, animals_per_gateway: int = 50, start_ms: int = 0
) -> dict[str, np.ndarray]:
    """Deterministic activity samples spread over gateways and animals.

    Returns arrays gateway, animal (str), t_ms (UTC epoch [ms], one-minute steps per
    animal) and odba, vedba [g]; ordered gateway by gateway, minute by minute.
    ``start_ms`` defaults to 3 days ago rounded to the minute.
    """
    if start_ms == 0:
        start_ms = (int(time.time() * 1000) - 3 * 86_400_000) // MINUTE_MS * MINUTE_MS
    idx = np.arange(n_samples, dtype=np.int64)
    per_gateway = -(-n_samples // n_gateways)
    gw = idx // per_gateway
    within = idx % per_gateway
    animal = within % animals_per_gateway
    minute = within // animals_per_gateway
    rng = np.random.default_rng(7)
    odba = np.round(rng.gamma(2.0, 0.05, n_samples), 6)
    return {
        "gateway": np.char.add("gw-", gw.astype(str)),
        "animal": np.char.add(
            np.char.add(np.char.add("g", gw.astype(str)), "-cow-"), animal.astype(str)
        ),
        "t_ms": start_ms + minute * MINUTE_MS,
        "odba": odba,
        "vedba": np.round(odba * 0.8, 6),
    }


def line_protocol_batches(
    points: dict[str, np.ndarray], batch: int = RAW_BATCH_POINTS
) -> list[bytes]:
    """The points as ``activity`` line protocol, ``batch`` points per request body."""
    lines = [
        f"activity,animal={a},farm={FARM},gateway={g},species=cow odba={o!r},vedba={v!r} {t}"
        for a, g, o, v, t in zip(
            points["animal"].tolist(),
            points["gateway"].tolist(),
            points["odba"].tolist(),
            points["vedba"].tolist(),
            points["t_ms"].tolist(),
            strict=True,
        )
    ]
    return ["\n".join(lines[i : i + batch]).encode() for i in range(0, len(lines), batch)]


def payloads(points: dict[str, np.ndarray], per_message: int = SAMPLES_PER_MESSAGE):
    """(topic, payload bytes) of v1 activity messages of ``per_message`` samples each.

    Messages never mix gateways; each gateway numbers its messages from 0.
    """
    out: list[tuple[str, bytes]] = []
    gateways = points["gateway"]
    seq: dict[str, int] = {}
    sent_ms = int(time.time() * 1000)
    bounds = np.flatnonzero(gateways[1:] != gateways[:-1]) + 1
    for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(gateways)], strict=True):
        gateway = str(gateways[lo])
        for start in range(lo, hi, per_message):
            stop = min(start + per_message, hi)
            animals: dict[str, list[int]] = {}
            for i, name in enumerate(points["animal"][start:stop].tolist(), start):
                animals.setdefault(name, []).append(i)
            entries = [
                {
                    "animal": name,
                    "species": "cow",
                    "t_ms": points["t_ms"][rows],
                    "odba": points["odba"][rows],
                    "vedba": points["vedba"][rows],
                }
                for name, rows in animals.items()
            ]
            number = seq.get(gateway, 0)
            seq[gateway] = number + 1
            out.append(
                (
                    activity_topic(FARM, gateway),
                    encode_activity(FARM, gateway, number, sent_ms, entries),
                )
            )
    return out


def raw_influx_limit(influx_url: str, database: str, bodies: list[bytes]) -> float:
    """Points/s of a minimal client POSTing pre-built line protocol to ``/write`` [1/s]."""
    session = requests.Session()
    session.post(f"{influx_url}/query", data={"q": f'CREATE DATABASE "{database}"'}, timeout=30)
    n_points = sum(body.count(b"\n") + 1 for body in bodies)
    with Stopwatch() as sw:
        for body in bodies:
            response = session.post(
                f"{influx_url}/write",
                params={"db": database, "precision": "ms"},
                data=body,
                timeout=120,
            )
            if response.status_code != 204:
                raise RuntimeError(f"raw write failed: HTTP {response.status_code} {response.text}")
    session.close()
    return n_points / sw.seconds


def _client(client_id: str, protocol=mqtt.MQTTv311) -> mqtt.Client:
    return mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)


def publish_all(
    port: int,
    messages: list[tuple[str, bytes]],
    qos: int = 1,
    client_id: str = "bench-publisher",
    max_inflight: int = 1000,
) -> float:
    """Publish messages at QoS ``qos`` and wait for every PUBACK; returns seconds taken."""
    client = _client(client_id)
    client.max_inflight_messages_set(max_inflight)
    client.max_queued_messages_set(0)
    done = threading.Event()
    acked = [0]
    total = len(messages)

    def on_publish(_c, _u, _mid, _rc, _p):
        acked[0] += 1
        if acked[0] >= total:
            done.set()

    client.on_publish = on_publish
    client.connect("127.0.0.1", port)
    client.loop_start()
    with Stopwatch() as sw:
        for topic, payload in messages:
            client.publish(topic, payload, qos=qos)
        if not done.wait(timeout=max(60.0, total / 100)):
            raise RuntimeError(f"only {acked[0]} of {total} publishes acknowledged")
    client.loop_stop()
    client.disconnect()
    return sw.seconds


class _Arrivals:
    """Counts the ``total`` messages a subscriber receives and times the first and the
    last of them; the rate is (total - 1) / (last - first) [1/s]."""

    def __init__(self, total: int):
        self.total = total
        self.received = 0
        self.first = self.last = 0.0
        self.done = threading.Event()

    def arrived(self) -> None:
        """Call once per message received (in the subscriber's network thread)."""
        if self.received == 0:
            self.first = time.perf_counter()
        self.received += 1
        if self.received >= self.total:
            self.last = time.perf_counter()
            self.done.set()

    def rate(self, subscriber: str, timeout_s: float = 120.0) -> float:
        """Wait for every message, then the rate [1/s]; RuntimeError on a timeout."""
        if not self.done.wait(timeout=timeout_s):
            raise RuntimeError(f"{subscriber} received {self.received} of {self.total}")
        return (self.total - 1) / (self.last - self.first)


def minimal_subscriber_rate(port: int, messages: list[tuple[str, bytes]]) -> float:
    """Messages/s that Mosquitto delivers at QoS 1 to a minimal paho subscriber [1/s].

    The subscriber only counts; the rate is measured from the first to the last
    message received while a second client publishes them.
    """
    arrivals = _Arrivals(len(messages))
    sub = _client("bench-minimal-subscriber")
    subscribed = threading.Event()
    sub.on_message = lambda _c, _u, _msg: arrivals.arrived()
    sub.on_subscribe = lambda *_a: subscribed.set()
    sub.connect("127.0.0.1", port)
    sub.loop_start()
    sub.subscribe(f"namazu/v1/{FARM}/+/activity", qos=1)
    if not subscribed.wait(10):
        raise RuntimeError("minimal subscriber did not get SUBACK")
    publish_all(port, messages, client_id="bench-publisher-minimal")
    rate = arrivals.rate("minimal subscriber")
    sub.loop_stop()
    sub.disconnect()
    return rate


def ingest_consumer_rate(port: int, messages: list[tuple[str, bytes]]) -> float:
    """Messages/s that Mosquitto delivers to the ingest service's MQTT consumer alone
    (``namazu.server.ingest.mqtt.MqttConsumer``: MQTT v5 persistent session, the shared activity
    subscription, manual acknowledgement of every message) with no decoding and no
    writes [1/s]; measured like :func:`minimal_subscriber_rate`."""
    from namazu.server.ingest.mqtt import MqttConsumer
    from namazu.server.ingest.service import activity_subscription

    arrivals = _Arrivals(len(messages))
    consumer: MqttConsumer | None = None

    def on_message(message) -> None:
        consumer.ack(message)
        arrivals.arrived()

    consumer = MqttConsumer(
        "127.0.0.1",
        port,
        "bench-ingest-consumer",
        [activity_subscription("bench-consumer")],
        on_message,
    )
    consumer.start()
    try:
        if not consumer.wait_ready(10):
            raise RuntimeError("ingest consumer did not subscribe")
        publish_all(port, messages, client_id="bench-publisher-consumer")
        return arrivals.rate("ingest consumer")
    finally:
        consumer.stop(end_session=True)


def run(quick: bool = False, workdir: Path | None = None) -> list[dict[str, Any]]:
    """Run the ingest, broker and gateway benchmarks; return result rows."""
    from namazu.server.launch.stack import Stack

    n_samples = 200_000 if quick else 1_000_000
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="namazu-bench-", dir=workdir) as tmp:
        stack = Stack(Path(tmp) / "stack").start()
        try:
            points = synthetic_points(n_samples)
            bodies = line_protocol_batches(points)
            messages = payloads(points)
            broker = minimal_subscriber_rate(stack.mqtt_port, messages)
            consumer = ingest_consumer_rate(stack.mqtt_port, messages)
            rows += hot_path_rows(messages)
            rows += _ingest_rows(stack, messages, n_samples, bodies, broker, Path(tmp))
            rows.append(
                result(
                    "2 broker path",
                    "messages through the ingest service's MQTT consumer alone "
                    "(v5 session, shared subscription, manual acks; no decoding, no writes)",
                    consumer,
                    "msg/s",
                    broker,
                    "minimal paho subscriber",
                )
            )
            rows += _gateway_rows(stack, Path(tmp), quick, messages)
        finally:
            stack.stop()
    return rows


def _ingest_rows(stack, messages, n_samples, bodies, broker, tmp) -> list[dict[str, Any]]:
    """Rows 1-3. The raw limit and the one-worker rate are measured ``PAIRED_RUNS`` times,
    alternately (raw, ingest, raw, ingest, ...), so that a change in the machine's load
    touches both sides alike; the row compares the medians and names the ranges."""
    from tests.chaos.harness import measure_ingest

    rows = []
    raws, ones = [], []
    for run_index in range(PAIRED_RUNS):
        raws.append(raw_influx_limit(stack.influx_url, f"bench_raw_{run_index}", bodies))
        ones.append(measure_ingest(stack, tmp, messages, n_samples, FARM, workers=1))
    raw = statistics.median(raws)
    one = sorted(ones, key=lambda run: run["samples_per_s"])[len(ones) // 2]
    lost = max(n_samples - run["stored"] for run in ones)
    rss = max(max(run["peak_rss_mib"].values()) for run in ones)
    rows.append(
        result(
            "1 ingest",
            f"gateway -> Mosquitto -> ingest -> InfluxDB, {n_samples:,} samples, 1 worker, "
            f"median of {PAIRED_RUNS} runs alternating with the raw limit",
            one["samples_per_s"],
            "samples/s",
            raw,
            "raw /write, 50k-point batches, median",
            ">= 0.5, 0 lost",
            note=f"lost {lost} in the worst run; ingest {_span(ones)}, raw "
            f"{min(raws):,.0f}-{max(raws):,.0f} samples/s; ingest peak RSS {rss:.0f} MiB",
        )
    )
    rows.append(
        result(
            "2 broker path",
            "messages through the whole ingest service (100 samples each, written)",
            one["samples_per_s"] / SAMPLES_PER_MESSAGE,
            "msg/s",
            broker,
            "minimal paho subscriber",
        )
    )
    for workers in (2, 3):
        many = measure_ingest(stack, tmp, messages, n_samples, FARM, workers=workers)
        rows.append(
            result(
                "3 scale-out",
                f"{workers} ingest workers, one shared subscription",
                many["samples_per_s"],
                "samples/s",
                one["samples_per_s"],
                "1 worker",
                note=f"lost {n_samples - many['stored']}; messages per worker "
                + "/".join(str(n) for n in many["received"]),
            )
        )
    return rows


def _span(runs: list[dict[str, Any]]) -> str:
    rates = [run["samples_per_s"] for run in runs]
    return f"{min(rates):,.0f}-{max(rates):,.0f}"


def hot_path_rows(messages: list[tuple[str, bytes]]) -> list[dict[str, Any]]:
    """CPU of the ingest hot path per message (decode + validate + line protocol) against
    the per-animal reference path it replaced, on the same messages [samples/s]."""
    from namazu.server.ingest import payload as pl
    from namazu.server.ingest.service import activity_lines
    from namazu.server.store.influx import float_series_lines

    sample = messages[:3000]
    now = int(time.time() * 1000)
    window = (300_000, 400 * 86_400_000)

    def reference(topic: str, body: bytes) -> list[str]:
        document = pl.parse_json(body)
        animals = [pl._animal(item, i) for i, item in enumerate(document["animals"])]
        batch = pl.ActivityBatch(
            document["farm"], document["gateway"], document["seq"], document["sent_ms"], animals
        )
        pl.check_activity_batch(batch, now, *window)
        lines: list[str] = []
        for a in animals:
            tags = {"farm": batch.farm, "gateway": batch.gateway, "animal": a.animal}
            tags["species"] = a.species
            lines += float_series_lines(
                "activity", tags, {"odba": a.odba, "vedba": a.vedba}, a.t_ms
            )
        return lines

    def current(topic: str, body: bytes) -> list[str]:
        return activity_lines(pl.decode_activity(topic, body, now, *window))

    rates = {}
    for name, path in (("reference", reference), ("current", current)):
        with Stopwatch() as sw:
            produced = sum(len(path(topic, body)) for topic, body in sample)
        rates[name] = produced / sw.seconds
    animals = len(orjson_loads(sample[0][1])["animals"])
    return [
        result(
            "1 ingest",
            f"hot path CPU: decode + validate + line protocol ({animals} animals per message)",
            rates["current"],
            "samples/s",
            rates["reference"],
            "per-animal path it replaced",
            "> 1 (speed-up)",
        )
    ]


def orjson_loads(body: bytes) -> Any:
    """Parse JSON bytes (orjson)."""
    import orjson

    return orjson.loads(body)


def _sqlite_plain_rate(path: Path, messages: list[tuple[str, bytes]], group: int) -> float:
    """Messages/s into a plain SQLite table without fsync (synchronous=OFF) [1/s]."""
    import sqlite3

    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    db.execute("CREATE TABLE m (seq INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT, payload BLOB)")
    with Stopwatch() as sw:
        for lo in range(0, len(messages), group):
            db.execute("BEGIN")
            db.executemany(
                "INSERT INTO m (topic, payload) VALUES (?, ?)", messages[lo : lo + group]
            )
            db.execute("COMMIT")
    db.close()
    return len(messages) / sw.seconds


def _gateway_rows(stack, tmp: Path, quick: bool, messages) -> list[dict[str, Any]]:
    import json
    import subprocess

    from namazu.firmware_bridge.publisher import GatewayPublisher
    from namazu.firmware_bridge.spool import Spool
    from tests.chaos.harness import spawn_module

    rows: list[dict[str, Any]] = []
    sample = messages[: 2000 if quick else 10_000]
    group = 10  # messages per durable transaction, as the bridge appends a flush at once
    spool = Spool(tmp / "spool-write.sqlite")
    with Stopwatch() as sw:
        for lo in range(0, len(sample), group):
            chunk = sample[lo : lo + group]
            spool.append_built(chunk[0][0], [lambda _s, p=p: p for _, p in chunk])
    write_rate = len(sample) / sw.seconds
    plain = _sqlite_plain_rate(tmp / "plain.sqlite", sample, group)
    rows.append(
        result(
            "6 gateway",
            f"spool write, fsync per {group}-message transaction",
            write_rate * SAMPLES_PER_MESSAGE,
            "samples/s",
            plain * SAMPLES_PER_MESSAGE,
            "SQLite without fsync",
        )
    )
    # drain: a full spool of one gateway's messages through the project's publisher
    topic = activity_topic(FARM, "gw-drain")
    drain_messages = [(topic, p) for _, p in sample]
    # no ingest here: the broker's PUBACK frees the spool
    publisher = GatewayPublisher(FARM, "gw-drain", spool, port=stack.mqtt_port, confirm="puback")
    depth = spool.depth()
    with Stopwatch() as sw:
        publisher.start()
        drained = publisher.wait_drained(600)
    publisher.stop()
    spool.close()
    drain_rate = depth / sw.seconds
    minimal = len(drain_messages) / publish_all(
        stack.mqtt_port, drain_messages, client_id="bench-minimal-publisher"
    )
    rows.append(
        result(
            "6 gateway",
            "spool drain to Mosquitto (QoS 1, 1,000 in flight)",
            drain_rate,
            "msg/s",
            minimal,
            "minimal paho publisher",
            note="" if drained else "NOT drained",
        )
    )
    # namazu bridge with 500 simulated collars, one hour of bursts
    minutes = 10 if quick else 60
    log = tmp / "bridge.log"
    proc = spawn_module(
        [
            "namazu.server.cli",
            "bridge",
            "--source=simulator",
            "--cows=500",
            f"--duration-min={minutes}",
            f"--mqtt-port={stack.mqtt_port}",
            f"--spool={tmp / 'bridge-spool.sqlite'}",
            "--drain-timeout-s=300",
            "--gateway=gw-bridge",
            f"--farm={FARM}",
            "--no-wait-for-ingest",  # no ingest worker runs here: measure the gateway alone
        ],
        {},
        log,
    )
    rss = PeakRss([proc.pid], interval_s=0.05).start()
    with Stopwatch() as sw:
        try:
            proc.wait(timeout=900)
        except subprocess.TimeoutExpired:
            proc.kill()
    rss.stop()
    summary = {}
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{") and "samples_published" in line:
            summary = json.loads(line)
    samples = summary.get("samples_published", 0)
    rows.append(
        result(
            "6 gateway",
            f"namazu bridge, 500 collars x {minutes} min of bursts: peak RSS",
            rss.peak_mib[proc.pid],
            "MiB",
            note=f"{samples:,} samples in {sw.seconds:.1f} s "
            f"({samples / sw.seconds:,.0f} samples/s), drained {summary.get('drained')}",
        )
    )
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run alone and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    args = parser.parse_args(argv)
    print(format_table(run(quick=args.quick)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
