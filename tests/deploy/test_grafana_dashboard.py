"""deploy/grafana: every query of the dashboard (panels, annotations, variables), with
Grafana's macros substituted, runs on a real InfluxDB holding a few points of every
measurement of the documented schema, and returns data (so a misspelt field or tag,
which InfluxQL answers with an empty result, fails too)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import yaml

from namazu.server.core.config import InfluxConfig
from tests.deploy.conftest import cq_select, retention_statements

pytestmark = pytest.mark.services

GRAFANA = Path(__file__).resolve().parents[2] / "deploy" / "grafana"
DASHBOARD = json.loads((GRAFANA / "dashboards" / "namazu.json").read_text())
DATASOURCES = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "namazu.yaml").read_text())
PROVIDERS = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "namazu.yaml").read_text())

MINUTE_MS = 60_000
ANIMALS = [("farmA", "gw1", "cow-1", "cow"), ("farmA", "gw1", "sheep-2", "sheep")]
ANIMALS += [("farmB", "gw1", "dog-3", "dog")]


def _queries() -> list[tuple[str, str]]:
    """(where, InfluxQL) for every query of the dashboard."""
    found = []
    for panel in DASHBOARD["panels"]:
        for target in panel.get("targets", []):
            found.append((f"panel {panel['title']!r} {target['refId']}", target["query"]))
    for annotation in DASHBOARD["annotations"]["list"]:
        found.append((f"annotation {annotation['name']!r}", annotation["query"]))
    for variable in DASHBOARD["templating"]["list"]:
        if variable["type"] == "query":
            found.append((f"variable ${variable['name']}", variable["query"]))
    return found


def _substitute(query: str, start_ms: int, end_ms: int) -> str:
    """Grafana's macros and variables as Grafana renders them for InfluxQL."""
    values = {
        "$timeFilter": f"time >= {start_ms}ms and time <= {end_ms}ms",
        "$__interval": "5m",
        "$farm": "(farmA|farmB)",
        "$animal": r"(cow\-1|sheep\-2|dog\-3)",
        "$min_magnitude": "4",
    }
    for name in sorted(values, key=len, reverse=True):
        query = query.replace(name, values[name])
    left = re.findall(r"\$[A-Za-z_]\w*", query)
    assert not left, f"unsubstituted Grafana variables {left} in {query}"
    return query


@pytest.fixture
def schema_db(influx):
    """The fixture database with the deployed retention and a few points of every
    measurement of docs/ARCHITECTURE.md, during the last two hours."""
    for statement in retention_statements(influx.database)[1:]:  # [0] creates "namazu"
        influx.query(statement)
    now_ms = int(time.time() * 1000) // MINUTE_MS * MINUTE_MS
    start_ms = now_ms - 120 * MINUTE_MS
    lines = []
    for k in range(0, 120, 2):
        t = start_ms + k * MINUTE_MS
        for farm, gateway, animal, species in ANIMALS:
            odba = 0.1 + 0.01 * k
            lines.append(
                f"activity,animal={animal},farm={farm},gateway={gateway},species={species} "
                f"odba={odba},vedba={0.8 * odba} {t}"
            )
            lines.append(
                f"baseline,farm={farm},series={animal} "
                f"baseline=0.1,threshold=0.24,ratio={odba / 0.1},value={odba} {t}"
            )
        lines.append(
            f"baseline,farm=farmA,series=herd baseline=0.1,threshold=0.24,ratio=1.5,value=0.15 {t}"
        )
        lines.append(
            f"gateway_status,farm=farmA,gateway=gw1 online=true,clock_offset_s=0.02,seq={k}i {t}"
        )
    lines.append(
        f'alarm,farm=farmA,kind=animal,series=cow-1 state="open",peak_ratio=3.1,'
        f"animals_reporting=2i {start_ms + 60 * MINUTE_MS}"
    )
    lines.append(
        f"earthquake,source=INGV magnitude=4.6,latitude=42.8,longitude=13.1,depth_km=9.0,"
        f'event_id="ingv-1" {start_ms + 90 * MINUTE_MS}'
    )
    influx.write_lines(lines)
    influx.query(
        cq_select(influx.database).replace(
            "GROUP BY", f"WHERE time >= {start_ms}ms AND time <= {now_ms}ms GROUP BY", 1
        )
    )
    return influx, start_ms - MINUTE_MS, now_ms + MINUTE_MS


def test_dashboard_has_the_required_views():
    titles = " | ".join(panel["title"] for panel in DASHBOARD["panels"]).lower()
    for needed in ("per animal", "herd", "baseline", "alarm", "earthquake"):
        assert needed in titles, f"no panel about {needed!r}"
    annotations = {a["name"] for a in DASHBOARD["annotations"]["list"]}
    assert {"Earthquakes", "Alarms"} <= annotations


def test_every_query_takes_the_datasource_from_a_variable():
    (source,) = [s for s in DATASOURCES["datasources"] if s["type"] == "influxdb"]
    assert source["jsonData"]["dbName"] == InfluxConfig().database
    (variable,) = [v for v in DASHBOARD["templating"]["list"] if v["type"] == "datasource"]
    assert variable["query"] == "influxdb"
    assert variable["current"]["value"] == source["uid"]  # the provisioned one by default
    holders = [*DASHBOARD["panels"], *DASHBOARD["annotations"]["list"]]
    holders += [v for v in DASHBOARD["templating"]["list"] if v["type"] == "query"]
    holders += [t for p in DASHBOARD["panels"] for t in p.get("targets", [])]
    reference = {"type": "influxdb", "uid": "${" + variable["name"] + "}"}
    for holder in holders:
        assert holder["datasource"] == reference
    for panel in DASHBOARD["panels"]:
        for target in panel["targets"]:
            assert target["rawQuery"] is True
    (provider,) = PROVIDERS["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]


@pytest.mark.parametrize("where,query", _queries(), ids=[w for w, _ in _queries()])
def test_query_runs_and_returns_data(schema_db, where, query):
    influx, start_ms, end_ms = schema_db
    series = influx.query(_substitute(query, start_ms, end_ms))
    assert series, f"{where}: no series returned"
    columns = series[0]["columns"][1:]
    for index, column in enumerate(columns, start=1):
        filled = [row[index] for s in series for row in s["values"] if row[index] is not None]
        assert filled, f"{where}: column {column!r} is empty (misspelt field or tag?)"


def test_variables_list_the_farms_and_animals(schema_db):
    influx, start_ms, end_ms = schema_db
    variables = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
    farms = influx.query(_substitute(variables["farm"]["query"], start_ms, end_ms))
    assert sorted(row[1] for row in farms[0]["values"]) == ["farmA", "farmB"]
    only_a = variables["animal"]["query"].replace("$farm", "(farmA)")
    animals = influx.query(_substitute(only_a, start_ms, end_ms))
    assert sorted(row[1] for row in animals[0]["values"]) == ["cow-1", "sheep-2"]
