"""The evaluation page: it opens on a default period, lists every parameter it used, and
its figures equal those of ``namazu analyze`` run on the same activity and catalogue."""

from __future__ import annotations

import json

import pandas as pd
from numpy.testing import assert_allclose

from namazu.server.research.analysis import main as analyze
from tests.server.web.seed import DAYS, FARM, FARM_LAT, FARM_LON, START, activity

SCORES_EXACT = ("targets", "hits", "misses", "false_alarms", "alarms", "reactions")
SCORES_FLOAT = (
    "alarm_fraction", "miss_rate", "probability_gain", "p_binomial", "p_shift",
    "monitored_h", "alarmed_h",
)  # fmt: skip


def test_the_page_opens_on_the_data_and_lists_every_parameter(panel, client_for):
    html = client_for("viewer").get("/evaluation").get_data(as_text=True)
    # the seeded farm has ten days of data: shorter than 30 days, so its whole span
    assert 'name="start" value="2024-03-01T00:00:00Z"' in html
    assert 'name="end" value="2024-03-11T00:00:00Z"' in html
    assert "the default, the last 30 days of the farm" in html
    assert 'id="chance-statement"' in html
    table = html.split('id="parameter-table"')[1].split("</table>")[0]
    for name in ("increase_pct", "min_duration_min", "baseline_days", "lead_window_h",
                 "min_magnitude", "n_shifts", "seed", "reaction_window_min"):  # fmt: skip
        assert f"<code>{name}</code>" in table, name
    assert "Circular shifts: 50." in html  # the test config's 50, below the page's cap
    capped = client_for("viewer").get(f"/evaluation?run=1&farm={FARM}&n_shifts=40")
    assert "Circular shifts: 40 (configured 50;" in capped.get_data(as_text=True)


def test_the_page_equals_namazu_analyze_on_the_same_inputs(panel, client_for, tmp_path):
    query = "start=2024-03-01T00:00:00Z&end=2024-03-11T00:00:00Z&resolution_min=15"
    body = client_for("viewer").get(f"/api/v1/evaluation?farm={FARM}&{query}").json
    # the same inputs as files: the herd's activity (sum over the animals of their 15-min
    # means, as the panel reads it) and the seeded catalogue
    wide = (
        pd.concat([activity(1, surge=True), activity(2, surge=False).rename("cow-2")], axis=1)
        .resample("15min")
        .mean()
    )
    herd = wide.sum(axis=1, min_count=1).dropna()
    assert herd.index[-1] < START + pd.Timedelta(days=DAYS)
    herd.rename("animal").rename_axis("time").to_csv(tmp_path / "activity.csv")
    quakes = (
        client_for("viewer")
        .get(
            f"/api/v1/catalog?farm={FARM}&start=2024-01-01&end=2024-04-01&min_magnitude=-2"
            "&max_distance_km=20000"
        )
        .json["events"]
    )
    pd.DataFrame(quakes)[["time", "latitude", "longitude", "depth_km", "magnitude"]].to_csv(
        tmp_path / "catalog.csv", index=False
    )
    out = tmp_path / "out"
    argv = [
        "--activity", str(tmp_path / "activity.csv"), "--catalog", str(tmp_path / "catalog.csv"),
        "--farm", f"{FARM_LAT},{FARM_LON}", "--resolution", "15min",
        "--n-shifts", str(body["evaluation_params"]["n_shifts"]), "--out", str(out),
        "--no-progress",
    ]  # fmt: skip
    assert analyze(argv) == 0
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["parameters"]["rule"] == body["rule_params"]
    assert summary["parameters"]["evaluation"] == body["evaluation_params"]
    for panel_key, analyze_key in (("result", "all_events"), ("declustered", "declustered")):
        mine, theirs = body[panel_key], summary["evaluation"][analyze_key]
        assert mine["targets"] >= 1, "the seeded M4.3 is a target"
        for key in SCORES_EXACT:
            assert mine[key] == theirs[key], (panel_key, key)
        for key in SCORES_FLOAT:
            if theirs[key] is None:
                assert mine[key] is None, (panel_key, key)
            else:
                assert_allclose(mine[key], theirs[key], rtol=1e-9, err_msg=f"{panel_key} {key}")
    assert body["statement"] == summary["statement"]["all_events"]
