"""A LoRaWAN fleet end to end: 200 simulated collars -> the network server's MQTT events
(documented JSON, real Mosquitto standing in for the network server's broker) ->
``LorawanBridge`` -> spool -> Mosquitto -> ingest -> InfluxDB. No network server runs
here: the events are built from ChirpStack's and The Things Stack's documented schemas."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from namazu.firmware_bridge.lorawan import parse_registry
from namazu.firmware_bridge.lorawan_bridge import LorawanBridge
from namazu.firmware_bridge.lorawan_mqtt import NetworkServerLink
from namazu.firmware_bridge.lorawan_sim import LorawanFleet
from namazu.firmware_bridge.publisher import GatewayPublisher
from namazu.firmware_bridge.spool import Spool
from namazu.server.detection.health import HealthJob
from namazu.server.ingest.service import IngestService
from namazu.server.store.state import init_db
from tests.server.ingest_support import make_config, wait_for

pytestmark = pytest.mark.services

OTHER_EVENTS = {
    "chirpstack": [
        ("event/join", {"devAddr": "01ab2c3d"}),
        ("event/status", {"margin": 7, "externalPowerSource": False, "batteryLevel": 87.5}),
        ("event/log", {"level": "ERROR", "code": "UPLINK_CODEC", "description": "codec"}),
        ("event/ack", {"queueItemId": "1c0f", "acknowledged": True, "fCntDown": 3}),
        ("event/txack", {"downlinkId": 7, "queueItemId": "1c0f", "fCntDown": 3}),
    ],
    "tts": [
        ("join", {"join_accept": {"session_key_id": "AXBSH1Pk6Z0G166"}}),
        ("down/ack", {"downlink_ack": {"f_port": 10, "confirmed": True}}),
        ("down/queued", {"downlink_queued": {"f_port": 10}}),
        ("service/data", {"data": {"battery": 87}}),
    ],
}


def other_events(fleet: LorawanFleet) -> list[tuple[str, bytes]]:
    """Join, status, ack and log events of the first collar, in the server's JSON."""
    device = fleet.devices[0]
    out = []
    for suffix, body in OTHER_EVENTS[fleet.server]:
        if fleet.server == "chirpstack":
            info = {"deviceInfo": {"devEui": device.dev_eui.lower(), "deviceName": device.animal}}
            topic = f"application/{fleet.application}/device/{device.dev_eui.lower()}/{suffix}"
            out.append((topic, orjson.dumps(info | {"time": "2026-01-01T00:00:00Z"} | body)))
        else:
            ids = {"end_device_ids": {"device_id": device.animal, "dev_eui": device.dev_eui}}
            topic = f"v3/{fleet.application}/devices/{device.animal}/{suffix}"
            out.append((topic, orjson.dumps(ids | body)))
    return out


def malformed_events(fleet: LorawanFleet) -> list[tuple[str, bytes, str]]:
    """Events that must be dead-lettered, with the reason expected."""
    device = fleet.devices[1]
    topic, good = fleet.event(device, 9_999, bytes.fromhex("01" + "00" * 12), 0)
    doc = orjson.loads(good)
    stranger = good.replace(device.dev_eui.lower().encode(), b"0011223344556677").replace(
        device.dev_eui.encode(), b"0011223344556677"
    )
    key = "data" if fleet.server == "chirpstack" else "frm_payload"
    holder = doc if fleet.server == "chirpstack" else doc["uplink_message"]
    holder[key] = "AQID"  # 3 bytes: too short for an activity uplink
    short = orjson.dumps(doc)
    stranger_topic = topic.replace(device.dev_eui.lower(), "0011223344556677")
    return [
        (topic, b"{not json", "not_json"),
        (topic, short, "bad_length"),
        (stranger_topic, stranger, "unknown_device"),
    ]


class NetworkServerStandIn:
    """Publishes the fleet's events on Mosquitto as the network server would (QoS 1)."""

    def __init__(self, port: int) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="network-server")
        self.client.max_inflight_messages_set(1000)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def publish(self, events) -> None:
        infos = [self.client.publish(topic, payload, qos=1) for topic, payload in events]
        for info in infos:
            info.wait_for_publish(30)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def stored_per_animal(influx, farm: str) -> dict[str, int]:
    series = influx.query(f"SELECT count(odba) FROM activity WHERE farm = '{farm}' GROUP BY animal")
    return {s["tags"]["animal"]: int(s["values"][0][1]) for s in series}


@pytest.mark.parametrize(("server", "decoded"), [("chirpstack", False), ("tts", True)])
def test_200_collars_every_sample_once_and_gaps_counted(stack, influx, tmp_path, server, decoded):
    farm = f"lora-{server}"
    application = "8d1f2c4e-0b7a-4f47-9a53-2f8d7c1e5a10" if server == "chirpstack" else "herd@farm"
    fleet = LorawanFleet(
        farm, 200, server=server, application=application, seed=19, loss=0.03, repeat=0.05,
        decoded=decoded,
    )  # fmt: skip
    end = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)
    start = end - timedelta(minutes=60)
    events = list(fleet.events(int(start.timestamp() * 1000), int(end.timestamp() * 1000)))
    others = other_events(fleet)
    malformed = malformed_events(fleet)
    registry = parse_registry(fleet.registry_text())

    service = IngestService(
        make_config(stack.mqtt_port, stack.influx_url, influx.database), influx
    ).start()
    spools: list[Spool] = []

    def publisher_for(name: str) -> GatewayPublisher:
        spools.append(Spool(tmp_path / f"spool-{name}.sqlite"))
        return GatewayPublisher(name, "lora", spools[-1], port=stack.mqtt_port).start()

    link = NetworkServerLink(server, "127.0.0.1", stack.mqtt_port, application, f"bridge-{server}")
    bridge = LorawanBridge(
        link.start(), registry, publisher_for, tmp_path / "dead.jsonl", application=application
    )
    stop = threading.Event()
    runner = threading.Thread(target=bridge.run, args=(stop,), daemon=True)
    runner.start()
    network_server = NetworkServerStandIn(stack.mqtt_port)
    try:
        assert service.wait_ready(10) and link.subscribed.wait(10)
        started = time.perf_counter()
        network_server.publish(events + others + [(t, p) for t, p, _ in malformed])
        handled = len(events) + len(others) + len(malformed)
        wait_for(
            lambda: bridge.uplinks_spooled + bridge.uplinks_repeated
            + sum(bridge.deadlettered.values()) + sum(
                n for k, n in bridge.events.items() if k != "up") >= handled,
            30, "every event handled",
        )  # fmt: skip
        for publisher in bridge.publishers.values():
            assert publisher.wait_drained(30), "spool not confirmed by ingest receipts"
        received = [u for u in fleet.sent if not u.lost]
        expected = Counter()
        for u in received:
            expected[u.animal] += len(u.t_ms)
        total = sum(expected.values())
        wait_for(lambda: sum(stored_per_animal(influx, farm).values()) >= total, 30, "stored")
        elapsed = time.perf_counter() - started
        stored = stored_per_animal(influx, farm)
        lost = [u for u in fleet.sent if u.lost]
        repeats = len(events) - len(received)
        print(
            f"\n{server}: {len(fleet.devices)} collars, {len(fleet.sent)} uplinks sent, "
            f"{len(lost)} lost on air, {repeats} delivered twice; {total} samples expected, "
            f"{sum(stored.values())} stored in {elapsed:.1f} s; summary {bridge.summary()}"
        )
        # Every received sample exactly once per animal (InfluxDB counts points).
        assert stored == dict(expected)
        assert bridge.uplinks_spooled == len(received)
        assert bridge.uplinks_repeated == repeats > 0
        # Frame-counter gaps: exactly the uplinks lost between two received ones.
        seen = {}
        for u in received:
            lo, hi = seen.get(u.dev_eui, (u.f_cnt, u.f_cnt))
            seen[u.dev_eui] = (min(lo, u.f_cnt), max(hi, u.f_cnt))
        inner = Counter(
            u.dev_eui for u in lost if u.dev_eui in seen
            and seen[u.dev_eui][0] < u.f_cnt < seen[u.dev_eui][1]
        )  # fmt: skip
        loss = bridge.loss()
        assert {k: v["missing"] for k, v in loss.items() if v["missing"]} == dict(inner)
        assert sum(inner.values()) > 0
        # Radio metadata stored once per uplink; data health shows the gaps as loss.
        by_animal = {d.dev_eui: d.animal for d in fleet.devices}
        radio = influx.query(
            f"SELECT count(f_cnt), min(rssi_dbm), max(gateways) FROM uplink "
            f"WHERE farm = '{farm}' GROUP BY animal"
        )
        per_collar = Counter(u.animal for u in received)
        assert {s["tags"]["animal"]: s["values"][0][1] for s in radio} == dict(per_collar)
        assert all(-200 < s["values"][0][2] < 0 and 1 <= s["values"][0][3] <= 3 for s in radio)
        engine = init_db(f"sqlite:///{tmp_path}/health.sqlite")
        report = HealthJob(influx, engine, [farm]).run(datetime.now(UTC))
        shown = {a: m for (_, a), (_, m) in report.loss.items() if m}
        assert shown == {by_animal[k]: n for k, n in inner.items()}
        farm_point = influx.query(
            f"SELECT last(uplinks_missing) FROM health WHERE kind = 'farm' AND subject = '{farm}'"
        )
        assert farm_point[0]["values"][0][1] == sum(inner.values())
        # Other event types recorded, malformed ones dead-lettered with their reason.
        kinds = {k for k in bridge.events if k != "up"}
        assert len(kinds) == len(OTHER_EVENTS[server])
        letters = [
            orjson.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()
        ]
        assert sorted(e["reason"] for e in letters) == sorted(r for _, _, r in malformed)
        assert all(e["detail"] for e in letters)
    finally:
        stop.set()
        runner.join(5)
        network_server.close()
        link.stop()
        for publisher in bridge.publishers.values():
            publisher.stop()
        for spool in spools:
            spool.close()
        service.stop(end_session=True)
