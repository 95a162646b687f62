""" "Did they react before this quake?" on a real InfluxDB: the verdict of each seeded
earthquake comes from the evaluation functions, and every earthquake links to the view."""

from __future__ import annotations

import pandas as pd
import pytest

from namazu.server.store.state import Alarm, session_scope
from tests.server.web.seed import FARM, SURGE_START

PANEL_ON_BOTH_BACKENDS = True


def _herd_alarm(panel) -> int:
    """The seeded surge as a herd alarm (the verdict uses the herd series' alarms)."""
    end = SURGE_START + pd.Timedelta(minutes=89)
    with session_scope(panel.app.extensions["namazu"].sessions) as db:
        alarm = Alarm(
            farm=FARM, series="herd", kind="herd", start=SURGE_START.to_pydatetime(),
            end=end.to_pydatetime(), last_anomalous=end.to_pydatetime(),
            opened_at=(SURGE_START + pd.Timedelta(minutes=45)).to_pydatetime(),
            state="closed", peak_ratio=2.5, rule_version="v1", params={},
        )  # fmt: skip
        db.add(alarm)
        db.flush()
        return alarm.id


def test_verdicts_of_the_seeded_earthquakes(panel, client_for):
    client = client_for("viewer")
    before = client.get(f"/api/v1/quake?farm={FARM}&event=q-near").json
    # no herd alarm stored yet: the M4.3 12 h after the surge is a monitored miss
    assert before["verdict"]["status"] == "miss"
    alarm_id = _herd_alarm(panel)
    near = client.get(f"/api/v1/quake?farm={FARM}&event=q-near").json
    assert near["quake"]["is_target"] is True
    assert near["verdict"]["status"] == "hit"
    assert near["verdict"]["alarm_id"] == alarm_id
    # lead time from the declaration, 45 min after the start
    assert near["verdict"]["lead_time_h"] == pytest.approx(11.25)
    assert near["lead_window"] == {
        "start": "2024-03-10T02:00:00Z", "end": "2024-03-10T22:00:00Z", "hours": 20.0,
    }  # fmt: skip
    assert near["start"] == "2024-03-08T22:00:00Z" and near["end"] == "2024-03-12T22:00:00Z"
    assert near["series"] == ["herd", "species:cow", "cow-1", "cow-2"]
    local = client.get(f"/api/v1/quake?farm={FARM}&event=q-local").json
    assert local["verdict"]["status"] == "not a target"
    far = client.get(f"/api/v1/quake?farm={FARM}&event=q-far").json
    assert far["verdict"]["status"] == "not a target" and far["quake"]["distance_km"] > 500
    missing = client.get(f"/api/v1/quake?farm={FARM}&event=nope")
    assert missing.status_code == 404 and "'nope' is not in the catalogue" in missing.json["error"]


def test_every_earthquake_links_to_the_view(panel, client_for):
    client = client_for("viewer")
    page = client.get(f"/quake?farm={FARM}&event=q-near").get_data(as_text=True)
    assert 'id="quake-verdict"' in page and "lead window 20.0 h" in page
    assert 'data-band-start="2024-03-10T02:00:00Z"' in page
    catalog = client.get(f"/catalog?farm={FARM}&start=2024-01-01&end=2024-04-01")
    html = catalog.get_data(as_text=True)
    assert f'href="/quake?farm={FARM}&amp;event=q-near">did they react?</a>' in html
    assert 'data-quake-url="/quake"' in html
    timeline = client.get(f"/timeline?farm={FARM}").get_data(as_text=True)
    assert 'data-quake-url="/quake"' in timeline
