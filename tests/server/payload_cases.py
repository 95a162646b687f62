"""Activity payloads for tests: valid documents and a corpus of malformed ones.

The malformed corpus is used twice: by the pure decoder tests and by the system test
that publishes it raw to the broker and expects every message on the dead-letter
topic with the same reason code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

DAY_MS = 86_400_000


def valid_document(
    farm: str, gateway: str, seq: int, t0_ms: int, animals: int = 2, samples: int = 3
) -> dict[str, Any]:
    """A valid activity document: ``animals`` cows, ``samples`` one-minute samples each."""
    return {
        "schema": "namazu.activity/1",
        "farm": farm,
        "gateway": gateway,
        "seq": seq,
        "sent_ms": t0_ms + samples * 60_000,
        "animals": [
            {
                "animal": f"{gateway}-cow-{k:03d}",
                "species": "cow",
                "t_ms": [t0_ms + i * 60_000 for i in range(samples)],
                "odba": [0.1 + 0.01 * i + k for i in range(samples)],
                "vedba": [0.08 + 0.01 * i + k for i in range(samples)],
                "battery_v": 3.7,
            }
            for k in range(animals)
        ],
    }


@dataclass(frozen=True)
class MalformedCase:
    """A payload that must be rejected with ``reason``."""

    reason: str
    description: str
    payload: bytes


def _dumps(doc: Any) -> bytes:
    return orjson.dumps(doc)


def _with(doc: dict, path: tuple, value: Any) -> dict:
    """A copy of ``doc`` with the item at ``path`` replaced (``...`` deletes it)."""
    doc = orjson.loads(orjson.dumps(doc))
    node = doc
    for key in path[:-1]:
        node = node[key]
    if value is ...:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return doc


def _templates(farm: str, gateway: str, now_ms: int) -> list[tuple[str, str, Callable]]:
    def base(seq: int) -> dict:
        return valid_document(farm, gateway, seq, now_ms - 10 * 60_000)

    def raw(seq: int, text: str) -> bytes:
        return text.replace("SEQ", str(seq)).encode()

    def good_json(seq: int) -> str:
        return _dumps(base(seq)).decode()

    def prepend_sample(seq: int, odba: str = "0.1", vedba: str = "0.1") -> bytes:
        """A first sample with literal tokens for odba and vedba (NaN is not JSON)."""
        text = good_json(seq).replace('"t_ms":[', f'"t_ms":[{now_ms - 900_000},', 1)
        text = text.replace('"odba":[', f'"odba":[{odba},', 1)
        return text.replace('"vedba":[', f'"vedba":[{vedba},', 1).encode()

    def battery(seq: int, token: str) -> bytes:
        return good_json(seq).replace('"battery_v":3.7', f'"battery_v":{token}', 1).encode()

    def samples(prefix: str, species: str, animals: int, n: int, step_ms: int) -> list[dict]:
        times = list(range(now_ms - n * step_ms, now_ms, step_ms))
        return [
            {
                "animal": f"{prefix}{k}",
                "species": species,
                "t_ms": times,
                "odba": [0.1] * n,
                "vedba": [0.1] * n,
            }
            for k in range(animals)
        ]

    return [
        ("not_json", "truncated document", lambda s: _dumps(base(s))[:-7]),
        ("not_json", "plain text", lambda s: raw(s, "hello from gateway SEQ")),
        ("not_json", "invalid UTF-8", lambda s: b"\xff\xfe" + str(s).encode()),
        ("not_json", "trailing garbage", lambda s: (good_json(s) + "}").encode()),
        ("not_json", "single quotes", lambda s: raw(s, "{'schema': 'namazu.activity/1', SEQ}")),
        (
            "schema_version",
            "version 2",
            lambda s: _dumps(_with(base(s), ("schema",), "namazu.activity/2")),
        ),
        (
            "schema_version",
            "version 0",
            lambda s: _dumps(_with(base(s), ("schema",), "namazu.activity/0")),
        ),
        (
            "schema_version",
            "other type",
            lambda s: _dumps(_with(base(s), ("schema",), "namazu.status/1")),
        ),
        ("schema", "seq as string", lambda s: _dumps(_with(base(s), ("seq",), str(s)))),
        ("schema", "negative seq", lambda s: _dumps(_with(base(s), ("seq",), -s - 1))),
        (
            "schema",
            "t_ms strings",
            lambda s: _dumps(_with(base(s), ("animals", 0, "t_ms"), ["1", "2", "3"])),
        ),
        (
            "schema",
            "odba strings",
            lambda s: _dumps(_with(base(s), ("animals", 0, "odba"), ["a", "b", "c"])),
        ),
        (
            "schema",
            "animals is an object",
            lambda s: _dumps(_with(base(s), ("animals",), {"n": s})),
        ),
        ("schema", "no animals", lambda s: _dumps(_with(base(s), ("animals",), []))),
        ("schema", "missing farm", lambda s: _dumps(_with(base(s), ("farm",), ...))),
        ("schema", "unknown key", lambda s: _dumps(_with(base(s), ("extra",), s))),
        (
            "schema",
            "boolean odba",
            lambda s: _dumps(_with(base(s), ("animals", 1, "odba"), [True, False, True])),
        ),
        (
            "schema",
            "negative vedba",
            lambda s: _dumps(_with(base(s), ("animals", 0, "vedba"), [0.1, -0.2, 0.3])),
        ),
        (
            "schema",
            "bad animal id",
            lambda s: _dumps(_with(base(s), ("animals", 0, "animal"), f"cow {s}!")),
        ),
        ("schema", "top-level array", lambda s: _dumps([base(s)])),
        (
            "schema",
            "battery 50 V",
            lambda s: _dumps(_with(base(s), ("animals", 0, "battery_v"), 50.0)),
        ),
        (
            "schema",
            "fractional t_ms",
            lambda s: _dumps(_with(base(s), ("animals", 0, "t_ms", 1), now_ms - 0.5)),
        ),
        ("non_finite", "NaN odba", lambda s: prepend_sample(s, odba="NaN")),
        ("non_finite", "Infinity vedba", lambda s: prepend_sample(s, vedba="Infinity")),
        ("non_finite", "-Infinity battery", lambda s: battery(s, "-Infinity")),
        ("non_finite", "overflowing number", lambda s: battery(s, "1e400")),
        (
            "too_large",
            "10001 samples in one array",
            lambda s: _dumps(_with(base(s), ("animals",), samples("c", "cow", 1, 10_001, 10))),
        ),
        (
            "too_large",
            "1001 animals",
            lambda s: _dumps(_with(base(s), ("animals",), samples("a", "dog", 1001, 1, 60_000))),
        ),
        (
            "too_large",
            "12000 samples over two animals",
            lambda s: _dumps(_with(base(s), ("animals",), samples("s", "sheep", 2, 6000, 100))),
        ),
        (
            "time_out_of_range",
            "sample in 1970",
            lambda s: _dumps(_with(base(s), ("animals", 0, "t_ms", 0), 1000 * s)),
        ),
        (
            "time_out_of_range",
            "sample next year",
            lambda s: _dumps(_with(base(s), ("animals", 1, "t_ms", 2), now_ms + 366 * DAY_MS + s)),
        ),
        (
            "time_out_of_range",
            "sample an hour ahead",
            lambda s: _dumps(_with(base(s), ("animals", 0, "t_ms", 2), now_ms + 3_600_000 + s)),
        ),
        (
            "time_out_of_range",
            "negative sample time",
            lambda s: _dumps(_with(base(s), ("animals", 0, "t_ms", 0), -s - 1)),
        ),
        (
            "time_out_of_range",
            "sample in year 3001",
            lambda s: _dumps(_with(base(s), ("animals", 0, "t_ms", 1), 32_535_216_000_000 + s)),
        ),
        (
            "unknown_species",
            "horse",
            lambda s: _dumps(_with(base(s), ("animals", 0, "species"), "horse")),
        ),
        (
            "unknown_species",
            "capitalised",
            lambda s: _dumps(_with(base(s), ("animals", 1, "species"), "Cow")),
        ),
        (
            "unknown_species",
            "number",
            lambda s: _dumps(_with(base(s), ("animals", 0, "species"), s)),
        ),
        ("topic_mismatch", "other farm", lambda s: _dumps(_with(base(s), ("farm",), "other-farm"))),
        (
            "topic_mismatch",
            "other gateway",
            lambda s: _dumps(_with(base(s), ("gateway",), f"gw-x{s}")),
        ),
        (
            "length_mismatch",
            "odba short",
            lambda s: _dumps(_with(base(s), ("animals", 0, "odba"), [0.1, 0.2])),
        ),
        (
            "length_mismatch",
            "vedba long",
            lambda s: _dumps(_with(base(s), ("animals", 1, "vedba"), [0.1, 0.2, 0.3, 0.4])),
        ),
    ]


def malformed_corpus(
    farm: str, gateway: str, now_ms: int, count: int = 200, first_seq: int = 1_000_000
) -> list[MalformedCase]:
    """``count`` distinct malformed payloads for topic ``namazu/v1/{farm}/{gateway}/activity``.

    Cycles through every kind of defect (not JSON, wrong types, NaN/inf, oversized
    arrays, times in 1970 or next year, unknown schema version or species, topic and
    length mismatches); each case carries the reason code it must be rejected with.
    Sample times are placed around ``now_ms`` (UTC epoch ms) so that only the intended
    defect applies with the default time window (5 min ahead, 400 days back).
    """
    templates = _templates(farm, gateway, now_ms)
    cases = []
    for i in range(count):
        reason, description, build = templates[i % len(templates)]
        cases.append(MalformedCase(reason, description, build(first_seq + i)))
    return cases
