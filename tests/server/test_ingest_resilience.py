"""Ingest on the real broker and InfluxDB when things go wrong: poison payloads, a
decoder defect, a dying worker thread, refused credentials, points InfluxDB refuses,
re-used sequence numbers, unknown farms; receipts and the dead-letter replay."""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import subprocess
import sys
import threading

import orjson
import pytest
from sqlalchemy import select

from namazu.firmware_bridge.payload import decode_receipt
from namazu.server.core import metrics
from namazu.server.ingest.deadletter import DeadLetterArchive, DeadLetterFilter
from namazu.server.ingest.deadletter import main as deadletter_main
from namazu.server.ingest.service import EXIT_WORKER_DIED, IngestService, StoreHealth, run_service
from namazu.server.store.influx import InfluxClient
from namazu.server.store.state import DataHealth, init_db, session_scope
from tests.server.ingest_support import Publisher, make_config, now_ms, wait_for
from tests.server.payload_cases import valid_document

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytestmark = pytest.mark.services


@pytest.fixture
def farm(request):
    return f"farm-{abs(hash(request.node.name)) % 10**8:08d}"


def stored(influx: InfluxClient, farm: str) -> int:
    return influx.count("activity", "odba", f"\"farm\" = '{farm}'")


def doc_bytes(farm: str, gateway: str, seq: int, t0_ms: int, **kwargs) -> bytes:
    return orjson.dumps(valid_document(farm, gateway, seq, t0_ms, **kwargs))


def letters_of(watcher: Publisher) -> list[dict]:
    return [orjson.loads(m.payload) for m in watcher.received]


def receipts_of(watcher: Publisher) -> dict[str | None, set[int]]:
    """Union of the receipts seen, per boot_id."""
    out: dict[str | None, set[int]] = {}
    for message in list(watcher.received):
        receipt = decode_receipt(message.payload)
        seqs = out.setdefault(receipt.boot_id, set())
        for first, last in receipt.seqs:
            seqs.update(range(first, last + 1))
    return out


# --- poison ---------------------------------------------------------------------------


def test_poison_payloads_are_dead_lettered_and_ingest_goes_on(stack, influx, farm, tmp_path):
    """The two payloads that used to stop ingest: a 2 kB document whose schema (or an
    animal's species, or a status schema) is a 1,020-deep array, and a 3.6 MB payload
    whose dead letter would exceed the broker's 4 MiB packet limit."""
    cfg = make_config(stack.mqtt_port, stack.influx_url, influx.database)
    watcher = Publisher(stack.mqtt_port, subscribe=f"namazu/v1/deadletter/{farm}/#")
    service = IngestService(cfg, influx).start()
    try:
        assert service.wait_ready(10)
        pub = Publisher(stack.mqtt_port)
        topic = f"namazu/v1/{farm}/gw-p/activity"
        t0 = now_ms() - 2 * 86_400_000
        deep = b"[" * 1020 + b"]" * 1020
        poison_schema = doc_bytes(farm, "gw-p", 900, t0).replace(b'"namazu.activity/1"', deep)
        poison_species = doc_bytes(farm, "gw-p", 901, t0).replace(b'"cow"', deep, 1)
        poison_status = b'{"schema": ' + deep + b', "online": true}'
        huge = b'{"schema": "namazu.activity/1", "pad": "' + b"x" * 3_600_000 + b'"}'
        for seq in range(10):
            if seq == 3:
                pub.publish(topic, poison_schema)
                pub.publish(topic, poison_species)
                pub.publish(f"namazu/v1/{farm}/gw-p/status", poison_status)
            if seq == 6:
                pub.publish(topic, huge)
            pub.publish(topic, doc_bytes(farm, "gw-p", seq, t0 + seq * 600_000, samples=10))
        wait_for(lambda: len(watcher.received) == 4, what="four dead letters")
        wait_for(lambda: stored(influx, farm) == 10 * 2 * 10, what="all valid samples")
        letters = {d["payload_sha256"]: d for d in letters_of(watcher)}
        big = letters[hashlib.sha256(huge).hexdigest()]
        assert big["payload_truncated"] is True and big["payload_bytes"] == len(huge)
        assert huge.startswith(base64.b64decode(big["payload_b64"]))
        assert all(len(m.payload) < 4 * 1024 * 1024 for m in watcher.received)
        for poison in (poison_schema, poison_species, poison_status):
            letter = letters[hashlib.sha256(poison).hexdigest()]
            assert letter["reason"] == "schema" and "nest deeper" in letter["detail"]
        wait_for(lambda: service.stats["acked"] == 13, what="every activity message acked")
        stats = service.stats
        assert stats["connected"] and stats["failed"] is None
        assert service._mqtt.disconnects == 0  # the broker never dropped ingest
        pub.close()
    finally:
        service.stop(end_session=True)
        watcher.close()


def test_a_decoder_defect_dead_letters_one_message_as_internal_error(stack, influx, farm):
    """Any exception while decoding one message (here raised by the observer hook for
    seq 2) dead-letters that message with the exception type; the rest is stored."""

    def observer(batch):
        if batch.seq == 2:
            raise ZeroDivisionError("a defect")

    cfg = make_config(stack.mqtt_port, stack.influx_url, influx.database)
    watcher = Publisher(stack.mqtt_port, subscribe=f"namazu/v1/deadletter/{farm}/#")
    service = IngestService(cfg, influx, observer=observer).start()
    ingest_log = logging.getLogger("namazu.server.ingest.service")
    level = ingest_log.level
    ingest_log.setLevel(logging.CRITICAL + 1)  # the expected traceback
    try:
        assert service.wait_ready(10)
        pub = Publisher(stack.mqtt_port)
        t0 = now_ms() - 2 * 86_400_000
        for seq in range(5):
            pub.publish(
                f"namazu/v1/{farm}/gw-i/activity", doc_bytes(farm, "gw-i", seq, t0 + seq * 600_000)
            )
        wait_for(lambda: service.stats["acked"] == 5, what="five acks")
        (letter,) = letters_of(watcher)
        assert letter["reason"] == "internal_error" and letter["exception"] == "ZeroDivisionError"
        assert letter["detail"].startswith("ZeroDivisionError while decoding")
        assert stored(influx, farm) == 4 * 2 * 3
        assert service.stats["failed"] is None
        pub.close()
    finally:
        ingest_log.setLevel(level)
        service.stop(end_session=True)
        watcher.close()


class _BrokenClient(InfluxClient):
    """An InfluxDB client with a defect: every write raises an unexpected exception."""

    def write_lines(self, lines, precision="ms", retention_policy=None):
        raise RuntimeError("defect in the write path")


def test_a_dead_worker_stops_heartbeats_and_exits_70_and_loses_nothing(stack, influx, farm):
    cfg = make_config(stack.mqtt_port, stack.influx_url, influx.database, heartbeat_s=0.2)
    beats: list[bytes] = []
    alive = Publisher(stack.mqtt_port, subscribe="namazu/v1/_ingest/alive")
    alive.client.on_message = lambda c, u, m: beats.append(orjson.loads(m.payload)["client_id"])
    broken = _BrokenClient(stack.influx_url, influx.database)
    service = IngestService(cfg, broken).start()
    ingest_log = logging.getLogger("namazu.server.ingest.service")
    level = ingest_log.level
    ingest_log.setLevel(logging.CRITICAL + 1)
    try:
        assert service.wait_ready(10)
        mine = cfg.ingest.client_id
        wait_for(lambda: mine in beats, what="a heartbeat")
        pub = Publisher(stack.mqtt_port)
        pub.publish(
            f"namazu/v1/{farm}/gw-d/activity", doc_bytes(farm, "gw-d", 1, now_ms() - 60_000)
        )
        wait_for(lambda: service.failed is not None, what="the worker to die")
        assert service.stats["failed"] == "RuntimeError"
        assert run_service(service, threading.Event(), 60.0) == EXIT_WORKER_DIED
        wait_for(lambda: not service.stats["connected"], what="disconnect")
        # No heartbeat after the disconnect: a later heartbeat from another worker
        # arrives, none from this one.
        count = beats.count(mine)
        probe = IngestService(
            make_config(stack.mqtt_port, stack.influx_url, influx.database, heartbeat_s=0.2),
            influx,
        ).start()
        wait_for(lambda: beats.count(probe.config.ingest.client_id) >= 3, what="probe beats")
        probe.stop(end_session=True)
        assert beats.count(mine) == count
        assert service.stats["acked"] == 0
        pub.close()
    finally:
        ingest_log.setLevel(level)
        service.stop()
        alive.close()
    # The unacknowledged message waits in the broker for the restarted worker.
    again = IngestService(cfg, influx).start()
    try:
        wait_for(lambda: stored(influx, farm) == 2 * 3, what="the held message stored")
    finally:
        again.stop(end_session=True)


# --- store errors -----------------------------------------------------------------------


@pytest.fixture
def auth_stack(tmp_path):
    """Mosquitto + InfluxDB with authentication: admin ``root``, writer ``ingest``."""
    from namazu.server.launch.stack import Stack

    running = Stack(tmp_path / "stack", influx_auth=True).start()
    admin = InfluxClient(running.influx_url, "namazu_auth", "root", "root-pw")
    admin.query("CREATE USER root WITH PASSWORD 'root-pw' WITH ALL PRIVILEGES")
    admin.create_database()
    admin.query("CREATE USER ingest WITH PASSWORD 'good-pw'")
    admin.query('GRANT WRITE ON "namazu_auth" TO ingest')
    yield running, admin
    admin.close()
    running.stop()


def test_refused_credentials_hold_messages_until_fixed_without_restart(auth_stack, farm, caplog):
    """401 (wrong password) and then 403 (write privilege revoked): nothing is
    dead-lettered or acknowledged, one ERROR line names the cause, a metric and a
    data-health entry say so; once fixed, everything is stored without a restart."""
    stack, admin = auth_stack
    state_url = f"sqlite:///{stack.data_dir}/state.sqlite"
    cfg = make_config(stack.mqtt_port, stack.influx_url, "namazu_auth", state_url=state_url)
    writer = InfluxClient(stack.influx_url, "namazu_auth", "ingest", "new-pw")
    watcher = Publisher(stack.mqtt_port, subscribe="namazu/v1/deadletter/#")
    service = IngestService(cfg, writer).start()
    blocked = metrics.INGEST_STORE_BLOCKED
    try:
        assert service.wait_ready(10)
        pub = Publisher(stack.mqtt_port)
        t0 = now_ms() - 2 * 86_400_000
        topic = f"namazu/v1/{farm}/gw-a/activity"
        for seq in range(5):
            pub.publish(topic, doc_bytes(farm, "gw-a", seq, t0 + seq * 600_000))
        wait_for(lambda: service.stats["store_blocked"] == "credentials", what="401 seen")
        wait_for(lambda: service.stats["write_retries"] >= 3, what="retries")
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert errors == [
            "InfluxDB refused the credentials of user 'ingest' for database 'namazu_auth'; "
            "holding messages unacknowledged and retrying"
        ]
        assert blocked.labels(cause="credentials", influx=stack.influx_url)._value.get() == 1
        health = DeadLetterArchive(state_url).engine
        with session_scope(health) as session:
            row = session.scalars(select(DataHealth).where(DataHealth.kind == "store")).one()
            assert (row.farm, row.name, row.status) == (
                "_ingest",
                cfg.ingest.client_id,
                "credentials",
            )

        admin.query("SET PASSWORD FOR ingest = 'new-pw'")  # the fix, no restart
        wait_for(lambda: service.stats["acked"] == 5, timeout_s=20, what="stored after the fix")
        assert stored(admin, farm) == 5 * 2 * 3
        assert blocked.labels(cause="credentials", influx=stack.influx_url)._value.get() == 0

        admin.query('REVOKE ALL ON "namazu_auth" FROM ingest')
        for seq in range(5, 8):
            pub.publish(topic, doc_bytes(farm, "gw-a", seq, t0 + seq * 600_000))
        wait_for(lambda: service.stats["store_blocked"] == "permission", what="403 seen")
        assert service.stats["acked"] == 5
        admin.query('GRANT WRITE ON "namazu_auth" TO ingest')
        wait_for(lambda: service.stats["acked"] == 8, timeout_s=20, what="stored after grant")
        assert stored(admin, farm) == 8 * 2 * 3
        assert service.stats["rejected"] == 0 and watcher.received == []
        with session_scope(health) as session:
            row = session.scalars(select(DataHealth).where(DataHealth.kind == "store")).one()
            assert row.status == "ok"
        pub.close()
    finally:
        service.stop(end_session=True)
        watcher.close()
        writer.close()


def test_the_store_entry_of_a_worker_with_a_long_client_id_is_written(state_url):
    """data_health.name holds 128 characters: a longer client id is cut there (PostgreSQL
    refused the whole row, so that worker's store path never showed on the panel)."""
    StoreHealth(state_url, "w" * 300).set("credentials")
    with session_scope(init_db(state_url)) as session:
        row = session.scalars(select(DataHealth).where(DataHealth.kind == "store")).one()
    assert (row.name, row.status) == ("w" * 128, "credentials")


def test_a_missing_database_the_user_cannot_create_is_held_not_dead_lettered(auth_stack, farm):
    stack, admin = auth_stack
    cfg = make_config(stack.mqtt_port, stack.influx_url, "namazu_later")
    writer = InfluxClient(stack.influx_url, "namazu_later", "ingest", "good-pw")
    service = IngestService(cfg, writer).start()
    try:
        assert service.wait_ready(10)
        pub = Publisher(stack.mqtt_port)
        pub.publish(
            f"namazu/v1/{farm}/gw-m/activity", doc_bytes(farm, "gw-m", 1, now_ms() - 60_000)
        )
        wait_for(lambda: service.stats["store_blocked"] == "no_database", what="404 seen")
        wait_for(lambda: service.stats["write_retries"] >= 3, what="retries with back-off")
        assert service.stats["acked"] == 0 and service.stats["rejected"] == 0
        later = InfluxClient(stack.influx_url, "namazu_later", "root", "root-pw")
        later.create_database()
        later.query('GRANT WRITE ON "namazu_later" TO ingest')
        wait_for(lambda: service.stats["acked"] == 1, timeout_s=20, what="stored once created")
        assert stored(later, farm) == 2 * 3
        later.close()
        pub.close()
    finally:
        service.stop(end_session=True)
        writer.close()


def test_refused_points_are_found_one_by_one(stack, influx, farm):
    """A field type conflict in one shard: of a message with animals in two shards only
    the conflicting points are dead-lettered (store_refused); the rest is stored."""
    t_bad = now_ms() - 3 * 86_400_000
    t_good = now_ms() - 30 * 86_400_000  # another 7-day shard group
    influx.write_lines([f"activity,animal=x,farm={farm},gateway=gw-9,species=cow odba=1i {t_bad}"])
    cfg = make_config(stack.mqtt_port, stack.influx_url, influx.database)
    watcher = Publisher(stack.mqtt_port, subscribe=f"namazu/v1/deadletter/{farm}/#")
    service = IngestService(cfg, influx).start()
    try:
        assert service.wait_ready(10)
        doc = valid_document(farm, "gw-9", 1, t_good, animals=3, samples=3)
        doc["animals"][1]["t_ms"] = [t_bad + i * 60_000 for i in range(3)]
        Publisher(stack.mqtt_port).publish(f"namazu/v1/{farm}/gw-9/activity", orjson.dumps(doc))
        wait_for(lambda: watcher.received, what="dead letter")
        (letter,) = letters_of(watcher)
        assert letter["reason"] == "store_refused" and "conflict" in letter["detail"]
        assert letter["rejected_points_total"] == 3
        assert all("animal=gw-9-cow-001" in line for line in letter["rejected_points"])
        assert letter["stored_points"] == 9 - 3 + 3  # activity + collar points kept
        wait_for(lambda: service.stats["acked"] == 1, what="acknowledged")
        assert stored(influx, farm) == 1 + 2 * 3
    finally:
        service.stop(end_session=True)
        watcher.close()


# --- sequence numbers, receipts ------------------------------------------------------------


def test_seq_conflicts_are_dead_lettered_replays_silent_new_boot_id_is_new(stack, influx, farm):
    cfg = make_config(stack.mqtt_port, stack.influx_url, influx.database)
    letters = Publisher(stack.mqtt_port, subscribe=f"namazu/v1/deadletter/{farm}/#")
    receipts = Publisher(stack.mqtt_port, subscribe=f"namazu/v1/{farm}/gw-s/receipt")
    service = IngestService(cfg, influx).start()
    try:
        assert service.wait_ready(10)
        pub = Publisher(stack.mqtt_port)
        topic = f"namazu/v1/{farm}/gw-s/activity"
        t0 = now_ms() - 2 * 86_400_000
        first = valid_document(farm, "gw-s", 5, t0)
        first["boot_id"] = "boot-a"
        other = valid_document(farm, "gw-s", 5, t0)
        other["boot_id"] = "boot-a"
        other["animals"][0]["odba"] = [9.0, 9.0, 9.0]  # same seq, other values
        reborn = valid_document(farm, "gw-s", 5, t0 + 600_000)
        reborn["boot_id"] = "boot-b"  # a spool lost: numbering starts again
        for doc in (first, first, other, reborn):
            pub.publish(topic, orjson.dumps(doc))
        wait_for(lambda: service.stats["acked"] == 4, what="four acks")
        (letter,) = letters_of(letters)
        assert letter["reason"] == "seq_conflict" and "seq 5" in letter["detail"]
        stats = service.stats
        assert stats["seq_conflicts"] == 1 and stats["seq_replays"] == 1
        odba = influx.query(
            f"SELECT max(odba) FROM activity WHERE farm = '{farm}' AND animal = 'gw-s-cow-000'"
        )
        assert odba[0]["values"][0][1] < 1.0  # the first values stay
        assert stored(influx, farm) == 2 * 2 * 3
        wait_for(lambda: receipts_of(receipts) == {"boot-a": {5}, "boot-b": {5}}, what="receipts")
        pub.close()
    finally:
        service.stop(end_session=True)
        letters.close()
        receipts.close()


def test_receipts_cover_stored_and_dead_lettered_messages(stack, influx, farm):
    cfg = make_config(stack.mqtt_port, stack.influx_url, influx.database)
    receipts = Publisher(stack.mqtt_port, subscribe=f"namazu/v1/{farm}/+/receipt")
    service = IngestService(cfg, influx).start()
    try:
        assert service.wait_ready(10)
        pub = Publisher(stack.mqtt_port)
        t0 = now_ms() - 2 * 86_400_000
        for seq in range(1, 31):
            doc = valid_document(farm, "gw-r", seq, t0 + seq * 600_000)
            doc["boot_id"] = "b7"
            if seq == 17:
                doc["animals"][0]["odba"][0] = -1.0  # refused animal, the other stored
            if seq == 23:
                doc["sent_ms"] = -5  # refused message, still receipted
            pub.publish(f"namazu/v1/{farm}/gw-r/activity", orjson.dumps(doc))
        pub.publish(f"namazu/v1/{farm}/gw-r/activity", b"not json")  # no seq, no receipt
        wait_for(lambda: service.stats["acked"] == 31, what="31 acks")
        wait_for(lambda: receipts_of(receipts) == {"b7": set(range(1, 31))}, what="receipts")
        assert all(m.topic == f"namazu/v1/{farm}/gw-r/receipt" for m in receipts.received)
        assert all(not m.retain and m.qos == 1 for m in receipts.received)
        assert stored(influx, farm) == 28 * 2 * 3 + 3
        pub.close()
    finally:
        service.stop(end_session=True)
        receipts.close()


# --- known farms, the archive and replay -------------------------------------------------


def test_unknown_farm_is_dead_lettered_then_replayed_once_configured(
    stack, influx, tmp_path, state_url, capsys
):
    closed = make_config(
        stack.mqtt_port, stack.influx_url, influx.database, state_url, open_enrolment=False
    )
    assert [f.id for f in closed.farms] == ["demo-farm"]
    watcher = Publisher(stack.mqtt_port, subscribe="namazu/v1/deadletter/+/gw-u")
    service = IngestService(closed, influx).start()
    t0 = now_ms() - 2 * 86_400_000
    try:
        assert service.wait_ready(10)
        pub = Publisher(stack.mqtt_port)
        for seq in range(3):
            for farm in ("demo-farm", "new-farm"):
                body = doc_bytes(farm, "gw-u", seq, t0 + seq * 600_000)
                pub.publish(f"namazu/v1/{farm}/gw-u/activity", body)
        status = b'{"schema": "namazu.status/1", "online": true}'
        pub.publish("namazu/v1/new-farm/gw-u/status", status)
        wait_for(lambda: service.stats["acked"] == 6, what="six acks")
        wait_for(lambda: len(watcher.received) == 4, what="four dead letters")
        assert {d["reason"] for d in letters_of(watcher)} == {"unknown_farm"}
        assert stored(influx, "demo-farm") == 3 * 2 * 3 and stored(influx, "new-farm") == 0
        pub.close()
    finally:
        service.stop(end_session=True)
        watcher.close()
    archive = DeadLetterArchive(state_url)
    # (retained statuses of other tests' farms on the shared broker are dead-lettered too)
    kept = archive.select(DeadLetterFilter(reasons=("unknown_farm",), farm="new-farm"))
    assert len(kept) == 4 and {k.gateway for k in kept} == {"gw-u"}

    # The farm is configured; `namazu deadletter replay` sends the originals again.
    config_file = tmp_path / "namazu.toml"
    config_file.write_text(
        f'[mqtt]\nport = {stack.mqtt_port}\n[state]\nurl = "{state_url}"\n'
        '[[farms]]\nid = "demo-farm"\nlatitude = 43.0\nlongitude = 13.0\n'
        '[[farms]]\nid = "new-farm"\nlatitude = 44.0\nlongitude = 12.0\n'
    )
    opened = make_config(
        stack.mqtt_port, stack.influx_url, influx.database, state_url, open_enrolment=False
    )
    opened = opened.model_copy(
        update={"farms": [*opened.farms, opened.farms[0].model_copy(update={"id": "new-farm"})]}
    )
    service = IngestService(opened, influx).start()
    try:
        assert service.wait_ready(10)
        command = [sys.executable, "-m", "namazu.server.cli", "deadletter", "--config"]
        new_farm = ["--reason", "unknown_farm", "--farm", "new-farm"]
        listed = subprocess.run(
            [*command, str(config_file), "list", *new_farm],
            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        assert listed.stdout.count("unknown_farm") == 4
        since = kept[0].received_at.isoformat()
        replayed = subprocess.run(
            [*command, str(config_file), "replay", *new_farm, "--since", since],
            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert replayed.returncode == 0, replayed.stderr
        assert replayed.stdout.strip() == "replayed 4 messages"
        wait_for(lambda: stored(influx, "new-farm") == 3 * 2 * 3, what="replayed data stored")
        again = subprocess.run(
            [*command, str(config_file), "replay", *new_farm],
            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        assert again.stdout.strip() == "replayed 0 messages"  # each letter goes once
    finally:
        service.stop(end_session=True)
    listing = ["--config", str(config_file), "list", *new_farm, "--include-replayed"]
    assert deadletter_main([*listing, "--limit", "2"]) == 0
    assert capsys.readouterr().out.count("unknown_farm") == 2
    # SQLite reads LIMIT -1 as "no limit", PostgreSQL refuses it: the command asks for >= 1
    with pytest.raises(SystemExit) as refused:
        deadletter_main([*listing, "--limit", "-1"])
    assert refused.value.code == 2
    assert "argument --limit: must be >= 1, got -1" in capsys.readouterr().err
