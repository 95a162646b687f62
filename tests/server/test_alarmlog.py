"""The hash-chained alarm log: append, idempotency, verify and ``namazu verify-log``."""

from __future__ import annotations

import json
import multiprocessing

import pytest

from server import alarmlog
from server.alarmlog import GENESIS_HASH, AlarmLog, AlarmLogError, record_hash, verify


def _alarm(i: int, farm: str = "farm-a") -> dict:
    return {
        "farm": farm,
        "series": f"cow-{i:03d}",
        "kind": "animal",
        "start": f"2024-05-01T{i % 24:02d}:00:00Z",
        "peak_ratio": 2.5 + i,
    }


def _fill(path, n: int) -> list[str]:
    log = AlarmLog(path)
    data = {"series": ["cow-001"], "sample_count": 10, "values_sha256": "ab" * 32}
    return [
        log.append(_alarm(i), "namazu-rule/1", {"increase_pct": 140.0}, data)[1] for i in range(n)
    ]


def _lines(path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines(keepends=True)


def test_chain_links_each_record_to_the_previous_hash(tmp_path):
    path = tmp_path / "log.jsonl"
    hashes = _fill(path, 4)
    records = [json.loads(line) for line in _lines(path)]
    assert [r["index"] for r in records] == [0, 1, 2, 3]
    assert records[0]["prev_hash"] == GENESIS_HASH
    for prev, record in zip(records, records[1:], strict=False):
        assert record["prev_hash"] == prev["hash"]
    assert [r["hash"] for r in records] == hashes
    assert all(record_hash(r) == r["hash"] for r in records)
    result = verify(path)
    assert result.ok and result.records == 4 and result.head_hash == hashes[-1]


def test_append_is_idempotent_per_alarm_identity_across_instances(tmp_path):
    path = tmp_path / "log.jsonl"
    first = AlarmLog(path).append(_alarm(1), "v", {}, {})
    again = AlarmLog(path).append({**_alarm(1), "peak_ratio": 99.0}, "v", {}, {})
    assert again == first
    assert len(_lines(path)) == 1


def test_edited_record_is_named(tmp_path):
    path = tmp_path / "log.jsonl"
    _fill(path, 5)
    lines = _lines(path)
    record = json.loads(lines[2])
    record["alarm"]["start"] = "2024-04-30T00:00:00Z"  # backdate the alarm
    lines[2] = json.dumps(record) + "\n"
    path.write_text("".join(lines), encoding="utf-8")
    result = verify(path)
    assert not result.ok
    assert result.first_bad_index == 2
    assert "edited" in result.reason


def test_edited_record_with_recomputed_hash_breaks_the_next_link(tmp_path):
    path = tmp_path / "log.jsonl"
    _fill(path, 5)
    lines = _lines(path)
    record = json.loads(lines[1])
    record["alarm"]["peak_ratio"] = 9.0
    record["hash"] = record_hash(record)
    lines[1] = json.dumps(record) + "\n"
    path.write_text("".join(lines), encoding="utf-8")
    result = verify(path)
    assert (result.ok, result.first_bad_index) == (False, 2)
    assert "prev_hash" in result.reason


def test_deleted_record_is_named(tmp_path):
    path = tmp_path / "log.jsonl"
    _fill(path, 5)
    lines = _lines(path)
    del lines[3]
    path.write_text("".join(lines), encoding="utf-8")
    result = verify(path)
    assert (result.ok, result.first_bad_index, result.records) == (False, 3, 3)
    assert "deleted" in result.reason


def test_deleted_tail_is_caught_against_a_known_head(tmp_path):
    path = tmp_path / "log.jsonl"
    hashes = _fill(path, 4)
    path.write_text("".join(_lines(path)[:3]), encoding="utf-8")
    assert verify(path).ok  # the chain alone cannot see a cut tail
    result = verify(path, expect_head=hashes[-1])
    assert not result.ok and result.first_bad_index == 3
    assert verify(path, expect_head=hashes[1]).ok


def test_torn_last_line_is_named_and_blocks_appends(tmp_path):
    path = tmp_path / "log.jsonl"
    _fill(path, 2)
    with path.open("a", encoding="utf-8") as handle:
        handle.write('{"index": 2, "prev')
    result = verify(path)
    assert (result.ok, result.first_bad_index) == (False, 2)
    with pytest.raises(AlarmLogError, match="incomplete"):
        AlarmLog(path).append(_alarm(7), "v", {}, {})


def _append_many(path: str, farm: str) -> None:
    log = AlarmLog(path)
    for i in range(25):
        log.append(_alarm(i, farm), "v", {}, {"n": i})


def test_concurrent_processes_keep_one_chain(tmp_path):
    path = tmp_path / "log.jsonl"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(str(path), f"farm-{k}")) for k in range(3)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(30)
        assert proc.exitcode == 0
    result = verify(path)
    assert result.ok and result.records == 75


def test_cli_reports_first_broken_record_and_exit_codes(tmp_path, capsys):
    path = tmp_path / "log.jsonl"
    _fill(path, 3)
    assert alarmlog.main([str(path)]) == 0
    assert "OK, 3 records" in capsys.readouterr().out
    lines = _lines(path)
    path.write_text(lines[0] + lines[2], encoding="utf-8")
    assert alarmlog.main([str(path)]) == 1
    out = capsys.readouterr().out
    assert "BROKEN at record 1" in out
    assert alarmlog.main([str(tmp_path / "missing.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "no such file" in err and "Traceback" not in err
