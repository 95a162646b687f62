"""Movebank parsing on the real e-obs (albatross), UvA-BiTS (gull) and web-export rows."""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose
from pandas.testing import assert_frame_equal

from namazu.analytics.movebank import (
    MOVEBANK_COLUMN_MAP,
    MOVEBANK_EXPORT_COLUMNS,
    MovebankFormatError,
    activity_to_movebank,
    bursts_to_activity,
    normalise_movebank_columns,
    parse_movebank_events,
)
from tests.conftest import require_data

ALBATROSSES = "movebank/albatrosses_study2911040_events.csv"
GULLS = "movebank/gulls_study985143423_events.csv"


def _events(relpath: str) -> pd.DataFrame:
    return pd.read_csv(require_data(relpath), dtype=str, keep_default_na=False)


def _web_spelling(frame: pd.DataFrame) -> pd.DataFrame:
    """The same rows with Movebank web-export column names (hyphens, colon prefixes)."""
    web = {api: spelling for spelling, api in MOVEBANK_COLUMN_MAP.items() if spelling != api}
    return frame.rename(columns=web)


def test_albatross_eobs_bursts_per_individual() -> None:
    bursts = parse_movebank_events(_events(ALBATROSSES))
    table = bursts.table
    assert len(bursts) == 45  # the 9 GPS rows are ignored
    assert table.groupby("individual").size().to_dict() == {
        i: 5 for i in table["individual"].unique()
    }
    assert table["individual"].nunique() == 9
    assert set(table["axes"]) == {"XY"} and set(table["n_samples"]) == {60}
    assert_allclose(table["sampling_hz"], 5.0)
    assert all(s.shape == (60, 2) for s in bursts.samples)
    first = table[table["individual"] == "4266-84831108"].iloc[0]
    assert first["start"] == pd.Timestamp("2008-07-27T00:00:56Z")
    assert first["tag"] == "134"


def test_albatross_activity_matches_hand_computation() -> None:
    events = _events(ALBATROSSES)
    activity = bursts_to_activity(parse_movebank_events(events))
    assert list(activity.columns) == [
        "individual",
        "time",
        "odba",
        "vedba",
        "n_samples",
        "sampling_hz",
    ]
    assert str(activity["time"].dtype) == "datetime64[ns, UTC]"
    row = events[events["event_id"] == "28245138"].iloc[0]
    raw = np.array(row["eobs_accelerations_raw"].split(), dtype=float).reshape(-1, 2)
    g = (raw - 2048.0) * 0.001  # first-generation e-obs tag 134, high sensitivity
    dynamic = g - g.mean(axis=0)
    expected_odba = np.abs(dynamic).sum(axis=1).mean()
    expected_vedba = np.sqrt((dynamic**2).sum(axis=1)).mean()
    got = activity[
        (activity["individual"] == "4266-84831108")
        & (activity["time"] == pd.Timestamp("2008-07-27T00:00:56Z"))
    ].iloc[0]
    assert_allclose([got["odba"], got["vedba"]], [expected_odba, expected_vedba], rtol=1e-12)
    assert (activity["vedba"] <= activity["odba"]).all()
    assert (activity["odba"] > 0).all()


def test_web_export_spelling_gives_identical_activity() -> None:
    for relpath in (ALBATROSSES, GULLS):
        events = _events(relpath)
        web = _web_spelling(events)
        assert "eobs:accelerations-raw" in web.columns or "acceleration-raw-x" in web.columns
        assert "individual-local-identifier" in web.columns
        assert_frame_equal(
            bursts_to_activity(parse_movebank_events(web)),
            bursts_to_activity(parse_movebank_events(events)),
        )


def test_keyed_by_individual_not_tag() -> None:
    events = _events(ALBATROSSES)
    shared_tag = events.assign(tag_local_identifier="134")  # one tag moved between animals
    activity = bursts_to_activity(parse_movebank_events(shared_tag))
    assert activity["individual"].nunique() == 9
    retagged = events.copy()
    bird = retagged["individual_local_identifier"] == "1163-1163"
    retagged.loc[bird & (retagged["timestamp"] >= "2008-07-27T00:30"), "tag_local_identifier"] = (
        "99"
    )
    bursts = parse_movebank_events(retagged)
    one_bird = bursts.table[bursts.table["individual"] == "1163-1163"]
    assert len(one_bird) == 5 and set(one_bird["tag"]) == {"136", "99"}


def test_gull_expanded_uva_bits_bursts() -> None:
    events = _events(GULLS)
    bursts = parse_movebank_events(events)
    table = bursts.table
    assert len(bursts) == 59
    assert set(table["individual"]) == {"5508292"} and set(table["tag"]) == {"5713"}
    assert set(table["n_samples"]) == {20} and set(table["axes"]) == {"XYZ"}
    assert_allclose(table["sampling_hz"], 20.0)
    assert table["start"].iloc[0] == pd.Timestamp("2021-03-03T00:57:06Z")
    assert_allclose(
        bursts.samples[0][0], [0.10361681329423264, -0.16812015503875968, 1.0473401659346022]
    )
    # static component ~ 1 g while the bird sits: the samples really are in g
    assert_allclose(np.linalg.norm(bursts.samples[0].mean(axis=0)), 1.0, atol=0.15)


def test_gull_raw_counts_without_calibration_match_tilt_within_one_percent() -> None:
    events = _events(GULLS)
    from_tilt = bursts_to_activity(parse_movebank_events(events))
    raw_only = events.drop(columns=["tilt_x", "tilt_y", "tilt_z"])
    from_raw = bursts_to_activity(parse_movebank_events(raw_only))
    assert_allclose(from_raw["odba"], from_tilt["odba"], rtol=1e-2)
    assert_allclose(from_raw["vedba"], from_tilt["vedba"], rtol=1e-2)
    assert not np.allclose(from_raw["odba"], from_tilt["odba"], rtol=1e-6)  # really raw


def test_gull_bursts_found_by_sample_gaps_without_start_timestamp() -> None:
    events = _events(GULLS)
    with_start = bursts_to_activity(parse_movebank_events(events))
    by_gap = bursts_to_activity(parse_movebank_events(events.drop(columns="start_timestamp")))
    assert_frame_equal(by_gap, with_start)


def test_web_export_gps_only_file_is_normalised_and_rejected() -> None:
    path = require_data("movebank/o_assen_export/O_ASSEN-gps-2019.csv.gz")
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        events = pd.read_csv(handle, dtype=str, keep_default_na=False)
    names = normalise_movebank_columns(events).columns
    assert {"individual_local_identifier", "tag_local_identifier", "barometric_pressure"} <= set(
        names
    )
    assert {"gps_dop", "gps_satellite_count", "location_long", "sensor_type"} <= set(names)
    with pytest.raises(MovebankFormatError, match="no acceleration data"):
        parse_movebank_events(events)


def test_invisible_rows_are_dropped() -> None:
    events = _events(GULLS)
    first_burst = events["start_timestamp"] == "2021-03-03T00:57:06.000Z"
    hidden = events.assign(visible=np.where(first_burst, "false", "true"))
    assert len(parse_movebank_events(hidden)) == 58


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda f: f.drop(columns="individual_local_identifier"), "individual_local_identifier"),
        (lambda f: f.assign(individual_local_identifier=""), "empty at lines 3"),
        (
            lambda f: f.assign(
                eobs_accelerations_raw=f["eobs_accelerations_raw"].str.replace(
                    r"(.+)", r"\1 2048", regex=True
                )
            ),
            "121 raw values do not divide into 2 axes",
        ),
        (lambda f: f.assign(eobs_acceleration_axes="XQ"), "not a subset of XYZ"),
        (lambda f: f.assign(eobs_start_timestamp="later"), "'later' is not a time"),
        (
            lambda f: f.assign(
                individual_local_identifier_2=f["individual_local_identifier"]
            ).rename(columns={"individual_local_identifier_2": "individual-local-identifier"}),
            "both spellings",
        ),
    ],
)
def test_bad_input_names_what_is_wrong(edit, message: str) -> None:
    with pytest.raises(MovebankFormatError, match=message):
        parse_movebank_events(edit(_events(ALBATROSSES)))


def test_bad_raw_value_names_the_line() -> None:
    events = _events(GULLS)
    events.loc[5, "acceleration_raw_y"] = "n/a"
    events = events.drop(columns=["tilt_x", "tilt_y", "tilt_z"])
    with pytest.raises(MovebankFormatError, match="'n/a' is not a number"):
        parse_movebank_events(events)


def test_activity_to_movebank_export() -> None:
    activity = bursts_to_activity(parse_movebank_events(_events(ALBATROSSES)))
    meta = {
        "4266-84831108": {"tag": "134", "deployment": "2911170", "taxon": "Phoebastria irrorata"}
    }
    table = activity_to_movebank(activity, "Galapagos Albatrosses", meta)
    assert tuple(table.columns) == MOVEBANK_EXPORT_COLUMNS
    assert len(table) == 45
    row = table[table["individual-local-identifier"] == "4266-84831108"].iloc[0]
    assert row["timestamp"] == "2008-07-27 00:00:56.000"
    assert row["tag-local-identifier"] == "134" and row["deployment-id"] == "2911170"
    assert set(table["sensor-type"]) == {"acceleration"}
    other = table[table["individual-local-identifier"] == "1163-1163"]
    assert set(other["tag-local-identifier"]) == {""}
    assert_allclose(table["odba"], activity["odba"])
    with pytest.raises(MovebankFormatError, match="vedba"):
        activity_to_movebank(activity.drop(columns="vedba"), "s")
