"""The one assessment pipeline on a built herd series whose answers follow from its design.

The series is a flat 1.0 for 20 days at 15 min with surges to 5.0 (x 5 baseline) lasting
one hour on four days, each at a different time of day (so no baseline median moves).
Earthquakes are placed relative to the surges: hit targets, a missed target, an
aftershock inside a hit's cover, a far event and one before monitored time.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose

from namazu.analytics.assessment import (
    MOLCHAN_INCREASE_PCT,
    NoMonitoredTimeError,
    assess,
    bursts_to_series,
    chance_statement,
    power_statement,
)
from namazu.analytics.evaluation import Intervals, merge_intervals
from namazu.analytics.params import EvaluationParams, RuleParams

FARM = (43.0, 13.0)
START = pd.Timestamp("2024-01-01", tz="UTC")
SURGES = ["2024-01-10 08:00", "2024-01-13 14:00", "2024-01-16 20:00", "2024-01-18 03:00"]


def herd() -> pd.Series:
    index = pd.date_range(START, periods=20 * 96, freq="15min", unit="ns")
    values = pd.Series(1.0, index=index, name="herd")
    for text in SURGES:
        t0 = pd.Timestamp(text, tz="UTC")
        values[t0 : t0 + pd.Timedelta("45min")] = 5.0
    return values


def quake(when: str, km_north: float, km_east: float, magnitude: float) -> dict:
    return {
        "time": pd.Timestamp(when, tz="UTC"),
        "latitude": FARM[0] + km_north / 111.195,
        "longitude": FARM[1] + km_east / (111.195 * np.cos(np.radians(FARM[0]))),
        "depth_km": 10.0,
        "magnitude": magnitude,
    }


def catalogue() -> pd.DataFrame:
    """Events 60 km apart (beyond each other's Gardner-Knopoff windows, <= 38 km here)."""
    rows = [
        quake("2024-01-02 12:00", 60, 0, 4.6),  # before monitored time (no baseline yet)
        quake("2024-01-10 14:00", -60, 0, 4.5),  # hit (6 h after the first surge)
        quake("2024-01-10 15:00", -58, 0, 4.2),  # its aftershock: a hit, declustered away
        quake("2024-01-13 20:00", 0, 60, 4.4),  # hit
        quake("2024-01-16 22:00", 0, -60, 4.8),  # hit
        quake("2024-01-12 06:00", 0, 0, 4.3),  # miss (no alarm in the 20 h before)
        quake("2024-01-15 06:00", 900, 0, 4.2),  # outside the Dobrovolsky radius
    ]
    frame = pd.DataFrame(rows)
    frame["time"] = frame["time"].dt.as_unit("ns")
    return frame


PARAMS = EvaluationParams(n_shifts=200)


@pytest.fixture(scope="module")
def assessed():
    first_half = merge_intervals(
        np.array([START.value]), np.array([pd.Timestamp("2024-01-14", tz="UTC").value])
    )
    periods = {"first": first_half, "second": first_half.complement(START.value, 2**62)}
    return assess(herd(), catalogue(), FARM, "15min", RuleParams(), PARAMS, periods)


def test_alarms_targets_hits_and_declustering(assessed):
    assert [e.start for e in assessed.episodes] == [pd.Timestamp(t, tz="UTC") for t in SURGES]
    assert not assessed.reactions.any()
    whole = assessed.results["all_events"]
    assert (whole.targets, whole.hits, whole.false_alarms) == (5, 4, 1)
    declustered = assessed.results["declustered"]
    assert declustered.declustered and (declustered.targets, declustered.hits) == (4, 3)
    # monitored from day 4 (three previous days) to the end of the series
    assert assessed.monitored.start[0] == pd.Timestamp("2024-01-04", tz="UTC").value
    assert_allclose(assessed.monitored_h, 17 * 24)
    # four covers from the declaration (the end of the third sample, 45 min after the start,
    # which is the last anomalous sample) to the last anomalous sample + 20 h, no overlap
    assert [e.declared_at - e.start for e in assessed.episodes] == [pd.Timedelta("45min")] * 4
    assert_allclose(whole.alarm_fraction, 4 * 20.0 / (17 * 24))


def test_periods_split_the_whole(assessed):
    first, second = (assessed.periods[k]["all_events"] for k in ("first", "second"))
    whole = assessed.results["all_events"]
    assert first.targets + second.targets == whole.targets
    assert first.hits + second.hits == whole.hits
    assert_allclose(first.monitored_h + second.monitored_h, whole.monitored_h)
    assert first.n_shifts == PARAMS.n_shifts


def test_skilful_alarms_get_the_unlikely_statement(assessed):
    whole = assessed.as_dict()["evaluation"]["all_events"]
    assert whole["p_binomial"] < 0.05 and whole["p_shift"] < 0.05
    statements = assessed.statements()
    assert statements["all_events"].startswith("4 of 5 target earthquakes")
    assert "unlikely under random alarms" in statements["all_events"]
    assert assessed.power_statements()["all_events"].endswith(
        "a skill statement is possible with these data."
    )


def test_molchan_trajectory_and_confidence_curve(assessed):
    molchan = assessed.molchan
    assert list(molchan["increase_pct"]) == sorted(MOLCHAN_INCREASE_PCT)
    tau = molchan["tau"].to_numpy()
    assert np.all(np.diff(tau) <= 1e-12), "a higher threshold never alarms more"
    configured = molchan[molchan["increase_pct"] == 140]
    assert_allclose(configured["tau"], assessed.results["all_events"].alarm_fraction)
    assert assessed.confidence is not None and len(assessed.confidence) == 201


def test_as_dict_is_json_ready_and_complete(assessed):
    import json

    out = assessed.as_dict()
    json.dumps(out, allow_nan=False)
    assert {"monitored", "alarms", "evaluation", "periods", "molchan", "statement"} <= set(out)
    assert all(a["reaction"] is False and "params" not in a for a in out["alarms"])
    assert len(out["lead_vs_distance"]) == 4
    assert all(0 < h["lead_time_h"] <= 21 for h in out["lead_vs_distance"])


def test_configured_threshold_joins_the_trajectory():
    rule = RuleParams(increase_pct=150.0)
    result = assess(herd(), catalogue(), FARM, "15min", rule, EvaluationParams(n_shifts=0))
    assert 150.0 in set(result.molchan["increase_pct"])
    assert len(result.molchan) == len(MOLCHAN_INCREASE_PCT) + 1


def test_no_monitored_time():
    short = herd()[: 2 * 96]
    with pytest.raises(NoMonitoredTimeError, match="3 previous days"):
        assess(short, catalogue(), FARM, "15min", RuleParams(), EvaluationParams(n_shifts=0))
    lenient = assess(
        short,
        catalogue(),
        FARM,
        "15min",
        RuleParams(),
        EvaluationParams(n_shifts=0),
        require_monitored=False,
    )
    assert lenient.monitored.total_ns == 0 and lenient.results["all_events"].targets == 0
    assert lenient.confidence is None and lenient.as_dict()["confidence_curve"] == []


def test_empty_catalogue_is_judged_as_no_targets():
    empty = catalogue().iloc[0:0]
    result = assess(herd(), empty, FARM, "15min", RuleParams(), EvaluationParams(n_shifts=0))
    assert result.results["all_events"].targets == 0 and len(result.mainshocks) == 0
    assert "cannot be judged" in result.statements()["all_events"]


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        ({"targets": 0, "hits": 0}, "No target earthquake"),
        ({"targets": 6, "hits": 1, "p_binomial": 0.4, "p_shift": 0.5}, "indistinguishable"),
        ({"targets": 6, "hits": 6, "p_binomial": 0.01, "p_shift": 0.2}, "indistinguishable"),
        ({"targets": 6, "hits": 6, "p_binomial": 0.01, "p_shift": 0.02}, "unlikely"),
        # a skill sentence needs both p-values
        (
            {
                "targets": 6,
                "hits": 6,
                "p_binomial": 0.01,
                "p_shift": None,
                "p_shift_reason": "no circular shifts were requested",
            },
            "no circular shifts were requested, so chance cannot be judged",
        ),
        # ... and at least 5 targets
        ({"targets": 3, "hits": 3, "p_binomial": 0.01, "p_shift": 0.02}, "fewer than the 5"),
        (
            {
                "targets": 2,
                "hits": 0,
                "p_binomial": None,
                "p_shift": None,
                "p_binomial_reason": "no alarm time in monitored time",
            },
            "no alarm time in monitored time, so chance cannot be judged",
        ),
    ],
)
def test_chance_statement(result, expected):
    text = chance_statement(result)
    assert expected in text
    assert ("unlikely" in text) == (expected == "unlikely")


def test_one_hit_of_one_target_prints_no_skill_sentence():
    """One target, one hit, τ = 0.038 (a 10 h lead window): both p-values are small, but
    one target can never support a skill sentence; the power line says so."""
    result = {
        "targets": 1,
        "hits": 1,
        "alarm_fraction": 0.038,
        "p_binomial": 0.038,
        "p_shift": 0.04,
        "perfect_p_binomial": 0.038,
        "perfect_p_shift": 0.04,
        "params": {"alpha": 0.05, "min_targets_for_skill": 5},
    }
    text = chance_statement(result)
    assert "unlikely" not in text and "no forecasting skill is shown" in text
    assert "1 target is fewer than the 5" in text
    power = power_statement(result)
    assert power.startswith("With N = 1 target and τ = 0.038, a perfect record (1 of 1 hits)")
    assert power.endswith("no result on these data could show skill.")


def test_chance_statement_uses_the_given_or_recorded_level():
    result = {"targets": 6, "hits": 3, "p_binomial": 0.03, "p_shift": 0.04}
    assert "unlikely" in chance_statement(result, alpha=0.05)
    strict = chance_statement(result, alpha=0.01)
    assert "indistinguishable from chance (p > 0.01)" in strict
    recorded = {**result, "params": {"alpha": 0.01, "min_targets_for_skill": 5}}
    assert "p > 0.01" in chance_statement(recorded)
    assert "fewer than the 7" in chance_statement(result, min_targets=7)


def _covered(intervals: Intervals, grid: np.ndarray) -> np.ndarray:
    return intervals.contains(grid)


@pytest.mark.parametrize(
    "pairs",
    [
        [],
        [(0, 10)],
        [(-5, 3), (4, 6), (8, 30)],
        [(2, 4), (4, 7), (12, 13)],
        [(25, 40)],
    ],
)
def test_interval_complement(pairs):
    start, end = 0, 20
    given = merge_intervals(
        np.array([p[0] for p in pairs], np.int64), np.array([p[1] for p in pairs], np.int64)
    )
    rest = given.complement(start, end)
    grid = np.arange(-10, 45)
    inside = (grid >= start) & (grid < end)
    assert np.array_equal(_covered(rest, grid), inside & ~_covered(given, grid))
    assert np.all(rest.start >= start) and np.all(rest.end <= end)


def test_bursts_to_series_means_per_cell_and_sums_individuals():
    t = pd.to_datetime(
        ["2021-03-03 00:01", "2021-03-03 00:10", "2021-03-03 00:05", "2021-03-03 00:50"],
        utc=True,
    )
    bursts = pd.DataFrame(
        {"individual": ["a", "a", "b", "a"], "time": t, "odba": [0.2, 0.4, 1.0, 0.5]}
    )
    series = bursts_to_series(bursts, "15min")
    assert series.name == "odba" and str(series.index.tz) == "UTC"
    assert list(series.index) == list(
        pd.date_range("2021-03-03 00:00", periods=4, freq="15min", tz="UTC")
    )
    assert_allclose(series.to_numpy(), [0.3 + 1.0, np.nan, np.nan, 0.5])


def test_bursts_to_series_errors():
    with pytest.raises(ValueError, match="lacks columns: vedba"):
        bursts_to_series(pd.DataFrame({"individual": [], "time": []}), "15min", "vedba")
    empty = pd.DataFrame({"individual": ["a"], "time": [START], "odba": [np.nan]})
    with pytest.raises(ValueError, match="no burst has a odba value"):
        bursts_to_series(empty, "15min")


def _duplicate_pairs(catalog: pd.DataFrame) -> list[tuple[int, int]]:
    """Row pairs (in time order) within 2 s and 5 km, by brute force over all pairs."""
    from namazu.analytics.geo import great_circle_km

    frame = catalog.sort_values("time", kind="stable").reset_index(drop=True)
    t = frame["time"].dt.as_unit("ns").astype("int64").to_numpy()
    lat, lon = frame["latitude"].to_numpy(), frame["longitude"].to_numpy()
    pairs = []
    for i in range(len(frame)):
        near = np.flatnonzero(np.abs(t - t[i]) <= 2_000_000_000)
        near = near[near > i]
        km = great_circle_km(lat[i], lon[i], lat[near], lon[near])
        pairs += [(i, int(j)) for j in near[km <= 5.0]]
    return pairs


def test_near_duplicates_of_the_bsi_catalogue_are_merged_before_targets_are_counted():
    """The BSI catalogue lists some events twice (two solutions < 2 s and < 5 km apart);
    each must count once as a target, with the larger magnitude."""
    from namazu.analytics.catalog import parse_catalog
    from namazu.analytics.evaluation import evaluate, target_mask
    from tests.conftest import require_data

    path = require_data("catalogs/central_italy_2016-10_2017-04_bsi.csv")
    raw = parse_catalog(path.read_text(encoding="utf-8"))
    raw = raw[raw["time"] < pd.Timestamp("2016-11-10", tz="UTC")].reset_index(drop=True)
    pairs = _duplicate_pairs(raw)
    assert pairs, "the BSI catalogue holds duplicate solutions"
    farm = (42.88, 13.12)  # near the 26 October 2016 Visso doublet
    index = pd.date_range("2016-10-10", "2016-11-10", freq="15min", tz="UTC", unit="ns")
    flat = pd.Series(1.0, index=index, name="herd")
    params = EvaluationParams(n_shifts=0)
    result = assess(flat, raw, farm, "15min", evaluation=params, molchan_increase_pct=())

    assert result.events_read == len(raw)
    assert result.near_duplicates_merged == len(pairs) == len(raw) - len(result.catalog)
    assert result.as_dict()["catalog"]["near_duplicates_merged"] == len(pairs)
    # targets of the raw catalogue minus the second solution of each duplicated target
    ordered = raw.sort_values("time", kind="stable").reset_index(drop=True)
    is_target = target_mask(ordered, *farm, params, result.monitored)
    doubled = sum(bool(is_target[i] and is_target[j]) for i, j in pairs)
    assert doubled >= 2, "the two M >= 4.5 doublets of 26 October are both targets"
    raw_targets = evaluate([], ordered, farm, result.monitored, params).targets
    assert result.results["all_events"].targets == raw_targets - doubled
    kept = {item["time"][:19]: item["magnitude"] for item in result.results["all_events"]
            .as_dict()["target_list"]}  # fmt: skip
    for i, j in pairs:
        if is_target[i] and is_target[j]:
            larger = max(ordered["magnitude"][i], ordered["magnitude"][j])
            stamps = {ordered["time"][k].isoformat()[:19] for k in (i, j)}
            assert [kept[s] for s in stamps if s in kept] == [larger]


def test_an_event_during_the_run_before_the_declaration_is_a_reaction_not_a_hit():
    """An M 4.0 at 3 km, 30 s after the first anomalous sample of a 1.5 h surge (1.2 h
    before its last sample): the rule could not have known the alarm yet (declared 45 min
    after the start), so the shaking makes it a reaction; nothing is a hit. Counting the
    alarm from its first sample, as evaluation v1 did, made it a hit with a lead time of
    0.008 h."""
    values = herd()
    t0 = pd.Timestamp("2024-01-12 09:00", tz="UTC")
    values[t0 : t0 + pd.Timedelta("75min")] = 5.0  # six samples: 09:00 to 10:15
    quake_time = t0 + pd.Timedelta("30s")
    catalog = pd.DataFrame([quake(str(quake_time), 3.0, 0.0, 4.0)])
    catalog["time"] = catalog["time"].dt.as_unit("ns")
    result = assess(values, catalog, FARM, "15min", RuleParams(), EvaluationParams(n_shifts=100))
    (episode,) = [e for e in result.episodes if e.start == t0]
    assert episode.declared_at == t0 + pd.Timedelta("45min")
    assert result.reactions[result.episodes.index(episode)]
    for key in ("all_events", "declustered"):
        scores = result.results[key]
        assert (scores.targets, scores.hits, scores.reactions) == (1, 0, 1)
        assert scores.target_list[0]["status"] == "miss"
    assert "unlikely" not in result.statements()["all_events"]
    # the v1 reading: covered from the first sample, the event is a hit 30 s later
    from namazu.analytics.evaluation import evaluate

    v1 = pd.DataFrame({"start": [t0], "declared_at": [t0], "end": [episode.end]})
    looked_ahead = evaluate(v1, catalog, FARM, result.monitored, EvaluationParams(n_shifts=0))
    assert looked_ahead.hits == 1
    assert_allclose(looked_ahead.hit_list[0]["lead_time_h"], 30 / 3600)


def test_one_hit_of_one_target_in_a_generated_series_gives_no_skill_sentence():
    """One surge (declared 10 Jan 08:45) and one M 4.5 six hours later, 10 h lead window:
    1 of 1 hit and both p-values at or below 0.05 (τ = 10 h / 408 h), yet no skill sentence;
    the power line says that no result could show skill with one target."""
    values = herd()
    values[values.index >= pd.Timestamp("2024-01-11", tz="UTC")] = 1.0  # keep the first surge
    catalog = catalogue().iloc[[1]].reset_index(drop=True)  # the hit of 10 Jan 14:00
    params = EvaluationParams(n_shifts=400, lead_window_h=10.0)
    result = assess(values, catalog, FARM, "15min", RuleParams(), params)
    whole = result.as_dict()["evaluation"]["all_events"]
    assert (whole["targets"], whole["hits"], len(result.episodes)) == (1, 1, 1)
    assert_allclose(whole["alarm_fraction"], 10 / (17 * 24))
    assert whole["p_binomial"] <= 0.05 and whole["p_shift"] <= 0.05
    assert_allclose(whole["hit_rate_interval"], [0.025, 1.0], rtol=1e-12)
    assert_allclose(whole["gain_interval"][1], 1 / whole["alarm_fraction"], rtol=1e-12)
    statement = result.statements()["all_events"]
    assert statement.startswith("1 of 1 target earthquake was preceded by an alarm")
    assert "1 target is fewer than the 5 a skill statement needs" in statement
    assert "unlikely" not in statement and "no forecasting skill is shown" in statement
    assert result.power_statements()["all_events"].endswith(
        "no result on these data could show skill."
    )
