"""``namazu reproduce wikelski2020`` on the real data pack: outputs, report, bad input."""

from __future__ import annotations

import json

import pytest

from namazu.server.cli import main as cli_main
from tests.conftest import require_data

ACTIVITY = "wikelski2020/activity_2017-01-17_2017-04-14.csv"
CATALOG = "wikelski2020/catalog_2017-01-17_2017-04-16.csv"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    activity, catalog = require_data(ACTIVITY), require_data(CATALOG)
    out = tmp_path_factory.mktemp("reproduce")
    argv = [
        "reproduce", "wikelski2020", "--activity", str(activity), "--catalog", str(catalog),
        "--farm", "43.0147,13.0509,580", "--n-shifts", "4", "--alarm-shifts", "19",
        "--out", str(out), "--no-progress",
    ]  # fmt: skip
    assert cli_main(argv) == 0
    return out, json.loads((out / "summary.json").read_text(encoding="utf-8"))


def test_writes_every_table_per_period_and_group(run):
    out, summary = run
    assert set(summary["periods"]) == {"stable", "pasture"}
    for label in ("stable", "pasture"):
        for name in (
            "fourier_bic.csv", "fourier_aic.csv", "daily_pattern.csv", "var_lags.csv",
            "var_summary.txt", "residuals.csv", "triggers.csv", "alarms.csv",
        ):  # fmt: skip
            assert (out / label / name).stat().st_size > 0, name
        for group in ("animal", "cow", "dog", "sheep"):
            for name in ("pairs.csv", "t_grid.csv", "null_slopes.csv", "distance_warning.svg"):
                assert (out / label / group / name).stat().st_size > 0, (group, name)
    assert "Results for equation eq" in (out / "stable" / "var_summary.txt").read_text()


def test_summary_holds_the_original_and_its_tests(run):
    _, summary = run
    stable = summary["periods"]["stable"]
    animal = stable["groups"]["animal"]
    assert animal["pairs"] == 237
    assert animal["regression"]["slope"] == pytest.approx(-0.12348791858742442, rel=1e-8)
    assert animal["shift_test"]["p_shift"]["n"] == 4
    assert animal["grid_test"]["shifts"] == 4
    assert set(summary["quirks"]) >= {
        "pga_standardised_over_all_events",
        "first_day_window_cut",
        "mowing_exclusion_wrong_year",
        "fourier_variance_n_plus_1",
    }
    scored = stable["alarms"]["results"]["all_events"]
    assert scored["animals"]["n_shifts"] == 19 and scored["animals"]["targets"] > 0
    assert scored["reference"]["targets"] == scored["animals"]["targets"]
    assert scored["conditional"]["targets"] <= scored["animals"]["targets"]
    assert set(scored["statements"]) == {"animals", "power", "reference", "conditional"}
    pasture = summary["periods"]["pasture"]["alarms"]["results"]["all_events"]
    assert pasture["animals"]["targets"] == 0
    assert summary["verdict"].startswith("The original claims")
    assert summary["provenance"]["inputs"]["catalog"]["sha256"]
    assert "--n-shifts" in summary["provenance"]["rerun"]


def test_report_is_self_contained_with_heat_maps_and_verdict(run):
    out, summary = run
    page = (out / "report.html").read_text(encoding="utf-8")
    assert page.count("<svg") >= 2 * (1 + 4 + 1) + 1  # per period: grid, 4 scatters, null
    assert "http://" not in page.replace("http://www.w3.org", "")
    assert "https://" not in page
    assert "mowing" in page and "Verdict" in page


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--labels", "stable"], "--labels must be two different names"),
        (["--farm", "43.0,13.0,x"], "--farm must be LAT,LON"),
        (["--n-shifts", "-1"], "n_shifts"),
        (["--split", "not a time"], "--split"),
    ],
)
def test_bad_input_gives_one_line(tmp_path, capsys, extra, message):
    activity, catalog = require_data(ACTIVITY), require_data(CATALOG)
    argv = [
        "reproduce", "wikelski2020", "--activity", str(activity), "--catalog", str(catalog),
        "--farm", "43.0147,13.0509", "--out", str(tmp_path), "--no-progress", *extra,
    ]  # fmt: skip
    assert cli_main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_a_catalogue_without_pga_is_refused(tmp_path, capsys):
    activity = require_data(ACTIVITY)
    bsi = require_data("catalogs/central_italy_2016-10_2017-04_bsi.csv")
    argv = [
        "reproduce", "wikelski2020", "--activity", str(activity), "--catalog", str(bsi),
        "--farm", "43.0147,13.0509", "--out", str(tmp_path), "--no-progress",
    ]  # fmt: skip
    assert cli_main(argv) == 1
    assert "pga_g" in capsys.readouterr().err
