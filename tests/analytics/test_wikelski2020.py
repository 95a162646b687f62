"""The pieces of the Wikelski et al. (2020) method on generated cases with known answers."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from numpy.testing import assert_allclose
from statsmodels.tools.sm_exceptions import SingularMatrixWarning
from threadpoolctl import threadpool_limits

from namazu.analytics import wikelski2020 as study

STEP = pd.Timedelta("15min")
T0 = pd.Timestamp("2017-01-18T00:00:00", tz="UTC")


def _grid(n: int, start: pd.Timestamp = T0) -> pd.DatetimeIndex:
    return pd.date_range(start, periods=n, freq=STEP)


def test_longest_gap_free_run_drops_short_pieces_around_gaps():
    times = (
        _grid(5)
        .append(_grid(20, T0 + pd.Timedelta("3h")))
        .append(_grid(3, T0 + pd.Timedelta("2D")))
    )
    run = study.longest_gap_free_run(times, STEP)
    assert (run.start, run.stop) == (5, 25)


def test_accumulate_pga_keeps_the_cell_maximum_first_on_ties_and_skips_edges():
    samples = _grid(4)
    events = pd.DatetimeIndex(
        [
            T0,  # exactly at the first sample: left out (the original needs offset > 0)
            T0 + pd.Timedelta("1s"),  # cell 0
            T0 + pd.Timedelta("16min"),  # cell 1, PGA 2e-4, 10 km
            T0 + pd.Timedelta("20min"),  # cell 1, PGA 2e-4 again: the first one stays
            T0 + pd.Timedelta("29min"),  # cell 1, smaller
            T0 + pd.Timedelta("31min"),  # cell 2, PGA 0 never counts
            T0 + pd.Timedelta("60min"),  # past the last cell [45, 60): left out
        ]
    )
    pga = np.array([9e-4, 1e-4, 2e-4, 2e-4, 1e-5, 0.0, 5e-4])
    distance = np.array([1.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0])
    out = study.accumulate_pga(samples, events, pga, distance)
    assert_allclose(out["eq"], [1e-4, 2e-4, 0.0, 0.0])
    assert_allclose(out["distance_km"], [5.0, 10.0, 0.0, 0.0])


def test_fourier_bic_finds_the_harmonics_and_uses_rss_over_n_plus_1():
    rng = np.random.default_rng(3)
    n, per_day = 96 * 20, 96
    i = np.arange(n)
    signal = 5 * np.sin(2 * np.pi * i / per_day) + 3 * np.cos(2 * np.pi * 3 * i / per_day)
    values = pd.DataFrame({"x": 100 + signal + rng.normal(0, 1, n)}, index=_grid(n))
    info = study.fourier_information(values, per_day, 6)
    assert int(info["choice"].loc["x", "bic"]) == 3
    rss0 = float(((values["x"] - values["x"].mean()) ** 2).sum())
    loglik0 = -n / 2 * (1 + np.log(2 * np.pi * rss0 / (n + 1)))
    assert_allclose(info["bic"].loc[0, "x"], np.log(n) - 2 * loglik0, rtol=1e-12)
    residuals, pattern = study.remove_daily_pattern(values, per_day, 3)
    assert abs(residuals["x"].mean()) < 1e-9
    assert len(pattern) == per_day
    assert residuals["x"].std() < 1.1


def _windows(z_eq, trigger_times, samples, distance=None):
    n = len(z_eq)
    return study.lookback_windows(
        pd.DatetimeIndex(trigger_times).as_unit("ns").asi8,
        np.asarray(z_eq, float),
        np.full(n, 10.0) if distance is None else np.asarray(distance, float),
        samples.as_unit("ns").asi8,
        20.0,
        1.0,
    )


def test_look_back_is_inclusive_and_thresholds_strict():
    samples = _grid(100)
    trigger = samples[80] + pd.Timedelta("0s")  # exactly 20 h after sample 0
    windows = _windows([2.5], [trigger], samples)
    assert windows.positions[0, 0] == 0 and windows.positions[0].max() == 80
    z = np.zeros(100)
    z[[0, 80]] = 2.5  # both ends of the window
    z[40] = 2.0  # equal to the threshold: not an exceedance
    pairs = study.select_pairs(windows, study.window_values(windows, z), 2.0, 2.0)
    assert sorted(pairs.warning_h.tolist()) == [0.0, 20.0]
    # a trigger whose z equals the threshold is not a trigger
    equal = _windows([2.0], [trigger], samples)
    assert len(study.select_pairs(equal, study.window_values(equal, z), 2.0, 2.0)) == 0


def test_the_mowing_exclusion_is_dated_2017_and_only_bites_then():
    for year, expected in ((2016, 1), (2017, 0)):
        samples = _grid(96, pd.Timestamp(f"{year}-11-02T00:00:00", tz="UTC"))
        z = np.zeros(96)
        z[48] = 3.0  # 12:00, inside 10:00-15:00
        windows = _windows([3.0], [samples[60]], samples)
        pairs = study.select_pairs(windows, study.window_values(windows, z), 2.0, 2.0)
        assert len(pairs) == expected


def test_circular_shift_moves_values_not_times():
    samples = _grid(10)
    windows = _windows([3.0], [samples[3]], samples)
    z = np.arange(10, dtype=float)
    assert_allclose(study.window_values(windows, z)[0], [0, 1, 2, 3])
    assert_allclose(study.window_values(windows, z, shift=2)[0], [8, 9, 0, 1])


def _random_pairs(rng, n_triggers=12, per=6, one_distance_cell=True) -> study.Pairs:
    trigger = np.repeat(np.arange(n_triggers), per)
    z_eq = np.repeat(rng.uniform(1.05, 3.4, n_triggers), per)
    distance = np.repeat(rng.uniform(5, 60, n_triggers), per)
    if one_distance_cell:  # the strongest trigger alone above 3.2 sd, with 6 pairs
        z_eq[trigger == 0] = 3.5
        z_eq[(trigger != 0) & (z_eq > 3.2)] = 3.1
    size = trigger.size
    return study.Pairs(
        trigger=trigger,
        position=np.arange(size),
        warning_h=rng.uniform(0, 20, size),
        distance_km=distance,
        z_eq=z_eq,
        z_animal=rng.uniform(1.01, 3.5, size),
    )


def test_t_grid_equals_statsmodels_ols_in_every_cell():
    rng = np.random.default_rng(11)
    pairs = _random_pairs(rng)
    grid = np.linspace(1, 3.3, 8)
    fast = study.t_grid(pairs, grid, 4)
    single_distance_cells = 0
    for i, th_eq in enumerate(grid):
        for j, th_animal in enumerate(grid):
            inside = (pairs.z_eq > th_eq) & (pairs.z_animal > th_animal)
            if inside.sum() <= 3:
                assert np.isnan(fast[i, j])
                continue
            x = pairs.distance_km[inside]
            single = np.ptp(x) == 0
            with warnings.catch_warnings():
                if single:  # rank-deficient design: statsmodels warns, answers by pinv
                    warnings.simplefilter("ignore", SingularMatrixWarning)
                design = sm.add_constant(x, has_constant="add")
                fit = sm.OLS(pairs.warning_h[inside], design).fit()
            single_distance_cells += single
            assert_allclose(fast[i, j], fit.tvalues[1], rtol=1e-9)
    assert single_distance_cells > 0  # statsmodels' pseudo-inverse answer is copied too


def test_median_regression_matches_quantreg_and_reports_too_few_pairs():
    rng = np.random.default_rng(5)
    pairs = _random_pairs(rng, one_distance_cell=False)
    fit = study.median_regression(pairs)
    reference = sm.QuantReg(pairs.warning_h, sm.add_constant(pairs.distance_km)).fit(q=0.5)
    assert_allclose([fit["intercept"], fit["slope"]], reference.params, rtol=1e-12)
    assert_allclose([fit["intercept_se"], fit["slope_se"]], reference.bse, rtol=1e-12)
    assert fit["n_pairs"] == len(pairs) and fit["n_triggers"] == 12
    few = study.Pairs(*(np.asarray(a)[:2] for a in vars(pairs).values()))
    assert study.median_regression(few)["slope"] is None


def test_empirical_p_and_shift_offsets():
    null = np.array([-3.0, -1.0, 0.0, 1.0, np.nan])
    p = study.empirical_p(-2.0, null)
    assert p == {"lower": 2 / 5, "two_sided": 4 / 5, "n": 4}
    assert study.empirical_p(float("nan"), null)["lower"] is None
    shifts = study.shift_offsets(1000, 5, 96)
    assert shifts.tolist() == [96, 298, 500, 702, 904]
    assert study.shift_offsets(100, 5, 96).size == 0


def test_grid_multiplicity_counts_cells_and_family_wise_p():
    observed = np.array([[-3.0, -2.5], [0.0, np.nan]])
    null = [np.array([[-1.0, 0.0], [2.5, np.nan]]), np.array([[-4.0, -2.0], [0.0, 0.0]])]
    test = study.grid_multiplicity(observed, null, 0.05)
    assert (test["significant_cells"], test["significant_negative_cells"]) == (2, 2)
    assert test["null_significant_cells"]["median"] == 1.5
    assert test["p_significant_cells"] == pytest.approx(2 / 3)  # one null count (2) >= 2
    assert test["p_min_t_familywise"] == pytest.approx(2 / 3)  # -4 <= -3
    assert test["p_max_abs_t_familywise"] == pytest.approx(2 / 3)


def test_exceedance_alarms_are_runs_declared_at_the_end_of_their_first_sample():
    times = _grid(8)
    z = pd.Series([0, 2.5, 3.0, 0, 0, 2.1, 0, 2.0], index=times, dtype=float)
    alarms = study.exceedance_alarms(z, 2.0, STEP)
    assert alarms["start"].tolist() == [times[1], times[5]]
    assert alarms["end"].tolist() == [times[2], times[5]]
    assert alarms["declared_at"].tolist() == [times[2], times[6]]
    assert alarms["n_samples"].tolist() == [2, 1]
    assert_allclose(alarms["peak_z"], [3.0, 2.1])
    assert study.exceedance_alarms(z * 0, 2.0, STEP).empty


def _synthetic_study(planted: bool, seed: int = 2017) -> study.StudyResult:
    """120 days of bounded noise (no exceedance above 2 sd of its own), small events, and
    one large event on 50 of each 60-day period's days (look-backs do not overlap). The
    dog's activity jumps once in each large event's look-back: ``planted``, 19 - 0.25 d
    hours before an event at distance d (warning time falls by 0.25 h per km); otherwise
    at a random time in it, unrelated to the distance.
    """
    rng = np.random.default_rng(seed)
    n = 96 * 120
    times = _grid(n)
    values = rng.uniform(0.9e5, 1.1e5, size=(n, 4))
    days = np.concatenate(
        [np.sort(rng.choice(np.arange(1, 60), 50, replace=False)) + offset for offset in (0, 60)]
    )
    large = days * 86400.0 + rng.uniform(0, 3600, days.size)
    distance_large = rng.uniform(5, 60, days.size)
    warning_h = 19 - 0.25 * distance_large if planted else rng.uniform(4, 17, days.size)
    for t, w in zip(large, warning_h, strict=True):
        values[int((t - w * 3600) // 900), 2] += 1e5  # the dog column
    activity = pd.DataFrame(values, index=times, columns=["animal", "cow", "dog", "sheep"])
    activity["animal"] = activity[["cow", "dog", "sheep"]].sum(axis=1)
    k_small = 1000
    seconds = np.concatenate([rng.uniform(0, n * 900, k_small), large])
    order = np.argsort(seconds, kind="stable")
    pga = np.concatenate([rng.lognormal(-10, 0.5, k_small), np.full(days.size, 5e-3)])
    distance = np.concatenate([rng.uniform(5, 80, k_small), distance_large])
    events = pd.DataFrame(
        {
            "time": (times[0] + pd.to_timedelta(seconds[order], unit="s")).floor("s"),
            "pga_g": pga[order],
            "hypocentral_distance_km": distance[order],
        }
    )
    params = study.StudyParams(n_shifts=19, max_var_lags=1, max_frequencies=4)
    with threadpool_limits(limits=1):
        return study.reproduce(activity, events, times[n // 2], params=params)


def test_shift_test_finds_a_planted_precursor_and_not_noise():
    planted = _synthetic_study(True)
    for period in planted.periods.values():
        test = period.groups["dog"].shift_test
        assert test["slope"] == pytest.approx(-0.25, abs=0.05)
        # at most one of the 19 shifted series gives a slope as negative (chance: 1 in 10)
        assert test["p_shift"]["lower"] <= 2 / 20 and test["p_shift"]["n"] == 19
        assert test["p_naive_lower"] < 1e-6
    noise = _synthetic_study(False)
    for period in noise.periods.values():
        test = period.groups["dog"].shift_test
        assert test["p_shift"]["lower"] > 2 / 20
        assert test["p_shift"]["n"] == 19
        assert period.as_dict()["groups"]["dog"]["grid_test"]["shifts"] == 19


def test_bad_inputs_name_what_is_wrong():
    with pytest.raises(study.StudyInputError, match="pga_g"):
        study.parse_study_catalog("time,latitude\n2017-01-01T00:00:00,1\n")
    header = ",".join(study.STUDY_CATALOG_COLUMNS)
    with pytest.raises(study.StudyInputError, match=r"'magnitude'.*line\(s\) 2"):
        study.parse_study_catalog(f"{header}\n2017-01-01T00:00:00,43,13,5,x,10,1e-4\n")
    frame = pd.DataFrame({"cow": [1.0]}, index=_grid(1))
    with pytest.raises(study.StudyInputError, match="animal, dog, sheep"):
        study.reproduce(frame, pd.DataFrame(), T0)
    with pytest.raises(ValueError, match="min_pairs"):
        study.StudyParams(min_pairs=2)


def _summary_for_verdict(p_shift: float, p_naive: float) -> dict:
    test = {
        "slope": -0.2,
        "p_naive_two_sided": p_naive,
        "p_naive_lower": p_naive / 2,
        "p_shift": {"lower": p_shift / 2, "two_sided": p_shift, "n": 99},
        "null_slope": {"median": -0.01},
    }
    group = {
        "shift_test": test,
        "shift_test_complete_windows": test,
        "pairs_beyond_complete": {"pairs": 0, "distance_km": None, "max_warning_h": None},
        "grid_test": {
            "significant_cells": 10,
            "cells": 1600,
            "null_significant_cells": {"median": 40.0},
            "p_significant_cells": 0.9,
            "p_min_t_familywise": 0.8,
        },
    }
    return {"periods": {"stable": {"groups": {"animal": group}}}}


def test_verdict_says_what_survives_the_shifts_and_what_does_not():
    survives = study.verdict(_summary_for_verdict(p_shift=0.01, p_naive=0.001))
    assert "stays unusual in stable p 0.01" in survives and "What does not" not in survives
    assert "2 reach p <= 0.05" in survives
    fails = study.verdict(_summary_for_verdict(p_shift=0.4, p_naive=0.001))
    assert "naive significance" in fails
    assert "not distinguishable from chance in stable p 0.4" in fails
    assert "0 reach p <= 0.05" in fails
