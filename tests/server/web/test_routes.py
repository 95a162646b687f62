"""Every page and API route for every role, on a real InfluxDB with a seeded farm."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from tests.server.web.conftest import csrf_from
from tests.server.web.seed import FARM, SURGE_START

PANEL_ON_BOTH_BACKENDS = True

RANGE = "start=2024-03-01T00:00:00Z&end=2024-03-11T00:00:00Z"
PAGES = [
    "/",
    f"/timeline?farm={FARM}&series=cow-1&{RANGE}",
    "/alarms",
    "/events",
    f"/evaluation?run=1&farm={FARM}&{RANGE}",
    f"/catalog?farm={FARM}&start=2024-01-01&end=2024-04-01",
    "/export",
    "/metrics",
]
API = [
    "/api/v1/farms",
    "/api/v1/overview",
    f"/api/v1/gateways?farm={FARM}",
    f"/api/v1/animals?farm={FARM}",
    f"/api/v1/timeline?farm={FARM}&series=herd&{RANGE}",
    "/api/v1/alarms",
    f"/api/v1/events?farm={FARM}",
    f"/api/v1/catalog?farm={FARM}&start=2024-01-01&end=2024-04-01",
    f"/api/v1/export/timeline.csv?farm={FARM}&series=cow-1&{RANGE}",
    f"/api/v1/export/movebank.csv?farm={FARM}&animal=cow-1&{RANGE}",
]


def alarm_urls(panel) -> list[str]:
    a = panel.farm.alarm_id
    return [f"/alarms/{a}", f"/api/v1/alarms/{a}", f"/api/v1/alarms/{a}/reviews"]


def test_anonymous_pages_redirect_to_login_and_api_answers_401(panel):
    client = panel.app.test_client()
    for url in PAGES + alarm_urls(panel)[:1]:
        response = client.get(url)
        assert response.status_code == 302, url
        assert response.headers["Location"].startswith("/login?next=")
    for url in API + alarm_urls(panel)[1:]:
        response = client.get(url)
        assert response.status_code == 401, url
        assert response.json == {"error": "log-in required"}
    assert client.get("/login").status_code == 200
    assert client.get("/api/v1/openapi.json").status_code == 200


@pytest.mark.parametrize("role", ["viewer", "reviewer", "admin"])
def test_every_read_route_for_every_role(panel, client_for, role):
    client = client_for(role)
    for url in PAGES + API + alarm_urls(panel):
        response = client.get(url)
        assert response.status_code == 200, (url, response.get_data(as_text=True)[-900:])
        response.close()  # as a browser does once it has the body (frees a streamed export)
    users = client.get("/admin/users")
    assert users.status_code == (200 if role == "admin" else 403)


@pytest.mark.parametrize("role", ["viewer", "reviewer", "admin"])
def test_bearer_token_per_role(panel, role):
    client = panel.app.test_client()
    headers = {"Authorization": f"Bearer {panel.tokens[role]}"}
    assert client.get("/api/v1/alarms", headers=headers).status_code == 200
    post = client.post(
        f"/api/v1/alarms/{panel.farm.alarm_id}/reviews",
        json={"verdict": "unsure", "comment": f"by {role}"},
        headers=headers,
    )
    assert post.status_code == (403 if role == "viewer" else 201)
    if role != "viewer":
        assert post.json["user"] == role
    event = client.post(
        "/api/v1/events",
        json={"farm": FARM, "kind": "storm", "start": "2024-03-05T00:00:00Z",
              "end": "2024-03-05T06:00:00Z", "comment": role},
        headers=headers,
    )  # fmt: skip
    assert event.status_code == (403 if role == "viewer" else 201)


def test_bad_or_revoked_token_is_401(panel):
    client = panel.app.test_client()
    for token in ("nzt_not-a-token", "garbage"):
        response = client.get("/api/v1/farms", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401


def test_timeline_carries_the_alarm_span_gaps_and_quakes(panel, client_for):
    client = client_for("viewer")
    result = client.get(f"/api/v1/timeline?farm={FARM}&series=cow-1&{RANGE}&max_points=100000")
    assert result.status_code == 400  # max_points over its limit
    result = client.get(f"/api/v1/timeline?farm={FARM}&series=cow-1&{RANGE}&max_points=1000")
    body = result.json
    assert body["downsampled"] is True
    assert len(body["activity"]["t"]) <= 1000 + 10  # + gap markers
    [alarm] = body["alarms"]
    assert alarm["id"] == panel.farm.alarm_id
    assert pd.Timestamp(alarm["start"]) == panel.farm.episode.start
    # the surge peak survives min/max downsampling exactly
    raw_max = float(panel.farm.cow1.max())
    assert max(v for v in body["activity"]["v"] if v is not None) == pytest.approx(raw_max)
    # the 3-hour gap on day 5 is drawn as a gap (a null inside the day)
    nulls = [
        t for t, v in zip(body["activity"]["t"], body["activity"]["v"], strict=True) if v is None
    ]
    day5 = pd.Timestamp("2024-03-06T10:00:00Z").value // 10**6
    assert any(abs(t - day5 - 90 * 60_000) < 3 * 3600_000 for t in nulls)
    assert {q["event_id"] for q in body["quakes"]} >= {"q-near", "q-local"}


def test_timeline_short_range_is_raw_with_baseline(panel, client_for):
    client = client_for("viewer")
    start = SURGE_START - pd.Timedelta(hours=2)
    end = SURGE_START + pd.Timedelta(hours=4)
    args = {"farm": FARM, "series": "cow-1", "start": start.isoformat(), "end": end.isoformat()}
    body = client.get("/api/v1/timeline", query_string=args).json
    assert body["downsampled"] is False
    assert len(body["activity"]["t"]) == 360
    threshold = [v for v in body["threshold"]["v"] if v is not None]
    baseline = [v for v in body["baseline"]["v"] if v is not None]
    assert len(threshold) == len(baseline) == 360
    assert threshold[0] == pytest.approx(baseline[0] * 2.4)


def test_invalid_inputs_are_400_with_a_message(panel, client_for):
    client = client_for("viewer")
    for query, word in [
        ("series=../../etc/passwd", "series"),
        ("series=species:cat", "species"),
        ("series=herd&start=yesterday", "start"),
        ("series=herd&start=2024-03-02&end=2024-03-01", "end"),
        ("series=herd&start=2000-01-01&end=2024-01-01", "days"),
        ("series=species:dog&end=7513511601946500", "end"),
        ("series=herd&start=-5&end=1000", "start"),
        ("series=herd&end=2200-01-02", "end"),
    ]:
        response = client.get(f"/api/v1/timeline?farm={FARM}&{query}")
        assert response.status_code == 400, query
        assert word in response.json["error"]
    assert client.get("/api/v1/timeline?farm=nowhere&series=herd").status_code == 404
    assert client.get("/api/v1/alarms/999999").status_code == 404
    assert client.get("/alarms/999999").status_code == 404
    for beyond in (2**31, 2**63 - 1, 2**70):  # past PostgreSQL's 32-bit keys, any 64-bit key
        assert client.get(f"/api/v1/alarms/{beyond}").status_code == 404
        assert client.get(f"/alarms/{beyond}").status_code == 404
    admin = {"Authorization": f"Bearer {panel.tokens['admin']}"}
    for beyond in (2**31, 2**70):
        gone = panel.app.test_client().delete(f"/api/v1/reviews/{beyond}", headers=admin)
        assert gone.status_code == 404, gone.json


def test_alarm_detail_lists_lead_quakes_params_and_log_hash(panel, client_for):
    client = client_for("viewer")
    detail = client.get(f"/api/v1/alarms/{panel.farm.alarm_id}").json
    assert [q["event_id"] for q in detail["lead_quakes"]] == ["q-near"]
    assert detail["reaction"]["is_reaction"] is False
    assert detail["params"]["increase_pct"] == 140.0
    assert detail["animals_involved"] == ["cow-1"]
    page = client.get(f"/alarms/{panel.farm.alarm_id}").get_data(as_text=True)
    assert "ab" * 32 in page and "q-near" in page and "namazu-rule/1" in page


def test_review_form_keeps_who_and_when(panel, client_for):
    client = client_for("reviewer")
    page = client.get(f"/alarms/{panel.farm.alarm_id}").get_data(as_text=True)
    response = client.post(
        f"/alarms/{panel.farm.alarm_id}/reviews",
        data={"verdict": "false", "comment": "storm that night", "csrf_token": csrf_from(page)},
    )
    assert response.status_code == 302
    reviews = client.get(f"/api/v1/alarms/{panel.farm.alarm_id}/reviews").json
    mine = [r for r in reviews if r["comment"] == "storm that night"]
    assert mine and mine[0]["user"] == "reviewer" and mine[0]["verdict"] == "false"
    assert pd.Timestamp(mine[0]["created_at"]).tzinfo is not None
    bad = client.post(
        f"/api/v1/alarms/{panel.farm.alarm_id}/reviews",
        json={"verdict": "maybe"},
        headers={"X-CSRF-Token": csrf_from(page)},
    )
    assert bad.status_code == 400 and "verdict" in bad.json["error"]


def test_farm_events_appear_on_the_timeline(panel, client_for):
    client = client_for("reviewer")
    page = client.get("/events").get_data(as_text=True)
    response = client.post(
        "/events",
        data={"farm": FARM, "kind": "housing_stable", "start": "2024-03-02T08:00:00Z",
              "end": "2024-03-03T08:00:00Z", "comment": "rain", "csrf_token": csrf_from(page)},
    )  # fmt: skip
    assert response.status_code == 302
    body = client.get(f"/api/v1/timeline?farm={FARM}&series=herd&{RANGE}").json
    assert any(e["kind"] == "housing_stable" and e["user"] == "reviewer" for e in body["events"])
    viewer = client_for("viewer")
    page = viewer.get("/events").get_data(as_text=True)
    denied = viewer.post(
        "/events",
        data={"farm": FARM, "kind": "storm", "start": "2024-03-02", "csrf_token": csrf_from(page)},
    )
    assert denied.status_code == 403


def test_evaluation_gives_scores_and_a_plain_statement(panel, client_for):
    client = client_for("viewer")
    body = client.get(
        f"/api/v1/evaluation?farm={FARM}&{RANGE}&resolution_min=15&split=housing_stable"
    ).json
    result = body["result"]
    assert result["targets"] >= 1
    assert 0 < result["alarm_fraction"] < 1
    assert body["declustered"]["declustered"] is True
    assert len(body["molchan"]) >= 5 and body["confidence_curve"]
    assert "chance" in body["statement"] or "unlikely" in body["statement"]
    assert body["split"]["kind"] == "housing_stable"
    page = client.get(f"/evaluation?run=1&farm={FARM}&{RANGE}").get_data(as_text=True)
    assert 'id="chance-statement"' in page
    assert "Molchan" in page and "molchan-plot" in page
    assert client.get(f"/api/v1/evaluation?farm={FARM}&resolution_min=7").status_code == 400


def test_catalog_filters_by_distance_and_magnitude(panel, client_for):
    client = client_for("viewer")
    base = f"/api/v1/catalog?farm={FARM}&start=2024-01-01&end=2024-04-01"
    near = client.get(base + "&max_distance_km=100&min_magnitude=2").json["events"]
    assert {q["event_id"] for q in near} == {"q-near", "q-local"}
    everything = client.get(base + "&max_distance_km=2000&min_magnitude=2").json["events"]
    assert "q-far" in {q["event_id"] for q in everything}
    strong = client.get(base + "&max_distance_km=2000&min_magnitude=5").json["events"]
    assert [q["event_id"] for q in strong] == ["q-far"]
    q = near[0] if near[0]["event_id"] == "q-near" else near[1]
    assert q["north_km"] > 0 and q["east_km"] > 0  # north-east of the farm


def test_exports(panel, client_for, monkeypatch):
    from namazu.server.web import data

    monkeypatch.setattr(data, "MAX_POINTS_LIMIT", 1000)  # far below the 14,400 samples
    client = client_for("viewer")
    csv = client.get(f"/api/v1/export/timeline.csv?farm={FARM}&series=species:cow&{RANGE}")
    assert csv.status_code == 200
    assert 'filename="demo-farm-species_cow-timeline.csv"' in csv.headers["Content-Disposition"]
    csv.close()  # a streamed export holds its slot until sent or abandoned
    raw = client.get(f"/api/v1/export/timeline.csv?farm={FARM}&series=cow-1&{RANGE}")
    rows = [line.split(",") for line in raw.get_data(as_text=True).splitlines()[1:]]
    activity = [row for row in rows if row[2] == "activity"]
    assert len(activity) == panel.farm.cow1.notna().sum()  # every stored sample, raw
    move = client.get(f"/api/v1/export/movebank.csv?farm={FARM}&animal=cow-1&{RANGE}")
    text = move.get_data(as_text=True)
    header = text.splitlines()[0]
    assert "individual-local-identifier" in header and "timestamp" in header
    assert len(text.splitlines()) == 1 + panel.farm.cow1.notna().sum()


def test_plotly_is_served_locally_and_no_page_links_elsewhere(panel, client_for):
    client = client_for("admin")
    js = client.get("/static/plotly.min.js")
    assert js.status_code == 200 and len(js.data) > 1_000_000
    assert client.get("/static/panel.js").status_code == 200
    external = re.compile(r"https?://(?!localhost|127\.0\.0\.1)[^\s\"'<>]+")
    for url in PAGES + alarm_urls(panel)[:1] + ["/admin/users", "/login"]:
        html = client.get(url).get_data(as_text=True)
        assert not external.findall(html), (url, external.findall(html)[:3])
    assert not external.findall(client.get("/static/panel.js").get_data(as_text=True))
    csp = client.get("/").headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "http" not in csp


def test_admin_adds_a_user_and_issues_a_token(panel, client_for):
    client = client_for("admin")
    page = client.get("/admin/users").get_data(as_text=True)
    token = csrf_from(page)
    added = client.post(
        "/admin/users",
        data={"action": "add", "name": "carla", "role": "viewer", "password": "x" * 12,
              "csrf_token": token},
    )  # fmt: skip
    assert added.status_code == 200 and "carla" in added.get_data(as_text=True)
    short = client.post(
        "/admin/users",
        data={"action": "add", "name": "dan", "role": "viewer", "password": "short",
              "csrf_token": token},
    )  # fmt: skip
    assert short.status_code == 400 and "too short" in short.get_data(as_text=True)
    issued = client.post(
        "/admin/users", data={"action": "token", "name": "carla", "csrf_token": token}
    ).get_data(as_text=True)
    new = re.search(r'id="new-token">([^<]+)<', issued).group(1)
    other = panel.app.test_client()
    assert other.get("/api/v1/farms", headers={"Authorization": f"Bearer {new}"}).status_code == 200


def test_overview_flags_a_gateway_clock_off_by_more_than_two_seconds(panel, client_for):
    client = client_for("viewer")
    gateways = {g["gateway"]: g for g in client.get(f"/api/v1/gateways?farm={FARM}").json}
    assert gateways["gw-1"]["clock_offset_s"] == 0.25 and gateways["gw-1"]["clock_ok"]
    assert gateways["gw-fast-clock"]["clock_ok"] is False
    page = client.get("/").get_data(as_text=True)
    assert "+0.25" in page and "+90.00" in page
    assert page.count("sample times are shifted") == 1


def test_overview_counts_only_animals_with_recent_samples_as_reporting(panel, client_for):
    client = client_for("viewer")
    animals = client.get(f"/api/v1/animals?farm={FARM}").json
    assert animals and all(a["reporting"] is False for a in animals)  # the seed is in 2024
    page = client.get("/").get_data(as_text=True)
    assert f"Animals: 0 reporting of {len(animals)}" in page
