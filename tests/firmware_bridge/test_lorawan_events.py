"""Network-server events (ChirpStack v4, The Things Stack v3), the registry, the
frame-counter loss count and the grouping of uplinks into messages: pure functions."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from namazu.firmware_bridge.lorawan import (
    Device,
    LorawanError,
    decode_interval_downlink,
    downlink_request,
    format_registry,
    frame_counter_loss,
    parse_chirpstack,
    parse_registry,
    parse_tts,
    uplink_of,
)
from namazu.firmware_bridge.lorawan_bridge import group_uplinks
from namazu.firmware_bridge.lorawan_sim import LorawanFleet
from tests.budget import examples

CS_TOPIC = "application/app-1/device/0102030405060708/event/up"
CS_UP = {
    "deduplicationId": "3ac7e3c4-4401-4b8d-9386-a5c902f9202d",
    "time": "2026-01-01T00:10:00.123456789Z",
    "deviceInfo": {"applicationId": "app-1", "deviceName": "cow-1", "devEui": "0102030405060708"},
    "fCnt": 10, "fPort": 1, "data": "AQAAAAAAAQABAAEAAg==",
    "rxInfo": [{"gatewayId": "aa", "rssi": -120, "snr": -7.5},
               {"gatewayId": "bb", "rssi": -90, "snr": 6.0},
               {"gatewayId": "bb", "rssi": -99, "snr": 1.0}],
}  # fmt: skip


def test_chirpstack_uplink_best_reception_first_each_gateway_once():
    event = parse_chirpstack(CS_TOPIC, orjson.dumps(CS_UP))
    assert (event.kind, event.dev_eui, event.f_cnt, event.f_port) == (
        "up",
        "0102030405060708",
        10,
        1,
    )
    assert [(r.gateway, r.rssi_dbm) for r in event.receptions] == [("bb", -90.0), ("aa", -120.0)]
    uplink = uplink_of(event)
    assert uplink.seq == 1 and uplink.odba == (0.0001,) and uplink.vedba == (0.0002,)


@pytest.mark.parametrize(
    ("topic", "doc", "reason"),
    [
        ("application/app-1/device/0102/event/up", CS_UP, "bad_topic"),
        (CS_TOPIC, {"fCnt": 1}, "bad_event"),
        (CS_TOPIC.replace("0102030405060708", "0102030405060709"), CS_UP, "bad_event"),
        (CS_TOPIC, CS_UP | {"fCnt": -3}, "bad_event"),
        (CS_TOPIC, CS_UP | {"data": "***"}, "bad_payload"),
    ],
)
def test_chirpstack_faults_are_named(topic, doc, reason):
    with pytest.raises(LorawanError) as info:
        parse_chirpstack(topic, orjson.dumps(doc))
    assert info.value.reason == reason


def test_uplink_on_another_port_or_without_payload_is_refused():
    for doc, reason in [
        (CS_UP | {"fPort": 5}, "unknown_port"),
        ({**CS_UP, "data": ""}, "no_payload"),
    ]:
        with pytest.raises(LorawanError) as info:
            uplink_of(parse_chirpstack(CS_TOPIC, orjson.dumps(doc)))
        assert info.value.reason == reason


def test_tts_uplink_with_zero_values_left_out_and_other_events():
    fleet = LorawanFleet("farm-t", 3, server="tts", application="herd@farm", seed=1)
    device = fleet.devices[0]
    topic, payload = fleet.event(device, 0, bytes.fromhex("01" + "00" * 8 + "00010002"), 0)
    assert b'"f_cnt"' not in payload  # The Things Stack omits zero values
    event = parse_tts(topic, payload)
    assert (event.kind, event.f_cnt, event.dev_eui) == ("up", 0, device.dev_eui)
    ack = parse_tts(f"v3/herd@farm/devices/{device.animal}/down/ack",
                    orjson.dumps({"end_device_ids": {"device_id": device.animal}}))  # fmt: skip
    assert (ack.kind, ack.acknowledged) == ("down_ack", True)
    with pytest.raises(LorawanError) as info:
        parse_tts(topic.replace(device.animal, "someone-else"), payload)
    assert info.value.reason == "bad_event"


def test_frame_counter_loss_counts_gaps_repeats_and_resets():
    assert frame_counter_loss([]) == (0, 0)
    assert frame_counter_loss([0, 1, 2, 3]) == (4, 0)
    assert frame_counter_loss([0, 1, 4, 4, 5]) == (4, 2)  # 2 and 3 lost; 4 heard twice
    assert frame_counter_loss([7, 9, 0, 2]) == (4, 2)  # a rejoin resets the counter


def test_registry_round_trip_and_faults():
    devices = [Device("70B3D5F000000001", "farm-a", "cow-1", "cow")]
    assert list(parse_registry(format_registry(devices)).values()) == devices
    twice = format_registry(devices) + format_registry(devices).split("\n", 2)[2]
    for text, fault in [
        (twice, "listed twice"),
        ('[[device]]\ndev_eui = "xyz"', "EUI"),
        (
            '[[device]]\ndev_eui = "70B3D5F000000001"\nfarm = "a"\nanimal = "b"\nspecies = "cat"',
            "species",
        ),
        ("[[device", "TOML"),
    ]:
        with pytest.raises(LorawanError, match=fault):
            parse_registry(text)


def test_downlink_requests_follow_each_servers_topic_and_json():
    topic, body = downlink_request(
        "chirpstack", "app-1", "0102030405060708", "cow-1", b"\x01\x05\x02"
    )
    assert topic == "application/app-1/device/0102030405060708/command/down"
    assert orjson.loads(body) == {
        "devEui": "0102030405060708",
        "confirmed": True,
        "fPort": 10,
        "data": "AQUC",
    }
    topic, body = downlink_request("tts", "herd@farm", "0102030405060708", "cow-1", b"\x01\x05\x02")
    assert topic == "v3/herd@farm/devices/cow-1/down/push"
    item = orjson.loads(body)["downlinks"][0]
    assert (item["f_port"], item["frm_payload"], item["confirmed"]) == (10, "AQUC", True)
    assert decode_interval_downlink(b"\x01\x05\x02") == (5, 2)


def test_group_uplinks_merges_per_animal_and_never_splits_an_uplink():
    def entry(animal, n, f_cnt):
        return {"animal": animal, "species": "cow", "t_ms": list(range(n)), "odba": [0.1] * n,
                "vedba": [0.1] * n, "uplinks": [{"t_ms": 0, "f_cnt": f_cnt}]}  # fmt: skip

    messages = group_uplinks([entry("a", 10, 1), entry("b", 10, 1), entry("a", 10, 2),
                              entry("c", 10, 1)], max_samples=30)  # fmt: skip
    assert [[(e["animal"], len(e["t_ms"]), len(e["uplinks"])) for e in m] for m in messages] == [
        [("a", 20, 2), ("b", 10, 1)],
        [("c", 10, 1)],
    ]


class FakeLink:
    """What the bridge needs of a network-server link, recording what it publishes."""

    server = "tts"

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []
        self.acked: list = []

    def publish(self, topic: str, payload: bytes) -> None:
        self.published.append((topic, payload))

    def ack(self, events) -> None:
        self.acked += events


def test_interval_requests_are_sent_once_across_restarts_to_the_learnt_device_id(tmp_path):
    from namazu.firmware_bridge.lorawan import (
        IntervalRequest,
        format_interval_requests,
        write_registry,
    )
    from namazu.firmware_bridge.lorawan_bridge import LorawanBridge
    from namazu.firmware_bridge.lorawan_mqtt import InboundEvent

    device = Device("70B3D5F000000B01", "farm-a", "cow-1", "cow")
    registry = tmp_path / "devices.toml"
    write_registry(registry, [device])
    (tmp_path / "interval-requests.json").write_bytes(
        format_interval_requests([IntervalRequest(device.dev_eui, 4, 7, 1)])
    )
    link = FakeLink()
    bridge = LorawanBridge(
        link, {}, None, tmp_path / "dead.jsonl", "herd@farm", registry_path=registry
    )
    join = {"end_device_ids": {"device_id": "tts-dev-7", "dev_eui": device.dev_eui}}
    bridge.handle([InboundEvent(1, "v3/herd@farm/devices/tts-dev-7/join", orjson.dumps(join))])
    assert link.acked and bridge.events["join"] == 1
    bridge.poll_files()
    assert [t for t, _ in link.published] == ["v3/herd@farm/devices/tts-dev-7/down/push"]
    bridge.poll_files()  # nothing changed: nothing sent again
    restarted = LorawanBridge(FakeLink(), {}, None, tmp_path / "d.jsonl", registry_path=registry)
    restarted.poll_files()
    assert restarted.link.published == [] and restarted.downlinks[device.dev_eui]["config_id"] == 7


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=30,
)  # fmt: skip


def mutated(document: dict, draw) -> dict:
    """The document with some keys (top level or one level down) replaced or removed."""
    out = dict(document)
    for key in draw(st.lists(st.sampled_from(sorted(out)), max_size=3)):
        if draw(st.booleans()):
            out.pop(key, None)
        else:
            out[key] = draw(JSON_VALUES)
    return out


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_event_is_parsed_or_refused_with_a_reason_and_the_bridge_goes_on(data):
    from namazu.firmware_bridge.lorawan_bridge import LorawanBridge
    from namazu.firmware_bridge.lorawan_mqtt import InboundEvent

    fleet = LorawanFleet("farm-z", 1, server=data.draw(st.sampled_from(["chirpstack", "tts"])),
                         application="app-z", seed=2)  # fmt: skip
    device = fleet.devices[0]
    topic, payload = fleet.event(device, 3, bytes.fromhex("01" + "00" * 8 + "00010002"), 0)
    document = orjson.loads(payload)
    if data.draw(st.booleans()):
        inner = "uplink_message" if fleet.server == "tts" else None
        if inner:
            document[inner] = mutated(document[inner], data.draw)
        document = mutated(document, data.draw)
        payload = orjson.dumps(document)
    else:
        payload = data.draw(st.binary(max_size=200))
    link = FakeLink()
    link.server = fleet.server
    spooled: list = []

    class Publisher:
        gateway = "lora"

        def publish_batches(self, batches):
            spooled.extend(batches)

    registry = {device.dev_eui: device}
    bridge = LorawanBridge(link, registry, lambda farm: Publisher(), "/nonexistent/dead.jsonl")
    bridge._write_dead_letters = lambda refused: None  # the file is tested elsewhere
    bridge.handle([InboundEvent(1, topic, payload)])
    assert len(link.acked) == 1  # every event is answered: spooled, recorded or refused
    assert bridge.deadlettered["unreadable"] == 0  # refused by the parsers, with a reason
    assert (bridge.uplinks_spooled + sum(bridge.events.values()) - bridge.events["up"]
            + sum(bridge.deadlettered.values())) >= 1  # fmt: skip
