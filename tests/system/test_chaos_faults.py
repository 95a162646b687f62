"""Short forms of ``make chaos`` part 5 on real services: each fault of the data path,
then the store holds exactly what the gateways sent, for every (animal, timestamp).

- both poison payloads mid-run, a spooling gateway SIGKILLed and restarted, and
  Mosquitto SIGKILLed while the ingest workers are paused (so messages queue in it);
- the InfluxDB credentials of the ingest account revoked for a few seconds;
- ``namazu bridge`` SIGKILLed twice while UDP collars that keep unacknowledged frames
  send to it.
"""

from __future__ import annotations

import pytest

from tests.chaos.harness import (
    BridgeKillPlan,
    ChaosPlan,
    poison_payloads,
    run_bridge_kill,
    run_chaos,
)

pytestmark = [pytest.mark.services, pytest.mark.slow]

SHORT = {
    "gateways": 3,
    "animals_per_gateway": 10,
    "samples_per_gateway": 3_000,
    "duration_s": 14.0,
    "workers": 2,
    "broker_restarts": (),
    "influx_outage": None,
    "kill_worker_at": None,
    "offline_gateway": None,
    "ingest_max_pending": 200,
    "drain_timeout_s": 180.0,
}


def assert_lossless(report) -> None:
    assert report.published == 9_000
    for name, counts in report.per_gateway.items():
        assert counts["expected"] == 3_000, name
        assert counts["missing"] == 0 and counts["duplicates"] == 0, (name, counts)
        assert counts["extra"] == 0 and counts["wrong_value"] == 0, (name, counts)
    assert report.stored == report.published and report.lossless


def test_poison_gateway_kill_and_broker_kill_while_ingest_lags(tmp_path):
    plan = ChaosPlan(**SHORT, poison_at=0.2, gateway_kill_at=0.35, broker_kill=(0.5, 3.0))
    report = run_chaos(plan, tmp_path, log=lambda _line: None)
    print(report.summary())
    assert_lossless(report)
    assert report.dead_letters["gw-poison"] == len(poison_payloads())
    happened = " | ".join(what for _, what in report.events)
    for expected in ("poison", "SIGKILL gw-00", "ingest paused", "Mosquitto SIGKILL"):
        assert expected in happened
    # the broker kill cut every gateway off; they sent their unconfirmed messages again
    for name, stats in report.gateway_stats.items():
        assert stats["connects"] >= 2, (name, stats)
    assert sum(s["unconfirmed_at_reconnect"] for s in report.gateway_stats.values()) > 0


def test_influx_credentials_revoked(tmp_path):
    plan = ChaosPlan(**SHORT, influx_revoke=(0.3, 4.0))
    report = run_chaos(plan, tmp_path, log=lambda _line: None)
    print(report.summary())
    assert_lossless(report)
    for stats in report.ingest_stats.values():
        assert stats.get("rejected", 0) == 0  # nothing went to the dead-letter topic


def test_bridge_sigkill_with_collars_that_keep_frames(tmp_path):
    plan = BridgeKillPlan(cows=10, minutes=400, frame_rate_hz=400.0, kill_at=(0.2, 0.65))
    got = run_bridge_kill(plan, tmp_path, log=lambda _line: None)
    print(got)
    assert got["kills"] == 2 and got["collars"]["resent"] > 0  # the kills cost resends
    assert got["expected"] == got["stored"] == 4_000
    assert got["missing"] == got["duplicates"] == got["extra"] == got["wrong_value"] == 0
    assert got["bridge_last_run"]["all_confirmed"] is True
