"""Baselines and episodes across daylight-saving changes and leap days.

Everything inside the rule is UTC, so neither the 2017-03-26 spring change in
Europe/Rome (23-hour local day), the 2017-10-29 autumn change (25-hour local day,
02:00-03:00 twice) nor 29 February may open a gap, shift a baseline or raise an alarm.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.testing import assert_allclose

from namazu.analytics.params import RuleParams
from namazu.analytics.rule import baseline, detect
from tests.conftest import require_data

ROME = "Europe/Rome"


def _independent_baseline(values: pd.Series, at: pd.Timestamp, days: int = 7) -> float:
    """Median of the values exactly k * 24 h earlier, k = 1..days (brute force)."""
    lagged = [values.get(at - pd.Timedelta(days=k)) for k in range(1, days + 1)]
    lagged = [v for v in lagged if v is not None and np.isfinite(v)]
    return float(np.median(lagged)) if len(lagged) >= 3 else float("nan")


def test_real_2017_activity_baseline_across_rome_spring_change():
    """The 2017 farm data (15 min, UTC) across 2017-03-26: every baseline is defined and
    equals the brute-force median of the seven previous days."""
    path = require_data("wikelski2020/activity_2017-01-17_2017-04-14.csv")
    frame = pd.read_csv(path)
    times = pd.to_datetime(frame["time"], format="%Y-%m-%dT%H:%M:%S").dt.tz_localize("UTC")
    cows = pd.Series(frame["cow"].to_numpy(), index=pd.DatetimeIndex(times), name="cow")
    cows = cows["2017-01-18":"2017-04-13"]  # the authors' complete middle segment

    base = baseline(cows, "15min")
    window = base["2017-03-25":"2017-03-27"]
    assert len(window) == 3 * 96  # UTC days have 96 quarter hours, DST or not
    assert window.notna().all()
    # the local clock jumps 02:00 -> 03:00 at 01:00 UTC; check the samples around it
    for stamp in pd.date_range("2017-03-26T00:00Z", "2017-03-26T03:00Z", freq="15min"):
        assert_allclose(base[stamp], _independent_baseline(cows, stamp), rtol=1e-12)
    # the same data read through Rome local time gives the identical baseline
    in_rome = cows.copy()
    in_rome.index = cows.index.tz_convert(ROME)
    assert_allclose(baseline(in_rome, "15min").to_numpy(), base.to_numpy(), equal_nan=True)


def test_real_2017_data_are_not_rome_local_time():
    """The file carries 02:00 and 02:15 on 2017-03-26, which do not exist in Rome local
    time: read as local time, pandas refuses those rows instead of guessing."""
    path = require_data("wikelski2020/activity_2017-01-17_2017-04-14.csv")
    frame = pd.read_csv(path)
    naive = pd.DatetimeIndex(pd.to_datetime(frame["time"], format="%Y-%m-%dT%H:%M:%S"))
    missing = naive[(naive >= "2017-03-26 02:00") & (naive < "2017-03-26 03:00")]
    assert len(missing) == 4
    localised = naive.tz_localize(ROME, nonexistent="NaT", ambiguous="NaT")
    assert set(naive[localised.isna()]) >= set(missing)


def _minute_series(start: str, end: str, seed: int) -> pd.Series:
    index = pd.date_range(start, end, freq="1min", tz="UTC", inclusive="left")
    local_hour = index.tz_convert(ROME).hour.to_numpy()
    rng = np.random.default_rng(seed)
    daily = 1.0 + 0.3 * np.cos(2 * np.pi * (local_hour - 13) / 24)  # gentle daily cycle
    return pd.Series(daily * rng.lognormal(0.0, 0.05, len(index)), index=index, name="cow-1")


def _surge(series: pd.Series, local_start: str, minutes: int, factor: float) -> pd.Series:
    start = pd.Timestamp(local_start, tz=ROME).tz_convert("UTC")
    out = series.copy()
    out[start : start + pd.Timedelta(minutes=minutes - 1)] *= factor
    return out


def test_spring_change_day_opens_no_alarm_and_finds_a_real_surge_at_the_right_hour():
    """Minute data in Rome local rhythm across 2017-03-26: no spurious alarm; a 60-minute
    surge at 10:00 local (= 08:00 UTC on that day) is found at 08:00 UTC."""
    series = _minute_series("2017-03-16", "2017-03-30", seed=1)
    assert detect(series, "1min") == []
    local_day = series.index.tz_convert(ROME)
    assert (local_day.date == pd.Timestamp("2017-03-26").date()).sum() == 23 * 60

    surged = _surge(series, "2017-03-26 10:00", 60, 4.0)
    episodes = detect(surged, "1min")
    assert len(episodes) == 1
    assert episodes[0].start == pd.Timestamp("2017-03-26T08:00Z")
    assert episodes[0].duration_min == 60.0


def test_autumn_change_repeated_hour_is_a_regular_utc_grid():
    """2017-10-29: local 02:00-02:59 occurs twice; in UTC it is two distinct hours, so the
    baseline stays defined and a surge in the second 02:xx (01:xx UTC) is found once."""
    series = _minute_series("2017-10-20", "2017-11-02", seed=2)
    local = series.index.tz_convert(ROME)
    assert (local.date == pd.Timestamp("2017-10-29").date()).sum() == 25 * 60
    base = baseline(series, "1min")
    assert base["2017-10-29"].notna().all()
    assert detect(series, "1min") == []

    start = pd.Timestamp("2017-10-29T01:00Z")  # 02:00 CET, the second 02:00 local
    surged = series.copy()
    surged[start : start + pd.Timedelta(minutes=49)] *= 4.0
    (episode,) = detect(surged, "1min")
    assert episode.start == start
    assert episode.start.tz_convert(ROME).strftime("%H:%M %Z") == "02:00 CET"


def test_leap_day_is_an_ordinary_day_for_the_baseline():
    """Around 2016-02-29: the day has 1,440 minutes, counts as one of the seven previous
    days of 1 and 7 March, and a surge on it is detected."""
    series = _minute_series("2016-02-20", "2016-03-09", seed=3)
    assert len(series["2016-02-29"]) == 1440
    base = baseline(series, "1min")
    for stamp in ["2016-03-01T12:00Z", "2016-03-07T00:00Z", "2016-02-29T23:59Z"]:
        at = pd.Timestamp(stamp)
        assert_allclose(base[at], _independent_baseline(series, at), rtol=1e-12)
    # 2016-03-07 12:00 draws on 29 Feb .. 6 Mar: exactly seven days including the leap day
    assert pd.Timestamp("2016-03-07T12:00Z") - pd.Timedelta(days=7) == pd.Timestamp(
        "2016-02-29T12:00Z"
    )
    assert detect(series, "1min") == []

    surged = series.copy()
    surged["2016-02-29T06:00Z":"2016-02-29T06:59Z"] *= 4.0
    (episode,) = detect(surged, "1min", RuleParams())
    assert episode.start == pd.Timestamp("2016-02-29T06:00Z")
    assert episode.n_samples == 60
