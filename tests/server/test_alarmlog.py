"""The hash-chained alarm log: append, idempotency, verify and ``namazu verify-log``."""

from __future__ import annotations

import json
import multiprocessing
import os
from datetime import UTC, datetime

import pytest

from namazu.server.detection import alarmlog
from namazu.server.detection.alarmlog import (
    GENESIS_HASH,
    AlarmLog,
    AlarmLogError,
    record_hash,
    verify,
)
from namazu.server.store.state import Alarm, init_db, session_scope


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
    assert alarmlog.main([str(path), "--chain-only"]) == 0
    assert "OK, 3 records" in capsys.readouterr().out
    lines = _lines(path)
    path.write_text(lines[0] + lines[2], encoding="utf-8")
    assert alarmlog.main([str(path), "--chain-only"]) == 1
    out = capsys.readouterr().out
    assert "BROKEN at record 1" in out
    assert alarmlog.main([str(tmp_path / "missing.jsonl"), "--chain-only"]) == 2
    err = capsys.readouterr().err
    assert "no such file" in err and "Traceback" not in err


def test_batch_append_writes_the_records_of_single_appends_with_one_fsync(tmp_path, monkeypatch):
    data = {"series": ["cow-001", "café"], "sample_count": 10, "values_sha256": "ab" * 32}
    params = {"increase_pct": 140.0, "quorum": 0.5}
    when = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    single = AlarmLog(tmp_path / "single.jsonl")
    expected = [single.append(_alarm(i), "namazu-rule/1", params, data, when) for i in range(5)]
    syncs = []
    real_fsync = os.fsync
    monkeypatch.setattr(alarmlog.os, "fsync", lambda fd: syncs.append(fd) or real_fsync(fd))
    batch = AlarmLog(tmp_path / "batch.jsonl")
    batch.append(_alarm(0), "namazu-rule/1", params, data, when)
    entries = batch.append_many(
        [_alarm(i) for i in (1, 2, 0, 3, 2, 4)], "namazu-rule/1", params, data, when
    )
    assert len(syncs) == 2  # one per call, not one per record
    assert entries == [expected[i] for i in (1, 2, 0, 3, 2, 4)]
    assert _lines(tmp_path / "batch.jsonl") == _lines(tmp_path / "single.jsonl")
    assert AlarmLog(tmp_path / "batch.jsonl").head() == expected[-1]
    assert batch.append(_alarm(5), "namazu-rule/1", params, data, when)[0] == 5
    assert verify(tmp_path / "batch.jsonl").records == 6


def _state_with_logged_alarms(tmp_path, url: str, n: int) -> tuple[str, list[str]]:
    """A log of n alarms and the state store at ``url`` holding those alarms with their
    (log_index, log_hash), as the detection tick stores them."""
    engine = init_db(url)
    hashes = _fill(tmp_path / "log.jsonl", n)
    with session_scope(engine) as session:
        for i, digest in enumerate(hashes):
            start = datetime(2024, 5, 1, i % 24, tzinfo=UTC)
            session.add(
                Alarm(
                    farm="farm-a",
                    series=f"cow-{i:03d}",
                    kind="animal",
                    start=start,
                    last_anomalous=start,
                    opened_at=start,
                    rule_version="namazu-rule/1",
                    log_index=i,
                    log_hash=digest,
                )
            )
    return url, hashes


def test_verify_log_names_a_deleted_tail_from_the_state_store(tmp_path, state_url, capsys):
    url, _ = _state_with_logged_alarms(tmp_path, state_url, 4)
    path = tmp_path / "log.jsonl"
    assert alarmlog.main([str(path), "--state", url, "--chain-only"]) == 0
    assert "OK, 4 records" in capsys.readouterr().out
    path.write_text("".join(_lines(path)[:3]), encoding="utf-8")
    assert alarmlog.main([str(path), "--state", url, "--chain-only"]) == 1
    out = capsys.readouterr().out
    assert "BROKEN at record 3: record 3 is missing" in out
    assert "alarm farm-a/cow-003/animal/2024-05-01T03:00:00Z is recorded at index 3" in out
    assert alarmlog.main([str(path), "--state", url, "--no-state", "--chain-only"]) == 0
    # the configuration's state store is used by default
    config = tmp_path / "namazu.toml"
    config.write_text(
        f'[state]\nurl = "{url}"\n[scheduler]\nalarm_log_path = "{path}"\n', encoding="utf-8"
    )
    assert alarmlog.main(["--config", str(config), "--chain-only"]) == 1
    assert "BROKEN at record 3: record 3 is missing" in capsys.readouterr().out
    path.write_text("".join(_lines(path)[:1]), encoding="utf-8")
    assert alarmlog.main(["--config", str(config), "--chain-only"]) == 1
    out = capsys.readouterr().out
    assert "record 1 is missing" in out and "cow-001" in out and "and 2 more" in out


def test_verify_log_names_a_record_whose_hash_differs_from_the_state_store(tmp_path, state_url):
    url, hashes = _state_with_logged_alarms(tmp_path, state_url, 3)
    path = tmp_path / "log.jsonl"
    alarms = [json.loads(line)["alarm"] for line in _lines(path)]
    path.unlink()  # the whole log rewritten: a valid chain, other hashes
    rewritten = AlarmLog(path)
    for alarm in alarms:
        rewritten.append(alarm, "namazu-rule/1", {}, {}, datetime(2030, 1, 1, tzinfo=UTC))
    assert verify(path).ok
    result = verify(path, expected=alarmlog.state_records(url))
    assert (result.ok, result.first_bad_index, result.records) == (False, 0, 0)
    assert hashes[0] in result.reason and "farm-a/cow-000/animal" in result.reason


def test_verify_log_without_a_state_store_file_exits_2(tmp_path, capsys):
    path = tmp_path / "log.jsonl"
    _fill(path, 1)
    missing = f"sqlite:///{tmp_path / 'nothing.sqlite'}"
    assert alarmlog.main([str(path), "--state", missing, "--chain-only"]) == 2
    err = capsys.readouterr().err
    assert "no such file" in err and "Traceback" not in err
    assert not (tmp_path / "nothing.sqlite").exists()
