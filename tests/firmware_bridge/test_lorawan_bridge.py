"""The LoRaWAN bridge on a real Mosquitto standing in for the network server's broker:
events are acknowledged only once spooled, and ``namazu simulate --lorawan`` publishes a
fleet's events."""

from __future__ import annotations

import time

from namazu.firmware_bridge import simulator
from namazu.firmware_bridge.lorawan import parse_registry, read_registry
from namazu.firmware_bridge.lorawan_bridge import LorawanBridge
from namazu.firmware_bridge.lorawan_mqtt import NetworkServerLink, publish_events
from namazu.firmware_bridge.lorawan_sim import LorawanFleet
from namazu.firmware_bridge.publisher import GatewayPublisher
from namazu.firmware_bridge.spool import Spool

START_MS = 1_767_225_600_000


def read_all(link: NetworkServerLink, expected: int, timeout_s: float = 15.0) -> list:
    events: list = []
    deadline = time.monotonic() + timeout_s
    while len(events) < expected and time.monotonic() < deadline:
        events += link.read(0.2)
    return events


def test_simulate_publishes_a_lorawan_fleet(broker, tmp_path, capsys):
    link = NetworkServerLink("tts", "127.0.0.1", broker.mqtt_port, "herd@farm", "sim-reader")
    link.start()
    try:
        assert link.subscribed.wait(10)
        code = simulator.main(
            ["--farm", "farm-s", "--lorawan", "tts", "--collars", "5", "--duration", "30m",
             "--start", "2026-01-01T00:00:00Z", "--ns-application", "herd@farm",
             "--mqtt-port", str(broker.mqtt_port), "--registry-out", str(tmp_path / "reg.toml")]
        )  # fmt: skip
        assert code == 0
        assert '"uplinks": 15' in capsys.readouterr().out
        events = read_all(link, 15)
        assert len(events) == 15
        assert {e.topic.split("/")[3] for e in events} == {
            d.animal for d in read_registry(tmp_path / "reg.toml").values()
        }
        link.ack(events)
    finally:
        link.stop()


def test_events_not_spooled_stay_with_the_broker_and_come_again(broker, tmp_path):
    """A full spool refuses the samples: the events are not acknowledged, and a bridge
    that connects again with the same client id receives them and stores them."""
    fleet = LorawanFleet("farm-r", 4, application="app-r", seed=5)
    registry = parse_registry(fleet.registry_text())
    events = list(fleet.events(START_MS, START_MS + 30 * 60_000))
    spools: list[Spool] = []

    def run(max_bytes: int | None) -> LorawanBridge:
        link = NetworkServerLink("chirpstack", "127.0.0.1", broker.mqtt_port, "app-r", "bridge-r")
        spools.append(Spool(tmp_path / f"spool-{len(spools)}.sqlite", max_bytes=max_bytes))

        def publisher_for(farm: str) -> GatewayPublisher:
            return GatewayPublisher(farm, "lora", spools[-1], port=broker.mqtt_port,
                                    confirm="puback")  # fmt: skip

        bridge = LorawanBridge(link.start(), registry, publisher_for, tmp_path / "dead.jsonl")
        assert link.subscribed.wait(10)
        return bridge

    first = run(max_bytes=10)
    publish_events("127.0.0.1", broker.mqtt_port, events)
    inbound = read_all(first.link, len(events))
    first.handle(inbound)
    assert first.uplinks_spooled == 0 and first.dropped_spool_full == len(events)
    first.link.stop()
    for publisher in first.publishers.values():
        publisher.stop()
    second = run(max_bytes=None)
    again = read_all(second.link, len(events))
    second.handle(again)
    try:
        assert len(again) == len(events)
        assert second.uplinks_spooled == len(events) == 12
        assert second.samples_spooled == 4 * 30
        assert spools[-1].last_seq() >= 1
    finally:
        second.link.stop()
        for publisher in second.publishers.values():
            publisher.stop()
        for spool in spools:
            spool.close()
