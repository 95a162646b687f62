"""``namazu import movebank`` on the real Movebank files (plain and gzip)."""

from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import pytest
from numpy.testing import assert_allclose

from namazu.server.cli import main as namazu
from namazu.server.research.importer import ACTIVITY_CSV_COLUMNS, ImportFileError, read_movebank
from tests.conftest import require_data

ALBATROSSES = "movebank/albatrosses_study2911040_events.csv"
GULLS = "movebank/gulls_study985143423_events.csv"


def test_import_movebank_writes_normalised_activity_csv(tmp_path: Path, capsys) -> None:
    out = tmp_path / "albatross.csv"
    assert namazu(["import", "movebank", str(require_data(ALBATROSSES)), "--out", str(out)]) == 0
    assert "45 rows of 9 individual(s)" in capsys.readouterr().out
    written = pd.read_csv(out, dtype={"individual": str})
    assert tuple(written.columns) == ACTIVITY_CSV_COLUMNS
    assert written["time"].str.endswith("Z").all()
    direct = read_movebank(require_data(ALBATROSSES))
    assert_allclose(written["odba"], direct["odba"], rtol=1e-12)
    assert_allclose(written["vedba"], direct["vedba"], rtol=1e-12)
    assert list(written["individual"]) == list(direct["individual"])
    assert (pd.to_datetime(written["time"], utc=True) == direct["time"]).all()


def test_import_gzip_web_spelling_to_stdout(tmp_path: Path, capsys) -> None:
    events = pd.read_csv(require_data(GULLS), dtype=str, keep_default_na=False)
    web = events.rename(
        columns={
            "individual_local_identifier": "individual-local-identifier",
            "acceleration_raw_x": "acceleration-raw-x",
            "acceleration_raw_y": "acceleration-raw-y",
            "acceleration_raw_z": "acceleration-raw-z",
            "start_timestamp": "start-timestamp",
            "tag_local_identifier": "tag-local-identifier",
        }
    ).drop(columns=["tilt_x", "tilt_y", "tilt_z"])
    packed = tmp_path / "gulls-web.csv.gz"
    packed.write_bytes(gzip.compress(web.to_csv(index=False).encode()))
    assert namazu(["import", "movebank", str(packed)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "time,individual,odba,vedba"
    assert len(lines) == 60  # header + 59 bursts
    assert lines[1].startswith("2021-03-03T00:57:06.000Z,5508292,")


def test_import_errors_are_one_line(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "none.csv"
    assert namazu(["import", "movebank", str(missing)]) == 1
    err = capsys.readouterr().err
    assert "none.csv: no such file" in err and err.count("\n") == 1
    gps_only = require_data("movebank/o_assen_export/O_ASSEN-gps-2019.csv.gz")
    assert namazu(["import", "movebank", str(gps_only)]) == 1
    err = capsys.readouterr().err
    assert "O_ASSEN-gps-2019.csv.gz: no acceleration data" in err and err.count("\n") == 1
    broken = tmp_path / "broken.csv.gz"
    broken.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(ImportFileError, match="broken.csv.gz: cannot read"):
        read_movebank(broken)


ACTIVITY_2017 = "wikelski2020/activity_2017-01-17_2017-04-14.csv"


def test_import_csv_column_in_utc(tmp_path: Path, capsys) -> None:
    out = tmp_path / "cow.csv"
    argv = ["import", "csv", str(require_data(ACTIVITY_2017)), "--column", "cow"]
    assert namazu([*argv, "--out", str(out)]) == 0
    assert "8313 rows of 1 individual(s)" in capsys.readouterr().out
    written = pd.read_csv(out)
    assert tuple(written.columns) == ACTIVITY_CSV_COLUMNS
    assert written["time"].iloc[0] == "2017-01-17T00:15:00.000Z"
    assert written["time"].iloc[-1] == "2017-04-14T14:15:00.000Z"
    assert set(written["individual"]) == {"cow"}
    assert written["vedba"].isna().all()
    assert_allclose([written["odba"].min(), written["odba"].max()], [22095, 264929], rtol=1e-5)


def test_import_csv_local_zone_names_dst_rows(tmp_path: Path, capsys) -> None:
    """The 2017 series runs through the night of 2017-03-26 in regular 15-min steps, so
    read as Rome local time it would contain times that do not exist (02:00-02:45)."""
    argv = ["import", "csv", str(require_data(ACTIVITY_2017)), "--column", "dog"]
    assert namazu([*argv, "--timezone", "Europe/Rome"]) == 1
    err = capsys.readouterr().err
    assert "Europe/Rome" in err and "6489, 6490, 6491, 6492" in err and err.count("\n") == 1


def test_import_csv_unknown_column_exit_1(tmp_path: Path, capsys) -> None:
    argv = ["import", "csv", str(require_data(ACTIVITY_2017)), "--column", "horse"]
    assert namazu(argv) == 1
    err = capsys.readouterr().err
    assert "'horse'" in err and "cow" in err and err.count("\n") == 1
