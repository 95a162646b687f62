"""The slots of heavy requests shared by several panel processes, on SQLite (lock files
of one host) and on PostgreSQL (advisory locks, shared by every host): two gates opened
like two panel hosts share the global and the per-user limit, and the slots of a holder
that is SIGKILLed are free again without anybody giving them back."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from namazu.server.core.config import NamazuConfig
from namazu.server.web.limits import AdvisoryLockSlots, FileSlots, HeavyGate, open_heavy_gate
from tests.conftest import PROJECT_ROOT
from tests.server.ingest_support import wait_for

LIMITS = {"heavy_global_limit": 2, "heavy_per_user_limit": 1}


def _gate(state_url: str, directory) -> HeavyGate:
    """A panel host's gate on ``state_url`` with its own runtime and data directories
    (on PostgreSQL nothing on disk is shared; on SQLite the slots sit beside the file)."""
    web = NamazuConfig().web.model_copy(update=LIMITS)
    directory.mkdir(exist_ok=True)
    return open_heavy_gate(web, state_url, directory)


def test_the_backend_follows_the_state_store(state_url, tmp_path):
    gate = _gate(state_url, tmp_path / "host")
    expected = AdvisoryLockSlots if state_url.startswith("postgresql") else FileSlots
    assert type(gate.slots) is expected


def test_two_hosts_share_the_global_and_the_per_user_limit(state_url, tmp_path):
    one, two = _gate(state_url, tmp_path / "one"), _gate(state_url, tmp_path / "two")
    first, second = one.try_acquire(1), one.try_acquire(2)
    assert first is not None and second is not None
    assert two.try_acquire(3) is None  # both global slots are held on the other host
    one.release(second, 0.5)
    assert two.try_acquire(1) is None  # user 1 runs one already, on the other host
    third = two.try_acquire(3)
    assert third is not None and two.running == 1 and one.running == 1
    assert one.try_acquire(4) is None and two.try_acquire(4) is None
    one.release(first, 0.5)
    two.release(third, 0.5)
    # everything given back: both global slots can be taken again, one from each host
    tokens = [one.try_acquire(5), two.try_acquire(6)]
    assert None not in tokens
    one.release(tokens[0], 0.1)
    two.release(tokens[1], 0.1)


def _take_all(gate: HeavyGate, users: list[int]) -> list | None:
    """A slot for each of ``users``, or None (and nothing held) if any is refused."""
    tokens = [gate.try_acquire(user) for user in users]
    if None in tokens:
        for token in tokens:
            if token is not None:
                gate.release(token, 0.0)
        return None
    return tokens


HOLDER = """
import sys
from pathlib import Path
from namazu.server.core.config import NamazuConfig
from namazu.server.web.limits import open_heavy_gate
web = NamazuConfig().web.model_copy(update={"heavy_global_limit": 2, "heavy_per_user_limit": 1})
gate = open_heavy_gate(web, sys.argv[1], Path(sys.argv[2]))
held = [gate.try_acquire(1), gate.try_acquire(2)]
print("held" if None not in held else "refused", flush=True)
sys.stdin.read()
"""


def test_a_killed_holder_leaves_no_stale_slot(state_url, tmp_path):
    """A process on another "host" holds both global slots and is SIGKILLed: nobody
    gives them back, yet they are free again (kernel for lock files, server for
    advisory locks when the connection goes)."""
    (tmp_path / "other").mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, state_url, str(tmp_path / "other")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=PROJECT_ROOT,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        gate = _gate(state_url, tmp_path / "this")
        assert gate.try_acquire(3) is None
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        # both global slots and user 1's (held on two connections, or two files, which
        # the server or the kernel frees one after the other)
        tokens = wait_for(lambda: _take_all(gate, [3, 1]), 30, "the killed holder's slots freed")
        for token in tokens:
            gate.release(token, 0.1)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)


@pytest.mark.parametrize("state_url", ["postgresql"], indirect=True)
def test_advisory_slots_are_counted_by_the_server_and_kept_per_schema(
    state_url, postgres, tmp_path
):
    gate = _gate(state_url, tmp_path / "one")
    slots = gate.slots
    assert slots.global_taken() == 0
    token = gate.try_acquire(1)
    assert slots.global_taken() == 1
    # the slot's connection asks the server to probe a silent panel host (30 s + 3 × 10 s)
    keepalive = [token.scalar(text(f"SHOW tcp_keepalives_{name}"))
                 for name in ("idle", "interval", "count")]  # fmt: skip
    assert keepalive == ["30", "10", "3"]
    # another deployment in another schema of the same database has slots of its own
    postgres.psql('CREATE SCHEMA "other_deployment"', database=make_url(state_url).database)
    other_url = f"{state_url}?options=-csearch_path%3Dother_deployment"
    other = AdvisoryLockSlots(2, 1, other_url)
    assert other.namespace != slots.namespace
    held = [other.take(1), other.take(2)]
    assert None not in held and other.global_taken() == 2 and slots.global_taken() == 1
    for connection in held:
        other.give_back(connection)
    gate.release(token, 0.1)
    assert slots.global_taken() == 0
