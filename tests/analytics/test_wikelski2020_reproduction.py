"""The reproduction equals the authors' own analysis code on the 2017 data pack.

Every figure pinned here was obtained by running a faithful copy of the authors' code
(``Code.py`` and ``Functions.py`` of the public repository
gerhardfechteler/Earthquake-Animal-Analysis) outside this repository, on the same
activity and catalogue CSVs, with numpy 2.4.6, pandas 3.1.1, statsmodels 0.15.0. Only
the figures carry over. The VAR inputs are badly scaled (PGA ~1e-4 g against activity
~1e4), so residuals are compared relatively; counts and selected pairs exactly.

Period names: the authors' "Jan-Mar" is ``stable``, "Mar-Apr" is ``pasture``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose
from threadpoolctl import threadpool_limits

from namazu.analytics import wikelski2020 as study
from namazu.analytics.tabular import parse_activity_csv
from tests.conftest import require_data

ACTIVITY = "wikelski2020/activity_2017-01-17_2017-04-14.csv"
CATALOG = "wikelski2020/catalog_2017-01-17_2017-04-16.csv"
SPLIT = pd.Timestamp("2017-03-11T00:00:00", tz="UTC")

#: Residuals of a badly scaled VAR: relative agreement expected to ~1e-7 (eq) and better.
RESIDUAL_RTOL = 1e-6
#: Regression coefficients, standard errors and t-statistics of identical pairs.
FIT_RTOL = 1e-8

AUTHORS = {
    "stable": {
        "samples": 4992,
        "first_sample": "2017-01-18T00:00:00+00:00",
        "bic_choice": {"animal": 15, "cow": 15, "dog": 16, "sheep": 6},
        "events": 12966,
        "grid_triggers": 313,
        "triggers": 124,
        "resid_sd": {
            "eq": 0.0004948746450603521,
            "cow": 16915.916673365806,
            "dog": 10151.700967246907,
            "sheep": 15296.093257249819,
            "animal": 24389.351172844836,
        },
        "resid_first": {
            "eq": 2.712459395913253e-05,
            "cow": -3632.2929765261324,
            "dog": -2251.2148165935523,
            "sheep": 6542.798034763337,
            "animal": 7923.876194695917,
        },
        "resid_last": {
            "eq": -4.0694951291617596e-05,
            "cow": -7762.607836713964,
            "dog": 1202.1285395276414,
            "sheep": -4702.406182883273,
            "animal": 4262.330193358333,
        },
        # pairs, triggers with pairs, (intercept, slope), (their SEs), sums of warning
        # time [h] and distance [km] over the pairs
        "select": {
            "animal": (237, 106, (13.13670487003746, -0.12348791858742442),
                       (0.8241165005500984, 0.04701936772708927), 2568.328611111111, 2938.3846),
            "cow": (184, 96, (13.21543382201866, -0.2353248162145939),
                    (1.4859249669052579, 0.15068883394567922), 1959.5216666666665,
                    1682.0312000000001),
            "dog": (354, 118, (9.590680717604778, -0.10181654673816709),
                    (0.6284635948814343, 0.03464830850954102), 3072.789722222222, 4625.0035),
            "sheep": (272, 107, (14.141011782393061, -0.1296919172705911),
                      (0.7245429489859371, 0.04849481598006296), 2995.6280555555554,
                      3026.8577999999998),
        },
        # t-grid: (min, cell of min, max, cell of max, cells with t < -1.96)
        "grid": {
            "animal": (-7.890978029926737, (1, 1), -3.5656219395012543, (39, 33), 1600),
            "cow": (-8.33751871475529, (23, 0), 0.8389681068306032, (7, 32), 847),
            "dog": (-6.216854412620504, (9, 0), -2.946229547125276, (39, 38), 1600),
            "sheep": (-5.659899099506908, (29, 2), -1.7031241389832235, (4, 22), 1562),
        },
    },
    "pasture": {
        "samples": 3264,
        "first_sample": "2017-03-11T00:00:00+00:00",
        "bic_choice": {"animal": 6, "cow": 12, "dog": 8, "sheep": 6},
        "events": 5052,
        "grid_triggers": 171,
        "triggers": 81,
        "resid_sd": {
            "eq": 0.0003305473409025913,
            "cow": 16647.362319900007,
            "dog": 13341.688259625882,
            "sheep": 29896.132859117923,
            "animal": 39068.8373215906,
        },
        "resid_first": {
            "eq": -0.00010165738326783559,
            "cow": 2050.9648385163964,
            "dog": 18695.325460648957,
            "sheep": 5034.084634760518,
            "animal": 21678.44525689308,
        },
        "resid_last": {
            "eq": 0.0002320078566221382,
            "cow": 18256.460763381692,
            "dog": -913.6799361172498,
            "sheep": 21388.944645929714,
            "animal": 2218.803946430773,
        },
        "select": {
            "animal": (167, 64, (15.993888556113294, -0.5833869676890552),
                       (3.782561233038823, 0.3362173622618958), 1635.6, 1827.3260999999998),
            "cow": (82, 48, (8.101917186969414, 0.2194106788398662),
                    (4.6584746062113265, 0.42469391170603954), 839.0094444444445, 874.0635),
            "dog": (253, 70, (8.773159252939973, -0.04378257341381803),
                    (2.8791597527119945, 0.2584748199479869), 2358.6133333333337, 2725.3556),
            "sheep": (158, 64, (16.67449548163249, -0.5291702900412395),
                      (3.514495309304255, 0.3115130534110839), 1656.587222222222,
                      1724.6514000000002),
        },
        "grid": {
            "animal": (-5.659214862648337, (35, 2), 0.8073831816403875, (0, 5), 1122),
            "cow": (-1.852466308029475, (22, 38), 2.0998022331312765, (3, 27), 0),
            "dog": (-4.4088357399115745, (6, 39), 0.1445335811291187, (18, 5), 523),
            "sheep": (-5.028025287022004, (35, 1), 1.9293944504046034, (0, 6), 559),
        },
    },
}  # fmt: skip


@pytest.fixture(scope="module")
def reproduction() -> study.StudyResult:
    activity_text = require_data(ACTIVITY).read_text(encoding="utf-8")
    catalog_text = require_data(CATALOG).read_text(encoding="utf-8")
    activity = parse_activity_csv(activity_text, columns=list(study.GROUPS))
    events = study.parse_study_catalog(catalog_text)
    with threadpool_limits(limits=1):  # as the command runs it: small matrices, no contention
        return study.reproduce(activity, events, SPLIT, params=study.StudyParams(n_shifts=0))


def test_the_authors_trim_and_split(reproduction):
    assert (reproduction.dropped_first, reproduction.dropped_last) == (47, 10)
    for label, expected in AUTHORS.items():
        period = reproduction.periods[label]
        assert len(period.accumulated) == expected["samples"]
        assert period.accumulated.index[0].isoformat() == expected["first_sample"]
        assert len(period.events) == expected["events"]


@pytest.mark.parametrize("label", AUTHORS)
def test_fourier_bic_choice_equals_the_authors(reproduction, label):
    choice = reproduction.periods[label].fourier["choice"]["bic"].to_dict()
    assert choice == AUTHORS[label]["bic_choice"]


@pytest.mark.parametrize("label", AUTHORS)
def test_var_residuals_equal_the_authors(reproduction, label):
    residuals = reproduction.periods[label].residuals
    expected = AUTHORS[label]
    for column in ("eq", "cow", "dog", "sheep", "animal"):
        series = residuals[column]
        assert_allclose(series.std(ddof=0), expected["resid_sd"][column], rtol=RESIDUAL_RTOL)
        assert_allclose(series.iloc[0], expected["resid_first"][column], rtol=RESIDUAL_RTOL)
        assert_allclose(series.iloc[-1], expected["resid_last"][column], rtol=RESIDUAL_RTOL)


@pytest.mark.parametrize("label", AUTHORS)
def test_trigger_counts_equal_the_authors(reproduction, label):
    period = reproduction.periods[label]
    assert int(period.events["trigger"].sum()) == AUTHORS[label]["triggers"]
    assert int((period.events["z_pga"] > 1.0).sum()) == AUTHORS[label]["grid_triggers"]


@pytest.mark.parametrize("label", AUTHORS)
@pytest.mark.parametrize("group", study.GROUPS)
def test_selected_pairs_and_median_regression_equal_the_authors(reproduction, label, group):
    outcome = reproduction.periods[label].groups[group]
    n_pairs, n_triggers, params, bse, warning_sum, distance_sum = AUTHORS[label]["select"][group]
    pairs = outcome.pairs
    assert len(pairs) == n_pairs
    assert pairs["trigger_time"].nunique() == n_triggers
    assert_allclose(pairs["warning_time_h"].sum(), warning_sum, rtol=1e-12)
    assert_allclose(pairs["distance_km"].sum(), distance_sum, rtol=1e-12)
    fit = outcome.regression
    assert_allclose([fit["intercept"], fit["slope"]], params, rtol=FIT_RTOL)
    assert_allclose([fit["intercept_se"], fit["slope_se"]], bse, rtol=FIT_RTOL)
    assert fit["warnings"] == []


@pytest.mark.parametrize("label", AUTHORS)
@pytest.mark.parametrize("group", study.GROUPS)
def test_t_grid_extremes_equal_the_authors(reproduction, label, group):
    grid = reproduction.periods[label].groups[group].t_grid.to_numpy()
    low, low_cell, high, high_cell, negative = AUTHORS[label]["grid"][group]
    assert np.isfinite(grid).sum() == 1600
    assert np.unravel_index(np.nanargmin(grid), grid.shape) == low_cell
    assert np.unravel_index(np.nanargmax(grid), grid.shape) == high_cell
    assert_allclose([np.nanmin(grid), np.nanmax(grid)], [low, high], rtol=1e-9)
    assert int(np.sum(grid < -1.96)) == negative


def test_pasture_cow_has_seven_cells_above_plus_1_96(reproduction):
    # the only cells of either period with t > 1.96 (authors' code: 7, all in the cow grid)
    counts = {
        (label, group): int(np.sum(period.groups[group].t_grid.to_numpy() > 1.96))
        for label, period in reproduction.periods.items()
        for group in study.GROUPS
    }
    assert {k: v for k, v in counts.items() if v} == {("pasture", "cow"): 7}


def test_the_quirks_are_present_in_the_data(reproduction):
    stable = reproduction.periods["stable"]
    # PGA standardised over events outside the activity data too
    assert stable.events["outside_activity"].sum() > 0
    summary = stable.as_dict()
    assert summary["triggers_window_cut"] == 16
    assert summary["groups"]["animal"]["pairs_window_cut"] == 24
    assert summary["groups"]["animal"]["same_cell_pairs"] == 1
    # every pair beyond the farthest complete look-back (19.0 km) has a cut one
    beyond = summary["groups"]["animal"]["pairs_beyond_complete"]
    assert beyond["pairs"] == 17 and beyond["distance_km"] == pytest.approx(18.9589)
    assert beyond["max_warning_h"] < 20
    # one exceedance pairs with many triggers
    pairs = stable.groups["animal"].pairs
    assert pairs["sample_time"].value_counts().max() > 1
