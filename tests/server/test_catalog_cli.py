"""``namazu catalog import|fetch`` end to end: real files, real local HTTP server."""

from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import pytest
from numpy.testing import assert_allclose
from pandas.testing import assert_frame_equal

from namazu.analytics.catalog import REVISION_COLUMN
from namazu.server.catalogue.cli import UPDATED_AFTER_OVERLAP
from namazu.server.catalogue.files import CatalogFileError, read_catalog
from namazu.server.cli import main as namazu
from tests.conftest import require_data
from tests.server.fdsn_stub import ScriptedResponse, fdsn_stub

EMILIA = "catalogs/fdsn_text_ingv_emilia_2012-05-29.txt"


@pytest.mark.parametrize(
    "relpath",
    [
        "catalogs/comcat_2023-03-24_2023-03-31_m2.5.csv",
        "catalogs/quakeml_ingv_25883681_ussita_2021-01-01.xml",
        "catalogs/usgs_significant_month_2023-02-27.geojson",
        "catalogs/fdsn_text_iris_style_obspy.txt",
    ],
)
def test_import_round_trips_through_project_csv(relpath: str, tmp_path: Path, capsys) -> None:
    source = require_data(relpath)
    out = tmp_path / "catalog.csv"
    assert namazu(["catalog", "import", str(source), "--out", str(out)]) == 0
    original = read_catalog(source)
    assert f"{len(original)} events written to {out}" in capsys.readouterr().out
    assert_frame_equal(read_catalog(out), original)


def test_import_gzip_with_format_and_merge(tmp_path: Path, capsys) -> None:
    source = require_data("catalogs/central_italy_2016-10_2017-04_bsi.csv")
    packed = tmp_path / "bsi.csv.gz"
    packed.write_bytes(gzip.compress(source.read_bytes()))
    out = tmp_path / "merged.csv"
    argv = ["catalog", "import", str(packed), "--format", "csep-csv", "--merge-duplicates"]
    assert namazu([*argv, "--out", str(out)]) == 0
    assert "(3 near-duplicates merged)" in capsys.readouterr().out
    assert len(read_catalog(out)) == 7924


def test_import_errors_are_one_line(tmp_path: Path, capsys) -> None:
    out = tmp_path / "x.csv"
    missing = tmp_path / "nope.csv"
    assert namazu(["catalog", "import", str(missing), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(missing) in err and "Traceback" not in err
    bad = tmp_path / "bad.txt"
    bad.write_text("#EventID|Time|Latitude|Longitude\n1|2020-01-01|95|13\n", encoding="utf-8")
    assert namazu(["catalog", "import", str(bad), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "line 2" in err and "'latitude'" in err
    assert not out.exists()
    with pytest.raises(CatalogFileError, match="nope.csv"):
        read_catalog(missing)


def test_fetch_is_incremental_and_keeps_every_revision(tmp_path: Path, capsys) -> None:
    text = require_data(EMILIA).read_text(encoding="utf-8")
    revised = text.replace("|ML|2.9|", "|Mw|3.1|")  # event 863291 gets a new magnitude
    assert revised != text
    out = tmp_path / "ingv.csv"
    script = [
        ScriptedResponse(200, text.encode()),
        ScriptedResponse(503, b"busy"),
        ScriptedResponse(200, revised.encode()),
        ScriptedResponse(204),
    ]
    with fdsn_stub(script) as stub:
        base = [
            "catalog",
            "fetch",
            "--source",
            stub.base_url,
            "--start",
            "2012-05-29T00:00:00",
            "--end",
            "2012-05-30",
            "--min-magnitude",
            "1.5",
            "--farm",
            "44.87,11.03",
            "--radius-km",
            "30",
            "--backoff-s",
            "0",
            "--out",
            str(out),
        ]
        assert namazu(base) == 0
        assert "8 new revisions appended" in capsys.readouterr().out
        assert "updatedafter" not in stub.requests[0]
        first_revision = pd.read_csv(out)[REVISION_COLUMN].iloc[0]

        assert namazu(base) == 0
        assert "1 new revisions appended" in capsys.readouterr().out
        asked = pd.Timestamp(stub.requests[2]["updatedafter"], tz="UTC")
        expected = pd.Timestamp(first_revision) - UPDATED_AFTER_OVERLAP
        assert abs(asked - expected) < pd.Timedelta(milliseconds=1)

        assert namazu(base) == 0
        assert "0 events" in capsys.readouterr().out
    assert len(stub.requests) == 4
    stored = pd.read_csv(out)
    assert len(stored) == 9  # 8 first revisions + 1 revision of 863291
    assert (stored["event_id"] == 863291).sum() == 2
    current = read_catalog(out)
    assert len(current) == 8
    changed = current[current["event_id"] == "863291"].iloc[0]
    assert changed["mag_type"] == "Mw"
    assert_allclose(changed["magnitude"], 3.1)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--source", "GFZ"], "--source: unknown FDSN service 'GFZ'; use one of INGV, USGS"),
        (["--start", "soon"], "--start: 'soon' is not an ISO 8601"),
        (["--farm", "43.0"], "--farm and --radius-km must be given together"),
        (["--farm", "43.0;13", "--radius-km", "10"], "--farm: '43.0;13' is not LAT,LON"),
        (["--end", "2019-01-01"], "is not after --start"),
    ],
)
def test_fetch_argument_errors_exit_2(extra: list[str], message: str, tmp_path, capsys) -> None:
    argv = ["catalog", "fetch", "--source", "INGV", "--start", "2020-01-01"]
    argv += ["--end", "2020-02-01", "--out", str(tmp_path / "c.csv"), *extra]
    assert namazu(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_fetch_unavailable_service_exits_1(tmp_path: Path, capsys) -> None:
    with fdsn_stub([ScriptedResponse(503, b"down")] * 2) as stub:
        argv = ["catalog", "fetch", "--source", stub.base_url, "--start", "2020-01-01"]
        argv += ["--end", "2020-01-02", "--retries", "1", "--backoff-s", "0"]
        assert namazu([*argv, "--out", str(tmp_path / "c.csv")]) == 1
    err = capsys.readouterr().err
    assert "HTTP 503" in err and "gave up after 1 retries" in err and err.count("\n") == 1
    assert not (tmp_path / "c.csv").exists()
