"""Bad input (smoke size of ``make chaos`` item 4): no decoder crashes, every reject has
a reason, and the live ingest service dead-letters every bad payload while valid
traffic flowing at the same time is stored completely."""

from __future__ import annotations

import base64
import json
import time
from collections import Counter

import numpy as np
import pytest

from firmware_bridge.payload import activity_topic, encode_activity
from server.influx import InfluxClient
from server.ingest import IngestService
from server.payload import REASONS, PayloadError, decode_activity
from tests.chaos import fuzz
from tests.conftest import require_data
from tests.server.ingest_support import Publisher, make_config, wait_for


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
    now = int(time.time() * 1000)
    cases = [
        (topic, payload)
        for topic, payload in fuzz.payload_cases(1200, seed=16, now_ms=now)
        if topic.startswith("namazu/v1/") and topic.endswith("/activity") and topic.count("/") == 4
    ]
    expected_rejects: Counter[tuple[bytes, str]] = Counter()
    for topic, payload in cases:
        try:
            decode_activity(topic, payload, now, fuzz.MAX_FUTURE_MS, fuzz.MAX_AGE_MS)
        except PayloadError as exc:
            expected_rejects[(payload, exc.reason)] += 1
    n_rejects = sum(expected_rejects.values())

    config = make_config(stack.mqtt_port, stack.influx_url, influx.database)
    service = IngestService(config, InfluxClient(stack.influx_url, influx.database)).start()
    watcher = Publisher(stack.mqtt_port, subscribe="namazu/v1/deadletter/#")
    gateway = Publisher(stack.mqtt_port)
    try:
        assert service.wait_ready(10)
        good_points = 0
        t0 = now - 3 * 86_400_000
        for i, (topic, payload) in enumerate(cases):
            gateway.client.publish(topic, payload, qos=1)
            if i % 10 == 0:  # valid traffic of another farm, interleaved
                n = 20
                animals = [
                    {
                        "animal": "good-cow",
                        "species": "cow",
                        "t_ms": t0 + 60_000 * (good_points + np.arange(n)),
                        "odba": np.full(n, 0.2),
                        "vedba": np.full(n, 0.1),
                    }
                ]
                body = encode_activity("good-farm", "gw-g", i, now, animals)
                gateway.client.publish(activity_topic("good-farm", "gw-g"), body, qos=1)
                good_points += n
        wait_for(
            lambda: len(watcher.received) >= n_rejects,
            timeout_s=60,
            what=f"dead letters ({n_rejects} expected)",
        )
        wait_for(
            lambda: influx.count("activity", "odba", "farm = 'good-farm'") == good_points,
            timeout_s=60,
            what="valid traffic stored",
        )
        time.sleep(0.5)  # nothing more may arrive
        letters = [json.loads(m.payload) for m in watcher.received]
        got = Counter((base64.b64decode(x["payload_b64"]), x["reason"]) for x in letters)
        assert got == expected_rejects  # each bad payload once, with the predicted reason
        assert all(letter["reason"] in REASONS and letter["detail"] for letter in letters)
        assert service.stats["rejected"] == n_rejects
        assert service.stats["connected"]
        assert n_rejects >= 700
    finally:
        watcher.close()
        gateway.close()
        service.stop(end_session=True)
