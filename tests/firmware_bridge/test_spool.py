"""Spool: order, acknowledgement, persistence across reopen and a SIGKILLed writer."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from namazu.firmware_bridge.spool import Spool, SpoolFull


def test_append_pending_ack_in_seq_order(tmp_path):
    with Spool(tmp_path / "s.sqlite") as spool:
        assert spool.next_seq() == 1 and spool.depth() == 0
        seqs = [spool.append("t/a", f"m{i}".encode()) for i in range(10)]
        assert seqs == list(range(1, 11))
        spool.ack(3)
        assert spool.ack_many([1, 2, 99]) == 2
        pending = spool.pending(limit=4)
        assert [m.seq for m in pending] == [4, 5, 6, 7]
        assert pending[0].payload == b"m3" and pending[0].topic == "t/a"
        assert [m.seq for m in spool.pending(limit=100, after_seq=8)] == [9, 10]
        assert spool.depth() == 7


def test_built_payloads_see_their_own_seq(tmp_path):
    with Spool(tmp_path / "s.sqlite") as spool:
        seqs = spool.append_built("t", [lambda s: b"seq=%d" % s] * 3)
        assert [m.payload for m in spool.pending()] == [b"seq=%d" % s for s in seqs]


def test_sequence_survives_reopen_even_when_empty(tmp_path):
    path = tmp_path / "s.sqlite"
    with Spool(path) as spool:
        for i in range(5):
            spool.append("t", b"x%d" % i)
        spool.ack_many([1, 2, 3, 4, 5])
    with Spool(path) as spool:
        assert spool.depth() == 0
        assert spool.append("t", b"next") == 6


WRITER = textwrap.dedent(
    """
    import sys
    from namazu.firmware_bridge.spool import Spool
    spool = Spool(sys.argv[1])
    i = 0
    while True:
        seq = spool.append("namazu/v1/f/g/activity", b"payload-%d" % i)
        if i % 3 == 0:
            spool.ack(seq - 1) if seq > 1 else None
        print(seq, flush=True)
        i += 1
    """
)


def test_everything_committed_survives_a_sigkilled_writer(tmp_path):
    path = tmp_path / "s.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=os.getcwd(),
    )
    confirmed = []
    try:
        while len(confirmed) < 300:
            confirmed.append(int(proc.stdout.readline()))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    with Spool(path) as spool:
        stored = [m.seq for m in spool.pending(limit=10_000)]
        acked = {s - 1 for s in confirmed if (s - 1) % 3 == 0 and s > 1}
        assert set(confirmed) - acked <= set(stored)
        assert stored == sorted(stored)
        assert spool.next_seq() > max(confirmed)
        assert all(m.payload.startswith(b"payload-") for m in spool.pending(limit=10))


def test_boot_id_is_kept_with_the_file_and_new_with_a_new_file(tmp_path):
    with Spool(tmp_path / "a.sqlite") as spool:
        first = spool.boot_id
        spool.append("t", b"x")
    with Spool(tmp_path / "a.sqlite") as spool:
        assert spool.boot_id == first and spool.next_seq() == 2
    with Spool(tmp_path / "b.sqlite") as spool:  # a gateway whose spool was lost
        assert spool.boot_id != first and spool.next_seq() == 1


def test_confirm_ranges_overlapping_and_repeated(tmp_path):
    with Spool(tmp_path / "s.sqlite") as spool:
        for i in range(20):
            spool.append("t", b"%02d" % i)
        assert spool.bytes == 40
        assert spool.confirm_ranges([(1, 5), (3, 8), (20, 20), (30, 40)]) == 9
        assert spool.confirm_ranges([(1, 8)]) == 0  # a repeated receipt changes nothing
        assert [m.seq for m in spool.pending()] == list(range(9, 20))
        assert spool.bytes == 22 and spool.depth() == 11
        assert [m.seq for m in spool.get([19, 2, 9])] == [9, 19]


def test_budget_refuses_new_data_and_keeps_the_old(tmp_path):
    path = tmp_path / "s.sqlite"
    with Spool(path, max_bytes=100) as spool:
        spool.append_built("t", [lambda _s: b"a" * 30] * 3)
        with pytest.raises(SpoolFull, match="budget of 100"):
            spool.append_built("t", [lambda _s: b"b" * 5, lambda _s: b"c" * 10])
        assert spool.full and spool.depth() == 3 and spool.bytes == 90
        assert spool.next_seq() == 4  # the refused transaction used no sequence number
        spool.confirm_ranges([(1, 1)])
        assert not spool.full
        assert spool.append("t", b"d" * 40) == 4
    with Spool(path, max_bytes=100) as spool:  # the byte count is rebuilt on open
        assert spool.bytes == 100
        with pytest.raises(SpoolFull):
            spool.append("t", b"e")


def test_spool_older_than_boot_ids_gets_one_from_its_next_seq(tmp_path):
    path = tmp_path / "old.sqlite"
    old = sqlite3.connect(path)  # the schema before boot ids: messages only
    old.execute(
        "CREATE TABLE messages (seq INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, "
        "payload BLOB NOT NULL)"
    )
    old.executemany("INSERT INTO messages (topic, payload) VALUES ('t', ?)", [(b"a",), (b"b",)])
    old.commit()
    old.close()
    with Spool(path) as spool:
        assert spool.boot_id_from_seq == 3 and spool.depth() == 2 and spool.bytes == 2
        first = spool.boot_id
        assert spool.append("t", b"c") == 3
    with Spool(path) as spool:
        assert (spool.boot_id, spool.boot_id_from_seq) == (first, 3)
    with Spool(tmp_path / "new.sqlite") as spool:
        assert spool.boot_id_from_seq == 1
