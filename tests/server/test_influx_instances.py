"""Farms on two real InfluxDB instances: ingest through Mosquitto stores each farm in its
own instance and none in the other; one instance down holds only its farms' messages,
stored once it is back (0 lost); a scheduler tick over farms on both instances writes
each farm's baselines and alarms to its instance; the panel's timeline of a farm on the
second instance shows its data. (The configuration and the router alone:
test_influx_router.py.)"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from sqlalchemy import select

from bench.common import activity_frame_lines
from namazu.firmware_bridge.simulator import Herd, UnrestEpisode
from namazu.server.core.config import NamazuConfig
from namazu.server.detection.scheduler import build_services, detect
from namazu.server.ingest.service import IngestService
from namazu.server.launch.stack import Stack, free_port
from namazu.server.store.influx import InfluxClient
from namazu.server.store.influx_router import InfluxRouter
from namazu.server.store.state import Alarm, init_db, session_scope
from tests.server.ingest_support import Publisher, now_ms, wait_for
from tests.server.payload_cases import valid_document

pytestmark = pytest.mark.services

NORTH_FARM, DEFAULT_FARM = "farm-north", "farm-default"


def two_instance_config(
    clients: dict[str, InfluxClient], tmp_path, mqtt_port: int = 1883, **sections
) -> NamazuConfig:
    """``NORTH_FARM`` on instance ``north``, ``DEFAULT_FARM`` on ``[influx]``; ingest with
    its own client id and shared group, a state store in ``tmp_path``."""
    tag = uuid.uuid4().hex[:8]
    influx, north = clients["default"], clients["north"]
    return NamazuConfig.model_validate(
        {
            "mqtt": {"port": mqtt_port},
            "influx": {"url": influx.url, "database": influx.database},
            "influx_instances": {"north": {"url": north.url, "database": north.database}},
            "farms": [
                {"id": NORTH_FARM, "latitude": 43.0, "longitude": 13.0,
                 "influx_instance": "north"},
                {"id": DEFAULT_FARM, "latitude": 43.1, "longitude": 13.1},
            ],
            "state": {"url": f"sqlite:///{tmp_path}/state.sqlite"},
            "ingest": {"client_id": f"ingest-{tag}", "shared_group": f"group-{tag}",
                       "batch_max_age_s": 0.05, **sections.pop("ingest", {})},
            **sections,
        }
    )  # fmt: skip


def stored(client: InfluxClient, farm: str) -> int:
    return client.count("activity", "odba", f"\"farm\" = '{farm}'")


def publish_farm(pub: Publisher, farm: str, seqs: range, t0_ms: int) -> None:
    for seq in seqs:
        document = valid_document(farm, "gw-1", seq, t0_ms + seq * 600_000)
        pub.publish(f"namazu/v1/{farm}/gw-1/activity", orjson.dumps(document))


PER_MESSAGE = 2 * 3  # valid_document: 2 animals x 3 samples


def test_ingest_stores_each_farm_in_its_own_instance(stack, influx_pair, tmp_path):
    cfg = two_instance_config(influx_pair, tmp_path, stack.mqtt_port)
    service = IngestService(cfg, InfluxRouter.from_config(cfg)).start()
    try:
        assert service.wait_ready(10)
        pub = Publisher(stack.mqtt_port)
        t0 = now_ms() - 2 * 86_400_000
        publish_farm(pub, NORTH_FARM, range(30), t0)
        publish_farm(pub, DEFAULT_FARM, range(20), t0)
        wait_for(lambda: service.stats["acked"] == 50, what="every message stored and acked")
        north, default = influx_pair["north"], influx_pair["default"]
        counts = {
            (farm, name): stored(client, farm)
            for farm in (NORTH_FARM, DEFAULT_FARM)
            for name, client in (("north", north), ("default", default))
        }
        assert counts == {
            (NORTH_FARM, "north"): 30 * PER_MESSAGE,
            (NORTH_FARM, "default"): 0,
            (DEFAULT_FARM, "north"): 0,
            (DEFAULT_FARM, "default"): 20 * PER_MESSAGE,
        }
        assert service.stats["written_points_by_instance"] == {
            "north": 30 * PER_MESSAGE,
            "default": 20 * PER_MESSAGE,
        }
        pub.close()
    finally:
        service.stop(end_session=True)


@pytest.fixture
def north_influxd(tmp_path):
    """An InfluxDB of the test's own for instance ``north``, free to be stopped."""
    running = Stack(tmp_path / "north")
    running.start_influx()
    yield running
    running.stop_influx()


def test_one_instance_down_holds_only_its_farms_and_loses_nothing(
    stack, influx, north_influxd, tmp_path
):
    north = InfluxClient(north_influxd.influx_url, "namazu_north")
    clients = {"default": influx, "north": north}
    # small batches: while north is down its batch fills and later messages wait as received
    cfg = two_instance_config(clients, tmp_path, stack.mqtt_port, ingest={"batch_max_points": 30})
    service = IngestService(cfg, InfluxRouter.from_config(cfg)).start()  # creates namazu_north
    try:
        assert service.wait_ready(10)
        assert north.count("activity", "odba") == 0  # the database exists
        north_influxd.stop_influx()
        pub = Publisher(stack.mqtt_port)
        t0 = now_ms() - 2 * 86_400_000
        publish_farm(pub, NORTH_FARM, range(40), t0)
        publish_farm(pub, DEFAULT_FARM, range(25), t0)
        wait_for(lambda: stored(influx, DEFAULT_FARM) == 25 * PER_MESSAGE, what="default farm")
        wait_for(lambda: service.stats["acked"] == 25, what="default farm's messages acked")
        stats = service.stats
        assert stats["store_blocked_by_instance"] == {"north": "unreachable"}
        assert stats["held"] > 0  # north's later messages wait undecoded
        assert stats["rejected"] == 0
        publish_farm(pub, DEFAULT_FARM, range(25, 30), t0)  # still flowing
        wait_for(lambda: service.stats["acked"] == 30, what="more default-farm messages")

        north_influxd.start_influx()  # same ports, same data directory
        wait_for(lambda: service.stats["acked"] == 70, timeout_s=30, what="north stored")
        assert stored(north, NORTH_FARM) == 40 * PER_MESSAGE  # 0 lost
        assert stored(influx, NORTH_FARM) == 0 and stored(north, DEFAULT_FARM) == 0
        assert stored(influx, DEFAULT_FARM) == 30 * PER_MESSAGE
        stats = service.stats
        assert stats["store_blocked_by_instance"] == {} and stats["held"] == 0
        assert stats["rejected"] == 0 and stats["written_points"] == 70 * PER_MESSAGE
        pub.close()
    finally:
        service.stop(end_session=True)
        north.close()


# --- scheduler and panel -------------------------------------------------------------

T0 = datetime(2024, 5, 1, tzinfo=UTC)
DAY7 = T0 + timedelta(days=7)
EPISODE_HOUR = {NORTH_FARM: 3, DEFAULT_FARM: 6}


@pytest.fixture(scope="module")
def herds_pair(stack, second_influxd):
    """Eight days of a small herd per farm, each with a two-hour episode on day 7, written
    only to the farm's own instance (north: the second server)."""
    clients = {
        "default": InfluxClient(stack.influx_url, "pair_" + uuid.uuid4().hex[:6]),
        "north": InfluxClient(second_influxd.influx_url, "pair_" + uuid.uuid4().hex[:6]),
    }
    for seed, (farm, name) in enumerate(((NORTH_FARM, "north"), (DEFAULT_FARM, "default"))):
        client = clients[name]
        client.create_database()
        start = DAY7 + timedelta(hours=EPISODE_HOUR[farm])
        episode = UnrestEpisode(start, duration_min=120, intensity=4.0)
        herd = Herd(farm, "gw-1", {"cow": 4, "sheep": 3}, seed=seed, episodes=(episode,))
        frame = herd.activity(T0, DAY7 + timedelta(days=1))
        client.write_lines(activity_frame_lines(frame, farm))
    yield clients
    for client in clients.values():
        client.drop_database()
        client.close()


@pytest.fixture(scope="module")
def ticked(herds_pair, tmp_path_factory):
    """The scheduler's detection over both farms every 30 min through day 7's episodes."""
    tmp_path = tmp_path_factory.mktemp("ticked")
    cfg = two_instance_config(
        herds_pair,
        tmp_path,
        scheduler={"alarm_log_path": str(tmp_path / "alarm-log.jsonl"), "tick_s": 1800.0},
        web={"secret_key": "t" * 48, "secure_cookies": False},
    )
    services = build_services(cfg)
    now = DAY7
    while now <= DAY7 + timedelta(hours=12):
        detect(services, now)
        now += timedelta(minutes=30)
    return cfg, services


def _points(client: InfluxClient, measurement: str, farm: str) -> int:
    return client.count(measurement, "value" if measurement == "baseline" else "peak_ratio",
                        f"\"farm\" = '{farm}'")  # fmt: skip


def test_a_tick_over_two_instances_writes_each_farms_results_to_its_own(herds_pair, ticked):
    _, services = ticked
    with session_scope(services.engine) as db:
        herd_alarms = {a.farm for a in db.scalars(select(Alarm).where(Alarm.kind == "herd"))}
    assert herd_alarms == {NORTH_FARM, DEFAULT_FARM}  # each read from its own instance
    own = {NORTH_FARM: herds_pair["north"], DEFAULT_FARM: herds_pair["default"]}
    other = {NORTH_FARM: herds_pair["default"], DEFAULT_FARM: herds_pair["north"]}
    for farm in (NORTH_FARM, DEFAULT_FARM):
        for measurement in ("baseline", "alarm"):
            assert _points(own[farm], measurement, farm) > 0, (farm, measurement)
            assert _points(other[farm], measurement, farm) == 0, (farm, measurement)


def test_an_unreachable_instance_skips_only_its_farms(herds_pair, tmp_path, caplog):
    clients = {"default": herds_pair["default"],
               "north": InfluxClient(f"http://127.0.0.1:{free_port()}", "nowhere")}  # fmt: skip
    cfg = two_instance_config(
        clients, tmp_path, scheduler={"alarm_log_path": str(tmp_path / "log.jsonl")}
    )
    services = build_services(cfg)
    ticks, _ = detect(services, DAY7 + timedelta(hours=1))
    assert [t.farm for t in ticks] == [DEFAULT_FARM]
    assert any(
        "InfluxDB instance 'north'" in r.getMessage() and NORTH_FARM in r.getMessage()
        for r in caplog.records
    )


def test_the_timeline_of_a_farm_on_the_second_instance_shows_its_data(ticked):
    from namazu.server.web import create_app
    from namazu.server.web.auth import create_user
    from tests.server.web.conftest import PASSWORD, login

    cfg, services = ticked
    app = create_app(cfg)
    with session_scope(init_db(cfg.state.url)) as db:
        create_user(db, "viewer", "viewer", PASSWORD)
    client = app.test_client()
    assert login(client, "viewer").status_code == 302
    period = "start=2024-05-08T00:00:00Z&end=2024-05-08T12:00:00Z"
    herd = client.get(f"/api/v1/timeline?farm={NORTH_FARM}&series=herd&{period}")
    assert herd.status_code == 200, herd.get_data(as_text=True)[:300]
    body = herd.json
    assert len(body["activity"]["t"]) > 0 and any(v is not None for v in body["activity"]["v"])
    assert any(v is not None for v in body["baseline"]["v"])
    with session_scope(services.engine) as db:
        north_alarms = {a.id for a in db.scalars(select(Alarm).where(Alarm.farm == NORTH_FARM))}
    assert north_alarms and {a["id"] for a in body["alarms"]} <= north_alarms
    assert {a["id"] for a in body["alarms"]}
    animal = "gw-1-cow-001"
    cow = client.get(f"/api/v1/timeline?farm={NORTH_FARM}&series={animal}&{period}")
    assert cow.status_code == 200, cow.get_data(as_text=True)[:300]
    assert len(cow.json["activity"]["t"]) > 0
