"""The admin page for LoRaWAN collars: registry list, add and remove, interval change
sent by the bridge as a downlink on real Mosquitto, and the collar's confirmation."""

from __future__ import annotations

import base64
import re
import threading
import time
from datetime import UTC, datetime

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from namazu.firmware_bridge.lorawan import (
    ActivityUplink,
    decode_interval_downlink,
    encode_uplink,
    read_registry,
)
from namazu.firmware_bridge.lorawan_bridge import LorawanBridge
from namazu.firmware_bridge.lorawan_mqtt import NetworkServerLink
from namazu.firmware_bridge.lorawan_sim import LorawanFleet
from namazu.firmware_bridge.publisher import GatewayPublisher
from namazu.firmware_bridge.spool import Spool
from namazu.server.detection.health import HealthJob
from namazu.server.store.influx import point_line
from tests.server.web.conftest import build_panel, csrf_from, login

URL = "/admin/lorawan"
EUI = "70B3D5F000000A01"


@pytest.fixture(scope="module")
def lora_panel(stack, tmp_path_factory):
    folder = tmp_path_factory.mktemp("lora-panel")
    built = build_panel(stack, folder, lorawan_registry=str(folder / "lorawan" / "devices.toml"))
    built.folder = folder / "lorawan"
    yield built
    built.app.extensions["namazu"].influx.drop_database()
    built.app.extensions["namazu"].influx.close()


def client(panel, role: str):
    c = panel.app.test_client()
    assert login(c, role).status_code == 302
    return c


def post(c, **form):
    token = csrf_from(c.get(URL).get_data(as_text=True))
    return c.post(URL, data=form | {"csrf_token": token})


def rows(html: str, table: str = "collars") -> list[list[str]]:
    body = re.search(rf'<table id="{table}">.*?<tbody>(.*?)</tbody>', html, re.S).group(1)
    return [
        [
            re.sub(r"<[^>]+>", "", cell).strip()
            for cell in re.findall(r"<td[^>]*>(.*?)</td>", r, re.S)
        ]
        for r in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)
    ]


@pytest.mark.parametrize("role", ["viewer", "reviewer"])
def test_only_admins_see_or_change_the_registry(lora_panel, role):
    c = client(lora_panel, role)
    assert c.get(URL).status_code == 403
    token = csrf_from(c.get("/events").get_data(as_text=True))
    form = {"action": "add", "dev_eui": EUI, "farm": "f", "animal": "a", "species": "cow"}
    assert c.post(URL, data=form | {"csrf_token": token}).status_code == 403
    assert "LoRaWAN collars</a>" not in c.get("/").get_data(as_text=True)


def test_a_post_without_the_csrf_token_is_refused(lora_panel):
    c = client(lora_panel, "admin")
    form = {"action": "add", "dev_eui": EUI, "farm": "f", "animal": "a", "species": "cow"}
    assert c.post(URL, data=form).status_code in (400, 403)
    assert EUI not in read_registry(lora_panel.folder / "devices.toml")


def test_admin_adds_refuses_bad_entries_and_removes(lora_panel):
    c = client(lora_panel, "admin")
    assert "LoRaWAN collars</a>" in c.get("/").get_data(as_text=True)
    add = {"action": "add", "farm": "farm-l", "species": "cow"}
    assert post(c, dev_eui=EUI.lower(), animal="cow-9", **add).status_code == 302
    assert rows(c.get(URL).get_data(as_text=True))[0][:4] == [EUI, "farm-l", "cow-9", "cow"]
    bad = post(c, dev_eui="12345", animal="cow-8", **add)
    assert bad.status_code == 400 and "EUI" in bad.get_data(as_text=True)
    again = post(c, dev_eui=EUI, animal="cow-8", **add)
    assert again.status_code == 400 and "already registered" in again.get_data(as_text=True)
    assert list(read_registry(lora_panel.folder / "devices.toml")) == [EUI]
    assert post(c, action="remove", dev_eui=EUI).status_code == 302
    assert read_registry(lora_panel.folder / "devices.toml") == {}


def test_interval_change_is_sent_acknowledged_and_confirmed(lora_panel, stack, tmp_path):
    """Panel -> interval-requests.json -> bridge -> downlink-enqueue topic on Mosquitto
    (the network server's broker) -> ack event and the collar's next uplink -> the
    page shows sent, radio ack and confirmed."""
    fleet = LorawanFleet("farm-dl", 1, application="app-dl", seed=3)
    device = fleet.devices[0]
    c = client(lora_panel, "admin")
    post(c, action="add", dev_eui=device.dev_eui, farm=device.farm, animal=device.animal,
         species=device.species)  # fmt: skip
    registry = lora_panel.folder / "devices.toml"
    downlinks: list[tuple[str, bytes]] = []
    network_server = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="ns-downlinks")
    network_server.on_message = lambda cl, u, m: downlinks.append((m.topic, bytes(m.payload)))
    network_server.connect("127.0.0.1", stack.mqtt_port)
    network_server.subscribe("application/app-dl/device/+/command/down", qos=1)
    network_server.loop_start()
    link = NetworkServerLink("chirpstack", "127.0.0.1", stack.mqtt_port, "app-dl", "bridge-dl")
    spool = Spool(tmp_path / "spool.sqlite")

    def publisher_for(farm: str) -> GatewayPublisher:
        return GatewayPublisher(farm, "lora", spool, port=stack.mqtt_port, confirm="puback").start()

    bridge = LorawanBridge(
        link.start(), {}, publisher_for, tmp_path / "dead.jsonl",
        application="app-dl", registry_path=registry,
    )  # fmt: skip
    stop = threading.Event()
    runner = threading.Thread(target=bridge.run, args=(stop, 0.1), daemon=True)
    runner.start()
    try:
        assert link.subscribed.wait(10)
        assert (
            post(c, action="interval", dev_eui=device.dev_eui, interval_min="5").status_code == 302
        )
        deadline = time.monotonic() + 15
        while not downlinks and time.monotonic() < deadline:
            time.sleep(0.05)
        topic, body = downlinks[0]
        assert topic == f"application/app-dl/device/{device.dev_eui.lower()}/command/down"
        request = orjson.loads(body)
        assert request["confirmed"] is True and request["fPort"] == 10
        interval, config_id = decode_interval_downlink(base64.b64decode(request["data"]))
        assert (interval, config_id) == (5, 1)
        row = rows(c.get(URL).get_data(as_text=True))[0]
        assert row[4].startswith("5 min") and row[5] and not row[6] and not row[7]
        # The network server reports the radio acknowledgement...
        info = {"deviceInfo": {"devEui": device.dev_eui.lower(), "deviceName": device.animal}}
        ack_topic = f"application/app-dl/device/{device.dev_eui.lower()}/event/ack"
        network_server.publish(ack_topic, orjson.dumps(info | {"acknowledged": True}), qos=1)
        # ... an uplink with the old setting confirms nothing, the next one with the new
        # configuration id and five summaries does.
        old = encode_uplink(ActivityUplink(1_767_225_600, 1, 3.7, 0, (0.1,) * 10, (0.07,) * 10))
        new = encode_uplink(
            ActivityUplink(1_767_226_200, 2, 3.7, config_id, (0.1,) * 5, (0.07,) * 5)
        )
        for f_cnt, data in ((1, old), (2, new)):
            up_topic, up = fleet.event(device, f_cnt, data, 1_767_226_500_000)
            network_server.publish(up_topic, up, qos=1)
            deadline = time.monotonic() + 10
            while bridge.uplinks_spooled < f_cnt and time.monotonic() < deadline:
                time.sleep(0.05)
            if f_cnt == 1:
                row = rows(c.get(URL).get_data(as_text=True))[0]
                assert row[6] and not row[7], row
        deadline = time.monotonic() + 10
        while not rows(c.get(URL).get_data(as_text=True))[0][7] and time.monotonic() < deadline:
            time.sleep(0.05)
        row = rows(c.get(URL).get_data(as_text=True))[0]
        assert row[6] and row[7], row
    finally:
        stop.set()
        runner.join(5)
        link.stop()
        for publisher in bridge.publishers.values():
            publisher.stop()
        spool.close()
        network_server.disconnect()
        network_server.loop_stop()


def test_data_health_page_shows_radio_loss_per_collar(lora_panel):
    """Frame-counter gaps found by the health job appear on the data-health page."""
    handles = lora_panel.app.extensions["namazu"]
    now = datetime.now(UTC).replace(microsecond=0)
    t0 = int(now.timestamp() * 1000) - 3_600_000
    tags = {"farm": "farm-h", "gateway": "lora"}
    lines = [point_line("uplink", tags | {"animal": "cow-1"}, {"f_cnt": f}, t0 + 600_000 * f)
             for f in (0, 1, 2, 5)]  # fmt: skip
    lines += [point_line("uplink", tags | {"animal": "cow-2"}, {"f_cnt": f}, t0 + 600_000 * f)
              for f in (0, 1, 2)]  # fmt: skip
    handles.influx.write_lines(lines)
    report = HealthJob(handles.influx, handles.engine, ["farm-h"]).run(now)
    assert report.loss == {("farm-h", "cow-1"): (4, 2), ("farm-h", "cow-2"): (3, 0)}
    html = client(lora_panel, "viewer").get("/health").get_data(as_text=True)
    assert rows(html, "radio-loss") == [
        ["farm-h", "cow-1", "4", "2", "33.3"],
        ["farm-h", "cow-2", "3", "0", "0.0"],
    ]
