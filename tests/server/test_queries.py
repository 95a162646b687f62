"""InfluxQL builders: user input only in bound parameters; and they run on real InfluxDB."""

from __future__ import annotations

import pytest

from namazu.server.store import queries
from namazu.server.store.influx import point_line

HOSTILE = "x' OR 1=1; DROP DATABASE namazu; --\""


@pytest.mark.parametrize(
    "query",
    [
        queries.activity_raw(HOSTILE, HOSTILE, 0, 1000),
        queries.activity_minmax(HOSTILE, HOSTILE, 0, 1000, 60_000),
        queries.baseline_raw(HOSTILE, HOSTILE, 0, 1000),
        queries.baseline_buckets(HOSTILE, HOSTILE, 0, 1000, 60_000),
        queries.gateway_status(HOSTILE),
        queries.animals_last_seen(HOSTILE),
        queries.activity_for_export(HOSTILE, HOSTILE, 0, 1000),
        queries.activity_means(HOSTILE, 0, 1000, 60_000, HOSTILE),
    ],
)
def test_user_input_never_enters_the_statement(query):
    statement, params = query
    assert "DROP" not in statement and "1=1" not in statement
    assert HOSTILE in params.values()


def test_invalid_arguments_are_refused():
    with pytest.raises(queries.QueryError, match="after start"):
        queries.activity_raw("f", "a", 10, 10)
    with pytest.raises(queries.QueryError, match="field"):
        queries.activity_raw("f", "a", 0, 10, field='odba" FROM x')
    with pytest.raises(queries.QueryError, match="width"):
        queries.activity_minmax("f", "a", 0, 10, 0)


def test_queries_on_a_real_influxdb(influx):
    minute = 60_000
    lines = [
        point_line("activity", {"farm": "f", "animal": "a", "gateway": "g", "species": "cow"},
                   {"odba": float(i % 7), "vedba": 0.5}, i * minute)
        for i in range(120)
    ]  # fmt: skip
    lines.append(point_line("activity", {"farm": "f", "animal": HOSTILE, "species": "cow"},
                            {"odba": 1.0, "vedba": 1.0}, 0))  # fmt: skip
    influx.write_lines(lines)
    raw = influx.query_frame(*queries.activity_raw("f", "a", 0, 60 * minute))
    assert len(raw) == 60 and raw["value"].max() == 6.0
    buckets = influx.query_frame(*queries.activity_minmax("f", "a", 0, 120 * minute, 30 * minute))
    assert (
        len(buckets) == 4 and list(buckets["hi"]) == [6.0] * 4 and list(buckets["lo"]) == [0.0] * 4
    )
    hostile = influx.query_frame(*queries.activity_raw("f", HOSTILE, 0, minute))
    assert len(hostile) == 1
    last = influx.query_frame(*queries.animals_last_seen("f"))
    assert set(last["animal"]) == {"a", HOSTILE}
    means = influx.query_frame(*queries.activity_means("f", 0, 120 * minute, 60 * minute, "cow"))
    assert len(means[means["animal"] == "a"]) == 2
