"""Catalogue parsers on every real sample file, plus malformed-input errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose

from namazu.analytics.catalog import (
    CATALOG_COLUMNS,
    CatalogFormatError,
    merge_near_duplicates,
    parse_catalog,
    parse_comcat_csv,
    parse_fdsn_text,
    parse_quakeml,
    parse_study_csv,
    sniff_format,
)
from tests.conftest import require_data


def _read(relpath: str) -> str:
    return require_data(relpath).read_text(encoding="utf-8")


def _assert_schema(frame: pd.DataFrame) -> None:
    assert tuple(frame.columns) == CATALOG_COLUMNS
    assert str(frame["time"].dtype) == "datetime64[ns, UTC]"
    for name in ("latitude", "longitude", "depth_km", "magnitude"):
        assert frame[name].dtype == np.float64, name
    for name in ("mag_type", "event_id", "source"):
        assert all(isinstance(v, str) for v in frame[name]), name
    assert frame["time"].is_monotonic_increasing
    assert list(frame.index) == list(range(len(frame)))


def _row(frame: pd.DataFrame, when: str) -> pd.Series:
    hits = frame[frame["time"] == pd.Timestamp(when)]
    assert len(hits) == 1, f"expected one event at {when}, found {len(hits)}"
    return hits.iloc[0]


@pytest.mark.parametrize(
    ("relpath", "fmt", "count"),
    [
        ("catalogs/fdsn_text_ingv_emilia_2012-05-29.txt", "fdsn-text", 8),
        ("catalogs/fdsn_text_iris_style_obspy.txt", "fdsn-text", 2),
        ("catalogs/comcat_2023-03-24_2023-03-31_m2.5.csv", "comcat-csv", 289),
        ("catalogs/usgs_significant_month_2023-02-27.geojson", "geojson", 14),
        ("catalogs/quakeml_iris_events_obspy.xml", "quakeml", 2),
        ("catalogs/quakeml_ingv_25883681_ussita_2021-01-01.xml", "quakeml", 1),
        ("catalogs/central_italy_2016-10_2017-04_bsi.csv", "csep-csv", 7927),
        ("wikelski2020/catalog_2016-10-29_2016-11-07.csv", "study-csv", 5304),
        ("wikelski2020/catalog_2017-01-17_2017-04-16.csv", "study-csv", 18018),
    ],
)
def test_every_real_file_is_sniffed_and_parsed(relpath: str, fmt: str, count: int) -> None:
    text = _read(relpath)
    assert sniff_format(text) == fmt
    frame = parse_catalog(text)
    _assert_schema(frame)
    assert len(frame) == count


def test_ingv_fdsn_text_14_columns_newest_first() -> None:
    frame = parse_fdsn_text(_read("catalogs/fdsn_text_ingv_emilia_2012-05-29.txt"))
    first, last = frame.iloc[0], frame.iloc[-1]
    assert first["event_id"] == "863051"  # the file lists it last (newest first)
    assert first["time"] == pd.Timestamp("2012-05-29T23:44:09.16Z")
    assert_allclose(
        [first["latitude"], first["longitude"], first["depth_km"]], [44.8613, 11.2023, 8.0]
    )
    assert last["event_id"] == "863301"
    assert_allclose(last["magnitude"], 2.1)
    assert set(frame["mag_type"]) == {"ML"}
    assert set(frame["source"]) == {"fdsn-text/REMO-INGV"}
    assert_allclose([frame["magnitude"].min(), frame["magnitude"].max()], [1.9, 2.9])


def test_iris_fdsn_text_spaced_header_and_empty_fields() -> None:
    frame = parse_fdsn_text(_read("catalogs/fdsn_text_iris_style_obspy.txt"))
    sumatra = _row(frame, "2012-04-11T08:38:37Z")
    assert sumatra["mag_type"] == "MW" and sumatra["source"] == "fdsn-text/ISC"
    assert_allclose([sumatra["magnitude"], sumatra["depth_km"]], [8.6, 26.3])
    chile = _row(frame, "1960-05-22T19:11:14Z")
    assert chile["mag_type"] == "" and chile["source"] == "fdsn-text"
    assert_allclose(
        [chile["latitude"], chile["longitude"], chile["magnitude"]], [-38.17, -72.57, 8.5]
    )


def test_comcat_csv_montagano_event() -> None:
    frame = parse_comcat_csv(_read("catalogs/comcat_2023-03-24_2023-03-31_m2.5.csv"))
    event = _row(frame, "2023-03-28T21:52:45.073Z")
    assert event["mag_type"] == "mwr" and event["event_id"] == "us6000k0fj"
    assert_allclose(
        [event["magnitude"], event["latitude"], event["longitude"], event["depth_km"]],
        [4.7, 41.6564, 14.6553, 8.416],
    )
    assert frame["time"].iloc[0] == pd.Timestamp("2023-03-24T00:30:20.870Z")
    assert frame["time"].iloc[-1] == pd.Timestamp("2023-03-31T10:33:54.868Z")
    assert (frame["source"] == "comcat-csv/us").sum() >= 150


def test_geojson_turkiye_doublet_and_units() -> None:
    frame = parse_catalog(_read("catalogs/usgs_significant_month_2023-02-27.geojson"))
    big = frame[frame["magnitude"] >= 7.5]
    assert len(big) == 2
    assert (big["time"].dt.strftime("%Y-%m-%d") == "2023-02-06").all()
    assert frame["mag_type"].value_counts()["mww"] == 9
    first = frame.iloc[0]
    assert first["event_id"] == "us6000jk0t"
    assert_allclose(
        [first["longitude"], first["latitude"], first["depth_km"]], [44.9108, 38.4216, 16.0]
    )


def test_quakeml_ingv_ussita_preferred_origin_in_metres() -> None:
    frame = parse_quakeml(_read("catalogs/quakeml_ingv_25883681_ussita_2021-01-01.xml"))
    event = frame.iloc[0]
    assert event["time"] == pd.Timestamp("2021-01-01T01:49:33.65Z")
    assert_allclose(
        [event["latitude"], event["longitude"], event["depth_km"]], [42.9332, 13.1192, 8.9]
    )
    assert_allclose(event["magnitude"], 0.8)
    assert event["mag_type"] == "ML" and event["event_id"] == "25883681"


def test_quakeml_iris_depth_heuristic_km() -> None:
    text = _read("catalogs/quakeml_iris_events_obspy.xml")
    frame = parse_quakeml(text)
    tohoku = _row(frame, "2011-03-11T05:46:24.12Z")
    assert_allclose([tohoku["depth_km"], tohoku["magnitude"]], [29.0, 9.1])
    assert tohoku["mag_type"] == "MW" and tohoku["event_id"] == "3279407"
    sulu = _row(frame, "2006-09-10T04:26:33.61Z")
    assert_allclose([sulu["depth_km"], sulu["magnitude"]], [9.0, 9.8])
    forced_metres = parse_quakeml(text, depth_unit="m")
    assert_allclose(sorted(forced_metres["depth_km"]), [0.009, 0.029])


def test_quakeml_usgs_quarry_blasts_dropped_unless_asked() -> None:
    text = _read("catalogs/quakeml_usgs_event_obspy.xml")
    assert parse_quakeml(text).empty
    frame = parse_quakeml(text, earthquakes_only=False)
    assert len(frame) == 2  # ci37285320 (quarry_blast) and uw60916552 (quarry)
    blast = frame.iloc[0]
    assert blast["event_id"] == "ci37285320"  # publicID carries an escaped &amp;amp;
    assert blast["time"] == pd.Timestamp("2014-11-06T00:24:42.240Z")
    assert_allclose([blast["depth_km"], blast["magnitude"]], [0.010, 1.54])
    assert blast["mag_type"] == "ml"


def test_csep_bsi_norcia_and_near_duplicates() -> None:
    frame = parse_catalog(_read("catalogs/central_italy_2016-10_2017-04_bsi.csv"))
    norcia = frame[frame["event_id"] == "8863681"].iloc[0]
    assert norcia["time"].floor("s") == pd.Timestamp("2016-10-30T06:40:17Z")
    assert_allclose(norcia["magnitude"], 6.2)
    assert (frame["magnitude"] >= 4).sum() == 44
    merged = merge_near_duplicates(frame)
    assert len(frame) - len(merged) == 3
    kept = merged[
        (merged["time"] > "2016-10-26T17:10:35Z") & (merged["time"] < "2016-10-26T17:10:38Z")
    ]
    assert_allclose(kept["magnitude"].to_numpy(), [5.2])  # the larger magnitude is kept
    loose = merge_near_duplicates(frame, max_km=1.0)
    assert len(frame) - len(loose) == 2  # the 3.1 km pair is no longer merged


def test_study_catalogues_spot_values() -> None:
    octnov = parse_study_csv(_read("wikelski2020/catalog_2016-10-29_2016-11-07.csv"))
    mainshock = _row(octnov, "2016-10-30T06:40:17Z")
    assert_allclose(mainshock["magnitude"], 6.5)
    assert (octnov["magnitude"] >= 4).sum() == 26
    janapr = parse_study_csv(_read("wikelski2020/catalog_2017-01-17_2017-04-16.csv"))
    assert janapr["time"].iloc[0] == pd.Timestamp("2017-01-17T00:11:37Z")
    assert (janapr["magnitude"] >= 4).sum() == 13
    assert_allclose(janapr["magnitude"].max(), 5.5)
    same_second = janapr[janapr["time"] == pd.Timestamp("2017-02-12T17:13:55Z")]
    assert_allclose(sorted(same_second["magnitude"]), [1.2, 1.4])
    assert len(merge_near_duplicates(same_second)) == 1


def test_project_csv_keeps_newest_revision() -> None:
    text = (
        "time,latitude,longitude,depth_km,magnitude,mag_type,event_id,source,revision_time\n"
        "2024-01-01T00:00:00Z,43.0,13.0,9.0,3.1,ML,e1,fdsn-text/INGV,2024-01-01T00:05:00Z\n"
        "2024-01-01T00:00:00.5Z,43.01,13.0,8.0,3.4,Mw,e1,fdsn-text/INGV,2024-01-02T00:00:00Z\n"
        "2024-01-01T01:00:00Z,43.0,13.0,,2.0,ML,e2,fdsn-text/INGV,2024-01-01T01:05:00Z\n"
    )
    frame = parse_study_csv(text)
    _assert_schema(frame)
    assert list(frame["event_id"]) == ["e1", "e2"]
    assert_allclose(frame["magnitude"], [3.4, 2.0])
    assert np.isnan(frame["depth_km"].iloc[1])


@pytest.mark.parametrize(
    ("text", "fmt", "message"),
    [
        ("#EventID|Time|Latitude|Longitude\n1|2020-01-01T00:00:00|91|10\n", "fdsn-text", "line 2"),
        ("#EventID|Time|Latitude|Longitude\n1|2020-01-01|43|x\n", "fdsn-text", "'longitude'"),
        ("#EventID|Time|Latitude|Longitude\n1|2020-01-01|43\n", "fdsn-text", "3 fields"),
        ("#EventID|Time|Latitude|Longitude\n1|yesterday|43|13\n", "fdsn-text", "'yesterday'"),
        ("EventID|Time\n", "fdsn-text", "header"),
        ("#EventID|Time|Depth/km\n", "fdsn-text", "latitude"),
        (
            "time,latitude,longitude,mag\n2020-01-01,43,13,\n2020-01-02,,13,2\n",
            "study-csv",
            "line 3",
        ),
        ("lon,lat,mag,time_string\n13,43,2.0,2016-13-45T00:00:00\n", "csep-csv", "line 2"),
        ('{"type": "FeatureCollection"}', "geojson", "features"),
        (
            '{"features": [{"properties": {"time": "x"}, "geometry": {"coordinates": [1, 2]}}]}',
            "geojson",
            "feature 0",
        ),
        ("<q:quakeml xmlns:q='x'><event></q:quakeml>", "quakeml", "malformed"),
        ("<!DOCTYPE x [<!ENTITY a 'b'>]><x/>", "quakeml", "DOCTYPE"),
        ("just some words\n", None, "unrecognised"),
        ("", None, "empty"),
    ],
)
def test_bad_input_names_what_is_wrong(text: str, fmt: str | None, message: str) -> None:
    with pytest.raises(CatalogFormatError, match=message):
        parse_catalog(text, fmt)


def test_unknown_format_names_valid_ones() -> None:
    with pytest.raises(CatalogFormatError, match="valid formats: fdsn-text, comcat-csv"):
        parse_catalog("time,latitude,longitude\n", "shapefile")


def test_header_only_gives_empty_catalogue() -> None:
    frame = parse_fdsn_text("#EventID|Time|Latitude|Longitude|Depth/km|MagType|Magnitude\n")
    _assert_schema(frame)
    assert frame.empty


def test_merge_chain_and_limits() -> None:
    base = pd.Timestamp("2020-05-01T12:00:00Z")
    frame = pd.DataFrame(
        {
            "time": [
                base,
                base + pd.Timedelta(seconds=1.5),
                base + pd.Timedelta(seconds=3.0),
                base + pd.Timedelta(seconds=10),
            ],
            "latitude": [43.0, 43.0, 43.0, 43.0],
            "longitude": [13.0, 13.03, 13.06, 13.0],  # 0.03 deg lon ~ 2.4 km at 43 N
            "depth_km": [5.0, 5.0, 5.0, 5.0],
            "magnitude": [2.0, np.nan, 3.0, 1.0],
            "mag_type": ["ML"] * 4,
            "event_id": ["a", "b", "c", "d"],
            "source": ["x"] * 4,
        }
    )
    merged = merge_near_duplicates(frame)
    assert list(merged["event_id"]) == ["c", "d"]  # a-b-c chained, c has the largest M
    assert len(merge_near_duplicates(frame, max_km=2.0)) == 4
    assert len(merge_near_duplicates(frame, max_dt_s=1.0)) == 4
    with pytest.raises(ValueError, match="max_dt_s"):
        merge_near_duplicates(frame, max_dt_s=-1)
