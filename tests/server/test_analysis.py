"""``namazu analyze`` end to end: the 2017 study data, outputs, and one-line input errors."""

from __future__ import annotations

import json
from pathlib import PurePath

import numpy as np
import pandas as pd
import pytest

from namazu.server.research.analysis import main
from tests.conftest import PROJECT_ROOT, require_data

ACTIVITY = "wikelski2020/activity_2017-01-17_2017-04-14.csv"
CATALOG = "wikelski2020/catalog_2017-01-17_2017-04-16.csv"
HISTORY = "catalogs/central_italy_2016-10_2017-04_bsi.csv"
FARM = "43.0147,13.0509"


@pytest.fixture(scope="module")
def study_run(tmp_path_factory):
    """The worked example's command (README, docs/worked-example.md); what it printed is
    kept in ``printed.txt``."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("analysis")
    argv = [
        "--activity", str(require_data(ACTIVITY)),
        "--catalog", str(require_data(CATALOG)),
        "--decluster-catalog", str(require_data(HISTORY)),
        "--farm", FARM + ",580",
        "--column", "animal",
        "--resolution", "15min",
        "--periods", str(PROJECT_ROOT / "server" / "research" / "periods" / "wikelski2020.csv"),
        "--sweep", "--sweep-columns", "animal,cow,dog,sheep",
        "--out", str(out),
        "--no-progress",
    ]  # fmt: skip
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(argv) == 0
    (out / "printed.txt").write_text(printed.getvalue(), encoding="utf-8")
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
#: alarms, tau [-] to 4 decimals, probability gain, p binomial, p shift (None = undefined).
WORKED_EXAMPLE = {
    ("whole", "all_events"): (2, 0, 9, 0.0739, 0.0, 1.0, 1.0),
    ("whole", "declustered"): (0, 0, 9, 0.0739, None, None, None),
    ("reference", "all_events"): (2, 2, 140, 0.6784, 1.4741, 0.4602, 0.6563),
    ("reference", "declustered"): (0, 0, 144, 0.6784, None, None, None),
    ("stable", "all_events"): (2, 0, 0, 0.0, None, None, None),
    ("stable", "declustered"): (0, 0, 0, 0.0, None, None, None),
    ("pasture", "all_events"): (0, 0, 9, 0.1811, None, None, None),
    ("pasture", "declustered"): (0, 0, 9, 0.1811, None, None, None),
}


def _result(summary, span, kind):
    if span in ("whole", "reference"):
        return summary["evaluation" if span == "whole" else "reference"][kind]
    return summary["periods"][span][kind]


def _rounded(value, digits=4):
    return None if value is None else round(value, digits)


@pytest.mark.parametrize(("span", "kind"), list(WORKED_EXAMPLE))
def test_study_figures_are_those_of_the_worked_example(study_run, span, kind):
    _, summary = study_run
    result = _result(summary, span, kind)
    targets, hits, false_alarms, tau, gain, p_binomial, p_shift = WORKED_EXAMPLE[span, kind]
    assert (result["targets"], result["hits"], result["false_alarms"]) == (
        targets,
        hits,
        false_alarms,
    )
    assert round(result["alarm_fraction"], 4) == tau
    assert _rounded(result["probability_gain"]) == gain
    assert (_rounded(result["p_binomial"]), _rounded(result["p_shift"])) == (p_binomial, p_shift)
    assert len(summary["alarms"]) == 9 and not any(a["reaction"] for a in summary["alarms"])
    assert summary["monitored"]["hours"] == pytest.approx(2006.25)


def test_study_figures_recomputed_independently(study_run):
    """τ, the intervals, the power line and the reference recomputed from the outputs and
    the catalogue with plain pandas and scipy, not with the evaluation code."""
    from scipy import stats

    out, summary = study_run
    monitored = pd.DataFrame(summary["monitored"]["intervals"], columns=["start", "end"])
    monitored = monitored.apply(pd.to_datetime)
    hours = ((monitored["end"] - monitored["start"]).dt.total_seconds() / 3600).sum()

    def covered_hours(starts: pd.Series, ends: pd.Series) -> float:
        """Hours of the union of [start, end] inside monitored time, by plain sweeping."""
        merged: list[list[pd.Timestamp]] = []
        for a, b in sorted(zip(starts, ends, strict=True)):
            if merged and a <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        total = pd.Timedelta(0)
        for a, b in merged:
            for m0, m1 in zip(monitored["start"], monitored["end"], strict=True):
                overlap = min(b, m1) - max(a, m0)
                total += max(overlap, pd.Timedelta(0))
        return total / pd.Timedelta(hours=1)

    alarms = pd.read_csv(out / "alarms.csv", parse_dates=["start", "declared_at", "end"])
    assert (alarms["declared_at"] - alarms["start"] == pd.Timedelta("45min")).all()
    tau = covered_hours(alarms["declared_at"], alarms["end"] + pd.Timedelta("20h")) / hours
    whole = summary["evaluation"]["all_events"]
    assert whole["alarm_fraction"] == pytest.approx(tau, rel=1e-3)
    assert whole["perfect_p_binomial"] == pytest.approx(whole["alarm_fraction"] ** 2, rel=1e-12)
    upper = 1 - 0.025**0.5  # Clopper-Pearson upper limit of 0 of 2 at 95 %
    assert whole["hit_rate_interval"] == pytest.approx([0.0, upper], rel=1e-12)
    assert whole["gain_interval"][1] == pytest.approx(upper / whole["alarm_fraction"])
    # the power line: both targets lie within 22 min, so a shifted cover that catches one
    # almost always catches both: the perfect record's shift p is about τ, not τ**2
    assert abs(whole["perfect_p_shift"] - whole["alarm_fraction"]) < 0.03
    assert summary["power"]["all_events"] == (
        "With N = 2 targets and τ = 0.0739, a perfect record (2 of 2 hits) would give "
        "p_binom = 0.0055 and p_shift = 0.075: no result on these data could show skill."
    )
    # zero hits is the likeliest outcome under chance: P(H = 0) = (1 - τ)**2
    assert stats.binom.pmf(0, 2, whole["alarm_fraction"]) == pytest.approx(0.858, abs=5e-4)
    # the reference: 20 h after every M >= 2.5 within 30 km (haversine here)
    catalog = pd.read_csv(require_data(CATALOG), parse_dates=["time"])
    catalog["time"] = catalog["time"].dt.tz_localize("UTC")
    lat, lon = np.radians(catalog["latitude"]), np.radians(catalog["longitude"])
    phi, lam = np.radians(43.0147), np.radians(13.0509)
    a = np.sin((lat - phi) / 2) ** 2 + np.cos(phi) * np.cos(lat) * np.sin((lon - lam) / 2) ** 2
    km = 2 * 6371.0 * np.arcsin(np.sqrt(a))
    opening = catalog.loc[(catalog["magnitude"] >= 2.5) & (km <= 30.0), "time"]
    reference = summary["reference"]["all_events"]
    inside = [  # an alarm counts where it is declared: in monitored time
        any(a <= t < b for a, b in zip(monitored["start"], monitored["end"], strict=True))
        for t in opening
    ]
    opening = opening[inside]
    assert reference["alarms"] == len(opening)
    tau_ref = covered_hours(opening, opening + pd.Timedelta("20h")) / hours
    assert reference["alarm_fraction"] == pytest.approx(tau_ref, rel=1e-3)
    assert reference["p_binomial"] == pytest.approx(reference["alarm_fraction"] ** 2)
    # hypocentral distances with the farm at 580 m match the study's own column
    targets = pd.read_csv(out / "targets.csv")
    counted = targets[targets["status"] == "miss"]
    study = catalog.set_index(catalog["time"].dt.strftime("%Y-%m-%dT%H:%M:%S+00:00"))
    for _, row in counted.iterrows():
        assert row["hypocentral_km"] == pytest.approx(
            study.loc[row["time"], "hypocentral_distance_km"], abs=0.05
        )


def test_study_sweep_is_corrected_for_the_whole_grid(study_run):
    out, summary = study_run
    sweep = summary["sweep"]
    table = pd.read_csv(out / "sweep.csv")
    assert len(table) == sweep["combinations"] == 4 * 3**4
    best = sweep["best"]
    assert (best["column"], best["increase_pct"], best["min_duration_min"]) == ("dog", 200.0, 30.0)
    assert (best["lead_window_h"], best["min_magnitude"]) == (10.0, 3.5)
    assert (best["targets"], best["hits"]) == (10, 7)
    assert round(best["p_shift"], 4) == 0.025
    assert round(best["p_westfall_young"], 3) == 0.299 and best["p_holm"] == 1.0
    assert best["p_shift"] == table["p_shift"].min()
    scored = table.dropna(subset=["p_shift"])
    undefined = (table["targets"] == 0) | (table["alarm_fraction"] == 0)  # none at M >= 4.5
    assert table["p_shift"].isna().tolist() == undefined.tolist()
    assert table["p_westfall_young"].isna().tolist() == undefined.tolist()
    assert (scored["p_westfall_young"] >= scored["p_shift"]).all()
    assert "nothing is distinguishable from chance" in sweep["statement"]
    configured = table[
        (table["column"] == "animal")
        & (table["increase_pct"] == 140)
        & (table["min_duration_min"] == 45)
        & (table["lead_window_h"] == 20)
        & (table["min_magnitude"] == 4.0)
    ]
    assert configured["p_shift"].tolist() == [summary["evaluation"]["all_events"]["p_shift"]]


def test_study_tables_for_pandas_and_r(study_run):
    out, summary = study_run
    samples = pd.read_csv(out / "samples.csv")
    assert list(samples.columns) == [
        "time", "value", "baseline", "threshold", "ratio", "anomalous", "episode",
    ]  # fmt: skip
    assert samples["episode"].nunique() == 9 and samples["anomalous"].sum() >= 9 * 3
    targets = pd.read_csv(out / "targets.csv")
    assert targets["status"].value_counts().to_dict() == {"not monitored": 10, "miss": 2}
    assert set(targets.loc[targets["status"] == "miss", "status_declustered"]) == {"not counted"}
    assert summary["catalog"]["history_events"] > 7000
    assert summary["evaluation_version"] == "namazu-evaluation/2"
    assert summary["parameters"]["rule"]["rule_version"] == "namazu-rule/1"
    assert summary["parameters"]["rule"]["sample_label"] == "start"


def test_study_printout_is_the_one_in_the_docs(study_run):
    out, _ = study_run
    printed = (out / "printed.txt").read_text(encoding="utf-8").splitlines()
    docs = (PROJECT_ROOT / "docs" / "worked-example.md").read_text(encoding="utf-8")
    assert printed[-1].startswith("written: ")
    assert "\n".join(printed[:-1]) in docs


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
    # the study data: 0 of 2 targets hit, p = 1; declustered, no target is left
    statement = summary["statement"]["all_events"]
    assert statement.startswith("0 of 2 target earthquakes")
    assert "indistinguishable from chance" in statement
    assert "no forecasting skill is shown" in statement
    assert summary["statement"]["declustered"].startswith("Declustering left no target")
    report = (out / "report.html").read_text(encoding="utf-8")
    assert "no forecasting skill is shown" in report and "no result on these data" in report


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


def _table_row(label: str, r: dict) -> str:
    """A row of the worked example's table, formatted from a result of summary.json."""
    short = {
        "no target earthquake left after declustering": "no target left",
        "no alarm time in monitored time": "no alarm",
        "no target earthquake in monitored time": "no target",
    }

    def p(key: str) -> str:
        if r[key] is None:
            reason = short[r[f"{key}_reason"]]
            return f"undefined ({reason})" if key == "p_binomial" else "undefined"
        return "1.0" if r[key] == 1 else f"{r[key]:.2g}"

    tau = "0" if r["alarm_fraction"] == 0 else f"{r['alarm_fraction']:.3f}"
    rate = "–"
    if r["targets"]:
        lo, hi = r["hit_rate_interval"]
        rate = f"{r['hit_rate']:.2g} ({lo:.2g}–{hi:.2g})"
    gain = "–"
    if r["probability_gain"] is not None:
        lo, hi = r["gain_interval"]
        gain = f"{r['probability_gain']:.3g} ({lo:.2g}–{hi:.3g})"
    cells = [label, r["targets"], r["hits"], r["false_alarms"], tau, rate, gain]
    return "| " + " | ".join(str(c) for c in cells) + f" | {p('p_binomial')} | {p('p_shift')} |"


def test_worked_example_table_in_readme_and_docs_is_the_run(study_run):
    out, summary = study_run
    rows = [
        _table_row("whole period, all events", summary["evaluation"]["all_events"]),
        _table_row("seismicity reference, all events", summary["reference"]["all_events"]),
        _table_row(
            "whole period, declustered with the history from 1 Oct 2016",
            summary["evaluation"]["declustered"],
        ),
        _table_row("stable (to 11 March)", summary["periods"]["stable"]["all_events"]),
        _table_row("pasture (from 11 March)", summary["periods"]["pasture"]["all_events"]),
    ]
    b = summary["sweep"]["best"]
    rows.append(
        f"| sweep, best of {summary['sweep']['combinations']} ({b['column']}, "
        f"+{b['increase_pct']:g} %, {b['min_duration_min']:g} min, {b['lead_window_h']:g} h, "
        f"M ≥ {b['min_magnitude']:g}) | {b['targets']} | {b['hits']} | {b['false_alarms']} | "
        f"{b['alarm_fraction']:.3f} | – | {b['probability_gain']:.3g} | {b['p_binomial']:.2g} | "
        f"{b['p_shift']:.2g}; for the whole sweep {b['p_westfall_young']:.2f} (Westfall–Young), "
        f"{b['p_holm']:g} (Holm) |"
    )
    power = "Power: " + summary["power"]["all_events"].replace("With", "with", 1)
    for name in ("README.md", "docs/worked-example.md"):
        text = (PROJECT_ROOT / name).read_text(encoding="utf-8")
        flat = " ".join(text.split())
        for row in rows:
            assert row in text, (name, row)
        assert power in flat, name
    # the reference catches both targets even with a 1 h window (6 % of the time)
    first = summary["reference_molchan"][0]
    assert (first["window_h"], first["nu"], round(first["tau"], 3)) == (1.0, 0.0, 0.061)


def test_events_dropped_as_not_earthquakes_are_counted(tmp_path, capsys):
    """The USGS QuakeML sample holds a quarry blast and a quarry: both dropped, counted."""
    catalog = require_data("catalogs/quakeml_usgs_event_obspy.xml")
    code = main(
        [
            "--activity", str(require_data(ACTIVITY)),
            "--catalog", str(catalog),
            "--farm", FARM,
            "--out", str(tmp_path / "out"),
            "--n-shifts", "0",
            "--no-progress",
        ]
    )  # fmt: skip
    assert code == 0
    assert capsys.readouterr().out.startswith(
        "2 catalogue events read, 2 dropped as not earthquakes, 0 near-duplicates merged"
    )
    report = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert "2 dropped as not earthquakes (1 quarry, 1 quarry blast)" in report
    summary = json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"))
    assert summary["catalog"]["non_earthquakes_dropped"] == 2
    assert summary["catalog"]["non_earthquakes_by_type"] == {"quarry": 1, "quarry blast": 1}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"--baseline-clock": "local"}, "--baseline-clock local needs --timezone"),
        ({"--sweep-columns": "cow"}, "the --sweep-* options need --sweep"),
        ({"--farm": "43.0,13.0,9999"}, "elevation 9999.0 m is outside"),
        ({"--farm": "43.0,13.0,1,2"}, "--farm must be LAT,LON[,ELEV_M]"),
        ({"--decluster-window": "reasenberg"}, "decluster_window must be one of"),
        ({"--merge-targets-h": "24"}, "must be given together"),
    ],
)
def test_new_options_fail_with_one_line(tmp_path, capsys, changes, message):
    code, err = _run(tmp_path, capsys, **changes)
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1


def test_baseline_clock_local_follows_a_local_routine_across_dst(tmp_path, capsys):
    """Milking at 07:00 local every day across the 26 March 2017 change: four spurious
    alarms with the UTC clock, none with ``--baseline-clock local --timezone Europe/Rome``."""
    index = pd.date_range("2017-03-10", "2017-04-03", freq="15min", tz="UTC", inclusive="left")
    values = np.where(index.tz_convert("Europe/Rome").hour == 7, 3.0, 1.0)
    activity = tmp_path / "milking.csv"
    pd.DataFrame({"time": index.strftime("%Y-%m-%dT%H:%M:%S+00:00"), "animal": values}).to_csv(
        activity, index=False
    )
    counts = {}
    for clock in ("utc", "local"):
        out = tmp_path / clock
        argv = ["--activity", str(activity), "--catalog", str(require_data(CATALOG))]
        argv += ["--farm", FARM, "--out", str(out), "--n-shifts", "0", "--no-progress"]
        argv += ["--baseline-clock", clock, "--timezone", "Europe/Rome"]
        assert main(argv) == 0
        summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
        counts[clock] = len(summary["alarms"])
        assert summary["parameters"]["rule"]["baseline_clock"] == clock
        zone = "Europe/Rome" if clock == "local" else "UTC"
        assert summary["parameters"]["rule"]["clock_timezone"] == zone
    capsys.readouterr()
    assert counts == {"utc": 4, "local": 0}
    rerun = summary["provenance"]["rerun"]
    assert rerun[rerun.index("--baseline-clock") + 1] == "local"
    assert rerun[rerun.index("--timezone") + 1] == "Europe/Rome"
    assert main(["--verify", str(tmp_path / "local" / "summary.json")]) == 0
