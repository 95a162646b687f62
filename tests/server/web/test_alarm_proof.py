"""The alarm page says when the alarm's log record is proven to have existed (a real
RFC 3161 TSA on loopback), and counts a target earthquake as preceded by the alarm only
after that time; a broken log is named instead of proving anything."""

from __future__ import annotations

import pytest

from namazu.server.detection import logkeys, timestamping
from namazu.server.detection.alarmlog import AlarmLog, HeadStamper, load_signer
from tests.server.tsa_fixtures import TsaServer
from tests.server.web.conftest import build_panel, login


@pytest.fixture(scope="module")
def tsa(tmp_path_factory):
    with TsaServer(tmp_path_factory.mktemp("tsa")) as server:
        yield server


def test_alarm_detail_shows_the_earliest_proven_time(stack, tmp_path, tsa):
    log_path = tmp_path / "log" / "alarm-log.jsonl"
    key, keyring = tmp_path / "keys" / "signing.key", tmp_path / "keys" / "keyring.json"
    logkeys.generate(key, keyring)
    scheduler = {"alarm_log_path": str(log_path), "alarm_log_keyring": str(keyring),
                 "tsa_ca_file": str(tsa.ca_file)}  # fmt: skip
    panel = build_panel(stack, tmp_path, sections={"scheduler": scheduler})
    try:
        client = panel.app.test_client()
        headers = {"Authorization": f"Bearer {panel.tokens['viewer']}"}
        url = f"/api/v1/alarms/{panel.farm.alarm_id}"
        detail = client.get(url, headers=headers).json
        assert detail["proof"]["proven_at"] is None and "not found" in detail["proof"]["reason"]
        stamper = HeadStamper(log_path, timestamping.TimestampClient(tsa.url, tsa.ca_file))
        log = AlarmLog(log_path, signer=load_signer(key, log_path), on_append=stamper)
        log.append({"farm": "demo-farm", "series": "cow-1", "kind": "animal",
                    "start": detail["start"]}, "namazu-rule/1", {}, {})  # fmt: skip
        detail = client.get(url, headers=headers).json
        proven = detail["proof"]["proven_at"]
        assert proven is not None and detail["proof"]["log_ok"]
        # the alarm was logged now: it cannot be proven to precede the 2024 earthquake
        [quake] = detail["lead_quakes"]
        assert quake["time"] < proven and quake["preceded_proven"] is False
        login(client, "viewer")
        page = client.get(f"/alarms/{panel.farm.alarm_id}").get_data(as_text=True)
        assert f'proven to exist by</dt><dd id="proven-at">{proven}' in page
        assert "<td>not proven</td>" in page
        # a log cut behind its tokens proves nothing and says why
        log_path.write_text("")
        detail = client.get(url, headers=headers).json
        assert detail["proof"]["proven_at"] is None
        assert "BROKEN at record 0" in detail["proof"]["reason"]
    finally:
        panel.app.extensions["namazu"].influx.drop_database()
