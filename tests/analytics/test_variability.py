"""Spread of a series around its rule baseline (``namazu.analytics.variability``)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from namazu.analytics.params import RuleParams
from namazu.analytics.variability import ratio_variability


def _series(log_values: np.ndarray, start: str = "2024-03-04") -> pd.Series:
    index = pd.date_range(start, periods=log_values.size, freq="15min", tz="UTC")
    daily = 1.0 + 0.5 * np.sin(2 * np.pi * np.arange(log_values.size) / 96)
    return pd.Series(daily * np.exp(log_values), index=index)


def test_a_flat_pattern_has_no_spread_and_hides_no_surge():
    v = ratio_variability(_series(np.zeros(96 * 20)), "15min")
    assert v.samples == 96 * 17  # the first 3 days have no baseline
    assert v.log_ratio_sigma == pytest.approx(0.0, abs=1e-12)
    assert v.surge_unseen == {3.0: 0.0, 4.0: 0.0, 5.0: 0.0}
    assert v.episodes == 0
    assert v.weeks == pytest.approx(17 / 7)


def test_lognormal_noise_gives_its_sigma_and_the_normal_tail():
    rng = np.random.default_rng(4)
    sigma = 0.25
    v = ratio_variability(_series(rng.normal(0.0, sigma, 96 * 60)), "15min")
    # b is a median of 7 noisy values: ln(x/b) spreads a little more than the noise.
    assert sigma < v.log_ratio_sigma < sigma * 1.15
    # x3 unseen where ln(x/b) < ln(2.4/3): the normal tail at that many sigmas.
    expected = 0.5 * math.erfc(-math.log(2.4 / 3) / (v.log_ratio_sigma * math.sqrt(2)))
    assert v.surge_unseen[3.0] == pytest.approx(expected, abs=0.01)
    assert v.surge_unseen[3.0] > v.surge_unseen[4.0] > v.surge_unseen[5.0]
    assert abs(v.lag_correlation[0]) < 0.05  # independent steps


def test_the_series_own_surges_are_counted_as_rule_episodes():
    logs = np.zeros(96 * 14)
    logs[96 * 10 + 40 : 96 * 10 + 44] = math.log(3.0)  # 60 min at x3
    logs[96 * 12 + 10 : 96 * 12 + 12] = math.log(3.0)  # 30 min: too short
    v = ratio_variability(_series(logs), "15min", RuleParams())
    assert v.episodes == 1
    assert v.episodes_per_week == pytest.approx(1 / (11 / 7))


def test_no_baseline_anywhere_gives_nan_not_an_error():
    v = ratio_variability(_series(np.zeros(96 * 2)), "15min")
    assert v.samples == 0 and v.weeks == 0.0
    assert math.isnan(v.log_ratio_sigma) and math.isnan(v.episodes_per_week)
