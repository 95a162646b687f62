"""Real ``namazu scheduler`` processes as replicas on PostgreSQL and InfluxDB: two share
four farms and the mail job, one is SIGKILLed and the other takes its farms over (each
by one change of hands), and a SIGTERM gives every lease back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from namazu.server.store.leases import Lease
from namazu.server.store.state import init_db, session_scope
from tests.conftest import PROJECT_ROOT
from tests.server.ingest_support import wait_for

pytestmark = pytest.mark.services

FARMS = ["farm-1", "farm-2", "farm-3", "farm-4"]
TICK_S = 2.0


def _config(path, influx, state_url: str, replica: str) -> None:
    lines = [
        "[influx]", f"url = {json.dumps(influx.url)}", f"database = {json.dumps(influx.database)}",
        "[state]", f"url = {json.dumps(state_url)}",
        "[scheduler]", f"tick_s = {TICK_S}", f"replica_id = {json.dumps(replica)}",
        f"lease_ttl_s = {3 * TICK_S}",  # a busy test machine may delay a tick
        f"alarm_log_path = {json.dumps(str(path.parent / 'alarm-log.jsonl'))}",
    ]  # fmt: skip
    for farm in FARMS:
        lines += ["[[farms]]", f'id = "{farm}"', "latitude = 43.0", "longitude = 13.0"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _leases(engine) -> dict[str, tuple[str | None, int, bool]]:
    now = datetime.now(UTC)
    with session_scope(engine) as db:
        return {
            lease.name: (lease.holder, lease.token, lease.expires_at > now)
            for lease in db.scalars(select(Lease))
        }


def _farm_holders(engine) -> dict[str, str | None]:
    leases = _leases(engine)
    return {f: leases.get(f"farm:{f}", (None, 0, False))[0] for f in FARMS}


def test_a_killed_replica_process_hands_its_farms_over(postgres, postgres_database, influx,
                                                       tmp_path):  # fmt: skip
    state_url = postgres.url(postgres_database)
    engine = init_db(state_url)
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    procs = {}
    try:
        for name in ("a", "b"):
            config = tmp_path / name / "namazu.toml"
            config.parent.mkdir()
            _config(config, influx, state_url, name)
            command = [sys.executable, "-m", "namazu.server.cli", "scheduler", "--config",
                       str(config), "--log-level", "ERROR"]  # fmt: skip
            procs[name] = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env)  # noqa: S603

        def shared() -> bool:
            holders = _farm_holders(engine)
            return sorted(holders.values(), key=str) == ["a", "a", "b", "b"]

        wait_for(shared, 60, "both replicas holding two farms each")
        leases = _leases(engine)
        assert leases["job:mail"][0] in {"a", "b"}  # the mail job runs on one of them
        before = {f: leases[f"farm:{f}"] for f in FARMS}
        procs["a"].send_signal(signal.SIGKILL)
        procs["a"].wait(10)
        wait_for(lambda: set(_farm_holders(engine).values()) == {"b"}, 60, "b holding all")
        after = _leases(engine)
        for farm in FARMS:
            holder, token, _ = before[farm]
            # a's farms changed hands once (token + 1); b's kept their token
            assert after[f"farm:{farm}"][1] == token + (1 if holder == "a" else 0), farm
        procs["b"].send_signal(signal.SIGTERM)
        assert procs["b"].wait(30) == 0
        assert set(_farm_holders(engine).values()) == {None}  # given back on the way out
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
