"""``namazu demo`` end to end on its own stack: every published sample is stored."""

from __future__ import annotations

import psutil
import pytest

from server import demo


@pytest.mark.services
def test_demo_stores_every_published_sample(tmp_path, capsys):
    data_dir = tmp_path / "demo"
    assert demo.main(["--data-dir", str(data_dir), "--days", "0.1"]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.startswith("gw-")]
    assert len(rows) == len(demo.DEMO_GATEWAYS) * sum(demo.DEMO_HERD.values())
    assert all(int(r[2]) == int(r[3]) > 0 for r in rows)
    assert "MISSING" not in out
    total = [line for line in out.splitlines() if line.startswith("total")][0].split()
    assert int(total[1]) == int(total[2]) == sum(int(r[2]) for r in rows)
    assert (data_dir / "mosquitto" / "mosquitto.conf").exists()
    leftovers = [
        p.info["pid"]
        for p in psutil.process_iter(["pid", "cmdline"])
        if any(str(data_dir) in part for part in p.info["cmdline"] or [])
    ]
    assert leftovers == [], "demo left services running"


def test_demo_rejects_bad_days(capsys):
    assert demo.main(["--days", "0"]) == 2
    assert "--days" in capsys.readouterr().err
