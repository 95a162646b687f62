"""A small simulated network (6 farms, 3 scheduler replica processes, one SIGKILLed
mid-tick) through ``bench.bench_network``: every farm ticked by exactly one replica with
its lease's fencing token, the killed replica's farms owned again within two ticks, the
windows holding only owned farms, and the alarms exactly a single scheduler's."""

from __future__ import annotations

import pytest

from bench.bench_network import NetworkSpec, run_network

pytestmark = pytest.mark.services


def test_a_small_network_survives_a_killed_replica(stack, postgres, postgres_database, tmp_path):
    spec = NetworkSpec(animals=120, farms=6, replicas=3, ticks=7, kill_at=3, episode_farms=2,
                       reference="all")  # fmt: skip
    outcome = run_network(spec, stack.influx_url, postgres.url(postgres_database), tmp_path)
    assert outcome.failures == []
    assert outcome.figures["handover_ticks"] <= 2
    assert outcome.figures["alarms"] > 0
