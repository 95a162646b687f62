"""End to end: simulated herds -> GatewayPublisher (spool, QoS 1) -> Mosquitto ->
ingest -> InfluxDB, all real services started through the project's launcher."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

import orjson
import pandas as pd
import pytest

from namazu.firmware_bridge.payload import batches_from_frame
from namazu.firmware_bridge.publisher import GatewayPublisher
from namazu.firmware_bridge.simulator import Herd
from namazu.firmware_bridge.spool import Spool
from namazu.server.ingest.payload import PayloadError, decode_activity_message, parse_json
from namazu.server.ingest.service import IngestService
from namazu.server.store.influx import InfluxClient
from tests.server.ingest_support import Publisher, make_config, now_ms, wait_for
from tests.server.payload_cases import malformed_corpus, valid_document

pytestmark = pytest.mark.services

HERD = {"cow": 4, "sheep": 3, "dog": 3}


def simulated(farm: str, gateway: str, minutes: int, seed: int) -> pd.DataFrame:
    """``minutes`` of one-minute activity for a 10-animal herd, ending an hour ago."""
    end = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)
    herd = Herd(farm, gateway, HERD, seed=seed, resolution_s=60)
    return herd.activity(end - timedelta(minutes=minutes), end, with_battery=True)


def stored_per_animal(influx: InfluxClient, farm: str) -> dict[str, int]:
    series = influx.query(f"SELECT count(odba) FROM activity WHERE farm = '{farm}' GROUP BY animal")
    return {s["tags"]["animal"]: int(s["values"][0][1]) for s in series}


def published_per_animal(frames: list[pd.DataFrame]) -> dict[str, int]:
    return {k: int(v) for k, v in pd.concat(frames).groupby("animal").size().items()}


def test_100k_samples_from_three_gateways(stack, influx, tmp_path):
    farm = "e2e-farm"
    cfg = make_config(stack.mqtt_port, stack.influx_url, influx.database, batch_max_age_s=0.2)
    frames = [simulated(farm, f"gw-{k}", 3360, seed=k) for k in range(3)]
    total = sum(len(f) for f in frames)
    assert total >= 100_000
    service = IngestService(cfg, influx).start()
    publishers = []
    try:
        assert service.wait_ready(10)
        started = time.perf_counter()
        for k, frame in enumerate(frames):
            gw = GatewayPublisher(
                farm, f"gw-{k}", Spool(tmp_path / f"spool-{k}.sqlite"), port=stack.mqtt_port
            )
            publishers.append(gw.start())
            gw.publish_batches(batches_from_frame(frame, farm, f"gw-{k}", max_samples=100))
        for gw in publishers:
            assert gw.wait_drained(60), "gateway spool did not drain"
        wait_for(lambda: service.stats["written_points"] >= total, 60, "all points written")
        elapsed = time.perf_counter() - started
        print(
            f"\nend to end: {total} samples in {elapsed:.2f} s = {total / elapsed:,.0f} samples/s"
        )
        assert stored_per_animal(influx, farm) == published_per_animal(frames)
        stats = service.stats
        assert stats["rejected"] == 0 and stats["written_points"] == total
        assert stats["seq_gaps"] == 0
    finally:
        for gw in publishers:
            gw.stop()
        service.stop(end_session=True)


def test_broker_down_for_first_half_loses_nothing_and_keeps_order(private_stack, tmp_path):
    farm = "outage-farm"
    influx = InfluxClient(private_stack.influx_url, "namazu_outage")
    # One durable worker: Mosquitto 2.0 forgets shared subscriptions on restart (see
    # tests/server/test_ingest.py::test_broker_restart_shared_versus_durable_subscription).
    cfg = make_config(
        private_stack.mqtt_port, private_stack.influx_url, "namazu_outage", shared_group=""
    )
    order: dict[str, list[int]] = defaultdict(list)
    service = IngestService(cfg, influx, observer=lambda b: order[b.gateway].append(b.seq))
    service.start()
    assert service.wait_ready(10)  # the persistent session exists before the outage
    frame = simulated(farm, "gw-a", 600, seed=7)
    batches = list(batches_from_frame(frame, farm, "gw-a", max_samples=50))
    half = len(batches) // 2
    private_stack.stop_mosquitto()
    gateway = GatewayPublisher(
        farm,
        "gw-a",
        Spool(tmp_path / "spool.sqlite"),
        port=private_stack.mqtt_port,
        reconnect_max_s=1,
    )
    gateway.start()
    try:
        for animals in batches[:half]:
            gateway.publish_activity(animals)
        time.sleep(0.5)
        assert gateway.spool.depth() == half and not gateway.connected
        private_stack.start_mosquitto()
        for animals in batches[half:]:
            gateway.publish_activity(animals)
        assert gateway.wait_drained(60)
        wait_for(lambda: service.stats["written_points"] >= len(frame), 60, "all samples")
        assert stored_per_animal(influx, farm) == published_per_animal([frame])
        stored = influx.query_frame(
            f"SELECT odba, vedba FROM activity WHERE farm = '{farm}' GROUP BY animal"
        )
        stored_ms = stored["time"].dt.as_unit("ms").astype("int64")
        got = set(zip(stored["animal"], stored_ms, strict=True))
        want = set(zip(frame["animal"], frame["t_ms"].astype("int64"), strict=True))
        assert got == want
        seen = order["gw-a"]
        first_seen = list(dict.fromkeys(seen))
        assert first_seen == sorted(first_seen), "ingest saw the gateway's messages out of order"
        assert first_seen == list(range(first_seen[0], first_seen[0] + len(batches)))
    finally:
        gateway.stop()
        service.stop(end_session=True)
        influx.close()


def points_kept(topic: str, case) -> set[tuple[str, int]]:
    """(animal, time [ms]) of the valid animals of a malformed case (none if refused as a
    whole)."""
    try:
        document = parse_json(case.payload)
        message = decode_activity_message(topic, document, now_ms(), 300_000, 400 * 86_400_000)
    except PayloadError:
        return set()
    if message.batch is None:
        return set()
    return {(a.animal, int(t)) for a in message.batch.animals for t in a.t_ms}


def test_200_malformed_payloads_dead_lettered_while_valid_traffic_flows(stack, influx, tmp_path):
    farm = "dirty-farm"
    cfg = make_config(stack.mqtt_port, stack.influx_url, influx.database)
    watcher = Publisher(stack.mqtt_port, subscribe=f"namazu/v1/deadletter/{farm}/#")
    service = IngestService(cfg, influx).start()
    gateway = None
    try:
        assert service.wait_ready(10)
        frame = simulated(farm, "gw-good", 300, seed=3)
        gateway = GatewayPublisher(
            farm, "gw-good", Spool(tmp_path / "spool.sqlite"), port=stack.mqtt_port
        ).start()
        raw = Publisher(stack.mqtt_port)
        corpus = malformed_corpus(farm, "gw-bad", now_ms())
        valid_raw = 0
        good_batches = list(batches_from_frame(frame, farm, "gw-good", max_samples=100))
        for i, case in enumerate(corpus):
            raw.publish(f"namazu/v1/{farm}/gw-bad/activity", case.payload)
            if i % 10 == 0:  # the same topic carries valid messages in between
                doc = valid_document(farm, "gw-bad", i, now_ms() - 43_200_000 + i * 180_000)
                raw.publish(f"namazu/v1/{farm}/gw-bad/activity", orjson.dumps(doc))
                valid_raw += 1
            if i % 7 == 0 and good_batches:
                gateway.publish_activity(good_batches.pop(0))
        for animals in good_batches:
            gateway.publish_activity(animals)
        assert gateway.wait_drained(30)
        wait_for(lambda: len(watcher.received) >= 200, 30, "200 dead letters")
        time.sleep(0.3)
        letters = [orjson.loads(m.payload) for m in watcher.received]
        assert len(letters) == 200
        assert Counter(d["reason"] for d in letters) == Counter(c.reason for c in corpus)
        assert {m.topic for m in watcher.received} == {f"namazu/v1/deadletter/{farm}/gw-bad"}
        stats = service.stats
        assert stats["rejected"] == 200
        assert sum(stats["rejected_by_reason"].values()) == 200
        topic = f"namazu/v1/{farm}/gw-bad/activity"
        kept = len(set().union(*(points_kept(topic, c) for c in corpus)))  # partly refused
        assert stats["animals_rejected"] and kept > 0
        expected_good = len(frame) + valid_raw * 2 * 3 + kept
        wait_for(lambda: service.stats["written_points"] >= expected_good, 30, "valid traffic")
        per_animal = stored_per_animal(influx, farm)
        assert {a: n for a, n in per_animal.items() if a.startswith("gw-good")} == (
            published_per_animal([frame])
        )
        bad_gateway = sum(n for a, n in per_animal.items() if a.startswith("gw-bad"))
        assert bad_gateway == valid_raw * 6 + kept
        raw.close()
    finally:
        if gateway is not None:
            gateway.stop()
        service.stop(end_session=True)
        watcher.close()
