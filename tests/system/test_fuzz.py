"""Bad input (smoke size of ``make chaos`` item 4): no decoder crashes, every reject has
a reason, and the live ingest service dead-letters every bad payload while valid
traffic flowing at the same time is stored completely."""

from __future__ import annotations

import pytest

from namazu.server.ingest.payload import REASONS
from tests.chaos import fuzz
from tests.conftest import require_data


def _no_crashes(report: fuzz.FuzzReport) -> None:
    assert report.crashes == [], f"{report.line()}\nfirst crash: {report.crashes[0]}"


def test_payload_decoder_survives_generated_payloads():
    report = fuzz.fuzz_payload_decoder(1500, seed=11)
    _no_crashes(report)
    assert report.cases == 1500
    assert report.accepted >= 300  # the valid fifth, at least
    assert set(report.rejected) <= set(REASONS)
    assert len(report.rejected) >= 7  # the generator reaches most reason codes


def test_collar_frame_decoder_survives_corrupt_frames():
    report = fuzz.fuzz_frame_decoder(1500, seed=12)
    _no_crashes(report)
    assert report.accepted >= 250 and sum(report.rejected.values()) >= 1000
    assert {"bad_crc", "truncated", "wrong_length", "bad_magic"} <= set(report.rejected)


def test_catalogue_readers_survive_mutated_real_files():
    names = [
        "catalogs/central_italy_2016-10_2017-04_bsi.csv",
        "catalogs/comcat_2023-03-24_2023-03-31_m2.5.csv",
        "catalogs/fdsn_text_ingv_emilia_2012-05-29.txt",
        "catalogs/usgs_significant_month_2023-02-27.geojson",
        "catalogs/quakeml_usgs_event_obspy.xml",
        "wikelski2020/catalog_2017-01-17_2017-04-16.csv",
    ]
    texts = {}
    for name in names:
        lines = require_data(name).read_text(encoding="utf-8").splitlines()
        texts[name] = "\n".join(lines[:60])
    report = fuzz.fuzz_catalog_reader(texts, 600, seed=13)
    _no_crashes(report)
    assert report.accepted > 0 and sum(report.rejected.values()) > 0


def test_activity_readers_survive_mutated_real_files():
    activity = require_data("wikelski2020/activity_2017-01-17_2017-04-14.csv")
    lines = activity.read_text(encoding="utf-8").splitlines()
    text = "\n".join(lines[:1] + lines[6400:6520])  # across the 2017-03-26 DST change
    report = fuzz.fuzz_activity_reader(text, 300, seed=14)
    _no_crashes(report)
    assert report.accepted > 0 and sum(report.rejected.values()) > 0

    gulls = require_data("movebank/gulls_study985143423_events.csv")
    movebank = "\n".join(gulls.read_text(encoding="utf-8").splitlines()[:120])
    report = fuzz.fuzz_movebank_reader(movebank, 120, seed=15)
    _no_crashes(report)
    assert report.accepted > 0 and sum(report.rejected.values()) > 0


@pytest.mark.services
def test_live_ingest_dead_letters_every_bad_payload_and_keeps_valid_traffic(stack, influx):
    outcome = fuzz.fuzz_live_ingest(stack, influx.database, 1200, seed=16)
    assert outcome["cases"] >= 1000
    assert outcome["expected_rejects"] >= 700
    # every bad payload dead-lettered exactly once, with the reason the decoder gives
    assert outcome["dead_letters"] == outcome["expected_rejects"]
    assert outcome["mismatched"] == 0
    assert outcome["rejected"] == outcome["expected_rejects"]
    # valid traffic flowing at the same time is stored completely; the service lives
    assert outcome["valid_stored"] == outcome["valid_expected"] > 0
    assert outcome["connected"]
