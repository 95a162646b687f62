"""The signed, time-stamped alarm log: Ed25519 signatures, key rotation, RFC 3161 tokens
from a real TSA on loopback (``openssl ts``), and ``namazu verify-log`` on edited,
deleted, truncated and forged logs."""

from __future__ import annotations

import base64
import json
import os
import stat
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from namazu.server.detection import alarmlog, logkeys, timestamping
from namazu.server.detection.alarmlog import (
    AlarmLog,
    HeadStamper,
    canonical_json,
    load_signer,
    record_hash,
    signed_bytes,
    verify,
)
from namazu.server.detection.logkeys import Keyring, LogKeyError, Signer
from namazu.server.store.state import init_db
from tests.server.tsa_fixtures import TsaServer

DATA = {"series": ["cow-001"], "sample_count": 10, "values_sha256": "ab" * 32}


def _alarm(i: int) -> dict:
    return {
        "farm": "farm-a",
        "series": f"cow-{i:03d}",
        "kind": "animal",
        "start": f"2024-05-01T{i % 24:02d}:00:00Z",
        "declared_at": f"2024-05-01T{i % 24:02d}:45:00Z",
        "peak_ratio": 2.5 + i,
    }


@pytest.fixture(scope="module")
def tsa(tmp_path_factory):
    with TsaServer(tmp_path_factory.mktemp("tsa")) as server:
        yield server


@pytest.fixture
def keys(tmp_path):
    """A signing key in keys/ (outside the log directory log/) and its keyring."""
    private, keyring = tmp_path / "keys" / "signing.key", tmp_path / "keys" / "keyring.json"
    logkeys.generate(private, keyring, now=datetime(2024, 1, 1, tzinfo=UTC))
    return private, keyring


def _log(tmp_path, keys, stamper=None) -> AlarmLog:
    path = tmp_path / "log" / "alarm-log.jsonl"
    return AlarmLog(path, signer=load_signer(keys[0], path), on_append=stamper)


def _lines(path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines(keepends=True)


def _write(path, records: list[dict]) -> None:
    path.write_text("".join(canonical_json(r).decode() + "\n" for r in records), "utf-8")


def _forge(previous: dict, alarm: dict, **fields) -> dict:
    """A record appended by someone without the key: right index, prev_hash, hash."""
    record = {
        "index": previous["index"] + 1,
        "prev_hash": previous["hash"],
        "time_written": "2024-05-01T23:00:00.000000Z",
        "alarm": alarm,
        "rule_version": "namazu-rule/1",
        "params": {},
        "data": DATA,
        **fields,
    }
    record["hash"] = record_hash(record)
    return record


def test_records_are_signed_over_every_field_and_verify(tmp_path, keys):
    log = _log(tmp_path, keys)
    for i in range(3):
        log.append(_alarm(i), "namazu-rule/1", {"increase_pct": 140.0}, DATA)
    keyring = Keyring.from_file(keys[1])
    records = [json.loads(line) for line in _lines(log.path)]
    [key_id] = keyring.keys
    for record in records:
        assert record["key_id"] == key_id
        # the signature covers declared_at like any other field of the record
        assert "declared_at" in record["alarm"]
        keyring.keys[key_id].public_key.verify(
            base64.b64decode(record["signature"]), signed_bytes(record)
        )
        assert record_hash(record) == record["hash"]
    result = verify(log.path, keyring=keyring)
    assert result.ok and result.records == 3 and result.signatures_checked


def test_forged_append_with_valid_chain_is_caught(tmp_path, keys, state_url, capsys):
    log = _log(tmp_path, keys)
    for i in range(3):
        log.append(_alarm(i), "namazu-rule/1", {}, DATA)
    records = [json.loads(line) for line in _lines(log.path)]
    keyring = Keyring.from_file(keys[1])
    forged = _forge(records[-1], _alarm(9))
    _write(log.path, [*records, forged])
    assert verify(log.path).ok  # the chain alone accepts it: this is what signatures fix
    result = verify(log.path, keyring=keyring)
    assert (result.ok, result.first_bad_index) == (False, 3)
    assert "not signed" in result.reason
    # signed by a key the deployment does not know
    other = Signer(Ed25519PrivateKey.generate())
    stranger = _forge(records[-1], _alarm(9), key_id=other.key_id)
    stranger.pop("hash")
    stranger["signature"] = other.sign(signed_bytes(stranger))
    stranger["hash"] = record_hash(stranger)
    _write(log.path, [*records, stranger])
    result = verify(log.path, keyring=keyring)
    assert result.first_bad_index == 3 and "not in the keyring" in result.reason
    # naming the real key with a signature copied from another record
    copied = _forge(records[-1], _alarm(9), key_id=records[0]["key_id"])
    copied.pop("hash")
    copied["signature"] = records[0]["signature"]
    copied["hash"] = record_hash(copied)
    _write(log.path, [*records, copied])
    result = verify(log.path, keyring=keyring)
    assert result.first_bad_index == 3 and "does not verify" in result.reason
    # refused in every mode of verify-log: alone, against a known head, with a state store
    init_db(state_url)
    for mode in (["--no-state"], ["--expect-head", records[-1]["hash"]], ["--state", state_url]):
        assert alarmlog.main([str(log.path), "--keys", str(keys[1]), *mode]) == 1
        assert "BROKEN at record 3: signature does not verify" in capsys.readouterr().out


def test_edited_record_with_whole_chain_recomputed_is_caught(tmp_path, keys):
    log = _log(tmp_path, keys)
    for i in range(4):
        log.append(_alarm(i), "namazu-rule/1", {}, DATA)
    records = [json.loads(line) for line in _lines(log.path)]
    records[1]["alarm"]["start"] = "2024-04-30T00:00:00Z"  # backdate the alarm
    prev = records[0]["hash"]
    for record in records[1:]:  # an editor without the key rebuilds every link
        record["prev_hash"] = prev
        record["hash"] = prev = record_hash(record)
    _write(log.path, records)
    assert verify(log.path).ok
    result = verify(log.path, keyring=Keyring.from_file(keys[1]))
    assert (result.ok, result.first_bad_index) == (False, 1)
    assert "signature does not verify" in result.reason


def test_rotation_keeps_old_records_valid_and_retires_the_old_key(tmp_path, keys):
    path = tmp_path / "log" / "alarm-log.jsonl"
    old_signer = load_signer(keys[0], path)
    AlarmLog(path, signer=old_signer).append(
        _alarm(0), "v", {}, DATA, datetime(2024, 5, 1, tzinfo=UTC)
    )
    new_key = tmp_path / "keys" / "signing-2.key"
    rotated_at = datetime(2024, 6, 1, tzinfo=UTC)
    new_id = logkeys.generate(new_key, keys[1], now=rotated_at)
    keyring = Keyring.from_file(keys[1])
    assert keyring.keys[old_signer.key_id].valid_until == rotated_at
    assert keyring.keys[new_id].valid_until is None
    AlarmLog(path, signer=load_signer(new_key, path)).append(
        _alarm(1), "v", {}, DATA, datetime(2024, 6, 2, tzinfo=UTC)
    )
    assert verify(path, keyring=keyring).ok
    # the retired key, leaked, cannot add records after the rotation ...
    AlarmLog(path, signer=old_signer).append(
        _alarm(2), "v", {}, DATA, datetime(2024, 6, 3, tzinfo=UTC)
    )
    result = verify(path, keyring=keyring)
    assert result.first_bad_index == 2 and "outside the validity" in result.reason
    # ... nor backdated ones after a later record
    _write(path, [json.loads(line) for line in _lines(path)[:2]])
    AlarmLog(path, signer=old_signer).append(
        _alarm(3), "v", {}, DATA, datetime(2024, 5, 2, tzinfo=UTC)
    )
    result = verify(path, keyring=keyring)
    assert result.first_bad_index == 2 and "retired" in result.reason


def test_keys_command_generates_rotates_and_refuses_to_overwrite(tmp_path, capsys):
    private, keyring = tmp_path / "k" / "a.key", tmp_path / "pub" / "keyring.json"
    args = ["generate", "--private-key", str(private), "--keyring", str(keyring)]
    assert logkeys.main(args) == 0
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    assert logkeys.main(args) == 2
    assert "exists" in capsys.readouterr().err
    assert logkeys.main(["generate", "--private-key", str(private.with_name("b.key")),
                         "--keyring", str(keyring)]) == 0  # fmt: skip
    capsys.readouterr()
    assert logkeys.main(["list", "--keyring", str(keyring)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and "open" not in lines[0] and "open" in lines[1]


def test_signing_key_beside_the_log_is_refused(tmp_path):
    path = tmp_path / "alarm-log.jsonl"
    logkeys.generate(tmp_path / "signing.key", tmp_path / "keyring.json")
    with pytest.raises(LogKeyError, match="outside"):
        load_signer(tmp_path / "signing.key", path)


def test_broken_keyring_and_missing_keys_are_named(tmp_path, keys, capsys):
    log = _log(tmp_path, keys)
    log.append(_alarm(0), "v", {}, DATA)
    assert alarmlog.main([str(log.path)]) == 2
    assert "no public keys" in capsys.readouterr().err
    keys[1].write_text('{"keys": [{"key_id": "00", "public_key": "AAAA"}]}')
    assert alarmlog.main([str(log.path), "--keys", str(keys[1])]) == 2
    err = capsys.readouterr().err
    assert "key 0" in err and "Traceback" not in err


def test_heads_are_time_stamped_at_each_opening_and_prove_existence(tmp_path, keys, tsa):
    client = timestamping.TimestampClient(tsa.url, tsa.ca_file)
    path = tmp_path / "log" / "alarm-log.jsonl"
    stamper = HeadStamper(path, client)
    log = _log(tmp_path, keys, stamper)
    before = datetime.now(UTC).replace(microsecond=0)
    log.append(_alarm(0), "v", {}, DATA)
    log.append_many([_alarm(1), _alarm(2)], "v", {}, DATA)
    log.append(_alarm(0), "v", {}, DATA)  # already logged: nothing new to stamp
    tokens = timestamping.stored_tokens(path)
    assert [index for index, _ in tokens] == [0, 2]
    assert stamper.stamp_head(log) is None  # the head has its token
    result = verify(path, keyring=Keyring.from_file(keys[1]), tsa_ca=tsa.ca_file)
    assert result.ok and len(result.tokens) == 2
    proven = [result.proven_by(i) for i in range(3)]
    after = datetime.now(UTC) + timedelta(seconds=2)
    assert all(before <= moment <= after for moment in proven)
    assert proven[1] == proven[2] >= proven[0]


def test_verify_log_reports_each_alarms_earliest_proof(tmp_path, keys, tsa, capsys):
    path = tmp_path / "log" / "alarm-log.jsonl"
    log = _log(
        tmp_path, keys, HeadStamper(path, timestamping.TimestampClient(tsa.url, tsa.ca_file))
    )
    log.append(_alarm(0), "v", {}, DATA)
    tsa.refuse = True  # the TSA is down: the record is written all the same
    try:
        log.append(_alarm(1), "v", {}, DATA)
    finally:
        tsa.refuse = False
    assert len(_lines(path)) == 2
    args = [str(path), "--keys", str(keys[1]), "--tsa-ca", str(tsa.ca_file)]
    assert alarmlog.main(args) == 0
    out = capsys.readouterr().out
    assert "signatures valid, 1 time-stamp tokens valid" in out
    assert "record 0: alarm farm-a/cow-000/animal/2024-05-01T00:00:00Z" in out
    assert "record 1: alarm farm-a/cow-001" in out and "not time-stamped" in out
    # the hourly job stamps the head that missed its token
    HeadStamper(path, timestamping.TimestampClient(tsa.url, tsa.ca_file)).stamp_head(log)
    assert alarmlog.main(args) == 0
    out = capsys.readouterr().out
    assert "2 time-stamp tokens valid" in out and "not time-stamped" not in out


def test_truncated_log_is_caught_by_its_tokens_without_the_state_store(tmp_path, keys, tsa):
    path = tmp_path / "log" / "alarm-log.jsonl"
    log = _log(
        tmp_path, keys, HeadStamper(path, timestamping.TimestampClient(tsa.url, tsa.ca_file))
    )
    for i in range(4):
        log.append(_alarm(i), "v", {}, DATA)
    keyring = Keyring.from_file(keys[1])
    path.write_text("".join(_lines(path)[:2]), encoding="utf-8")
    assert verify(path, keyring=keyring).ok  # signatures alone cannot see a cut tail
    result = verify(path, keyring=keyring, tsa_ca=tsa.ca_file)
    assert (result.ok, result.first_bad_index) == (False, 2)
    assert "record 2 is missing" in result.reason and "time-stamp token" in result.reason


def test_deleted_or_replaced_records_are_caught_against_their_tokens(tmp_path, keys, tsa):
    path = tmp_path / "log" / "alarm-log.jsonl"
    client = timestamping.TimestampClient(tsa.url, tsa.ca_file)
    log = _log(tmp_path, keys, HeadStamper(path, client))
    for i in range(4):
        log.append(_alarm(i), "v", {}, DATA)
    keyring = Keyring.from_file(keys[1])
    lines = _lines(path)
    path.write_text("".join(lines[:1] + lines[2:]), encoding="utf-8")  # one deleted
    result = verify(path, keyring=keyring, tsa_ca=tsa.ca_file)
    assert (result.ok, result.first_bad_index) == (False, 1)
    assert "deleted" in result.reason
    # the holder of the key rewrites records 2.. with new content: signatures and
    # chain are valid, but the tokens stamped the old hashes
    path.write_text("".join(lines[:2]), encoding="utf-8")
    rewritten = AlarmLog(path, signer=load_signer(keys[0], path))
    for i in (7, 8):
        rewritten.append(_alarm(i), "v", {}, DATA)
    assert verify(path, keyring=keyring).ok
    result = verify(path, keyring=keyring, tsa_ca=tsa.ca_file)
    assert (result.ok, result.first_bad_index) == (False, 2)
    assert "another hash" in result.reason


def test_a_token_from_an_untrusted_tsa_is_refused(tmp_path, keys, tsa, tmp_path_factory):
    with TsaServer(tmp_path_factory.mktemp("rogue-tsa")) as rogue:
        path = tmp_path / "log" / "alarm-log.jsonl"
        log = _log(tmp_path, keys)
        log.append(_alarm(0), "v", {}, DATA)
        index, head = log.head()
        reply, when = timestamping.TimestampClient(rogue.url, rogue.ca_file).stamp(head)
        timestamping.save_token(path, index, head, reply, when)
        with pytest.raises(timestamping.TimestampError, match="does not verify"):
            timestamping.TimestampClient(rogue.url, tsa.ca_file).stamp(head)
    result = verify(path, keyring=Keyring.from_file(keys[1]), tsa_ca=tsa.ca_file)
    assert (result.ok, result.first_bad_index) == (False, 0)
    assert "does not verify" in result.reason


def test_analyze_counts_only_targets_after_the_proven_time(tmp_path, keys, tsa):
    import pandas as pd

    from namazu.server.research.logged_alarms import LoggedAlarmsError, logged_targets

    path = tmp_path / "log" / "alarm-log.jsonl"
    log = _log(
        tmp_path, keys, HeadStamper(path, timestamping.TimestampClient(tsa.url, tsa.ca_file))
    )
    now = pd.Timestamp.now(tz="UTC")
    declared = (now - pd.Timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    log.append({**_alarm(0), "declared_at": declared}, "v", {}, DATA)
    catalog = pd.DataFrame(
        {
            "time": [now - pd.Timedelta(minutes=30), now + pd.Timedelta(hours=2),
                     now + pd.Timedelta(hours=3)],
            "latitude": [43.05, 43.05, 50.0],  # the last is far outside its radius
            "longitude": [13.05, 13.05, 13.0],
            "magnitude": [4.5, 4.6, 4.2],
            "event_id": ["before-proof", "after-proof", "far"],
        }
    )  # fmt: skip
    found = logged_targets(
        path, keys[1], tsa.ca_file, catalog, (43.0, 13.0), min_magnitude=4.0, lead_window_h=20
    )
    table = found.table.set_index("event_id")
    assert list(table.index) == ["before-proof", "after-proof"]
    # the earthquake 30 min ago is in the lead window, but the record was only proven
    # to exist after it: no claim; the one to come is provably preceded
    assert not table.loc["before-proof", "preceded_proven"]
    assert table.loc["after-proof", "preceded_proven"]
    assert (found.alarms, found.stamped) == (1, 1)
    assert "1 provably preceded" in found.summary()
    path.write_text(path.read_text().replace('"peak_ratio":2.5', '"peak_ratio":9.5'))
    with pytest.raises(LoggedAlarmsError, match="BROKEN at record 0"):
        logged_targets(path, keys[1], tsa.ca_file, catalog, (43.0, 13.0), 4.0, 20)


def test_analyze_alarm_log_needs_keys_and_tsa_ca(capsys):
    from namazu.server.research import analysis

    with pytest.raises(SystemExit):
        analysis.main(["--activity", "a.csv", "--catalog", "c.csv", "--farm", "43,13",
                       "--alarm-log", "log.jsonl"])  # fmt: skip
    assert "--log-keys, --tsa-ca" in capsys.readouterr().err


def test_scheduler_signs_and_stamps_from_its_configuration(tmp_path, keys, tsa, state_url):
    from namazu.server.core.config import ConfigError, NamazuConfig
    from namazu.server.detection.scheduler import build_services, make_scheduler

    log_path = tmp_path / "log" / "alarm-log.jsonl"
    scheduler = {"alarm_log_path": str(log_path), "alarm_log_signing_key": str(keys[0]),
                 "tsa_url": tsa.url, "tsa_ca_file": str(tsa.ca_file)}  # fmt: skip
    config = NamazuConfig.model_validate(
        {
            "influx": {"url": "http://127.0.0.1:9"},
            "state": {"url": state_url},
            "scheduler": scheduler,
        }
    )
    services = build_services(config)
    jobs = {job.id for job in make_scheduler(services, blocking=False).get_jobs()}
    assert "timestamp" in jobs
    services.alarm_log.append(_alarm(0), "v", {}, DATA)  # as the tick does at an opening
    assert [index for index, _ in timestamping.stored_tokens(log_path)] == [0]
    assert services.stamper.stamp_head(services.alarm_log) is None
    result = verify(log_path, keyring=Keyring.from_file(keys[1]), tsa_ca=tsa.ca_file)
    assert result.ok and result.proven_by(0) is not None
    without_ca = config.model_copy(
        update={"scheduler": config.scheduler.model_copy(update={"tsa_ca_file": None})}
    )
    with pytest.raises(ConfigError, match="tsa_ca_file"):
        build_services(without_ca)
