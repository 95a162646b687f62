"""The researcher's timeline: stacked series, unknown series, target earthquakes, own
versus collective alarms and the farm's time zone, on a real InfluxDB."""

from __future__ import annotations

import json
import re

import pandas as pd

from namazu.server.store.state import Alarm, session_scope
from tests.server.web.seed import FARM, SURGE_START

PANEL_ON_BOTH_BACKENDS = True

RANGE = "start=2024-03-01T00:00:00Z&end=2024-03-11T00:00:00Z"


def test_unknown_series_is_a_message_not_an_empty_chart(panel, client_for):
    client = client_for("viewer")
    missing = client.get(f"/api/v1/timeline?farm={FARM}&series=cow-99&{RANGE}")
    assert missing.status_code == 404
    assert missing.json["error"].startswith("series 'cow-99': no such animal on farm demo-farm")
    assert "cow-1, cow-2" in missing.json["error"]
    dogs = client.get(f"/api/v1/timeline?farm={FARM}&series=species:dog&{RANGE}")
    assert dogs.status_code == 404 and "has no dog; species: cow" in dogs.json["error"]
    # a known animal over a range without data is an empty series, not an error
    early = client.get(f"/api/v1/timeline?farm={FARM}&series=cow-1&start=2023-01-01&end=2023-01-02")
    assert early.status_code == 200 and early.json["activity"]["t"] == []


def test_page_stacks_the_herd_and_each_species_by_default(panel, client_for):
    client = client_for("viewer")
    html = client.get(f"/timeline?farm={FARM}&{RANGE}").get_data(as_text=True)
    listed = re.search(r'data-series-list="([^"]+)"', html).group(1)
    assert json.loads(listed.replace("&#34;", '"')) == ["herd", "species:cow"]
    assert 'data-timezone="UTC"' in html and 'data-url-state="1"' in html
    chosen = client.get(f"/timeline?farm={FARM}&series=herd&series=cow-2&series=cow-2&{RANGE}")
    listed = re.search(r'data-series-list="([^"]+)"', chosen.get_data(as_text=True)).group(1)
    assert json.loads(listed.replace("&#34;", '"')) == ["herd", "cow-2"]
    many = "&".join(f"series=cow-{i}" for i in range(13))
    too_many = client.get(f"/timeline?farm={FARM}&{many}")
    assert too_many.status_code == 400 and "at most 12" in too_many.get_data(as_text=True)


def test_targets_are_marked_and_own_alarms_are_set_apart(panel, client_for):
    engine = panel.app.extensions["namazu"].sessions
    with session_scope(engine) as db:
        herd = Alarm(
            farm=FARM, series="herd", kind="herd", start=SURGE_START.to_pydatetime(),
            end=(SURGE_START + pd.Timedelta(minutes=80)).to_pydatetime(),
            last_anomalous=(SURGE_START + pd.Timedelta(minutes=80)).to_pydatetime(),
            opened_at=(SURGE_START + pd.Timedelta(minutes=45)).to_pydatetime(),
            state="closed", peak_ratio=2.5, rule_version="v1", params={},
            animals_involved=["cow-1"],
        )  # fmt: skip
        db.add(herd)
        db.flush()
        herd_id = herd.id
    client = client_for("viewer")
    body = client.get(f"/api/v1/timeline?farm={FARM}&series=cow-1&{RANGE}").json
    by_id = {a["id"]: a for a in body["alarms"]}
    assert by_id[panel.farm.alarm_id]["own"] is True
    assert by_id[herd_id]["own"] is False and by_id[herd_id]["title"] == "herd"
    assert by_id[herd_id]["declared_at"] == "2024-03-10T10:45:00Z"
    quakes = {q["event_id"]: q for q in body["quakes"]}
    assert quakes["q-near"]["is_target"] is True  # M4.3 at ~20 km: inside its radius
    assert quakes["q-local"]["is_target"] is False  # M2.8: below the target magnitude
    assert body["label"] == "cow-1" and body["unit"] == "ODBA [g]" and body["timezone"] == "UTC"
    herd_body = client.get(f"/api/v1/timeline?farm={FARM}&series=herd&{RANGE}").json
    assert [a["own"] for a in herd_body["alarms"] if a["id"] == herd_id] == [True]
    assert herd_body["unit"] == "mean ODBA per animal [g]"  # as the live tick writes it
    assert herd_body["rule_grid_s"] == 900.0
