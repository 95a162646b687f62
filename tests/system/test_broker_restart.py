"""Broker restart with a shared-subscription ingest worker: the ingest presence gate.

Mosquitto 2.0.11 does not restore a persistent session's shared subscriptions after a
restart. A gateway that reconnects first and sends at once gets PUBACKs for messages
no subscriber receives; with ``wait_for_ingest`` it holds its spool until an ingest
heartbeat proves the workers have subscribed again, and nothing is lost.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from namazu.firmware_bridge.payload import batches_from_frame
from namazu.firmware_bridge.publisher import GatewayPublisher
from namazu.firmware_bridge.simulator import Herd
from namazu.firmware_bridge.spool import Spool
from namazu.server.ingest.service import INGEST_ALIVE_TOPIC, IngestService
from namazu.server.store.influx import InfluxClient
from tests.server.ingest_support import Publisher, make_config, wait_for

pytestmark = pytest.mark.services

#: Ingest comes back this long after the broker [s] (its backoff can reach 5 s).
INGEST_DELAY_S = 3.0


def herd_batches(farm: str, gateway: str, minutes: int, hours_ago: int) -> list[list[dict]]:
    """Activity batches of a 6-animal herd, one-minute samples ending ``hours_ago``."""
    end = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=hours_ago)
    herd = Herd(farm, gateway, {"cow": 3, "sheep": 2, "dog": 1}, seed=11, resolution_s=60)
    frame = herd.activity(end - timedelta(minutes=minutes), end)
    return list(batches_from_frame(frame, farm, gateway, max_samples=60))


def samples(batches: list[list[dict]]) -> int:
    return sum(len(animal["t_ms"]) for batch in batches for animal in batch)


def stored_samples(influx: InfluxClient, farm: str) -> int:
    series = influx.query(f"SELECT count(odba) FROM activity WHERE farm = '{farm}'")
    return int(series[0]["values"][0][1]) if series else 0


def restart_scenario(stack, tmp_path, farm: str, wait_for_ingest: bool) -> tuple[int, int]:
    """Publish, restart the broker with ingest down, publish while the broker is
    down, bring ingest back ``INGEST_DELAY_S`` after the broker. Returns (published,
    stored) sample counts."""
    influx = InfluxClient(stack.influx_url, farm.replace("-", "_"))
    cfg = make_config(
        stack.mqtt_port, stack.influx_url, influx.database, shared_group="namazu-ingest"
    )
    before = herd_batches(farm, "gw-1", 240, hours_ago=3)
    during = herd_batches(farm, "gw-1", 120, hours_ago=1)
    ingest = IngestService(cfg, influx).start()
    gateway = GatewayPublisher(
        farm,
        "gw-1",
        Spool(tmp_path / f"{farm}.sqlite"),
        port=stack.mqtt_port,
        reconnect_max_s=1,
        wait_for_ingest=wait_for_ingest,
        # without the gate the gateway frees its spool on PUBACK, which shows the loss;
        # with receipts it would send the lost messages again after the receipt time-out
        confirm="receipt" if wait_for_ingest else "puback",
    ).start()
    try:
        assert ingest.wait_ready(10)
        gateway.publish_batches(before)
        assert gateway.wait_drained(15)
        wait_for(lambda: ingest.stats["written_points"] == samples(before), 15, "first part")
        ingest.stop()  # keeps its persistent session, shared subscription included
        stack.stop_mosquitto()
        gateway.publish_batches(during)
        stack.start_mosquitto()
        wait_for(lambda: gateway.connected, 10, "gateway reconnect")
        if wait_for_ingest:
            time.sleep(1.0)  # the gate holds: connected, nothing handed over
            assert gateway.spool.depth() == len(during) and not gateway.ingest_present
        else:
            assert gateway.wait_drained(10)  # PUBACKed while no worker is subscribed
        time.sleep(INGEST_DELAY_S)
        ingest = IngestService(cfg, influx).start()
        assert ingest.wait_ready(10)
        assert gateway.wait_drained(15)
        published = samples(before) + samples(during)
        if wait_for_ingest:
            wait_for(lambda: stored_samples(influx, farm) == published, 15, "every sample")
        else:
            time.sleep(1.0)  # anything still on its way would arrive now
        return published, stored_samples(influx, farm)
    finally:
        gateway.stop()
        ingest.stop(end_session=True)
        influx.drop_database()
        influx.close()


def test_gate_holds_the_spool_until_shared_ingest_resubscribes(private_stack, tmp_path):
    published, stored = restart_scenario(private_stack, tmp_path, "gate-farm", True)
    assert stored == published


def test_without_gate_messages_sent_before_resubscription_are_lost(private_stack, tmp_path):
    """The broker behaviour the gate exists for: everything sent between the restart and
    the worker's return is acknowledged to the gateway and then dropped."""
    published, stored = restart_scenario(private_stack, tmp_path, "nogate-farm", False)
    lost = published - stored
    during = samples(herd_batches("nogate-farm", "gw-1", 120, hours_ago=1))
    assert lost == during > 0


def test_first_heartbeat_follows_the_suback_not_a_full_period(stack, tmp_path):
    """A 30 s period, yet the heartbeat arrives at once: it is sent on the SUBACK, so a
    gateway that reconnects while ingest is up waits milliseconds, not a period."""
    watcher = Publisher(stack.mqtt_port, subscribe=INGEST_ALIVE_TOPIC)
    cfg = make_config(stack.mqtt_port, stack.influx_url, "unused_db", heartbeat_s=30.0)
    ingest = IngestService(cfg, InfluxClient(stack.influx_url, "unused_db"))
    try:
        started = time.monotonic()
        ingest.start()
        wait_for(lambda: watcher.received, 5, "first heartbeat")
        assert time.monotonic() - started < 5
        beat = orjson.loads(watcher.received[0].payload)
        assert beat["client_id"] == cfg.ingest.client_id
        assert beat["shared_group"] == cfg.ingest.shared_group
        assert not watcher.received[0].retain
    finally:
        ingest.stop(end_session=True)
        ingest.influx.drop_database()
        ingest.influx.close()
        watcher.close()
