"""Geodesy and Gardner-Knopoff declustering."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose

from namazu.analytics.decluster import gardner_knopoff, gk_distance_window_km, gk_time_window_days
from namazu.analytics.geo import dobrovolsky_radius_km, great_circle_km, hypocentral_km
from tests.conftest import require_data

FARM = (43.0147, 13.0509)


def test_great_circle_known_distances():
    # one degree of latitude on the 6371 km sphere, and a quarter of the equator
    assert_allclose(great_circle_km(0, 0, 1, 0), 6371.0 * np.pi / 180)
    assert_allclose(great_circle_km(0, 0, 0, 90), 6371.0 * np.pi / 2)
    assert_allclose(great_circle_km(10, 20, 10, 20), 0.0, atol=1e-9)
    assert_allclose(great_circle_km([0, 0], [0, 0], [0, 1], [1, 0]), [111.195] * 2, rtol=1e-4)


def test_hypocentral_and_dobrovolsky():
    assert_allclose(hypocentral_km(3.0, 3.42, elevation_km=0.58), 5.0)
    assert_allclose(dobrovolsky_radius_km([4.0, 5.0]), [10**1.72, 10**2.15])


def test_distances_agree_with_study_catalogue_columns():
    """The study computed distances in a local north/east frame; great circle agrees."""
    raw = pd.read_csv(require_data("wikelski2020/catalog_2017-01-17_2017-04-16.csv"))
    epicentral = great_circle_km(*FARM, raw["latitude"], raw["longitude"])
    difference = np.abs(epicentral - raw["epicentral_distance_km"])
    # coordinates carry 3 decimals (about 0.1 km), so sub-kilometre agreement is the limit
    assert difference.max() < 0.4
    assert np.median(difference) < 0.05
    far = raw["epicentral_distance_km"] > 20
    assert (difference[far] / raw["epicentral_distance_km"][far]).max() < 0.01
    hypocentral = hypocentral_km(epicentral, raw["depth_km"], elevation_km=0.580)
    assert np.abs(hypocentral - raw["hypocentral_distance_km"]).max() < 0.4


def test_gk_windows_match_van_stiphout_table():
    assert_allclose(gk_distance_window_km(5.0), 10 ** (0.1238 * 5 + 0.983))
    assert_allclose(
        gk_time_window_days([5.0, 7.0]), [10 ** (0.5409 * 5 - 0.547), 10 ** (0.032 * 7 + 2.7389)]
    )


def _events(rows):
    return pd.DataFrame(rows, columns=["time", "latitude", "longitude", "magnitude"]).assign(
        time=lambda f: pd.to_datetime(f["time"], utc=True)
    )


def test_gardner_knopoff_on_hand_built_sequence():
    catalog = _events(
        [
            ("2017-01-01 00:00", 43.00, 13.00, 3.0),  # before the mainshock: kept (no foreshocks)
            ("2017-01-01 12:00", 43.00, 13.00, 5.5),  # mainshock: t(5.5) ~ 270 d, d(5.5) ~ 46 km
            ("2017-01-02 00:00", 43.10, 13.10, 4.0),  # 14 km away, next day: aftershock
            ("2017-01-03 00:00", 44.50, 13.00, 4.0),  # 167 km away: independent
            ("2017-01-05 00:00", 43.05, 13.00, 5.6),  # larger than the 5.5: not its aftershock
        ]
    )
    mask = gardner_knopoff(catalog)
    # the 5.6 is processed first: the 5.5 precedes it (kept), the 4.0 on day 2 precedes it too;
    # the 5.5 then claims the day-2 4.0 as its aftershock
    assert list(mask) == [True, True, False, True, True]
    with_foreshocks = gardner_knopoff(catalog, foreshock_fraction=1.0)
    assert list(with_foreshocks) == [False, False, False, True, True]


def test_gardner_knopoff_on_the_2017_catalogue():
    from namazu.server.catalogue.files import read_catalog

    catalog = read_catalog(require_data("wikelski2020/catalog_2017-01-17_2017-04-16.csv"))
    mask = gardner_knopoff(catalog)
    strong = catalog["magnitude"] >= 4.0
    # the 18 January sequence collapses onto its M 5.5 and the earlier M 5.1
    jan18 = strong & (catalog["time"].dt.strftime("%Y-%m-%d") == "2017-01-18")
    assert list(catalog.loc[jan18 & mask, "magnitude"]) == [5.1, 5.5]
    assert mask.sum() < 0.05 * len(catalog)  # an aftershock sequence: most events dependent


def _north(*rows) -> pd.DataFrame:
    """rows: (time, km north of the farm, magnitude)."""
    return pd.DataFrame(
        {
            "time": pd.to_datetime([r[0] for r in rows], utc=True).as_unit("ns"),
            "latitude": [FARM[0] + r[1] / 111.195 for r in rows],
            "longitude": [FARM[1]] * len(rows),
            "magnitude": [r[2] for r in rows],
        }
    )


def test_window_tables_known_values():
    from namazu.analytics.decluster import decluster_windows

    d, t = decluster_windows("uhrhammer", [4.0, 6.5])
    assert_allclose(d, np.exp(-1.024 + 0.804 * np.array([4.0, 6.5])))
    assert_allclose(d[0], 8.95310142, rtol=1e-8)  # the value OpenQuake's tests pin
    assert_allclose(t, np.exp(-2.87 + 1.235 * np.array([4.0, 6.5])))  # days
    d, t = decluster_windows("gruenthal", [4.0])
    assert_allclose(d, [44.65825539], rtol=1e-8)
    assert_allclose(t / 365.0, [0.22553603], rtol=1e-7)  # years in OpenQuake's test
    d, t = decluster_windows("gardner-knopoff", [4.0])
    assert_allclose(np.ravel([d, t]), [gk_distance_window_km(4.0), gk_time_window_days(4.0)])
    with pytest.raises(KeyError, match="valid windows: gardner-knopoff, uhrhammer, gruenthal"):
        decluster_windows("reasenberg", [4.0])


def test_foreshock_option_and_window_choice():
    # the M 4.0 22 min before the M 4.2, 1 km apart (like 3 February 2017)
    pair = _north(("2017-02-03 03:48", 3.5, 4.0), ("2017-02-03 04:10", 4.5, 4.2))
    assert gardner_knopoff(pair).tolist() == [True, True]
    assert gardner_knopoff(pair, foreshock_fraction=0.5).tolist() == [False, True]
    # 25 km, 5 days after an M 5: inside GK's windows (40 km, 144 d), outside Uhrhammer's (20 km)
    later = _north(("2017-01-01 00:00", 0.0, 5.0), ("2017-01-06 00:00", 25.0, 3.0))
    assert gardner_knopoff(later).tolist() == [True, False]
    assert gardner_knopoff(later, window="uhrhammer").tolist() == [True, True]


def test_history_catalogue_marks_later_events_as_aftershocks():
    from namazu.analytics.decluster import with_history

    history = _north(("2016-10-30 06:40", 10.0, 6.5), ("2017-02-03 04:10", 4.5, 4.2))
    scored = _north(("2017-02-03 03:48", 3.5, 4.0), ("2017-02-03 04:10", 4.5, 4.2))
    assert gardner_knopoff(scored).tolist() == [True, True]
    # the history's own copy of the scored span is not added twice
    assert with_history(scored, history).tolist() == [False, False]
    assert with_history(scored, history.iloc[1:]).tolist() == [True, True]
