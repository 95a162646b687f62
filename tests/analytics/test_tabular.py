"""Activity and periods table parsing: UTC conversion and one-line errors naming lines."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from namazu.analytics.tabular import TabularError, parse_activity_csv, parse_periods_csv
from tests.conftest import require_data

GOOD = "time,cow,dog\n2017-03-26T00:00:00,1.5,2\n2017-03-26T00:15:00,,3\n"


def test_naive_times_are_utc_and_empty_cells_nan():
    frame = parse_activity_csv(GOOD)
    assert str(frame.index.tz) == "UTC"
    assert frame.index[1] == pd.Timestamp("2017-03-26 00:15", tz="UTC")
    assert np.isnan(frame["cow"].iloc[1]) and frame["dog"].iloc[1] == 3.0
    assert list(parse_activity_csv(GOOD, columns=["dog"]).columns) == ["dog"]


def test_zoned_times_are_converted():
    text = "time,x\n2017-03-26T01:00:00+01:00,1\n2017-03-26T03:00:00+02:00,2\n"
    frame = parse_activity_csv(text)
    assert list(frame.index.hour) == [0, 1]


def test_timezone_localises_and_names_dst_rows():
    text = "time,x\n2017-03-26T01:45:00,1\n2017-03-26T03:00:00,2\n"
    frame = parse_activity_csv(text, timezone="Europe/Rome")
    assert list(frame.index.strftime("%H:%M")) == ["00:45", "01:00"]
    gap = "time,x\n2017-03-26T01:45:00,1\n2017-03-26T02:00:00,2\n2017-03-26T02:15:00,2\n"
    with pytest.raises(TabularError, match=r"nonexistent in Europe/Rome .* line\(s\) 3, 4$"):
        parse_activity_csv(gap, timezone="Europe/Rome")
    autumn = "time,x\n2017-10-29T01:45:00,1\n2017-10-29T02:30:00,2\n"
    with pytest.raises(TabularError, match=r"ambiguous .* line\(s\) 3$"):
        parse_activity_csv(autumn, timezone="Europe/Rome")
    with pytest.raises(TabularError, match="unknown time zone 'Mars/Olympus'"):
        parse_activity_csv(GOOD, timezone="Mars/Olympus")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "activity file is empty"),
        ("when,cow\n2017-01-01T00:00:00,1\n", "no column 'time'; columns present: when, cow"),
        ("time,cow\n2017-01-01T00:15:00,1\n2017-01-01T00:00:00,2\n", r"not sorted: line\(s\) 3"),
        ("time,cow\n2017-01-01T00:00:00,1\n2017-01-01T00:00:00,2\n", r"duplicated on line\(s\) 3"),
        ("time,cow\n2017-01-01T00:00:00,1\nyesterday,2\n", r"unreadable time on line\(s\) 3"),
        ("time,cow\n2017-01-01T00:00:00,lots\n", r"'cow': not a number on line\(s\) 2"),
        ('time,cow\n"2017-01-01,1\n', "not a readable CSV"),
    ],
)
def test_bad_tables_give_one_line_errors(text, message):
    with pytest.raises(TabularError, match=message) as info:
        parse_activity_csv(text)
    assert "\n" not in str(info.value)


def test_missing_value_column_is_named():
    with pytest.raises(TabularError, match="no column 'sheep'"):
        parse_activity_csv(GOOD, columns=["sheep"])


def test_periods():
    text = "start,end,label\n2017-01-17,2017-03-11,stable\n2017-03-11,2017-04-15,pasture\n"
    periods = parse_periods_csv(text)
    assert list(periods["label"]) == ["stable", "pasture"]
    assert periods["end"].iloc[0] == pd.Timestamp("2017-03-11", tz="UTC")
    with pytest.raises(TabularError, match=r"end is not after start on line\(s\) 2"):
        parse_periods_csv("start,end,label\n2017-03-11,2017-01-17,x\n")
    with pytest.raises(TabularError, match="no column 'label'"):
        parse_periods_csv("start,end\n2017-01-01,2017-01-02\n")


def test_study_activity_file():
    path = require_data("wikelski2020/activity_2017-01-17_2017-04-14.csv")
    frame = parse_activity_csv(path.read_text(encoding="utf-8"))
    assert list(frame.columns) == ["cow", "dog", "sheep", "animal"]
    assert len(frame) == 8313
    assert frame.index[0] == pd.Timestamp("2017-01-17 00:15", tz="UTC")
    steps = pd.Series(frame.index).diff().value_counts()
    # the data README: 15-min steps except two gaps (11:45 -> 00:00 and 23:45 -> 12:00)
    assert steps.to_dict() == {pd.Timedelta("15min"): 8310, pd.Timedelta("12h15min"): 2}
