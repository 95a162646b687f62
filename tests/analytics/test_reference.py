"""The seismicity reference forecast and the conditional test on catalogues with known
answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.testing import assert_allclose
from scipy import stats

from namazu.analytics.evaluation import Intervals, evaluate
from namazu.analytics.params import EvaluationParams
from namazu.analytics.reference import (
    NO_ANIMAL_TIME,
    REFERENCE_HITS_ALL,
    conditional_test,
    evaluate_reference,
    reference_alarms,
)

FARM = (43.0, 13.0)
H = 3600 * 10**9


def ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def window(start: str, end: str) -> Intervals:
    return Intervals(np.array([ts(start).value]), np.array([ts(end).value]))


def quakes(*rows):
    """rows: (time, km north of the farm, magnitude)."""
    return pd.DataFrame(
        {
            "time": pd.to_datetime([r[0] for r in rows], utc=True).as_unit("ns"),
            "latitude": [FARM[0] + r[1] / 111.195 for r in rows],
            "longitude": [FARM[1]] * len(rows),
            "depth_km": [10.0] * len(rows),
            "magnitude": [r[2] for r in rows],
        }
    )


MONITORED = window("2017-01-01", "2017-01-11")  # 240 h
CATALOG = quakes(
    ("2017-01-02 00:00", 10.0, 3.0),  # opens a reference alarm (M >= 2.5 within 30 km)
    ("2017-01-02 10:00", 40.0, 4.5),  # target 10 h later: a reference hit
    ("2017-01-05 00:00", 50.0, 2.8),  # too far to open an alarm (50 km > 30 km)
    ("2017-01-06 00:00", 5.0, 4.2),  # a target that opens its own alarm: not its own hit
    ("2017-01-06 12:00", 35.0, 4.4),  # target 12 h after the M 4.2: a reference hit
    ("2017-01-09 23:00", 5.0, 2.0),  # too small to open an alarm
)


def test_reference_alarms_open_after_qualifying_events_only():
    table = reference_alarms(CATALOG, FARM, EvaluationParams())
    assert [t.isoformat() for t in table["declared_at"]] == [
        "2017-01-02T00:00:00.000000001+00:00",
        "2017-01-06T00:00:00.000000001+00:00",
    ]  # the M 4.5 (40 km) and M 4.4 (35 km) are beyond 30 km


def test_reference_scores_match_the_hand_count():
    params = EvaluationParams(n_shifts=0)
    result = evaluate_reference(CATALOG, FARM, MONITORED, params)
    # covers (t, t + 20 h] from 01-02 00:00 and 01-06 00:00: 40 h of 240 h
    tau = 40 / 240
    assert (result.targets, result.hits, result.reactions) == (3, 2, 0)
    assert result.false_alarms == 0
    assert_allclose(result.alarm_fraction, tau, rtol=1e-9)
    assert_allclose(result.probability_gain, (2 / 3) / tau, rtol=1e-9)
    assert_allclose(result.p_binomial, stats.binom.sf(1, 3, tau), rtol=1e-12)
    assert_allclose(
        result.hit_rate_interval,
        [stats.beta.ppf(0.025, 2, 2), stats.beta.ppf(0.975, 3, 1)],
        rtol=1e-12,
    )
    assert [t["status"] for t in result.target_list] == ["hit", "miss", "hit"]
    assert [round(t["lead_time_h"], 6) for t in result.hit_list] == [10.0, 12.0]


def test_reference_window_sets_the_cover():
    short = evaluate_reference(CATALOG, FARM, MONITORED, EvaluationParams(n_shifts=0), window_h=5)
    assert short.hits == 0
    assert_allclose(short.alarm_fraction, 2 * 5 / 240, rtol=1e-9)


def test_conditional_test_counts_targets_the_reference_misses():
    params = EvaluationParams(n_shifts=400, seed=3)
    animals = pd.DataFrame(
        {  # declared 01-05 20:00, covers to 01-06 17:00: hits the M 4.2 the reference missed
            "start": [ts("2017-01-05 19:15")],
            "declared_at": [ts("2017-01-05 20:00")],
            "end": [ts("2017-01-05 21:00")],
        }
    )
    animal = evaluate(animals, CATALOG, FARM, MONITORED, params)
    reference = evaluate_reference(CATALOG, FARM, MONITORED, params)
    result = conditional_test(animal, reference, MONITORED, params)
    assert (result["both"], result["animals_only"], result["reference_only"]) == (1, 1, 1)
    assert (result["neither"], result["targets"], result["hits"]) == (0, 1, 1)
    # the animal cover (21 h) overlaps the reference cover from 01-06 00:00 to 17:00; 4 h
    # of it lie in the 200 h of monitored time outside the reference cover
    assert_allclose(result["alarm_fraction"], 4 / 200, rtol=1e-9)
    assert_allclose(result["p_binomial"], 4 / 200, rtol=1e-9)
    assert 0 < result["p_shift"] <= 1 and result["p_shift_reason"] is None
    itself = conditional_test(reference, reference, MONITORED, params)
    assert itself["targets"] == 1 and itself["p_binomial_reason"] == NO_ANIMAL_TIME
    only_hits = quakes(("2017-01-02 00:00", 10.0, 3.0), ("2017-01-02 10:00", 40.0, 4.5))
    animal = evaluate(animals, only_hits, FARM, MONITORED, params)
    reference = evaluate_reference(only_hits, FARM, MONITORED, params)
    covered = conditional_test(animal, reference, MONITORED, params)
    assert covered["targets"] == 0 and covered["p_binomial"] is None
    assert covered["p_binomial_reason"] == REFERENCE_HITS_ALL
