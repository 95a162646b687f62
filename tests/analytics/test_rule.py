"""The sustained-surge rule on hand-built series with known answers, and its properties."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose

from namazu.analytics.params import RULE_VERSION, RuleParams
from namazu.analytics.rule import (
    SeriesError,
    baseline,
    declaration_time,
    detect,
    detect_matrix,
    episodes_from_flags,
    herd_series,
    quorum_episodes,
    quorum_flags,
    reporting_counts,
    samples_per_day,
    species_series,
)
from tests.budget import examples

DAY = 96  # samples per day at 15 min
T0 = pd.Timestamp("2017-01-01", tz="UTC")


def flat(days: int, value: float = 1.0, step: str = "15min") -> pd.Series:
    """A constant series of whole days on a UTC grid."""
    n = days * samples_per_day(step)
    return pd.Series(value, index=pd.date_range(T0, periods=n, freq=step), name="cow-1")


def test_surge_exactly_at_threshold_gives_exact_episode():
    x = flat(10)
    x.iloc[8 * DAY + 40 : 8 * DAY + 44] = 2.4  # x >= b * 2.4 holds with equality
    x.iloc[8 * DAY + 42] = 3.6
    episodes, comp = detect(x, "15min", return_components=True)
    assert len(episodes) == 1
    ep = episodes[0]
    assert ep.start == x.index[8 * DAY + 40]
    assert ep.end == x.index[8 * DAY + 43]
    assert ep.n_samples == 4
    assert ep.duration_min == 60.0
    assert_allclose([ep.peak_ratio, ep.mean_ratio], [3.6, (2.4 * 3 + 3.6) / 4])
    assert ep.params["rule_version"] == RULE_VERSION
    assert ep.params["increase_pct"] == 140.0
    assert ep.series == "cow-1"
    assert comp["anomalous"].sum() == 4
    assert_allclose(comp["threshold"].iloc[8 * DAY + 40], 2.4)
    assert list(comp.columns) == ["value", "baseline", "threshold", "ratio", "anomalous"]


def test_just_below_threshold_is_not_anomalous():
    x = flat(10)
    x.iloc[8 * DAY + 40 : 8 * DAY + 50] = 2.39
    assert detect(x, "15min") == []


@pytest.mark.parametrize(("run", "expected"), [(2, 0), (3, 1), (4, 1)])
def test_minimum_span_is_end_minus_start_plus_step(run, expected):
    x = flat(10)
    x.iloc[9 * DAY : 9 * DAY + run] = 5.0
    episodes = detect(x, "15min")
    assert len(episodes) == expected
    if expected:
        assert episodes[0].duration_min == 15.0 * run


@pytest.mark.parametrize(
    ("step", "min_duration", "label", "after_start"),
    [
        ("15min", 45.0, "start", "45min"),  # 3 samples; the third ends 45 min after start
        ("15min", 45.0, "end", "30min"),  # the third sample is labelled by its end
        ("15min", 50.0, "start", "60min"),  # 4 samples needed: 60 min >= 50 min
        ("1min", 45.0, "start", "45min"),
        ("1h", 45.0, "start", "1h"),  # one sample already spans 60 min
        ("1h", 45.0, "end", "0min"),
    ],
)
def test_declared_at_is_the_end_of_the_sample_that_reaches_min_duration(
    step, min_duration, label, after_start
):
    per_day = samples_per_day(step)
    x = flat(10, step=step)
    run = 6 * per_day // 24  # six hours of anomalous samples
    x.iloc[9 * per_day : 9 * per_day + run] = 5.0
    params = RuleParams(min_duration_min=min_duration, sample_label=label)
    (episode,) = detect(x, step, params)
    assert episode.start == T0 + pd.Timedelta(days=9)
    assert episode.declared_at == episode.start + pd.Timedelta(after_start)
    assert episode.declared_at == declaration_time(episode.start, step, params)
    assert episode.start <= episode.declared_at <= episode.end + pd.Timedelta(step)
    assert episode.as_dict()["declared_at"] == episode.declared_at.isoformat()
    assert episode.params["sample_label"] == label


def test_sample_label_must_be_start_or_end():
    with pytest.raises(ValueError, match="sample_label must be one of start, end"):
        RuleParams(sample_label="middle")


def test_one_minute_resolution_needs_45_samples():
    x = flat(8, step="1min")
    x.iloc[7 * 1440 + 100 : 7 * 1440 + 144] = 3.0  # 44 min
    x.iloc[7 * 1440 + 300 : 7 * 1440 + 345] = 3.0  # 45 min
    episodes = detect(x, "1min")
    assert [e.n_samples for e in episodes] == [45]
    assert episodes[0].start == x.index[7 * 1440 + 300]


@pytest.mark.parametrize("how", ["nan", "dropped"])
def test_missing_sample_breaks_a_run(how):
    x = flat(10)
    x.iloc[9 * DAY : 9 * DAY + 6] = 5.0
    if how == "nan":
        x.iloc[9 * DAY + 3] = np.nan  # 3 anomalous, missing, 2 anomalous
    else:
        x = x.drop(x.index[9 * DAY + 3])
    episodes = detect(x, "15min")
    assert len(episodes) == 1
    assert episodes[0].start == T0 + pd.Timedelta(days=9)
    assert episodes[0].n_samples == 3


def test_baseline_needs_three_of_seven_previous_days():
    x = flat(10)
    x.iloc[:DAY] = np.nan
    x.iloc[3 * DAY : 7 * DAY] = np.nan  # history: days 1 and 2 only
    x.iloc[7 * DAY + 10 : 7 * DAY + 14] = 9.0  # day 7 sees days 1, 2: undefined
    x.iloc[8 * DAY + 10 : 8 * DAY + 14] = 9.0  # day 8 sees days 1, 2 and 7: defined
    b = baseline(x, "15min")
    assert np.isnan(b.iloc[7 * DAY + 10])
    assert_allclose(b.iloc[8 * DAY + 10], 1.0)  # median(1, 1, day 7 = 9) = 1
    episodes = detect(x, "15min")
    assert [e.start for e in episodes] == [x.index[8 * DAY + 10]]
    with_two = detect(x, "15min", RuleParams(min_baseline_days=2))
    assert [e.start for e in with_two] == [x.index[7 * DAY + 10], x.index[8 * DAY + 10]]


def test_baseline_is_median_of_previous_days_only():
    x = flat(10)
    for day, value in enumerate([100.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]):
        x.iloc[day * DAY : (day + 1) * DAY] = value
    b = baseline(x, "15min")
    assert np.isnan(b.iloc[2 * DAY])  # two previous days
    assert_allclose(b.iloc[3 * DAY + 5], 2.0)  # median(100, 1, 2)
    assert_allclose(b.iloc[4 * DAY], 2.5)  # median(100, 1, 2, 3): even count, mean of middle
    assert_allclose(b.iloc[8 * DAY], 4.0)  # days 1..7: day 0 (100) is 8 days back
    assert_allclose(b.iloc[9 * DAY + 95], 5.0)  # days 2..8; the current day (9) never counts


def test_zero_baseline():
    x = flat(9, value=0.0)
    x.iloc[8 * DAY : 8 * DAY + 3] = 0.1
    episodes = detect(x, "15min")
    assert len(episodes) == 1 and episodes[0].peak_ratio == np.inf
    assert detect(flat(9, value=0.0), "15min") == []


def test_dst_day_in_rome_is_plain_utc():
    """Input in Europe/Rome across the 2017-03-26 spring change: times are UTC inside."""
    utc_index = pd.date_range("2017-03-15", "2017-04-05", freq="15min", tz="UTC", inclusive="left")
    rome_index = utc_index.tz_convert("Europe/Rome")
    assert (rome_index.hour == 2).sum() < (rome_index.hour == 3).sum()  # 02:xx local skipped
    rng = np.random.default_rng(5)
    values = rng.lognormal(size=len(utc_index))
    in_rome = detect(pd.Series(values, index=rome_index), "15min")
    in_utc = detect(pd.Series(values, index=utc_index), "15min")
    assert in_rome == in_utc
    assert all(e.start.tzname() == "UTC" for e in in_rome)


def test_local_routine_shifts_an_hour_in_utc_after_dst():
    """A 07:00-08:00 local routine moves from 06 to 05 UTC; known consequence of UTC days.

    Before 2017-03-26 the baseline at 05:00 UTC is quiet (1), so the routine is anomalous
    there (3 >= 2.4) until at least 4 of the 7 previous days carry it: alarms on
    26, 27, 28 and 29 March, none on the 30th.
    """
    index = pd.date_range("2017-03-10", "2017-04-03", freq="15min", tz="UTC", inclusive="left")
    local = index.tz_convert("Europe/Rome")
    values = np.where(local.hour == 7, 3.0, 1.0)
    episodes = detect(pd.Series(values, index=index), "15min")
    days = [str(e.start.date()) for e in episodes]
    assert days == ["2017-03-26", "2017-03-27", "2017-03-28", "2017-03-29"]
    assert all(e.start.hour == 5 and e.n_samples == 4 for e in episodes)


def test_local_baseline_clock_follows_the_routine_across_dst():
    """The same 07:00-08:00 local routine with ``baseline_clock`` local: no alarm after the
    spring change (26 March 2017) nor after the autumn change (29 October 2017)."""
    rome = RuleParams(baseline_clock="local", clock_timezone="Europe/Rome")
    for first, last in (("2017-03-10", "2017-04-03"), ("2017-10-15", "2017-11-08")):
        index = pd.date_range(first, last, freq="15min", tz="UTC", inclusive="left")
        values = pd.Series(np.where(index.tz_convert("Europe/Rome").hour == 7, 3.0, 1.0), index)
        assert detect(values, "15min", rome) == [], first
        base = baseline(values, "15min", rome)
        routine = index.tz_convert("Europe/Rome").hour == 7
        judged = base.notna().to_numpy()
        assert (base[routine & judged] == 3.0).all() and (base[~routine & judged] == 1.0).all()


def test_local_baseline_takes_the_same_wall_time_on_previous_days():
    index = pd.date_range("2017-03-20", "2017-03-30", freq="1h", tz="UTC", inclusive="left")
    rng = np.random.default_rng(3)
    values = pd.Series(rng.lognormal(size=len(index)), index)
    rome = RuleParams(baseline_clock="local", clock_timezone="Europe/Rome")
    base = baseline(values, "1h", rome)
    local = index.tz_convert("Europe/Rome")
    by_wall = {t.tz_localize(None): v for t, v in zip(local, values, strict=True)}
    for t, got in zip(local, base, strict=True):
        previous = [by_wall.get(t.tz_localize(None) - pd.Timedelta(days=k)) for k in range(1, 8)]
        previous = [v for v in previous if v is not None]
        expected = np.median(previous) if len(previous) >= 3 else np.nan
        assert_allclose(got, expected, equal_nan=True)
    same = RuleParams(baseline_clock="local", clock_timezone="UTC")
    assert_allclose(baseline(values, "1h", same), baseline(values, "1h"), equal_nan=True)
    with pytest.raises(ValueError, match="baseline_clock local needs the sample times"):
        detect_matrix(values.to_numpy(), 24, rome)
    with pytest.raises(SeriesError, match="does not divide the UTC-offset changes"):
        baseline(values.resample("2h").mean(), "2h", rome)


def test_detect_matrix_matches_brute_force_median():
    rng = np.random.default_rng(7)
    x = rng.lognormal(size=(3, 20 * 24))
    x[rng.random(x.shape) < 0.25] = np.nan
    for days, need in [(7, 3), (4, 4), (10, 1)]:
        params = RuleParams(baseline_days=days, min_baseline_days=need)
        flags, base = detect_matrix(x, 24, params)
        expected = np.full(x.shape, np.nan)
        for t in range(x.shape[1]):
            lagged = np.stack(
                [
                    x[:, t - k * 24] if t >= k * 24 else np.full(3, np.nan)
                    for k in range(1, days + 1)
                ]
            )
            ok = np.isfinite(lagged).sum(axis=0) >= need
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                expected[ok, t] = np.nanmedian(lagged[:, ok], axis=0)
        assert_allclose(base, expected, equal_nan=True)
        with np.errstate(invalid="ignore"):
            assert np.array_equal(flags, x >= expected * 2.4)


@settings(max_examples=examples(40), deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    factor=st.floats(1e-3, 1e3),
    missing=st.floats(0.0, 0.3),
)
def test_scaling_by_a_positive_constant_changes_no_alarm(seed, factor, missing):
    rng = np.random.default_rng(seed)
    index = pd.date_range(T0, periods=12 * DAY, freq="15min")
    x = rng.lognormal(sigma=0.8, size=len(index))
    x[rng.random(len(index)) < missing] = np.nan
    series = pd.Series(x, index=index)
    plain = detect(series, "15min")
    scaled = detect(series * factor, "15min")
    assert [(e.start, e.end, e.n_samples) for e in plain] == [
        (e.start, e.end, e.n_samples) for e in scaled
    ]
    assert_allclose([e.peak_ratio for e in plain], [e.peak_ratio for e in scaled])


@settings(max_examples=examples(40), deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    cut=st.integers(DAY, 12 * DAY - 1),
    missing=st.floats(0.0, 0.3),
)
def test_appending_data_never_changes_an_earlier_alarm(seed, cut, missing):
    rng = np.random.default_rng(seed)
    index = pd.date_range(T0, periods=12 * DAY, freq="15min")
    x = rng.lognormal(sigma=0.8, size=len(index))
    x[rng.random(len(index)) < missing] = np.nan
    full, full_comp = detect(pd.Series(x, index=index), "15min", return_components=True)
    head, head_comp = detect(pd.Series(x[:cut], index=index[:cut]), "15min", return_components=True)
    n = len(head_comp)
    assert head_comp["anomalous"].equals(full_comp["anomalous"].iloc[:n])
    assert_allclose(head_comp["baseline"], full_comp["baseline"].iloc[:n], equal_nan=True)
    last = index[cut - 1]
    closed = [e for e in head if e.end < last]
    assert all(e in full for e in closed)
    for open_episode in (e for e in head if e.end == last):
        assert any(e.start == open_episode.start for e in full)


def test_incremental_window_equals_full_run():
    rng = np.random.default_rng(11)
    index = pd.date_range(T0, periods=30 * 1440, freq="1min")
    series = pd.Series(rng.lognormal(sigma=0.6, size=len(index)), index=index)
    series.iloc[25 * 1440 : 25 * 1440 + 50] = 10.0
    params = RuleParams()
    new_from = T0 + pd.Timedelta(days=24)
    window_start = new_from - pd.Timedelta(days=params.baseline_days, minutes=45)
    window = detect(series[series.index >= window_start], "1min", params)
    full = detect(series, "1min", params)
    assert [e for e in window if e.start >= new_from] == [e for e in full if e.start >= new_from]
    assert any(e.start == index[25 * 1440] for e in full)


def test_input_errors_are_named():
    x = flat(2)
    with pytest.raises(SeriesError, match="no time zone"):
        detect(x.tz_localize(None), "15min")
    with pytest.raises(SeriesError, match="not sorted"):
        detect(x.iloc[::-1], "15min")
    with pytest.raises(SeriesError, match="duplicated sample time"):
        detect(pd.concat([x.iloc[:3], x.iloc[2:5]]), "15min")
    shifted = x.copy()
    shifted.index = shifted.index.where(np.arange(len(x)) != 5, x.index[5] + pd.Timedelta("1min"))
    with pytest.raises(SeriesError, match="not on the 0 days 00:15:00 grid"):
        detect(shifted, "15min")
    with pytest.raises(SeriesError, match="does not divide 24 h"):
        detect(x, "7min")
    with pytest.raises(SeriesError, match="not a time step"):
        detect(x, "soon")


def test_episodes_from_flags_on_gappy_index():
    index = pd.DatetimeIndex(
        [
            "2017-01-01 00:00",
            "2017-01-01 00:15",
            "2017-01-01 00:30",
            "2017-01-01 01:00",
            "2017-01-01 01:15",
            "2017-01-01 01:30",
            "2017-01-01 01:45",
        ],
        tz="UTC",
    )
    flags = np.array([True, True, True, True, True, True, False])
    episodes = episodes_from_flags(flags, index, "15min")
    assert [(e.start.minute, e.end.hour, e.end.minute, e.n_samples) for e in episodes] == [
        (0, 0, 30, 3),
        (0, 1, 30, 3),
    ]
    assert np.isnan(episodes[0].peak_ratio)


def _herd() -> pd.DataFrame:
    index = pd.date_range(T0, periods=10 * DAY, freq="15min")
    wide = pd.DataFrame(1.0, index=index, columns=["a", "b", "c", "d"])
    return wide


def test_herd_and_species_series_and_reporting():
    wide = _herd().iloc[:4].copy()
    wide.iloc[1, 0] = np.nan
    wide.iloc[2, :] = np.nan
    assert list(reporting_counts(wide)) == [4, 3, 0, 4]
    assert_allclose(herd_series(wide).to_numpy(), [4.0, 3.0, np.nan, 4.0])
    assert_allclose(herd_series(wide, missing="scale").to_numpy(), [4.0, 4.0, np.nan, 4.0])
    groups = species_series(wide, {"a": "cow", "b": "cow", "c": "dog", "d": "sheep"})
    assert list(groups.columns) == ["cow", "dog", "sheep"]
    assert_allclose(groups["cow"].to_numpy(), [2.0, 1.0, np.nan, 2.0])
    with pytest.raises(KeyError, match="no species given for animals: d"):
        species_series(wide, {"a": "cow", "b": "cow", "c": "dog"})
    with pytest.raises(ValueError, match="missing must be"):
        herd_series(wide, missing="zero")


def test_quorum_needs_half_of_judged_animals_for_45_min():
    wide = _herd()
    start = 9 * DAY + 20
    wide.iloc[start : start + 3, :2] = 3.0  # 2 of 4 animals for 45 min: quorum 0.5 met
    wide.iloc[start + 40 : start + 46, 0] = 3.0  # 1 of 4 for 90 min: not met
    episodes, comp = quorum_episodes(wide, "15min", return_components=True)
    assert [(e.start, e.n_samples, e.series) for e in episodes] == [
        (wide.index[start], 3, "quorum")
    ]
    assert comp["judged"].iloc[start] == 4 and comp["anomalous"].iloc[start] == 2
    assert quorum_episodes(wide, "15min", RuleParams(quorum=0.75)) == []
    # animals without a value are not judged: with c and d silent, 1 of 2 meets the quorum
    wide.iloc[start + 40 : start + 46, 2:] = np.nan
    later = quorum_episodes(wide, "15min")
    assert [e.start for e in later] == [wide.index[start], wide.index[start + 40]]


def test_quorum_flags_counts_only_judged_animals_and_needs_enough_of_them():
    # 4 animals x 5 samples; judged = value and baseline defined
    anomalous = np.array(
        [[1, 1, 0, 1, 1], [1, 0, 0, 1, 0], [0, 0, 0, 1, 0], [0, 0, 1, 1, 0]], dtype=bool
    )
    judged = np.array(
        [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0]], dtype=bool
    )
    flags, n_judged, n_anomalous = quorum_flags(anomalous, judged, 0.5, return_components=True)
    assert n_judged.tolist() == [4, 4, 3, 2, 1]
    # animal 3 at sample 3 and animal 4 at samples 2-3 are anomalous but not judged
    assert n_anomalous.tolist() == [2, 1, 0, 2, 1]
    assert flags.tolist() == [True, False, False, True, True]
    # too few judged animals: never a quorum, however many of them are anomalous
    assert quorum_flags(anomalous, judged, 0.5, min_judged=2).tolist() == [
        True, False, False, True, False,
    ]  # fmt: skip
    # nobody judged is not a quorum even with min_judged = 0
    assert not quorum_flags(anomalous, np.zeros_like(judged), 0.5, min_judged=0).any()
    with pytest.raises(ValueError, match="same 2-D shape"):
        quorum_flags(anomalous, judged[:, :3], 0.5)
