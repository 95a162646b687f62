"""Ingest under bad input and a refusing store: the figures quoted in docs/data-path.md.

On a private Mosquitto + InfluxDB (with authentication), one in-process ingest worker:

1. poison: ``--messages`` valid messages (100 samples each) with, in the middle, the
   payloads that used to stop ingest — an activity document whose ``schema`` is a
   1,020-deep array, one whose first animal's ``species`` is, a status document whose
   ``schema`` is, and a 3.6 MB payload — each ``--poison`` times. Reports samples
   stored / published, stored values that differ from the published ones, dead letters,
   the largest dead letter against the broker's 4 MiB packet limit, broker disconnects
   of ingest, and whether the worker is alive.
2. credentials: InfluxDB refuses the worker's password for ``--refuse-s`` seconds while
   messages keep coming; then the password is fixed (no restart). Reports samples stored /
   published, dead letters (must be 0), ERROR lines, and the seconds from the fix until
   everything was stored.
3. decoding cost: CPU per message of parse + decode for a valid message and for one with
   a refused animal, and of the whole-document nesting walk alone (100- and
   10,000-sample messages), median of repeated runs in this process.

    .venv/bin/python -m bench.ingest_faults [--messages 300] [--poison 5] [--refuse-s 30]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from namazu.server.ingest import payload as pl
from namazu.server.ingest.service import IngestService
from namazu.server.launch.stack import Stack
from namazu.server.store.influx import InfluxClient
from tests.server.ingest_support import Publisher, make_config, now_ms, wait_for
from tests.server.payload_cases import valid_document

FARM = "bench-farm"


class _Count(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.errors: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.errors.append(record.getMessage())


def _documents(gateway: str, count: int, t0: int) -> list[bytes]:
    """``count`` valid messages of 10 animals x 10 one-minute samples, seq 1..count."""
    return [
        orjson.dumps(valid_document(FARM, gateway, seq, t0 + seq * 600_000, 10, 10))
        for seq in range(1, count + 1)
    ]


def _wrong_values(influx: InfluxClient, gateway: str, docs: list[bytes]) -> int:
    """Published samples whose stored (odba, vedba) differ or are missing."""
    rows = influx.query(
        "SELECT odba, vedba FROM activity WHERE farm = $f AND gateway = $g GROUP BY animal",
        params={"f": FARM, "g": gateway},
    )
    stored = {(s["tags"]["animal"], t): (o, v) for s in rows for t, o, v in s.get("values", [])}
    wrong = 0
    for body in docs:
        for animal in orjson.loads(body)["animals"]:
            for t, o, v in zip(animal["t_ms"], animal["odba"], animal["vedba"], strict=True):
                if stored.get((animal["animal"], t)) != (o, v):
                    wrong += 1
    return wrong


def _stored(influx: InfluxClient, gateway: str) -> int:
    return influx.count("activity", "odba", f"farm = '{FARM}' AND gateway = '{gateway}'")


def poison_run(stack: Stack, admin: InfluxClient, n_messages: int, n_poison: int) -> dict:
    cfg = make_config(stack.mqtt_port, stack.influx_url, admin.database)
    watcher = Publisher(stack.mqtt_port, subscribe=f"namazu/v1/deadletter/{FARM}/#")
    quiet = logging.getLogger("namazu.server.ingest.service")
    quiet.setLevel(logging.ERROR)
    service = IngestService(cfg, admin).start()
    try:
        assert service.wait_ready(10)
        pub = Publisher(stack.mqtt_port)
        t0 = now_ms() - 5 * 86_400_000
        docs = _documents("gw-p", n_messages, t0)
        deep = b"[" * 1020 + b"]" * 1020
        poison = [
            docs[0].replace(b'"namazu.activity/1"', deep),
            docs[0].replace(b'"cow"', deep, 1),
            b'{"schema": "namazu.activity/1", "pad": "' + b"x" * 3_600_000 + b'"}',
        ]
        status = b'{"schema": ' + deep + b', "online": true}'
        began = time.monotonic()
        for i, body in enumerate(docs):
            if i == n_messages // 2:
                for _ in range(n_poison):
                    for bad in poison:
                        pub.publish(f"namazu/v1/{FARM}/gw-p/activity", bad)
                    pub.publish(f"namazu/v1/{FARM}/gw-p/status", status)
            pub.publish(f"namazu/v1/{FARM}/gw-p/activity", body)
        expected = n_messages * 100
        wait_for(lambda: _stored(admin, "gw-p") >= expected, 120, "poison run stored")
        wait_for(lambda: len(watcher.received) >= 4 * n_poison, 60, "poison dead letters")
        elapsed = time.monotonic() - began
        out = {
            "published": expected,
            "stored": _stored(admin, "gw-p"),
            "wrong_or_missing": _wrong_values(admin, "gw-p", docs),
            "poison_sent": 4 * n_poison,
            "dead_letters": len(watcher.received),
            "largest_dead_letter_bytes": max(len(m.payload) for m in watcher.received),
            "packet_limit_bytes": service._mqtt.max_packet_size,
            "ingest_disconnects": service._mqtt.disconnects,
            "alive": service.stats["connected"] and service.failed is None,
            "seconds": round(elapsed, 1),
        }
        pub.close()
        return out
    finally:
        service.stop(end_session=True)
        watcher.close()
        quiet.setLevel(logging.NOTSET)


def credentials_run(stack: Stack, admin: InfluxClient, refuse_s: float) -> dict:
    cfg = make_config(stack.mqtt_port, stack.influx_url, admin.database)
    admin.query("CREATE USER bench WITH PASSWORD 'old-pw'")
    admin.query(f'GRANT WRITE ON "{admin.database}" TO bench')
    writer = InfluxClient(stack.influx_url, admin.database, "bench", "new-pw")  # refused
    errors = _Count()
    log = logging.getLogger("namazu.server.ingest.service")
    log.addHandler(errors)
    watcher = Publisher(stack.mqtt_port, subscribe=f"namazu/v1/deadletter/{FARM}/#")
    service = IngestService(cfg, writer).start()
    try:
        assert service.wait_ready(10)
        pub = Publisher(stack.mqtt_port)
        docs = _documents("gw-c", int(refuse_s * 10), now_ms() - 4 * 86_400_000)
        start = time.monotonic()
        for i, body in enumerate(docs):  # 10 messages (1,000 samples) per second
            time.sleep(max(0.0, start + i / 10 - time.monotonic()))
            pub.publish(f"namazu/v1/{FARM}/gw-c/activity", body)
        time.sleep(max(0.0, start + refuse_s - time.monotonic()))
        acked_while_refused = service.stats["acked"]
        admin.query("SET PASSWORD FOR bench = 'new-pw'")
        fixed = time.monotonic()
        expected = len(docs) * 100
        wait_for(lambda: _stored(admin, "gw-c") >= expected, 120, "stored after the fix")
        out = {
            "refused_for_s": refuse_s,
            "published": expected,
            "stored": _stored(admin, "gw-c"),
            "wrong_or_missing": _wrong_values(admin, "gw-c", docs),
            "acked_while_refused": acked_while_refused,
            "dead_letters": len(watcher.received),
            "error_lines": len(errors.errors),
            "first_error": errors.errors[0] if errors.errors else "",
            "seconds_from_fix_to_stored": round(time.monotonic() - fixed, 2),
        }
        pub.close()
        return out
    finally:
        log.removeHandler(errors)
        service.stop(end_session=True)
        watcher.close()
        writer.close()


def decoding_cost(repeats: int = 30) -> dict[str, Any]:
    """Median CPU per message [ms]: parse + decode of a valid message (fast path: only the
    top-level values are walked for nesting), of the same message with one refused animal
    (per-animal path: the whole document is walked), and the whole-document walk alone."""
    out: dict[str, Any] = {}
    now = now_ms()
    topic = f"namazu/v1/{FARM}/gw-x/activity"

    def per_message_ms(work) -> float:
        runs = []
        for _ in range(repeats):
            t = time.process_time()
            for _ in range(20):
                work()
            runs.append((time.process_time() - t) / 20 * 1000)
        return round(statistics.median(runs), 4)

    for animals, samples in ((10, 10), (100, 100)):
        doc = valid_document(FARM, "gw-x", 1, now - 86_400_000, animals, samples)
        valid = orjson.dumps(doc)
        doc["animals"][-1]["species"] = "horse"
        refused = orjson.dumps(doc)
        parsed = pl.parse_json(valid)
        n = animals * samples

        def decode(body: bytes) -> None:
            pl.decode_activity_message(topic, pl.parse_json(body), now, 300_000, 400 * 86_400_000)

        out[f"{n}_samples_valid_ms"] = per_message_ms(lambda b=valid: decode(b))
        out[f"{n}_samples_one_animal_refused_ms"] = per_message_ms(lambda b=refused: decode(b))
        out[f"{n}_samples_depth_walk_ms"] = per_message_ms(lambda d=parsed: pl.check_depth(d))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=300, help="valid messages (100 samples)")
    parser.add_argument("--poison", type=int, default=5, help="times each poison payload is sent")
    parser.add_argument("--refuse-s", type=float, default=30.0, help="credentials refused for [s]")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="namazu-faults-") as tmp:
        stack = Stack(Path(tmp) / "stack", influx_auth=True).start()
        admin = InfluxClient(stack.influx_url, "faults", "root", "root-pw")
        try:
            admin.query("CREATE USER root WITH PASSWORD 'root-pw' WITH ALL PRIVILEGES")
            admin.create_database()
            print("poison:", poison_run(stack, admin, args.messages, args.poison))
            print("credentials:", credentials_run(stack, admin, args.refuse_s))
        finally:
            admin.close()
            stack.stop()
    print("decoding:", decoding_cost())


if __name__ == "__main__":
    main()
