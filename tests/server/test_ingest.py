"""Ingest on the real broker and the real InfluxDB: storage, acknowledgement after the
write, dead letters, persistent sessions, the in-flight bound, shared subscriptions."""

from __future__ import annotations

import base64
import hashlib
import os
import signal
import subprocess
import sys
import time
import uuid

import orjson
import pytest

from namazu.server.ingest.deadletter import deadletter_document
from namazu.server.ingest.payload import GatewayStatus, decode_activity
from namazu.server.ingest.service import IngestService, activity_lines, status_line
from namazu.server.store.influx import InfluxClient
from tests.server.ingest_support import Publisher, make_config, now_ms, wait_for
from tests.server.payload_cases import valid_document

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def farm():
    return f"farm-{uuid.uuid4().hex[:8]}"


def publish_docs(pub: Publisher, farm: str, gateway: str, count: int, samples: int = 10):
    t0 = now_ms() - 24 * 3_600_000
    for seq in range(count):
        doc = valid_document(farm, gateway, seq, t0 + seq * samples * 60_000, 2, samples)
        pub.publish(f"namazu/v1/{farm}/{gateway}/activity", orjson.dumps(doc))


def stored(influx: InfluxClient, farm: str) -> int:
    return influx.count("activity", "odba", f"\"farm\" = '{farm}'")


# --- pure parts ---------------------------------------------------------------------


def test_activity_lines_tags_fields_and_battery():
    doc = valid_document("f1", "gw-1", 3, 1_700_000_000_000, animals=2, samples=2)
    topic = "namazu/v1/f1/gw-1/activity"
    batch = decode_activity(topic, orjson.dumps(doc), 1_700_000_200_000, 300_000, 86_400_000)
    lines = activity_lines(batch)
    assert len(lines) == 2 * 2 + 2
    assert lines[0] == (
        "activity,animal=gw-1-cow-000,farm=f1,gateway=gw-1,species=cow "
        "odba=0.1,vedba=0.08 1700000000000"
    )
    assert lines[2] == (
        "collar,animal=gw-1-cow-000,farm=f1,gateway=gw-1,species=cow battery_v=3.7 1700000060000"
    )


def test_status_line_time_and_lag():
    status = GatewayStatus("f1", "gw-1", True, 1_700_000_000_000, -0.5, 3, 42)
    line = status_line(status, received_ms=1_700_000_002_000)
    assert line == (
        "gateway_status,farm=f1,gateway=gw-1 online=true,clock_offset_s=-0.5,seq=42i,"
        "spool_depth=3i,receive_lag_s=2.0 1700000002000"
    )
    replay = status_line(status, received_ms=1_800_000_000_000, replayed=True)
    assert replay.endswith("spool_depth=3i 1700000000000")
    will = status_line(GatewayStatus("f1", "gw-1", False), received_ms=5)
    assert will == "gateway_status,farm=f1,gateway=gw-1 online=false 5"


def test_deadletter_document_round_trips_the_original():
    doc = orjson.loads(
        deadletter_document("namazu/v1/f/g/activity", b"\xffnot json", 7, "not_json", "x")
    )
    assert doc["reason"] == "not_json" and doc["topic"] == "namazu/v1/f/g/activity"
    assert doc["received_ms"] == 7 and doc["payload_truncated"] is False
    assert base64.b64decode(doc["payload_b64"]) == b"\xffnot json"
    assert doc["payload_bytes"] == 9
    assert doc["payload_sha256"] == hashlib.sha256(b"\xffnot json").hexdigest()


def test_deadletter_document_never_exceeds_the_packet_limit():
    payload = bytes(range(256)) * 14_000  # 3.6 MB, under a 4 MiB broker limit
    limit = 4 * 1024 * 1024
    raw = deadletter_document(
        "namazu/v1/f/g/activity", payload, 7, "not_json", "x", max_bytes=limit
    )
    doc = orjson.loads(raw)
    assert len(raw) + len("namazu/v1/deadletter/f/g") + 100 < limit
    assert doc["payload_truncated"] is True and doc["payload_bytes"] == len(payload)
    assert doc["payload_sha256"] == hashlib.sha256(payload).hexdigest()
    head = base64.b64decode(doc["payload_b64"])
    assert len(head) > 2_000_000 and payload.startswith(head)


# --- on the real services -------------------------------------------------------------


@pytest.mark.services
def test_valid_messages_stored_and_acked(stack, influx, farm):
    cfg = make_config(stack.mqtt_port, stack.influx_url, influx.database)
    seen = []
    service = IngestService(cfg, influx, observer=lambda b: seen.append(b.seq)).start()
    try:
        assert service.wait_ready(10)
        pub = Publisher(stack.mqtt_port)
        publish_docs(pub, farm, "gw-1", 20, samples=10)
        wait_for(lambda: service.stats["acked"] == 20, what="20 acks")
        assert stored(influx, farm) == 20 * 2 * 10
        stats = service.stats
        assert stats["received"] == 20 and stats["written_points"] == 400
        assert stats["rejected"] == 0 and stats["seq_gaps"] == 0
        assert seen == list(range(20))
        per_animal = influx.query(
            f"SELECT count(odba) FROM activity WHERE farm = '{farm}' GROUP BY animal"
        )
        assert {s["tags"]["animal"]: s["values"][0][1] for s in per_animal} == {
            "gw-1-cow-000": 200,
            "gw-1-cow-001": 200,
        }
        assert influx.count("collar", "battery_v", f"farm = '{farm}'") == 40
        pub.close()
    finally:
        service.stop(end_session=True)


@pytest.mark.services
def test_status_becomes_gateway_status_point(stack, influx, farm):
    cfg = make_config(stack.mqtt_port, stack.influx_url, influx.database)
    service = IngestService(cfg, influx).start()
    try:
        assert service.wait_ready(10)
        pub = Publisher(stack.mqtt_port)
        sent = now_ms()
        status = {
            "schema": "namazu.status/1",
            "farm": farm,
            "gateway": "gw-1",
            "online": True,
            "sent_ms": sent,
            "clock_offset_s": 1.5,
            "spool_depth": 4,
            "last_seq": 9,
        }
        pub.publish(f"namazu/v1/{farm}/gw-1/status", orjson.dumps(status), retain=True)
        wait_for(lambda: service.stats["status_points"] >= 1, what="status point")
        where = f"farm = '{farm}'"
        wait_for(lambda: influx.count("gateway_status", "clock_offset_s", where), what="write")
        rows = influx.query(f"SELECT * FROM gateway_status WHERE farm = '{farm}'")
        row = dict(zip(rows[0]["columns"], rows[0]["values"][0], strict=True))
        assert sent <= row["time"] <= now_ms() and row["online"] is True
        assert row["clock_offset_s"] == 1.5 and row["seq"] == 9 and row["spool_depth"] == 4
        assert row["receive_lag_s"] >= 0
        wait_for(lambda: service.stats["status_acked"] >= 1, what="status acknowledged")
        assert service.stats["received"] == 0
        pub.publish(f"namazu/v1/{farm}/gw-1/status", b"", retain=True)  # clear retained
        pub.close()
    finally:
        service.stop(end_session=True)


@pytest.mark.services
def test_invalid_payload_dead_lettered_with_reason_and_acked(stack, influx, farm):
    cfg = make_config(stack.mqtt_port, stack.influx_url, influx.database)
    service = IngestService(cfg, influx).start()
    watcher = Publisher(stack.mqtt_port, subscribe=f"namazu/v1/deadletter/{farm}/#")
    try:
        assert service.wait_ready(10)
        pub = Publisher(stack.mqtt_port)
        topic = f"namazu/v1/{farm}/gw-2/activity"
        pub.publish(topic, b"{not json")
        doc = valid_document(farm, "gw-2", 100, now_ms() - 60_000)
        doc["animals"][0]["species"] = "horse"  # refused; animals[1] of it is stored
        pub.publish(topic, orjson.dumps(doc))
        publish_docs(pub, farm, "gw-2", 3)
        wait_for(lambda: len(watcher.received) == 2, what="two dead letters")
        letters = [orjson.loads(m.payload) for m in watcher.received]
        assert {m.topic for m in watcher.received} == {f"namazu/v1/deadletter/{farm}/gw-2"}
        assert [d["reason"] for d in letters] == ["not_json", "unknown_species"]
        assert "horse" in letters[1]["detail"]
        assert letters[1]["rejected_animals"] == [
            {"index": 0, "animal": "gw-2-cow-000", "reason": "unknown_species",
             "detail": letters[1]["detail"]}
        ]  # fmt: skip
        assert letters[1]["stored_animals"] == 1
        assert base64.b64decode(letters[0]["payload_b64"]) == b"{not json"
        wait_for(lambda: service.stats["acked"] == 5, what="all five acked")
        assert service.stats["rejected_by_reason"] == {"not_json": 1, "unknown_species": 1}
        assert service.stats["animals_rejected"] == {"unknown_species": 1}
        assert stored(influx, farm) == 3 * 2 * 10 + 3
        pub.close()
    finally:
        service.stop()
    # Acknowledged means gone: the same session after a restart gets nothing again.
    again = IngestService(cfg, influx).start()
    try:
        assert again.wait_ready(10)
        time.sleep(0.5)
        assert again.stats["received"] == 0
    finally:
        again.stop(end_session=True)
        watcher.close()


@pytest.mark.services
def test_broker_keeps_messages_while_ingest_is_down(stack, influx, farm):
    cfg = make_config(stack.mqtt_port, stack.influx_url, influx.database)
    first = IngestService(cfg, influx).start()
    assert first.wait_ready(10)
    first.stop()  # persistent session stays on the broker
    pub = Publisher(stack.mqtt_port)
    publish_docs(pub, farm, "gw-3", 50)
    pub.close()
    second = IngestService(cfg, influx).start()
    try:
        wait_for(lambda: second.stats["acked"] == 50, what="50 queued messages")
        assert stored(influx, farm) == 50 * 2 * 10
    finally:
        second.stop(end_session=True)


@pytest.mark.services
def test_nothing_acked_while_influx_down_and_in_flight_bounded(private_stack, farm):
    """InfluxDB down: ingest holds at most Receive Maximum messages, acknowledges none;
    a restarted worker gets them all again and stores everything once InfluxDB is back."""
    influx = InfluxClient(private_stack.influx_url, "namazu_test")
    influx.create_database()
    cfg = make_config(
        private_stack.mqtt_port, private_stack.influx_url, "namazu_test", max_pending_messages=25
    )
    private_stack.stop_influx()
    service = IngestService(cfg, influx).start()
    assert service.wait_ready(10)
    pub = Publisher(private_stack.mqtt_port)
    publish_docs(pub, farm, "gw-4", 120, samples=5)
    wait_for(lambda: service.stats["received"] >= 25, what="first messages")
    time.sleep(1.0)
    stats = service.stats
    assert stats["received"] == 25, "broker must not send beyond Receive Maximum"
    assert stats["acked"] == 0 and stats["written_points"] == 0
    assert stats["write_retries"] >= 1
    service.stop(timeout_s=0.5)  # crash-like: nothing was written, nothing acknowledged
    private_stack.start_influx()
    again = IngestService(cfg, influx).start()
    try:
        wait_for(lambda: again.stats["acked"] == 120, timeout_s=30, what="all 120 acked")
        assert stored(influx, farm) == 120 * 2 * 5
    finally:
        again.stop(end_session=True)
        pub.close()
        influx.close()


@pytest.mark.services
def test_influx_outage_mid_run_loses_nothing(private_stack, farm):
    influx = InfluxClient(private_stack.influx_url, "namazu_test")
    cfg = make_config(private_stack.mqtt_port, private_stack.influx_url, "namazu_test")
    service = IngestService(cfg, influx).start()
    try:
        assert service.wait_ready(10)
        pub = Publisher(private_stack.mqtt_port)
        publish_docs(pub, farm, "gw-5", 10)
        wait_for(lambda: service.stats["acked"] == 10, what="first ten")
        private_stack.stop_influx()
        publish_docs(pub, farm, "gw-6", 10)
        wait_for(lambda: service.stats["write_retries"] >= 2, what="retries")
        assert service.stats["acked"] == 10
        private_stack.start_influx()
        wait_for(lambda: service.stats["acked"] == 20, timeout_s=30, what="rest after restart")
        assert stored(influx, farm) == 20 * 2 * 10
        pub.close()
    finally:
        service.stop(end_session=True)
        influx.close()


@pytest.mark.services
def test_two_workers_share_the_subscription(stack, influx, farm):
    cfg_a = make_config(stack.mqtt_port, stack.influx_url, influx.database)
    group = cfg_a.ingest.shared_group
    cfg_b = cfg_a.model_copy(
        update={"ingest": cfg_a.ingest.model_copy(update={"client_id": f"{group}-b"})}
    )
    a = IngestService(cfg_a, influx).start()
    b = IngestService(cfg_b, influx).start()
    try:
        assert a.wait_ready(10) and b.wait_ready(10)
        pub = Publisher(stack.mqtt_port)
        publish_docs(pub, farm, "gw-7", 60, samples=2)
        wait_for(lambda: a.stats["acked"] + b.stats["acked"] == 60, what="60 acks")
        assert a.stats["received"] > 0 and b.stats["received"] > 0
        assert a.stats["received"] + b.stats["received"] == 60
        assert stored(influx, farm) == 60 * 2 * 2
        pub.close()
    finally:
        a.stop(end_session=True)
        b.stop(end_session=True)


@pytest.mark.services
def test_namazu_ingest_command(stack, influx, farm, tmp_path, state_url):
    cfg = make_config(stack.mqtt_port, stack.influx_url, influx.database)
    config_file = tmp_path / "namazu.toml"
    config_file.write_text(
        f'[mqtt]\nport = {stack.mqtt_port}\n[influx]\nurl = "{stack.influx_url}"\n'
        f'database = "{influx.database}"\n[ingest]\nclient_id = "{cfg.ingest.client_id}"\n'
        f'shared_group = "{cfg.ingest.shared_group}"\nbatch_max_age_s = 0.05\n'
        f'[state]\nurl = "{state_url}"\n'
        f'[[farms]]\nid = "{farm}"\nlatitude = 43.0\nlongitude = 13.0\n'
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "namazu.server.cli",
            "ingest",
            "--config",
            str(config_file),
            "--metrics-port",
            "0",
            "--stats-every",
            "0.2",
        ],
        cwd=PROJECT_ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        pub = Publisher(stack.mqtt_port)
        deadline = time.monotonic() + 20
        while stored(influx, farm) < 3 * 2 * 10 and time.monotonic() < deadline:
            publish_docs(pub, farm, "gw-8", 3)
            time.sleep(0.5)
        assert stored(influx, farm) == 3 * 2 * 10
        pub.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err[-2000:]
    records = [orjson.loads(line) for line in err.splitlines() if line.startswith("{")]
    # counters every 0.2 s while it runs; the data may be stored and the process stopped
    # before the next of them, so the acknowledgements are read from the last record
    assert any(r["msg"] == "ingest counters" for r in records)
    assert records[-1]["msg"] == "ingest stopped" and records[-1]["acked"] >= 3


def test_namazu_ingest_bad_config_is_one_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[ingest]\nbatch_max_points = -1\n")
    result = subprocess.run(
        [sys.executable, "-m", "namazu.server.cli", "ingest", "--config", str(bad)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2  # invalid configuration
    assert result.stderr.count("\n") == 1 and "batch_max_points" in result.stderr


@pytest.mark.services
def test_points_influx_refuses_are_dead_lettered_others_stored(stack, influx, farm):
    """A field type conflict in one shard: that message goes to the dead-letter topic
    with reason store_refused; a message for another shard is stored."""
    t_bad = now_ms() - 3 * 86_400_000
    t_good = now_ms() - 30 * 86_400_000  # another 7-day shard group
    influx.write_lines([f"activity,animal=x,farm={farm},gateway=gw-9,species=cow odba=1i {t_bad}"])
    cfg = make_config(stack.mqtt_port, stack.influx_url, influx.database, batch_max_age_s=0.5)
    watcher = Publisher(stack.mqtt_port, subscribe=f"namazu/v1/deadletter/{farm}/#")
    service = IngestService(cfg, influx).start()
    try:
        assert service.wait_ready(10)
        pub = Publisher(stack.mqtt_port)
        topic = f"namazu/v1/{farm}/gw-9/activity"
        pub.publish(topic, orjson.dumps(valid_document(farm, "gw-9", 1, t_bad)))
        pub.publish(topic, orjson.dumps(valid_document(farm, "gw-9", 2, t_good)))
        wait_for(lambda: watcher.received, what="dead letter")
        letter = orjson.loads(watcher.received[0].payload)
        assert letter["reason"] == "store_refused" and "conflict" in letter["detail"]
        wait_for(lambda: service.stats["acked"] == 2, what="both acknowledged")
        assert service.stats["rejected_by_reason"] == {"store_refused": 1}
        assert stored(influx, farm) == 1 + 2 * 3
        pub.close()
    finally:
        service.stop(end_session=True)
        watcher.close()


@pytest.mark.services
def test_broker_restart_shared_versus_durable_subscription(private_stack, farm):
    """Mosquitto 2.0 restores a plain subscription of a persistent session after a
    restart but not a shared one: with both workers offline, activity published after
    the restart reaches only the durable (``shared_group = ""``) worker."""
    influx = InfluxClient(private_stack.influx_url, "namazu_restart")
    shared_cfg = make_config(private_stack.mqtt_port, private_stack.influx_url, "namazu_restart")
    durable_cfg = make_config(
        private_stack.mqtt_port, private_stack.influx_url, "namazu_restart", shared_group=""
    )
    for cfg in (shared_cfg, durable_cfg):
        worker = IngestService(cfg, influx).start()
        assert worker.wait_ready(10)
        worker.stop()
    private_stack.stop_mosquitto()
    private_stack.start_mosquitto()
    pub = Publisher(private_stack.mqtt_port)
    publish_docs(pub, farm, "gw-r", 5)
    pub.close()
    shared = IngestService(shared_cfg, influx).start()
    durable = IngestService(durable_cfg, influx).start()
    try:
        wait_for(lambda: durable.stats["acked"] == 5, what="durable worker gets all five")
        time.sleep(0.5)
        assert shared.stats["received"] == 0
        assert stored(influx, farm) == 5 * 2 * 10
    finally:
        shared.stop(end_session=True)
        durable.stop(end_session=True)
        influx.close()
