"""The sequence ledger on the real broker and InfluxDB: a sequence number re-sent with
other values is a ``seq_conflict`` after an ingest restart and at another worker of the
shared subscription (the first values stay); identical re-sends are silent; old rows
are pruned; an unreachable state store holds messages unacknowledged."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest
from sqlalchemy import func, select

from namazu.server.ingest.service import IngestService
from namazu.server.store import digests
from namazu.server.store.influx import InfluxClient
from namazu.server.store.state import MessageDigest, init_db, session_scope
from tests.server.ingest_support import Publisher, make_config, now_ms, wait_for
from tests.server.payload_cases import valid_document

pytestmark = pytest.mark.services


@pytest.fixture
def farm(request):
    return f"farm-{abs(hash(request.node.name)) % 10**8:08d}"


def first_and_other(farm: str, gateway: str, seq: int, t0_ms: int) -> tuple[bytes, bytes]:
    """Two documents under one sequence number: the first values and other values."""
    first = valid_document(farm, gateway, seq, t0_ms)
    first["boot_id"] = "boot-a"
    other = valid_document(farm, gateway, seq, t0_ms)
    other["boot_id"] = "boot-a"
    other["animals"][0]["odba"] = [9.0, 9.0, 9.0]
    return orjson.dumps(first), orjson.dumps(other)


def max_odba(influx: InfluxClient, farm: str, gateway: str) -> float:
    rows = influx.query(
        f"SELECT max(odba) FROM activity WHERE farm = '{farm}' AND animal = '{gateway}-cow-000'"
    )
    return rows[0]["values"][0][1]


def ledger_rows(state_url: str) -> int:
    with session_scope(init_db(state_url)) as session:
        return session.scalar(select(func.count()).select_from(MessageDigest))


def test_a_conflict_after_a_restart_is_dead_lettered_and_replays_stay_silent(
    stack, influx, farm, state_url
):
    letters = Publisher(stack.mqtt_port, subscribe=f"namazu/v1/deadletter/{farm}/#")
    pub = Publisher(stack.mqtt_port)
    topic = f"namazu/v1/{farm}/gw-r/activity"
    first, other = first_and_other(farm, "gw-r", 7, now_ms() - 2 * 86_400_000)
    before = IngestService(
        make_config(stack.mqtt_port, stack.influx_url, influx.database, state_url), influx
    ).start()
    try:
        assert before.wait_ready(10)
        pub.publish(topic, first)
        wait_for(lambda: before.stats["acked"] == 1, what="the first copy stored")
    finally:
        before.stop(end_session=True)
    assert ledger_rows(state_url) == 1
    after = IngestService(
        make_config(stack.mqtt_port, stack.influx_url, influx.database, state_url), influx
    ).start()
    try:
        assert after.wait_ready(10)
        pub.publish(topic, other)
        pub.publish(topic, first)  # an identical re-send: silent
        wait_for(lambda: after.stats["acked"] == 2, what="both re-sends handled")
        stats = after.stats
        assert stats["seq_conflicts"] == 1 and stats["seq_conflicts_shared"] == 1
        assert stats["rejected_by_reason"] == {"seq_conflict": 1}
        wait_for(lambda: len(letters.received) == 1, what="the dead letter")
        letter = orjson.loads(letters.received[0].payload)
        assert letter["reason"] == "seq_conflict" and "seq 7" in letter["detail"]
        assert max_odba(influx, farm, "gw-r") < 1.0  # the first values stay
        # The worker's own book now holds the ledger's digest: the first copy again is a
        # replay, the other values again a conflict caught before the ledger.
        pub.publish(topic, other)
        wait_for(lambda: after.stats["acked"] == 3, what="the second conflicting copy")
        assert after.stats["seq_conflicts"] == 2 and after.stats["seq_conflicts_shared"] == 1
        assert max_odba(influx, farm, "gw-r") < 1.0
    finally:
        after.stop(end_session=True)
        pub.close()
        letters.close()


def test_two_workers_sharing_the_store_catch_conflicts_at_the_other_worker(
    stack, influx, farm, state_url
):
    one = make_config(stack.mqtt_port, stack.influx_url, influx.database, state_url)
    group = {"shared_group": one.ingest.shared_group}
    two = make_config(stack.mqtt_port, stack.influx_url, influx.database, state_url, **group)
    assert one.ingest.client_id != two.ingest.client_id
    workers = [IngestService(one, influx).start(), IngestService(two, influx).start()]
    pub = Publisher(stack.mqtt_port)
    topic = f"namazu/v1/{farm}/gw-w/activity"
    t0 = now_ms() - 2 * 86_400_000
    n = 21  # odd: round-robin sends the other copy of a number to the other worker
    pairs = [first_and_other(farm, "gw-w", seq, t0 + seq * 600_000) for seq in range(n)]

    def total(key: str) -> int:
        return sum(worker.stats[key] for worker in workers)

    try:
        assert all(worker.wait_ready(10) for worker in workers)
        for first, _ in pairs:
            pub.publish(topic, first)
        wait_for(lambda: total("acked") == n, what="the first copies stored")
        for first, other in pairs:
            pub.publish(topic, other)
            pub.publish(topic, first)
        wait_for(lambda: total("acked") == 3 * n, what="every re-send handled")
        assert all(worker.stats["received"] > 0 for worker in workers)
        assert total("seq_conflicts") == n
        assert total("rejected") == n  # the identical copies were silent
        assert total("seq_conflicts_shared") > 0  # caught only through the shared ledger
        assert max_odba(influx, farm, "gw-w") < 1.0
        assert ledger_rows(state_url) == n
    finally:
        for worker in workers:
            worker.stop(end_session=True)
        pub.close()


def test_claim_keeps_the_first_digest_of_a_key_within_and_across_batches(state_url):
    engine = init_db(state_url)
    now = datetime.now(UTC)
    a, b = ("f", "gw", "boot-a", 1), ("f", "gw", "", 2)
    kept = digests.claim(engine, [(a, b"1" * 16), (b, b"2" * 16), (a, b"3" * 16)], now)
    assert kept == {a: b"1" * 16, b: b"2" * 16}
    c = ("f", "gw", "boot-a", 3)
    mixed = [(a, b"4" * 16), (b, b"2" * 16), (c, b"5" * 16)]
    again = digests.claim(engine, mixed, now)
    assert again == {a: b"1" * 16, b: b"2" * 16, c: b"5" * 16}
    many = [(("f", "gw", "boot-b", seq), seq.to_bytes(16, "big")) for seq in range(4500)]
    later = now + timedelta(hours=1)
    assert digests.claim(engine, many, later) == dict(many)  # more than one chunk
    assert digests.prune(engine, now + timedelta(seconds=1)) == 3
    assert digests.prune(engine, later + timedelta(seconds=1)) == 4500


def test_ledger_rows_older_than_the_retention_are_pruned(stack, influx, farm, state_url):
    cfg = make_config(
        stack.mqtt_port,
        stack.influx_url,
        influx.database,
        state_url,
        seq_ledger_retention_days=30,
    )
    service = IngestService(cfg, influx).start()
    pub = Publisher(stack.mqtt_port)
    topic = f"namazu/v1/{farm}/gw-p/activity"
    t0 = now_ms() - 2 * 86_400_000
    try:
        assert service.wait_ready(10)
        for seq in range(3):
            pub.publish(topic, first_and_other(farm, "gw-p", seq, t0 + seq * 600_000)[0])
        wait_for(lambda: service.stats["acked"] == 3, what="three messages")
        assert ledger_rows(state_url) == 3
        now = datetime.now(UTC)
        assert service.prune_ledger(now + timedelta(days=29)) == 0
        assert ledger_rows(state_url) == 3
        assert service.prune_ledger(now + timedelta(days=31)) == 3
        assert ledger_rows(state_url) == 0
        assert service.stats["ledger_pruned"] == 3
    finally:
        service.stop(end_session=True)
        pub.close()


def test_an_unreachable_state_store_holds_messages_until_it_answers(stack, influx, farm, state_url):
    unreachable = "postgresql+psycopg://namazu@127.0.0.1:1/namazu"
    cfg = make_config(stack.mqtt_port, stack.influx_url, influx.database, unreachable)
    service = IngestService(cfg, influx).start()
    pub = Publisher(stack.mqtt_port)
    topic = f"namazu/v1/{farm}/gw-u/activity"
    first, _ = first_and_other(farm, "gw-u", 3, now_ms() - 2 * 86_400_000)
    try:
        assert service.wait_ready(10)
        pub.publish(topic, first)
        wait_for(lambda: service.stats["ledger_retries"] >= 3, what="ledger retries")
        assert service.stats["acked"] == 0 and service.stats["written_messages"] == 0
    finally:
        service.stop(timeout_s=0.5)  # keeps the session: the message stays with the broker
    reachable = cfg.model_copy(update={"state": cfg.state.model_copy(update={"url": state_url})})
    service = IngestService(reachable, influx).start()
    try:
        assert service.wait_ready(10)
        wait_for(lambda: service.stats["acked"] == 1, what="the held message stored")
        assert ledger_rows(state_url) == 1
        assert service.stats["rejected"] == 0
    finally:
        service.stop(end_session=True)
        pub.close()
