"""deploy/influxdb: the server config is understood by influxd, and retention.iql,
applied with the documented ``influx -import`` to a real InfluxDB, creates the
90-day default policy, the forever policy and a CQ whose SELECT makes 1-min means."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
from numpy.testing import assert_allclose

from namazu.server.launch.stack import free_port, influx_ready
from namazu.server.store.influx import InfluxClient, InfluxWriteError
from tests.deploy.conftest import cq_select

pytestmark = pytest.mark.services

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "influxdb"
RETENTION = DEPLOY / "retention.iql"
CONFIG = DEPLOY / "influxdb.conf"
INFLUX_CLI = "/usr/bin/influx"
INFLUXD = "/usr/bin/influxd"


@pytest.fixture
def retention_applied(influx, stack, tmp_path):
    """retention.iql imported with the influx CLI into the fixture's database."""
    text = RETENTION.read_text().replace('"namazu"', f'"{influx.database}"')
    script = tmp_path / "retention.iql"
    script.write_text(text)
    host, port = stack.influx_url.removeprefix("http://").split(":")
    result = subprocess.run(
        [INFLUX_CLI, "-host", host, "-port", port, "-import", "-path", str(script)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "Failed" not in result.stderr, result.stderr
    return text


def test_retention_policies_and_continuous_query_exist(influx, retention_applied):
    rows = influx.query(f'SHOW RETENTION POLICIES ON "{influx.database}"')[0]
    policies = {row[0]: dict(zip(rows["columns"], row, strict=True)) for row in rows["values"]}
    assert policies["raw"]["duration"] == "2160h0m0s"  # 90 days
    assert policies["raw"]["default"] is True
    assert policies["forever"]["duration"] == "0s"  # infinite
    assert policies["forever"]["default"] is False
    queries = {
        row[0]: row[1]
        for series in influx.query("SHOW CONTINUOUS QUERIES")
        if series["name"] == influx.database
        for row in series["values"]
    }
    assert "cq_activity_1m" in queries
    assert "RESAMPLE EVERY 1m FOR 1h" in queries["cq_activity_1m"]
    assert "GROUP BY time(1m), *" in queries["cq_activity_1m"]


def test_raw_policy_refuses_points_older_than_90_days(influx, retention_applied):
    now_ms = int(pd.Timestamp.now(tz="UTC").value // 1_000_000)
    day_ms = 86_400_000
    fresh = f"activity,animal=cow-1,farm=f,gateway=g,species=cow odba=0.1 {now_ms - 89 * day_ms}"
    stale = f"activity,animal=cow-1,farm=f,gateway=g,species=cow odba=0.1 {now_ms - 91 * day_ms}"
    influx.write_lines([fresh])
    with pytest.raises(InfluxWriteError, match="beyond retention policy"):
        influx.write_lines([stale])


def test_cq_select_into_makes_one_minute_means_per_animal(influx, retention_applied):
    rng = np.random.default_rng(7)
    now_ms = int(pd.Timestamp.now(tz="UTC").value // 1_000_000)
    t0_ms = now_ms // 60_000 * 60_000 - 2 * 3_600_000  # a minute boundary 2 h ago
    rows = []
    for animal, species in (("cow-1", "cow"), ("sheep-2", "sheep")):
        for k in range(12):  # 4 minutes of 20-s bursts
            rows.append(
                {
                    "animal": animal,
                    "species": species,
                    "t_ms": t0_ms + k * 20_000,
                    "odba": float(rng.uniform(0.01, 1.0)),
                    "vedba": float(rng.uniform(0.01, 1.0)),
                }
            )
    raw = pd.DataFrame(rows)
    influx.write_lines(
        [
            f"activity,animal={r.animal},farm=farmA,gateway=gw1,species={r.species} "
            f"odba={r.odba!r},vedba={r.vedba!r} {r.t_ms}"
            for r in raw.itertuples()
        ]
    )
    select = cq_select(influx.database)
    window = f"WHERE time >= {t0_ms}ms AND time < {t0_ms + 240_000}ms GROUP BY"
    influx.query(select.replace("GROUP BY", window, 1))

    got = influx.query_frame(
        'SELECT "odba", "vedba", "samples" FROM "forever"."activity_1m" GROUP BY *'
    )
    raw["minute"] = pd.to_datetime(raw["t_ms"] // 60_000 * 60_000, unit="ms", utc=True)
    expected = (
        raw.groupby(["animal", "minute"])
        .agg(odba=("odba", "mean"), vedba=("vedba", "mean"), samples=("odba", "size"))
        .reset_index()
    )
    got = got.sort_values(["animal", "time"]).reset_index(drop=True)
    assert len(got) == len(expected) == 8
    assert list(got["animal"]) == list(expected["animal"])
    assert (got["time"].to_numpy() == expected["minute"].to_numpy()).all()
    assert_allclose(got["odba"].to_numpy(float), expected["odba"].to_numpy(float), rtol=1e-12)
    assert_allclose(got["vedba"].to_numpy(float), expected["vedba"].to_numpy(float), rtol=1e-12)
    assert (got["samples"].to_numpy(int) == expected["samples"].to_numpy(int)).all()
    assert set(got["farm"]) == {"farmA"} and set(got["gateway"]) == {"gw1"}
    assert set(zip(got["animal"], got["species"], strict=True)) == {
        ("cow-1", "cow"),
        ("sheep-2", "sheep"),
    }


def _toml_keys(text: str) -> set[tuple[str, str]]:
    keys, section = set(), ""
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("["):
            section = line.strip("[]")
        elif "=" in line:
            keys.add((section, line.split("=", 1)[0].strip()))
    return keys


def test_every_server_config_key_is_known_to_influxd():
    defaults = subprocess.run(
        [INFLUXD, "config"], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    known = _toml_keys(defaults)
    # Upstream's key; Debian's build prints it as reporting-enabled (off by default).
    unknown = _toml_keys(CONFIG.read_text()) - known - {("", "reporting-disabled")}
    assert not unknown, f"keys influxd {INFLUXD} does not know: {sorted(unknown)}"


def test_server_config_starts_influxd_with_authentication(tmp_path):
    http_port, rpc_port = free_port(), free_port()
    text = CONFIG.read_text()
    for old, new in {
        "/var/lib/influxdb/": f"{tmp_path}/",
        "127.0.0.1:8086": f"127.0.0.1:{http_port}",
        "127.0.0.1:8088": f"127.0.0.1:{rpc_port}",
    }.items():
        assert old in text, f"influxdb.conf no longer contains {old!r}"
        text = text.replace(old, new)
    conf = tmp_path / "influxdb.conf"
    conf.write_text(text)
    url = f"http://127.0.0.1:{http_port}"
    with open(tmp_path / "influxd.log", "wb") as log:
        proc = subprocess.Popen([INFLUXD, "-config", str(conf)], stdout=log, stderr=log)
    try:
        for _ in range(400):
            if influx_ready(url) or proc.poll() is not None:
                break
            time.sleep(0.05)
        assert influx_ready(url), (tmp_path / "influxd.log").read_text()[-2000:]
        # No users yet: InfluxDB only lets the first admin be created.
        anonymous = requests.post(f"{url}/query", data={"q": "SHOW DATABASES"}, timeout=5)
        assert anonymous.status_code == 401 or "create admin user" in anonymous.text
        created = requests.post(
            f"{url}/query",
            data={"q": "CREATE USER admin WITH PASSWORD 'pw-for-test' WITH ALL PRIVILEGES"},
            timeout=5,
        )
        assert created.status_code == 200, created.text
        client = InfluxClient(url, "namazu", "admin", "pw-for-test")
        client.create_database()
        assert ["namazu"] in client.query("SHOW DATABASES")[0]["values"]
        denied = requests.post(f"{url}/query", data={"q": "SHOW DATABASES"}, timeout=5)
        assert denied.status_code == 401
        client.close()
    finally:
        proc.terminate()
        proc.wait(timeout=15)
