"""``namazu analyze`` end to end: the 2017 study data, outputs, and one-line input errors."""

from __future__ import annotations

import json
from pathlib import PurePath

import pandas as pd
import pytest

from namazu.server.research.analysis import main
from tests.conftest import PROJECT_ROOT, require_data

ACTIVITY = "wikelski2020/activity_2017-01-17_2017-04-14.csv"
CATALOG = "wikelski2020/catalog_2017-01-17_2017-04-16.csv"
FARM = "43.0147,13.0509"


@pytest.fixture(scope="module")
def study_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("analysis")
    argv = [
        "--activity", str(require_data(ACTIVITY)),
        "--catalog", str(require_data(CATALOG)),
        "--farm", FARM,
        "--column", "animal",
        "--resolution", "15min",
        "--periods", str(PROJECT_ROOT / "server" / "research" / "periods" / "wikelski2020.csv"),
        "--out", str(out),
        "--no-progress",
    ]  # fmt: skip
    assert main(argv) == 0
    return out, json.loads((out / "summary.json").read_text(encoding="utf-8"))


def test_study_summary_has_alarms_parameters_and_both_evaluations(study_run):
    out, summary = study_run
    assert summary["parameters"]["rule"]["increase_pct"] == 140.0
    assert summary["parameters"]["rule"]["rule_version"] == summary["rule_version"]
    assert summary["parameters"]["evaluation"]["n_shifts"] == 1000
    alarms = summary["alarms"]
    assert alarms, "the 2017 series has surges of >= 140 % lasting >= 45 min"
    for alarm in alarms:
        start, end = pd.Timestamp(alarm["start"]), pd.Timestamp(alarm["end"])
        assert end >= start and alarm["peak_ratio"] >= 2.4
        assert alarm["duration_min"] >= 45
    for key in ("all_events", "declustered"):
        result = summary["evaluation"][key]
        for field in ("targets", "hits", "false_alarms", "alarm_fraction", "probability_gain",
                      "p_binomial", "p_shift"):  # fmt: skip
            assert field in result
        assert result["hits"] + result["misses"] == result["targets"]
        assert 0 <= result["alarm_fraction"] <= 1
    assert (
        summary["evaluation"]["declustered"]["targets"]
        <= summary["evaluation"]["all_events"]["targets"]
    )
    assert set(summary["periods"]) == {"stable", "pasture"}
    stable, pasture = (summary["periods"][k]["all_events"] for k in ("stable", "pasture"))
    whole = summary["evaluation"]["all_events"]
    assert stable["targets"] + pasture["targets"] == whole["targets"]
    assert stable["alarms"] + pasture["alarms"] == whole["alarms"]
    table = pd.read_csv(out / "alarms.csv")
    assert len(table) == len(alarms)
    assert list(table.columns[:4]) == ["series", "start", "declared_at", "end"]


#: The figures of docs/worked-example.md (and the README): set -> targets, hits, false
#: alarms, tau [-] to 3 decimals, probability gain, p binomial, p shift (None = n/a).
WORKED_EXAMPLE = {
    ("whole", "all_events"): (2, 0, 9, 0.074, 0.0, 1.0, 1.0),
    ("whole", "declustered"): (2, 0, 9, 0.074, 0.0, 1.0, 1.0),
    ("stable", "all_events"): (2, 0, 0, 0.0, None, None, None),
    ("stable", "declustered"): (2, 0, 0, 0.0, None, None, None),
    ("pasture", "all_events"): (0, 0, 9, 0.181, None, None, None),
    ("pasture", "declustered"): (0, 0, 9, 0.181, None, None, None),
}


@pytest.mark.parametrize(("span", "kind"), list(WORKED_EXAMPLE))
def test_study_figures_are_those_of_the_worked_example(study_run, span, kind):
    _, summary = study_run
    result = summary["evaluation" if span == "whole" else "periods"]
    result = result[kind] if span == "whole" else result[span][kind]
    targets, hits, false_alarms, tau, gain, p_binomial, p_shift = WORKED_EXAMPLE[span, kind]
    assert (result["targets"], result["hits"], result["false_alarms"]) == (
        targets,
        hits,
        false_alarms,
    )
    assert round(result["alarm_fraction"], 3) == tau
    assert (result["probability_gain"], result["p_binomial"]) == (gain, p_binomial)
    assert result["p_shift"] == p_shift
    assert len(summary["alarms"]) == 9 and not any(a["reaction"] for a in summary["alarms"])
    assert summary["monitored"]["hours"] == pytest.approx(2006.25)


def test_study_catalogue_near_duplicates_are_merged_before_scoring(study_run):
    from namazu.analytics.catalog import merge_near_duplicates
    from namazu.server.catalogue.files import read_catalog

    _, summary = study_run
    raw = read_catalog(require_data(CATALOG))
    merged = merge_near_duplicates(raw, 2.0, 5.0)
    record = summary["catalog"]
    assert record["events_read"] == len(raw) == summary["inputs"]["catalog_events"]
    assert record["near_duplicates_merged"] == len(raw) - len(merged) > 0
    assert record["events_scored"] == len(merged)
    assert (record["duplicate_max_dt_s"], record["duplicate_max_km"]) == (2.0, 5.0)
    assert record["mainshocks"] == summary["inputs"]["catalog_mainshocks"]


def test_study_monitoring_starts_with_a_defined_baseline(study_run):
    _, summary = study_run
    first = pd.Timestamp(summary["monitored"]["intervals"][0][0])
    # data resume on 2017-01-18 after the first gap; three previous days are needed
    assert first >= pd.Timestamp("2017-01-20", tz="UTC")
    assert summary["inputs"]["samples"] == 8313


def test_report_is_self_contained(study_run):
    out, summary = study_run
    html = (out / "report.html").read_text(encoding="utf-8")
    targets = summary["evaluation"]["all_events"]["targets"]
    assert targets == 2
    # overview, one zoom per target, Molchan, lead time
    assert html.count("<svg") == 3 + targets
    assert "Molchan" in html and "95 % binomial" in html and "Lead time" in html
    for marker in ('src="http', "src='http", 'href="http', "<script src", "<link "):
        assert marker not in html


def test_report_is_readable_and_names_no_machine_paths(study_run):
    out, summary = study_run
    html = (out / "report.html").read_text(encoding="utf-8")
    for item in summary["provenance"]["inputs"].values():
        folder = str(PurePath(item["path"]).parent)
        assert folder not in html, folder
        assert PurePath(item["path"]).name in html
    assert str(out) not in html
    assert "Target 1: M 4.0" in html and "Target 2: M 4.2" in html  # one zoom each
    assert "log scale" in html and "period boundary" in html and "stable from" in html
    # parameters as table rows, not a JSON block
    assert "<td><code>increase_pct</code></td><td>140.0</td>" in html
    assert '"increase_pct": 140.0' not in html
    # long lines wrap instead of widening the page
    assert "pre, code { white-space: pre-wrap;" in html and "max-width: 100%" in html


def _run(tmp_path, capsys, **changes):
    argv = {
        "--activity": str(require_data(ACTIVITY)),
        "--catalog": str(require_data(CATALOG)),
        "--farm": FARM,
        "--out": str(tmp_path / "out"),
    }
    argv.update(changes)
    flat = [x for pair in argv.items() for x in pair] + ["--no-progress", "--n-shifts", "0"]
    code = main(flat)
    return code, capsys.readouterr().err


def test_missing_column_is_one_line_error(tmp_path, capsys):
    code, err = _run(tmp_path, capsys, **{"--column": "horse"})
    assert code == 1
    assert err.strip().splitlines() == [
        "namazu analyze: error: activity file has no column 'horse'; "
        "columns present: time, cow, dog, sheep, animal"
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("time,animal\n2017-01-01T00:15:00,1\n2017-01-01T00:00:00,2\n", "not sorted"),
        ("time,animal\n2017-01-01T00:00:00,1\n2017-01-01T00:00:00,2\n", "duplicated"),
        ("time,animal\n2017-01-01T00:00:00,1\n2017-01-01T00:07:00,2\n", "not on the"),
        (b"\xff\xfe\x00garbage", "not UTF-8"),
    ],
)
def test_bad_activity_files(tmp_path, capsys, content, message):
    path = tmp_path / "activity.csv"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    code, err = _run(tmp_path, capsys, **{"--activity": str(path)})
    assert code == 1
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_ambiguous_local_times_are_named(tmp_path, capsys):
    path = tmp_path / "activity.csv"
    path.write_text("time,animal\n2017-10-29T01:45:00,1\n2017-10-29T02:15:00,2\n")
    code, err = _run(tmp_path, capsys, **{"--activity": str(path), "--timezone": "Europe/Rome"})
    assert code == 1 and "ambiguous" in err and "line(s) 3" in err


def test_unreadable_inputs(tmp_path, capsys):
    code, err = _run(tmp_path, capsys, **{"--catalog": str(tmp_path / "nope.csv")})
    assert code == 1 and "catalogue file not found" in err
    code, err = _run(tmp_path, capsys, **{"--activity": str(tmp_path)})
    assert code == 1 and "is a directory" in err
    code, err = _run(tmp_path, capsys, **{"--farm": "north"})
    assert code == 1 and "--farm must be LAT,LON" in err
    with pytest.raises(SystemExit) as stopped:  # a range error of the command line
        _run(tmp_path, capsys, **{"--increase-pct": "-150"})
    assert stopped.value.code == 2
    assert "argument --increase-pct: must be > 0, got -150" in capsys.readouterr().err


def _sha256(path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_provenance_records_checksums_versions_and_the_command(study_run):
    import numpy as np
    import scipy

    out, summary = study_run
    provenance = summary["provenance"]
    periods = PROJECT_ROOT / "server" / "research" / "periods" / "wikelski2020.csv"
    for name, path in (
        ("activity", require_data(ACTIVITY)),
        ("catalog", require_data(CATALOG)),
        ("periods", periods),
    ):
        record = provenance["inputs"][name]
        assert record["sha256"] == _sha256(path)
        assert record["bytes"] == path.stat().st_size
        assert record["path"] == str(path.resolve())
    software = provenance["software"]
    assert software["numpy"] == np.__version__ and software["scipy"] == scipy.__version__
    assert software["pandas"] == pd.__version__ and software["namazu"]
    assert provenance["argv"][:2] == ["namazu", "analyze"] and "--periods" in provenance["argv"]
    rerun = provenance["rerun"]
    assert rerun[rerun.index("--increase-pct") + 1] == "140.0"
    assert rerun[rerun.index("--seed") + 1] == str(summary["parameters"]["evaluation"]["seed"])
    run_utc = pd.Timestamp(provenance["run_utc"])
    assert run_utc.tzinfo is not None and run_utc <= pd.Timestamp.now(tz="UTC")
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "Provenance" in html and provenance["inputs"]["activity"]["sha256"] in html


def test_chance_statement_in_summary_and_report(study_run):
    out, summary = study_run
    # the study data: 0 of 2 targets hit, p = 1 (docs/worked-example.md)
    for key in ("all_events", "declustered"):
        assert summary["statement"][key].startswith("0 of 2 target earthquakes")
        assert "indistinguishable from chance" in summary["statement"][key]
        assert "no forecasting skill is shown" in summary["statement"][key]
    assert "no forecasting skill is shown" in (out / "report.html").read_text(encoding="utf-8")


def test_verify_reproduces_the_study_run(study_run, capsys):
    out, _ = study_run
    assert main(["--verify", str(out / "summary.json")]) == 0
    assert "counts identical and every figure within a relative 1e-09" in capsys.readouterr().out


def test_verify_names_a_changed_input(tmp_path, capsys):
    activity = tmp_path / "activity.csv"
    activity.write_bytes(require_data(ACTIVITY).read_bytes())
    argv = [
        "--activity", str(activity),
        "--catalog", str(require_data(CATALOG)),
        "--farm", FARM,
        "--out", str(tmp_path / "out"),
        "--n-shifts", "0",
        "--no-progress",
    ]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "all events: 0 of 2 target earthquakes" in printed
    assert "no forecasting skill is shown" in printed
    summary_path = tmp_path / "out" / "summary.json"
    assert main(["--verify", str(summary_path)]) == 0
    capsys.readouterr()
    lines = activity.read_text(encoding="utf-8").splitlines()
    for k in range(len(lines) - 4, len(lines)):  # a huge surge in the last hour: one alarm more
        cells = lines[k].split(",")
        lines[k] = ",".join([*cells[:-1], "9999999"])
    activity.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert main(["--verify", str(summary_path)]) == 1
    err = capsys.readouterr().err
    assert f"activity file {activity.resolve()} changed: sha256" in err
    assert "alarms: 10 entries (recorded 9)" in err


def test_verify_compares_counts_exactly_and_floats_within_1e9():
    from namazu.server.research.analysis import compare_figures

    recorded = {"n": 2, "tau": 0.0739, "p": None, "rows": [{"ok": True, "x": 1.0}]}
    assert compare_figures(recorded, {**recorded, "tau": 0.0739 * (1 + 5e-10)}) == []
    assert compare_figures(recorded, {**recorded, "tau": 0.0739 * (1 + 2e-9)}) == [
        f"summary.tau: {0.0739 * (1 + 2e-9)!r} (recorded 0.0739)"
    ]
    assert compare_figures(recorded, {**recorded, "n": 3}) == ["summary.n: 3 (recorded 2)"]
    assert compare_figures(recorded, {**recorded, "p": 1.0}) == ["summary.p: 1.0 (recorded None)"]
    changed = {**recorded, "rows": [{"ok": False, "x": 1.0}]}
    assert compare_figures(recorded, changed, "evaluation") == [
        "evaluation.rows[0].ok: False (recorded True)"
    ]
    assert compare_figures(recorded, {**recorded, "rows": []}) == [
        "summary.rows: 0 entries (recorded 1)"
    ]


def test_movebank_activity_of_one_day_has_no_monitored_time(tmp_path, capsys):
    gulls = require_data("movebank/gulls_study985143423_events.csv")
    code, err = _run(
        tmp_path, capsys, **{"--activity": str(gulls), "--activity-format": "movebank"}
    )
    assert code == 1
    assert err.strip().splitlines() == [
        "namazu analyze: error: no monitored time: the baseline needs 3 previous days "
        "of data at the same time of day"
    ]


def test_movebank_activity_needs_an_acceleration_metric(tmp_path, capsys):
    gulls = require_data("movebank/gulls_study985143423_events.csv")
    code, err = _run(
        tmp_path,
        capsys,
        **{"--activity": str(gulls), "--activity-format": "movebank", "--column": "animal"},
    )
    assert code == 1 and "--column must be odba or vedba" in err


def test_verify_rejects_a_summary_without_provenance(tmp_path, capsys):
    path = tmp_path / "summary.json"
    path.write_text(json.dumps({"inputs": {}}), encoding="utf-8")
    assert main(["--verify", str(path)]) == 1
    err = capsys.readouterr().err
    assert "no provenance record" in err and len(err.strip().splitlines()) == 1
