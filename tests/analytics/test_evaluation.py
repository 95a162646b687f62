"""Association and scores on hand-built alarms and catalogues with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose
from scipy import stats

from namazu.analytics.evaluation import (
    NO_ALARMS,
    NO_TARGETS,
    EvaluationInputError,
    Intervals,
    binomial_confidence_curve,
    binomial_pvalue,
    circular_shift_hits,
    circular_shift_pvalue,
    clopper_pearson,
    evaluate,
    gain_interval,
    merge_intervals,
    monitored_intervals,
    period_intervals,
    shift_offsets_ns,
)
from namazu.analytics.params import EvaluationParams

FARM = (43.0, 13.0)
H = 3600 * 10**9


def ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def ns(text: str) -> int:
    return ts(text).value


def window(start: str, end: str) -> Intervals:
    return Intervals(np.array([ns(start)]), np.array([ns(end)]))


def alarms(*rows):
    """rows: (start, end), declared at the start, or (start, declared_at, end)."""
    full = [(r[0], r[0], r[1]) if len(r) == 2 else r for r in rows]
    return pd.DataFrame(
        {
            "start": [ts(a) for a, _, _ in full],
            "declared_at": [ts(d) for _, d, _ in full],
            "end": [ts(b) for _, _, b in full],
        }
    )


def quakes(*rows):
    """rows: (time, km north of the farm, magnitude)."""
    return pd.DataFrame(
        {
            "time": pd.to_datetime([r[0] for r in rows], utc=True),
            "latitude": [FARM[0] + r[1] / 111.195 for r in rows],
            "longitude": [FARM[1]] * len(rows),
            "depth_km": [10.0] * len(rows),
            "magnitude": [r[2] for r in rows],
        }
    )


NO_SHIFTS = EvaluationParams(n_shifts=0)


def test_merge_and_contains():
    merged = merge_intervals(np.array([0, 5, 20, 3]), np.array([4, 10, 30, 6]))
    assert list(merged.start) == [0, 20] and list(merged.end) == [10, 30]
    assert list(merged.contains(np.array([-1, 0, 9, 10, 25, 30]))) == [0, 1, 1, 0, 1, 0]
    cut = merged.intersect(Intervals(np.array([8, 22]), np.array([21, 40])))
    assert list(cut.start) == [8, 20, 22] and list(cut.end) == [10, 21, 30]


def test_monitored_time_bridges_short_gaps_only():
    index = pd.date_range("2017-01-01", periods=12, freq="1h", tz="UTC")
    judged = np.array([0, 1, 1, 0, 1, 1, 0, 0, 0, 0, 1, 1], dtype=bool)
    monitored = monitored_intervals(index, judged, "1h", max_gap_h=1.0)
    # cells 01-03 and 04-06 joined across the 1 h gap; the 4 h gap is not monitored
    assert monitored.as_frame()["start"].dt.hour.tolist() == [1, 10]
    assert monitored.as_frame()["end"].dt.hour.tolist() == [6, 12]
    assert monitored.total_ns == 7 * H


def test_hit_miss_false_alarm_tau_gain_and_binomial():
    monitored = window("2017-01-01", "2017-01-11")  # 240 h
    catalog = quakes(
        ("2017-01-03 10:00", 5.0, 4.5),  # hit by the first alarm (cover up to 01-03 12:00)
        ("2017-01-06 00:00", 5.0, 4.2),  # miss
        ("2017-01-08 00:00", 80.0, 4.0),  # outside the Dobrovolsky radius (52 km): no target
        ("2017-01-09 00:00", 5.0, 3.9),  # too small: no target
        ("2017-01-20 00:00", 5.0, 5.0),  # outside monitored time: no target
    )
    table = alarms(
        ("2017-01-02 14:00", "2017-01-02 16:00"), ("2017-01-07 00:00", "2017-01-07 04:00")
    )
    result = evaluate(table, catalog, FARM, monitored, NO_SHIFTS)
    assert (result.targets, result.hits, result.misses, result.false_alarms) == (2, 1, 1, 1)
    assert_allclose(result.alarm_fraction, (22 + 24) / 240, rtol=1e-9)  # episode + 20 h each
    assert_allclose(result.probability_gain, 0.5 / (46 / 240), rtol=1e-9)
    assert_allclose(result.p_binomial, stats.binom.sf(0, 2, 46 / 240), rtol=1e-9)
    assert result.miss_rate == 0.5
    (hit,) = result.hit_list
    assert_allclose(hit["lead_time_h"], 20.0)
    assert_allclose(hit["hours_after_alarm_end"], 18.0)
    assert_allclose(hit["distance_km"], 5.0, rtol=1e-3)
    assert result.as_dict()["p_shift"] is None  # no shifts requested


def test_cover_ends_exactly_lead_window_after_episode_end():
    monitored = window("2017-01-01", "2017-01-05")
    table = alarms(("2017-01-02 00:00", "2017-01-02 01:00"))
    on_edge = evaluate(table, quakes(("2017-01-02 21:00", 1.0, 4.0)), FARM, monitored, NO_SHIFTS)
    after = evaluate(table, quakes(("2017-01-02 21:00:01", 1.0, 4.0)), FARM, monitored, NO_SHIFTS)
    assert (on_edge.hits, after.hits) == (1, 0)


def test_fixed_radius_replaces_dobrovolsky():
    monitored = window("2017-01-01", "2017-01-05")
    catalog = quakes(("2017-01-02 00:00", 40.0, 4.0))
    assert evaluate([], catalog, FARM, monitored, NO_SHIFTS).targets == 1
    fixed = EvaluationParams(n_shifts=0, fixed_radius_km=30.0)
    assert evaluate([], catalog, FARM, monitored, fixed).targets == 0


def test_reaction_alarms_are_removed_before_scoring():
    monitored = window("2017-01-01", "2017-01-11")
    catalog = quakes(
        ("2017-01-03 09:30", 10.0, 2.6),  # local shaking
        ("2017-01-03 20:00", 10.0, 4.5),  # target inside the reaction alarm's cover
    )
    table = alarms(("2017-01-03 10:00", "2017-01-03 11:00"))  # starts 30 min after shaking
    result = evaluate(table, catalog, FARM, monitored, NO_SHIFTS)
    assert (result.reactions, result.alarms, result.hits, result.false_alarms) == (1, 0, 0, 0)
    assert result.alarm_fraction == 0.0
    late = alarms(("2017-01-03 10:31", "2017-01-03 11:00"))  # 61 min after: a precursor
    result = evaluate(late, catalog, FARM, monitored, NO_SHIFTS)
    assert (result.reactions, result.hits) == (0, 1)
    far = EvaluationParams(n_shifts=0, reaction_radius_km=5.0)
    assert evaluate(table, catalog, FARM, monitored, far).reactions == 0


def test_declustering_drops_aftershock_targets():
    monitored = window("2017-01-01", "2017-01-11")
    catalog = quakes(("2017-01-02 00:00", 5.0, 5.0), ("2017-01-04 00:00", 6.0, 4.5))
    table = alarms(("2017-01-03 12:00", "2017-01-03 13:00"))
    plain = evaluate(table, catalog, FARM, monitored, NO_SHIFTS)
    declustered = evaluate(table, catalog, FARM, monitored, NO_SHIFTS, declustered=True)
    assert (plain.targets, plain.hits) == (2, 1)
    assert (declustered.targets, declustered.hits) == (1, 0)
    assert declustered.declustered


def test_shift_zero_reproduces_observed_hits_and_wraps():
    monitored = Intervals(np.array([0, 100]), np.array([50, 150]))  # circle of length 100
    cover = Intervals(np.array([40]), np.array([50]))
    targets = np.array([45, 105])  # clock positions 45 and 55
    hits = circular_shift_hits(cover, targets, monitored, np.array([0, 10, 60, 95, -50]))
    # shift 10 moves the cover to clock [50, 60); shift 60 wraps it to [0, 10); 95 to [35, 45)
    assert list(hits) == [1, 1, 0, 0, 0]


def test_empirical_p_is_uniform_for_random_alarms():
    """Alarms placed at random, independently of a fixed catalogue, must give shift p-values
    spread evenly over (0, 1]: about 10 % at or below 0.1, half at or below 0.5, and a
    distribution that a Kolmogorov-Smirnov test cannot tell from U(0, 1)."""
    rng = np.random.default_rng(20170118)
    monitored = window("2017-01-01", "2017-04-01")
    lead_ns = int(EvaluationParams().lead_window_h * H)
    # 300 targets and 30 one-hour alarms per set: ~70 hits, so the hit count (and p) takes
    # many values
    targets = np.sort(rng.integers(ns("2017-01-01"), ns("2017-04-01"), 300))
    n_sets, n_alarms, n_shifts = 200, 30, 199
    p_values, hits = [], []
    for k in range(n_sets):
        starts = np.sort(rng.integers(ns("2017-01-01"), ns("2017-03-31"), n_alarms))
        cover = merge_intervals(starts, starts + H + lead_ns).intersect(monitored)
        observed = int(circular_shift_hits(cover, targets, monitored, np.array([0]))[0])
        p = circular_shift_pvalue(cover, targets, monitored, observed, n_shifts, seed=k)
        assert 1 / (n_shifts + 1) <= p <= 1.0
        p_values.append(p)
        hits.append(observed)
        if k == 0:  # the same p as the full evaluation of these alarms and targets
            table = pd.DataFrame({"start": pd.to_datetime(starts, utc=True)})
            table["end"] = table["declared_at"] = table[
                "start"
            ]  # one sample: cover = [start, start + lead window)
            catalog = quakes(*[(str(pd.Timestamp(t, tz="UTC")), 40.0, 4.5) for t in targets])
            params = EvaluationParams(n_shifts=n_shifts, seed=k)
            full = evaluate(table, catalog, FARM, monitored, params)
            cover_one = merge_intervals(starts, starts + lead_ns).intersect(monitored)
            hits_one = int(circular_shift_hits(cover_one, targets, monitored, np.array([0]))[0])
            assert full.hits == hits_one
            assert full.p_shift == circular_shift_pvalue(
                cover_one, targets, monitored, hits_one, n_shifts, seed=k
            )
    p = np.array(p_values)
    assert len(set(hits)) >= 20, "the hit counts vary enough for p to take many values"
    for level in (0.1, 0.5):
        low, high = stats.binom.interval(0.999, n_sets, level)
        assert low <= np.count_nonzero(p <= level) <= high, level
    assert stats.kstest(p, "uniform").pvalue > 0.001


def test_empirical_p_is_one_without_hits_and_small_for_perfect_alarms():
    rng = np.random.default_rng(3)
    monitored = window("2017-01-01", "2017-04-01")
    times = pd.to_datetime(rng.integers(ns("2017-01-02"), ns("2017-03-30"), 8), utc=True)
    catalog = quakes(*[(str(t), 5.0, 4.5) for t in times])
    missing = alarms(("2017-03-31 01:00", "2017-03-31 02:00"))  # after the last event
    none = evaluate(missing, catalog, FARM, monitored, EvaluationParams(n_shifts=2000, seed=1))
    assert none.hits == 0 and none.p_shift == 1.0  # every shift has at least 0 hits
    perfect = alarms(*[(str(t - pd.Timedelta("1h")), str(t - pd.Timedelta("1h"))) for t in times])
    strong = evaluate(perfect, catalog, FARM, monitored, EvaluationParams(n_shifts=2000, seed=1))
    assert strong.hits == 8 and strong.p_shift < 0.01 and strong.p_binomial < 1e-6


def test_binomial_curve_and_p():
    assert binomial_pvalue(0, 5, 0.2) == 1.0
    assert_allclose(binomial_pvalue(5, 5, 0.2), 0.2**5)
    assert np.isnan(binomial_pvalue(0, 0, 0.2))
    curve = binomial_confidence_curve(10, alpha=0.05)
    tau = curve["tau"].to_numpy()
    nu = curve["nu"].to_numpy()
    i = np.searchsorted(tau, 0.1)
    # at tau = 0.1 and N = 10, h = 4 gives p = 0.0128 <= 0.05 and h = 3 gives 0.0702
    assert_allclose(nu[i], 1 - 4 / 10)
    assert np.isnan(nu[-1])  # tau = 1: nothing beats a guess
    with pytest.raises(EvaluationInputError):
        binomial_confidence_curve(0)


def test_periods_stratify_monitored_time():
    periods = pd.DataFrame(
        {
            "start": [ts("2017-01-01"), ts("2017-01-06")],
            "end": [ts("2017-01-06"), ts("2017-01-11")],
            "label": ["stable", "pasture"],
        }
    )
    parts = period_intervals(periods)
    monitored = window("2017-01-02", "2017-01-09")
    stable = monitored.intersect(parts["stable"])
    assert stable.total_ns == 4 * 24 * H
    table = alarms(
        ("2017-01-03 00:00", "2017-01-03 01:00"), ("2017-01-07 00:00", "2017-01-07 01:00")
    )
    result = evaluate(table, quakes(("2017-01-07 05:00", 1.0, 4.0)), FARM, stable, NO_SHIFTS)
    assert (result.alarms, result.targets, result.false_alarms) == (1, 0, 1)
    bad = periods.assign(end=periods["start"])
    with pytest.raises(EvaluationInputError, match="stable"):
        period_intervals(bad)


# ------------------------------------------------------------------ evaluation v2


def test_cover_and_lead_time_start_at_the_declaration():
    monitored = window("2017-01-01", "2017-01-11")
    table = alarms(("2017-01-03 10:00", "2017-01-03 10:45", "2017-01-03 12:00"))
    # 40 km: beyond the local-shaking radius (30 km), inside the Dobrovolsky radius (86 km)
    before = evaluate(table, quakes(("2017-01-03 10:44", 40.0, 4.5)), FARM, monitored, NO_SHIFTS)
    at = evaluate(table, quakes(("2017-01-03 10:45", 40.0, 4.5)), FARM, monitored, NO_SHIFTS)
    assert (before.hits, at.hits) == (0, 1)
    assert at.hit_list[0]["lead_time_h"] == 0.0
    assert at.hit_list[0]["alarm_declared_at"] == "2017-01-03T10:45:00+00:00"
    assert_allclose(at.alarm_fraction, (21.25) / 240)  # 10:45 to 12:00 + 20 h


def test_shaking_up_to_the_declaration_makes_a_reaction():
    monitored = window("2017-01-01", "2017-01-11")
    table = alarms(("2017-01-03 10:00", "2017-01-03 10:45", "2017-01-03 12:00"))
    for when, reaction in [
        ("2017-01-03 08:59:59", False),  # more than 60 min before the first sample
        ("2017-01-03 09:00", True),
        ("2017-01-03 10:30", True),  # during the run, before the rule could know it
        ("2017-01-03 10:45", True),  # at the declaration
        ("2017-01-03 10:45:01", False),  # after it: the alarm was already out
    ]:
        result = evaluate(table, quakes((when, 10.0, 2.6)), FARM, monitored, NO_SHIFTS)
        assert result.reactions == int(reaction), when


def test_clopper_pearson_and_gain_interval_known_answers():
    assert_allclose(clopper_pearson(1, 1, 0.05), (0.025, 1.0), rtol=1e-12)
    assert_allclose(clopper_pearson(0, 2, 0.05), (0.0, 1 - 0.025**0.5), rtol=1e-12)
    # h = 5 of N = 10: the textbook (0.187, 0.813)
    assert_allclose(clopper_pearson(5, 10, 0.05), (0.18709, 0.81291), atol=5e-6)
    # coverage of the exact interval is at least 95 % for every p (here N = 12)
    for p in np.linspace(0.01, 0.99, 25):
        h = np.arange(13)
        inside = [lo <= p <= hi for lo, hi in (clopper_pearson(int(k), 12) for k in h)]
        assert stats.binom.pmf(h, 12, p)[inside].sum() >= 0.95 - 1e-12
    assert_allclose(gain_interval(1, 1, 0.038), (0.025 / 0.038, 1 / 0.038), rtol=1e-12)
    assert np.isnan(gain_interval(1, 1, 0.0)).all() and np.isnan(clopper_pearson(0, 0)).all()


def test_undefined_p_values_are_null_with_the_reason():
    monitored = window("2017-01-01", "2017-01-11")
    catalog = quakes(("2017-01-05 00:00", 5.0, 4.5))
    params = EvaluationParams(n_shifts=200)
    no_alarm = evaluate(alarms(), catalog, FARM, monitored, params).as_dict()
    assert no_alarm["p_binomial"] is None and no_alarm["p_shift"] is None
    assert no_alarm["p_binomial_reason"] == no_alarm["p_shift_reason"] == NO_ALARMS
    assert no_alarm["gain_interval"] == [None, None]
    no_target = evaluate(
        alarms(("2017-01-02 00:00", "2017-01-02 01:00")), quakes(), FARM, monitored, params
    ).as_dict()
    assert no_target["p_binomial_reason"] == NO_TARGETS and no_target["p_shift"] is None
    missed = evaluate(
        alarms(("2017-01-08 00:00", "2017-01-08 01:00")), catalog, FARM, monitored, params
    )
    assert missed.p_binomial == 1.0 and missed.p_shift == 1.0  # defined: 0 hits is likely
    assert missed.p_binomial_reason is None and missed.p_shift_reason is None


def test_power_is_the_p_of_a_perfect_record():
    """Two targets 22 min apart: almost every shift that covers one covers both, so a
    perfect record's shift p is about τ, while the binomial p is τ**2."""
    monitored = window("2017-01-01", "2017-04-01")
    catalog = quakes(("2017-02-03 03:48", 3.5, 4.0), ("2017-02-03 04:10", 3.7, 4.2))
    table = alarms(("2017-03-15 11:00", "2017-03-15 11:45", "2017-03-15 13:00"))
    params = EvaluationParams(n_shifts=4000, seed=7)
    result = evaluate(table, catalog, FARM, monitored, params)
    tau = result.alarm_fraction
    assert_allclose(result.perfect_p_binomial, tau**2, rtol=1e-12)
    shifts = shift_offsets_ns(monitored.total_ns, params.n_shifts, params.seed)
    both = circular_shift_hits(result.cover, result.target_ns, monitored, shifts) >= 2
    assert result.perfect_p_shift == (1 + both.sum()) / (1 + params.n_shifts)
    exact = (result.cover.total_ns - 22 * 60 * 10**9) / monitored.total_ns
    assert abs(result.perfect_p_shift - exact) < 4 * np.sqrt(exact / params.n_shifts)


def test_close_targets_can_count_once():
    monitored = window("2017-01-01", "2017-01-11")
    catalog = quakes(
        ("2017-01-05 03:48", 3.5, 4.0), ("2017-01-05 04:10", 3.7, 4.2), ("2017-01-08 00:00", 3, 4.1)
    )
    table = alarms(("2017-01-05 00:00", "2017-01-05 00:45", "2017-01-05 04:00"))
    plain = evaluate(table, catalog, FARM, monitored, NO_SHIFTS)
    assert (plain.targets, plain.hits) == (3, 2)
    merged = EvaluationParams(n_shifts=0, merge_targets_h=24.0, merge_targets_km=10.0)
    once = evaluate(table, catalog, FARM, monitored, merged)
    assert (once.targets, once.hits) == (2, 1)
    assert once.target_list[0]["time"].startswith("2017-01-05T03:48")  # the earliest counts
    assert [u["status"] for u in once.uncounted] == ["not counted"]
    with pytest.raises(ValueError, match="together"):
        EvaluationParams(merge_targets_h=1.0)


def test_target_statuses():
    monitored = window("2017-01-01", "2017-01-11")
    catalog = quakes(
        ("2017-01-03 09:50", 10.0, 2.6),  # local shaking: the first alarm is a reaction
        ("2017-01-03 20:00", 10.0, 4.5),  # inside the reaction's cover
        ("2017-01-06 20:00", 10.0, 4.5),  # hit by the second alarm
        ("2017-01-09 20:00", 10.0, 4.5),  # miss
        ("2017-01-20 00:00", 10.0, 4.5),  # not monitored
    )
    table = alarms(
        ("2017-01-03 10:00", "2017-01-03 10:45", "2017-01-03 11:00"),
        ("2017-01-06 10:00", "2017-01-06 10:45", "2017-01-06 11:00"),
    )
    result = evaluate(table, catalog, FARM, monitored, NO_SHIFTS, farm_elevation_km=0.58)
    assert [t["status"] for t in result.target_list] == ["reaction cover", "hit", "miss"]
    assert [t["status"] for t in result.uncounted] == ["not monitored"]
    item = result.target_list[1]
    assert_allclose(item["hypocentral_km"], np.hypot(item["distance_km"], 10.58), rtol=1e-12)
    assert_allclose(item["radius_km"], 10 ** (0.43 * 4.5), rtol=1e-12)
    assert_allclose(item["lead_time_h"], 10.0 - 0.75)


def test_alarm_tables_need_a_declaration_time():
    with pytest.raises(EvaluationInputError, match="declared_at"):
        evaluate(
            pd.DataFrame({"start": [ts("2017-01-02")], "end": [ts("2017-01-02")]}),
            quakes(),
            FARM,
            window("2017-01-01", "2017-01-05"),
        )
