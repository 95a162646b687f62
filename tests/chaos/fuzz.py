"""Bad-input generators and the checks that every decoder survives them.

Structure-aware cases start from a valid document and break one thing (a missing or
extra key, a wrong type, a non-finite number, a length mismatch, a time far in the
future, a forged topic, poison: nesting up to 1,015 levels, 200 kB strings, 20,000 keys
anywhere, ...); random cases are raw bytes, bit flips and truncations.
Every decoder must either return a valid value or raise its own error class with a
reason; anything else is a crash and is collected with the input that caused it.
"""

from __future__ import annotations

import io
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

FARM = "fuzz-farm"
GATEWAY = "gw-f"
TOPIC = f"namazu/v1/{FARM}/{GATEWAY}/activity"
MAX_FUTURE_MS = 300_000
MAX_AGE_MS = 400 * 86_400_000


def valid_document(rng: random.Random, now_ms: int) -> dict[str, Any]:
    """A valid v1 activity document with 1-5 animals of 1-30 samples each."""
    animals = []
    for a in range(rng.randint(1, 5)):
        n = rng.randint(1, 30)
        t0 = now_ms - rng.randint(60_000 * (n + 1), 86_400_000)  # last sample in the past
        animals.append(
            {
                "animal": f"cow-{a:03d}",
                "species": rng.choice(["cow", "sheep", "dog"]),
                "t_ms": [t0 + 60_000 * i for i in range(n)],
                "odba": [round(rng.random(), 6) for _ in range(n)],
                "vedba": [round(rng.random(), 6) for _ in range(n)],
                "battery_v": 3.7,
            }
        )
    return {
        "schema": "namazu.activity/1",
        "farm": FARM,
        "gateway": GATEWAY,
        "seq": rng.randint(0, 10**12),  # distinct: a re-used seq with other values conflicts
        "sent_ms": now_ms,
        "animals": animals,
    }


_JUNK_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    1.5,
    -0.0,
    2**63,
    -(2**63) - 1,
    10**30,
    "",
    "x" * 70,
    "cow",
    "1700000000000",
    [],
    {},
    [1, 2],
    {"a": 1},
    "\u0000",
    "🐄",
    1e308,
]


def _mutations(doc: dict[str, Any], rng: random.Random, now_ms: int) -> tuple[str, bytes]:
    """Apply one structural defect; return (topic, payload)."""
    topic = TOPIC
    animal = rng.choice(doc["animals"])
    kind = rng.randrange(25)
    if kind == 0:
        doc.pop(rng.choice(list(doc)))
    elif kind == 1:
        doc[rng.choice(["extra", "Seq", "animals2"])] = rng.choice(_JUNK_VALUES)
    elif kind == 2:
        doc[rng.choice(list(doc))] = rng.choice(_JUNK_VALUES)
    elif kind == 3:
        animal.pop(rng.choice(list(animal)))
    elif kind == 4:
        animal[rng.choice(list(animal))] = rng.choice(_JUNK_VALUES)
    elif kind == 5:
        key = rng.choice(["odba", "vedba", "t_ms"])
        animal[key] = animal[key] + [animal[key][-1]]
    elif kind == 6:
        key = rng.choice(["odba", "vedba"])
        animal[key][rng.randrange(len(animal[key]))] = rng.choice([-0.5, -1e-9, 1e400])
    elif kind == 7:
        text = json.dumps(doc).replace(
            str(animal["odba"][0]), rng.choice(["NaN", "Infinity", "-Infinity", "1e999"]), 1
        )
        return topic, text.encode()
    elif kind == 8:
        animal["t_ms"][0] = now_ms + rng.choice([MAX_FUTURE_MS + 3_600_000, 10**9, 10**13])
    elif kind == 9:
        animal["t_ms"][0] = now_ms - MAX_AGE_MS - rng.randint(1, 10**10)
    elif kind == 10:
        animal["t_ms"][0] = rng.choice([-1, 1.5, "1700000000000", 2**63, True])
    elif kind == 11:
        animal["species"] = rng.choice(["cat", "COW", "", "horse"])
    elif kind == 12:
        topic = rng.choice(
            [
                f"namazu/v1/other-farm/{GATEWAY}/activity",
                f"namazu/v1/{FARM}/gw-other/activity",
                f"namazu/v1/{FARM}/{GATEWAY}/status",
                f"namazu/v2/{FARM}/{GATEWAY}/activity",
                "namazu/v1/activity",
            ]
        )
    elif kind == 13:
        doc["farm"] = rng.choice(["bad farm", "-x", "a" * 65, "ü", "a/b", "+", "#"])
    elif kind == 14:
        doc["schema"] = rng.choice(["namazu.activity/2", "namazu.activity/0", "", 1])
    elif kind == 15:
        n = 10_001
        animal["t_ms"] = [now_ms - 60_000 * (i + 1) for i in range(n)]
        animal["odba"] = [0.1] * n
        animal["vedba"] = [0.1] * n
    elif kind == 16:
        doc["animals"] = [dict(animal, animal=f"a{i}") for i in range(1001)]
    elif kind == 17:
        depth = rng.choice([50, 1000, 100_000])
        return topic, b"[" * depth + b"]" * depth
    elif kind == 18:
        text = json.dumps(doc)
        return topic, text[: rng.randrange(len(text))].encode()
    elif kind == 19:
        text = json.dumps(doc)
        return topic, rng.choice([b"\xef\xbb\xbf", b"\xff\xfe", b" \n"]) + text.encode()
    elif kind == 20:
        text = json.dumps(doc)
        return topic, text.replace('"seq"', '"seq": 1, "seq"', 1).encode()
    elif kind in (22, 23, 24):
        # poison: deep nesting, a giant string or a huge key count, anywhere; the value's
        # JSON text is spliced in, as the encoder itself would recurse over deep nesting
        if kind == 22:
            depth = rng.choice([9, 100, 1015])
            opener, closer = rng.choice([("[", "]"), ('{"k":', "}")])
            value = opener * depth + "1" + closer * depth
        elif kind == 23:
            value = json.dumps("x" * rng.choice([1_000, 200_000]))
        else:  # 20,000 keys in the document or in one animal
            rng.choice([doc, animal]).update({f"key-{i:05d}": i for i in range(20_000)})
            return topic, json.dumps(doc).encode()
        marker = "\u0001POISON\u0001"
        where = rng.choice(["schema", "farm", "extra", "species", "sample"])
        if where == "species":
            animal["species"] = marker
        elif where == "sample":
            animal["odba"][0] = marker
        else:
            doc[where] = marker
        return topic, json.dumps(doc).replace(json.dumps(marker), value, 1).encode()
    else:
        doc["animals"] = rng.choice([[], None, {}, "cow", [1]])
    return topic, json.dumps(doc, allow_nan=True).encode()


def payload_cases(n: int, seed: int = 1, now_ms: int | None = None) -> Iterator[tuple[str, bytes]]:
    """``n`` (topic, payload) cases: 1/5 valid, 3/5 structure-aware defects, 1/5 random."""
    rng = random.Random(seed)
    now = int(time.time() * 1000) if now_ms is None else now_ms
    for i in range(n):
        doc = valid_document(rng, now)
        if i % 5 == 0:
            yield TOPIC, json.dumps(doc).encode()
        elif i % 5 == 4:
            raw = bytearray(json.dumps(doc).encode())
            choice = rng.randrange(3)
            if choice == 0:
                yield TOPIC, rng.randbytes(rng.randint(0, 2000))
            elif choice == 1:
                for _ in range(rng.randint(1, 8)):
                    raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
                yield TOPIC, bytes(raw)
            else:
                del raw[rng.randrange(len(raw)) :]
                yield TOPIC, bytes(raw)
        else:
            yield _mutations(doc, rng, now)


@dataclass
class FuzzReport:
    """Outcome counts of one fuzz run over one decoder."""

    target: str
    cases: int = 0
    accepted: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    crashes: list[tuple[str, str]] = field(default_factory=list)

    def line(self) -> str:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.rejected.items()))
        return (
            f"{self.target}: {self.cases:,} cases, {self.accepted:,} accepted, "
            f"{sum(self.rejected.values()):,} rejected ({reasons}), {len(self.crashes)} crashes"
        )


def _run(
    target: str,
    cases,
    call: Callable[[Any], Any],
    expected: type,
    reason: Callable[[Exception], str],
    check: Callable[[Any, Any], None] | None = None,
) -> FuzzReport:
    report = FuzzReport(target)
    for case in cases:
        report.cases += 1
        try:
            value = call(case)
        except expected as exc:
            code = reason(exc)
            report.rejected[code] = report.rejected.get(code, 0) + 1
            continue
        except Exception as exc:  # a crash: anything but the decoder's own error
            report.crashes.append((repr(case)[:300], f"{type(exc).__name__}: {exc}"[:300]))
            continue
        try:
            if check is not None:
                check(case, value)
        except AssertionError as exc:
            report.crashes.append((repr(case)[:300], f"accepted invalid input: {exc}"))
            continue
        report.accepted += 1
    return report


def fuzz_payload_decoder(n: int, seed: int = 1) -> FuzzReport:
    """Run ``n`` payload cases through ``namazu.server.ingest.payload.decode_activity``."""
    from namazu.server.ingest.payload import REASONS, PayloadError, decode_activity

    now = int(time.time() * 1000)

    def check(case, batch) -> None:
        assert batch.animals, "empty batch accepted"
        total = 0
        for a in batch.animals:
            assert len(a.t_ms) == len(a.odba) == len(a.vedba) > 0, "length mismatch accepted"
            assert np.isfinite(a.odba).all() and np.isfinite(a.vedba).all(), "non-finite"
            assert (a.odba >= 0).all() and (a.vedba >= 0).all(), "negative activity"
            assert a.t_ms.min() >= now - MAX_AGE_MS and a.t_ms.max() <= now + MAX_FUTURE_MS
            assert a.species in ("cow", "sheep", "dog")
            total += len(a.t_ms)
        assert total <= 10_000

    def reason(exc: Exception) -> str:
        assert exc.reason in REASONS, exc.reason
        assert exc.detail and "\n" not in exc.detail
        assert len(exc.detail) < 400, "an untrusted value shown at length"
        return exc.reason

    return _run(
        "payload decoder",
        payload_cases(n, seed, now),
        lambda case: decode_activity(case[0], case[1], now, MAX_FUTURE_MS, MAX_AGE_MS),
        PayloadError,
        reason,
        check,
    )


def frame_cases(n: int, seed: int = 2) -> Iterator[bytes]:
    """Collar frames: valid ones, bit flips, truncations, forged headers, random bytes."""
    from namazu.firmware_bridge.frame import CollarFrame, encode_frame

    rng = random.Random(seed)
    nprng = np.random.default_rng(seed)
    for i in range(n):
        count = rng.randint(1, 64)
        frame = CollarFrame(
            collar_id=rng.randrange(2**32),
            species=rng.choice(["cow", "sheep", "dog"]),
            seq=rng.randrange(2**32),
            t0_ms=1_700_000_000_000 + rng.randrange(10**9),
            sample_rate_hz=rng.choice([10, 20, 25, 50]),
            scale_counts_per_g=rng.choice([256, 1024, 4096]),
            battery_mv=rng.randint(3000, 4200),
            samples=nprng.integers(-3000, 3000, size=(count, 3), dtype=np.int16),
        )
        data = bytearray(encode_frame(frame))
        kind = i % 6
        if kind == 1:
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif kind == 2:
            del data[rng.randrange(len(data)) :]
        elif kind == 3:
            data[rng.randrange(2, 28)] = rng.randrange(256)
        elif kind == 4:
            data = bytearray(rng.randbytes(rng.randint(0, 400)))
        elif kind == 5:
            data += rng.randbytes(rng.randint(1, 10))
        yield bytes(data)


def fuzz_frame_decoder(n: int, seed: int = 2) -> FuzzReport:
    """Run ``n`` frames through ``decode_frame``, and the same bytes as one stream
    through ``FrameReader`` (which must resynchronise and never crash)."""
    from namazu.firmware_bridge.frame import (
        FRAME_ERROR_REASONS,
        FrameError,
        FrameReader,
        decode_frame,
    )

    def reason(exc: Exception) -> str:
        assert exc.reason in FRAME_ERROR_REASONS, exc.reason
        return exc.reason

    cases = list(frame_cases(n, seed))
    report = _run("collar frame decoder", cases, decode_frame, FrameError, reason)
    reader = FrameReader()
    try:
        for data in cases:
            for item in reader.feed(data):
                assert isinstance(item, object)
    except Exception as exc:
        report.crashes.append(("FrameReader stream", f"{type(exc).__name__}: {exc}"[:300]))
    return report


def _text_mutations(text: str, n: int, seed: int) -> Iterator[str]:
    rng = random.Random(seed)
    lines = text.splitlines()
    for i in range(n):
        kind = i % 7
        mutated = list(lines)
        if kind == 0 and len(mutated) > 1:
            row = rng.randrange(1, len(mutated))
            cells = mutated[row].split(rng.choice([",", "|"]))
            cells[rng.randrange(len(cells))] = rng.choice(
                ["", "NaN", "abc", "-999", "1e999", "2017-13-45T99:99:99", '"', "∞", "0x1F"]
            )
            mutated[row] = ",".join(cells) if "," in mutated[row] else "|".join(cells)
        elif kind == 1:
            del mutated[rng.randrange(len(mutated)) :]
        elif kind == 2:
            mutated.insert(rng.randrange(len(mutated) + 1), rng.randbytes(40).decode("latin-1"))
        elif kind == 3:
            mutated[0] = mutated[0].replace(rng.choice(["time", "Time", "lat", "mag"]), "x")
        elif kind == 4:
            chars = list("\n".join(mutated))
            for _ in range(rng.randint(1, 20)):
                chars[rng.randrange(len(chars))] = rng.choice(',|\n"x9-.: ')
            yield "".join(chars)
            continue
        elif kind == 5:
            yield rng.randbytes(rng.randint(0, 500)).decode("latin-1")
            continue
        else:
            row = rng.randrange(len(mutated))
            mutated[row] = mutated[row] + rng.choice([",extra", ",,", "|x|y"])
        yield "\n".join(mutated)


def fuzz_catalog_reader(texts: dict[str, str], n: int, seed: int = 3) -> FuzzReport:
    """Mutated real catalogue files through ``namazu.analytics.catalog.parse_catalog``."""
    from namazu.analytics.catalog import CatalogFormatError, parse_catalog

    def check(_case, frame) -> None:
        assert isinstance(frame, pd.DataFrame)
        if len(frame):
            assert str(frame["time"].dt.tz) == "UTC"

    cases = [
        mutated
        for k, text in enumerate(texts.values())
        for mutated in _text_mutations(text, n // max(len(texts), 1), seed + k)
    ]
    return _run(
        "catalogue readers",
        cases,
        parse_catalog,
        CatalogFormatError,
        lambda exc: type(exc).__name__,
        check,
    )


def fuzz_movebank_reader(text: str, n: int, seed: int = 4) -> FuzzReport:
    """Mutated Movebank CSV through ``parse_movebank_events`` (read as strings)."""
    from namazu.analytics.movebank import MovebankFormatError, parse_movebank_events

    def parse(mutated: str):
        frame = pd.read_csv(io.StringIO(mutated), dtype=str, keep_default_na=False)
        return parse_movebank_events(frame)

    def guarded(mutated: str):
        try:
            return parse(mutated)
        except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            raise MovebankFormatError(f"csv: {exc}") from exc

    return _run(
        "movebank activity reader",
        list(_text_mutations(text, n, seed)),
        guarded,
        MovebankFormatError,
        lambda exc: type(exc).__name__,
    )


def fuzz_activity_reader(text: str, n: int, seed: int = 5) -> FuzzReport:
    """Mutated activity CSV (the 2017 farm file) through ``parse_activity_csv``, read
    half the time as UTC and half as Europe/Rome local time."""
    from namazu.analytics.tabular import TabularError, parse_activity_csv

    def check(_case, frame) -> None:
        assert str(frame.index.tz) == "UTC"
        assert frame.index.is_monotonic_increasing and frame.index.is_unique

    cases = list(_text_mutations(text, n, seed))
    zones = [None if i % 2 else "Europe/Rome" for i in range(len(cases))]
    return _run(
        "activity CSV reader",
        list(zip(cases, zones, strict=True)),
        lambda case: parse_activity_csv(case[0], timezone=case[1]),
        TabularError,
        lambda exc: type(exc).__name__,
        check,
    )


def fuzz_live_ingest(stack: Any, database: str, n: int, seed: int = 16) -> dict[str, Any]:
    """Publish ``n`` generated payloads to a live ``IngestService`` on ``stack``, with
    valid traffic of another farm interleaved (one message in ten).

    Returns counts: ``cases`` (published on activity topics), ``expected_rejects``
    (what the decoder rejects), ``dead_letters`` (received on the dead-letter topics),
    ``mismatched`` (dead letters whose payload or reason differ from the prediction),
    ``valid_expected`` / ``valid_stored`` (points of the clean farm), ``rejected``
    (the service's own count) and ``connected`` (still connected at the end).
    """
    import base64
    import tempfile
    import uuid
    from collections import Counter

    import paho.mqtt.client as paho

    from namazu.firmware_bridge.payload import activity_topic, encode_activity
    from namazu.server.core.config import load_config
    from namazu.server.ingest.payload import PayloadError, decode_activity_message, parse_json
    from namazu.server.ingest.service import (
        SEQ_CONFLICT,
        IngestService,
        SequenceBook,
        activity_digest,
    )
    from namazu.server.store.influx import InfluxClient

    now = int(time.time() * 1000)
    generated = n
    while True:  # generate until n cases have an activity topic the service subscribes to
        cases = [
            (topic, body)
            for topic, body in payload_cases(generated, seed, now)
            if topic.startswith("namazu/v1/")
            and topic.endswith("/activity")
            and topic.count("/") == 4
        ][:n]
        if len(cases) == n:
            break
        generated += n // 10 + 10
    expected: Counter[tuple[bytes, str]] = Counter()
    sequences = SequenceBook()  # a seq seen before with other values is a conflict
    for topic, body in cases:
        try:
            document = parse_json(body)
            message = decode_activity_message(topic, document, now, MAX_FUTURE_MS, MAX_AGE_MS)
        except PayloadError as exc:
            expected[(body, exc.reason)] += 1
            continue
        digest = activity_digest(document)
        identity = (message.farm, message.gateway, message.boot_id, message.seq)
        if sequences.check(*identity, digest) == "conflict":
            expected[(body, SEQ_CONFLICT)] += 1
            continue
        sequences.remember(*identity, digest)  # the first values of a number are kept
        if message.rejected:  # the invalid animals' dead letter names the first reason
            expected[(body, message.rejected[0].reason)] += 1
    tag = uuid.uuid4().hex[:8]
    config = load_config(
        environ={
            "NAMAZU_MQTT__PORT": str(stack.mqtt_port),
            "NAMAZU_INFLUX__URL": stack.influx_url,
            "NAMAZU_INFLUX__DATABASE": database,
            "NAMAZU_INGEST__CLIENT_ID": f"fuzz-{tag}",
            "NAMAZU_INGEST__SHARED_GROUP": f"fuzz-{tag}",
            "NAMAZU_INGEST__OPEN_ENROLMENT": "true",
            "NAMAZU_STATE__URL": f"sqlite:///{tempfile.mkdtemp(prefix='namazu-fuzz-')}/state.sqlite",
        }
    )
    influx = InfluxClient(stack.influx_url, database)
    ingest_log = logging.getLogger("namazu.server.ingest.service")
    level = ingest_log.level
    ingest_log.setLevel(logging.ERROR)  # thousands of expected rejections
    service = IngestService(config, influx).start()
    letters: list[bytes] = []
    watcher = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"dl-{tag}")
    subscribed = threading.Event()
    watcher.on_message = lambda _c, _u, m: letters.append(m.payload)
    watcher.on_subscribe = lambda *_a: subscribed.set()
    watcher.connect("127.0.0.1", stack.mqtt_port)
    watcher.loop_start()
    watcher.subscribe("namazu/v1/deadletter/#", qos=1)
    sender = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"fuzzer-{tag}")
    sender.max_queued_messages_set(0)
    sender.connect("127.0.0.1", stack.mqtt_port)
    sender.loop_start()
    good = 0
    try:
        if not subscribed.wait(10) or not service.wait_ready(10):
            raise RuntimeError("fuzz: broker subscriptions not confirmed")
        n_good = -(-len(cases) // 10)  # one clean message of 20 samples per ten cases
        t0 = now - (n_good * 20 + 60) * 60_000  # all in the past, one minute apart
        infos = []
        for i, (topic, body) in enumerate(cases):
            infos.append(sender.publish(topic, body, qos=1))
            if i % 10 == 0:
                animals = [
                    {
                        "animal": "good-cow",
                        "species": "cow",
                        "t_ms": t0 + 60_000 * (good + np.arange(20)),
                        "odba": np.full(20, 0.2),
                        "vedba": np.full(20, 0.1),
                    }
                ]
                infos.append(
                    sender.publish(
                        activity_topic("good-farm", "gw-g"),
                        encode_activity("good-farm", "gw-g", i, now, animals),
                        qos=1,
                    )
                )
                good += 20
        for info in infos:
            info.wait_for_publish(60)
        deadline = time.monotonic() + 120
        total = sum(expected.values())
        stored = 0
        while time.monotonic() < deadline:
            stored = influx.count("activity", "odba", "farm = 'good-farm'")
            if len(letters) >= total and stored >= good:
                break
            time.sleep(0.1)
        time.sleep(0.5)
        got = Counter()
        for raw in letters:
            letter = json.loads(raw)
            got[(base64.b64decode(letter["payload_b64"]), letter["reason"])] += 1
        return {
            "cases": len(cases),
            "expected_rejects": total,
            "dead_letters": len(letters),
            "mismatched": sum(((got - expected) + (expected - got)).values()),
            "missing_examples": [
                (reason, body[:160]) for (body, reason) in list((expected - got).keys())[:5]
            ],
            "unexpected_examples": [
                (reason, body[:160]) for (body, reason) in list((got - expected).keys())[:5]
            ],
            "valid_expected": good,
            "valid_stored": influx.count("activity", "odba", "farm = 'good-farm'"),
            "rejected": service.stats["rejected"],
            "connected": service.stats["connected"],
        }
    finally:
        sender.disconnect()
        sender.loop_stop()
        watcher.disconnect()
        watcher.loop_stop()
        service.stop(end_session=True)
        influx.close()
        ingest_log.setLevel(level)
