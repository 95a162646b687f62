"""The evaluation endpoint over the seeded farm: the split inside/outside farm events and
the statement come from the same assessment as ``namazu analyze``."""

from __future__ import annotations

import pytest
from numpy.testing import assert_allclose

from namazu.analytics.assessment import chance_statement
from tests.server.web.conftest import csrf_from
from tests.server.web.seed import FARM

PANEL_ON_BOTH_BACKENDS = True

RANGE = "start=2024-03-01T00:00:00Z&end=2024-03-11T00:00:00Z"


def record_event(panel, **event: str) -> None:
    """Record a farm event of FARM through the events page, as a reviewer."""
    from tests.server.web.conftest import login

    client = panel.app.test_client()
    assert login(client, "reviewer").status_code == 302
    page = client.get("/events").get_data(as_text=True)
    response = client.post("/events", data={"farm": FARM, **event, "csrf_token": csrf_from(page)})
    assert response.status_code == 302


@pytest.fixture(scope="module")
def housed_last_day(panel):
    """A housing_stable farm event over the last day (the surge and the M4.3 after it)."""
    record_event(
        panel, kind="housing_stable", start="2024-03-10T00:00:00Z", end="2024-03-11T00:00:00Z"
    )
    return panel


def test_split_inside_and_outside_add_up_to_the_whole(housed_last_day, client_for):
    body = (
        client_for("viewer")
        .get(f"/api/v1/evaluation?farm={FARM}&{RANGE}&resolution_min=15&split=housing_stable")
        .json
    )
    whole, split = body["result"], body["split"]
    inside, outside = split["inside"], split["outside"]
    assert split["periods"] == 1
    # the seeded M4.3 comes 12 h after the surge of the last day, inside the event
    assert (inside["targets"], inside["hits"]) == (1, 1)
    assert outside["targets"] == 0 and outside["alarms"] == 0
    assert inside["targets"] + outside["targets"] == whole["targets"]
    assert_allclose(inside["monitored_h"] + outside["monitored_h"], whole["monitored_h"])
    assert inside["n_shifts"] == 0 and outside["p_shift"] is None
    assert body["statement"] == chance_statement(whole)
    assert body["statement_declustered"] == chance_statement(body["declustered"])
    assert [h["lead_time_h"] for h in body["lead_vs_distance"]] == [
        h["lead_time_h"] for h in whole["hit_list"]
    ]
    thresholds = [row["threshold"] for row in body["molchan"]]
    assert thresholds == sorted(thresholds) and 140 in thresholds


def test_a_period_without_data_says_so(panel, client_for):
    body = (
        client_for("viewer")
        .get(f"/api/v1/evaluation?farm={FARM}&start=2020-01-01&end=2020-02-01")
        .json
    )
    assert body["result"] is None and body["molchan"] == []
    assert body["statement"] == "No activity data in this period: nothing to evaluate."


def test_an_event_without_an_end_lasts_to_the_end_of_the_period(panel, client_for):
    """ "On pasture since 10 March" (no end) splits the period like an event that ends
    with it."""
    record_event(panel, kind="housing_pasture", start="2024-03-10T00:00:00Z")
    url = f"/api/v1/evaluation?farm={FARM}&{RANGE}&resolution_min=15&split=housing_pasture"
    split = client_for("viewer").get(url).json["split"]
    assert split["periods"] == 1
    assert (split["inside"]["targets"], split["inside"]["hits"]) == (1, 1)
    assert_allclose(split["inside"]["monitored_h"], 24.0, atol=0.5)


def test_evaluation_shows_intervals_power_and_the_seismicity_reference(panel, client_for):
    from namazu.analytics.assessment import conditional_statement, power_statement

    body = client_for("viewer").get(f"/api/v1/evaluation?farm={FARM}&{RANGE}").json
    whole, reference = body["result"], body["reference"]
    assert whole["hit_rate_interval"][0] <= whole["hit_rate"] <= whole["hit_rate_interval"][1]
    assert body["power"] == power_statement(whole)
    assert reference["targets"] == whole["targets"] and reference["reactions"] == 0
    assert body["reference_statement"].startswith("Seismicity reference: ")
    assert body["conditional_statement"] == conditional_statement(
        body["conditional"], whole["params"]
    )
    assert [row["threshold"] for row in body["reference_molchan"]][:2] == [1.0, 2.0]
    page = client_for("viewer").get(f"/evaluation?run=1&farm={FARM}&{RANGE}").get_data(as_text=True)
    for marker in ('id="power"', "seismicity reference", 'id="conditional-statement"'):
        assert marker in page
