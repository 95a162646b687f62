"""A panel host cut off the network while it holds heavy-request slots loses them.

PostgreSQL runs on a host of its own and a slot holder on another (Linux network
namespaces on a private switch, ``tests/cluster/netns.py``); the test, from the switch's
address, is a third. The holder takes both global slots and is then cut off (its switch
port down: packets dropped both ways, the process keeps running, nothing closes its
connection). The server's TCP keepalive on the slots' connections finds the host gone,
ends the connections and frees the slots, which the third host then takes. The holder
asks for a short keepalive (1 s idle, 1 s between 2 probes) so the test takes seconds;
the panel's default is 30 s + 3 × 10 s. Without the keepalive the server would keep
the slots for hours (Linux's default keepalive starts after 2 h of silence).
"""

from __future__ import annotations

import os
import sys
import time

import pytest

from namazu.server.launch.postgres import PostgresServer
from namazu.server.web.limits import AdvisoryLockSlots
from tests.cluster.netns import Network, available, leftovers
from tests.conftest import PROJECT_ROOT
from tests.server.ingest_support import wait_for

pytestmark = pytest.mark.services

HOLDER = """
import signal, sys
from namazu.server.web.limits import AdvisoryLockSlots
slots = AdvisoryLockSlots(2, 1, sys.argv[1], keepalive=(1, 1, 2))
held = [slots.take(1), slots.take(2)]
print("held" if None not in held else "refused", flush=True)
signal.pause()
"""


@pytest.fixture
def network():
    """A private switch for the test's hosts, removed afterwards whatever happened."""
    reason = available()
    if reason:
        pytest.skip(reason)
    with Network() as net:
        yield net
    assert leftovers(net.prefix) == ([], []), "the namespaces or links were left behind"


def test_a_panel_host_cut_off_while_holding_slots_loses_them(network, tmp_path):
    pg = network.add_host("pg")
    network.add_host("web1")
    server = PostgresServer.temporary(
        durable=False, host=pg.address, trusted_network=str(network.subnet),
        wrapper=("ip", "netns", "exec", pg.netns),
    ).start()  # fmt: skip
    try:
        url = server.create_database("slots")
        log = tmp_path / "holder.log"
        holder = network.run(
            "web1", [sys.executable, "-c", HOLDER, url], log,
            env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}, cwd=PROJECT_ROOT,
        )  # fmt: skip
        said = wait_for(lambda: log.exists() and log.read_text().strip(), 60, "the holder")
        assert said == "held", said
        here = AdvisoryLockSlots(2, 1, url)  # another panel host, at the switch's address
        assert here.take(3) is None and here.global_taken() == 2
        network.partition("web1")
        cut_at = time.monotonic()
        # each of the holder's two slots is on a connection of its own, each ended by
        # its own keepalive: wait for both
        wait_for(lambda: here.global_taken() == 0, 60, "the cut-off host's slots freed")
        if os.environ.get("NAMAZU_REPORT"):
            print(f"\nslots freed {time.monotonic() - cut_at:.1f} s after the cut")
        assert holder.poll() is None  # cut off, not dead: only the server let go
        tokens = [here.take(3), here.take(4)]
        assert None not in tokens and here.global_taken() == 2
        for token in tokens:
            here.give_back(token)
    finally:
        server.stop(remove=True)
