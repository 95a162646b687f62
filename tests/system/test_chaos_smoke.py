"""Chaos smoke run (short form of ``make chaos`` item 1): 30,000 samples from 3 gateways
through a broker restart, a 3-second InfluxDB stop, an ingest worker killed with
SIGKILL and a gateway cut off the network; afterwards the store holds exactly what was
published, for every (animal, timestamp)."""

from __future__ import annotations

import pytest

from tests.chaos.harness import ChaosPlan, run_chaos


@pytest.mark.services
@pytest.mark.slow
def test_chaos_smoke_loses_nothing_and_duplicates_nothing(tmp_path):
    plan = ChaosPlan(
        gateways=3,
        animals_per_gateway=10,
        samples_per_gateway=10_000,
        duration_s=25.0,
        workers=2,
        broker_restarts=(0.3,),
        broker_down_s=1.0,
        influx_outage=(0.5, 3.0),
        kill_worker_at=0.7,
        worker_restart_s=2.0,
        offline_gateway=(0.2, 0.6),
        ingest_max_pending=200,
        drain_timeout_s=180.0,
    )
    report = run_chaos(plan, tmp_path, log=lambda _line: None)
    print(report.summary())

    assert report.published == 30_000
    for name, counts in report.per_gateway.items():
        assert counts["expected"] == 10_000, name
        assert counts["missing"] == 0, (name, counts)
        assert counts["duplicates"] == 0, (name, counts)
        assert counts["extra"] == 0 and counts["wrong_value"] == 0, (name, counts)
    assert report.stored == report.published and report.lossless
    # the faults really happened: every gateway lost its connection and reconnected
    # (gw-02 was cut off during the broker restart, so it reconnected once, later)
    for name, stats in report.gateway_stats.items():
        assert stats["connects"] >= 2 and stats["disconnects"] >= 1, (name, stats)
    happened = " | ".join(what for _, what in report.events)
    for expected in ("broker restart", "InfluxDB stopped", "SIGKILL", "offline", "drained"):
        assert expected in happened
    # the worker that lived through the InfluxDB stop had to retry its writes
    survivor = report.ingest_stats["ingest chaos-ingest-1"]
    assert survivor["write_retries"] > 0 and survivor["rejected"] == 0
