"""The local replay service answers the project's own FDSN client like a real service."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd

from namazu.analytics.geo import great_circle_km
from namazu.server.catalogue.fdsn import FdsnClient
from namazu.server.catalogue.fdsn_replay import ReplayFdsnServer, shift_catalog
from namazu.server.catalogue.files import read_catalog
from tests.conftest import require_data


def test_replayed_study_catalogue_round_trips_through_fdsn_client():
    catalog = read_catalog(require_data("wikelski2020/catalog_2017-01-17_2017-04-16.csv"))
    first_day = catalog[catalog["time"] < pd.Timestamp("2017-01-19T00:00:00Z")]
    shifted = shift_catalog(first_day, timedelta(days=3000))
    now = shifted["time"].max() + pd.Timedelta(hours=1)
    server = ReplayFdsnServer(shifted, published_at=now).start()
    try:
        client = FdsnClient(server.base_url, backoff_s=0)
        got = client.query(now - pd.Timedelta(days=3), now, minmagnitude=4.0)
        expected = shifted[shifted["magnitude"] >= 4.0]
        assert len(got) == len(expected) > 0
        assert (got["time"].to_numpy() == expected["time"].to_numpy()).all()
        assert got["event_id"].str.startswith("replay-").all()
        assert got["event_id"].is_unique
        everything = client.query(now - pd.Timedelta(days=3), now)
        near = client.query(
            now - pd.Timedelta(days=3), now, latitude=43.0147, longitude=13.0509, maxradius_km=20
        )
        within = great_circle_km(43.0147, 13.0509, everything["latitude"], everything["longitude"])
        assert len(near) == int((within <= 20).sum()) < len(everything)
        nothing_new = client.query(now - pd.Timedelta(days=3), now, updatedafter=now)
        assert nothing_new.empty  # 204: nothing published after ``now``
    finally:
        server.stop()
