"""``namazu analyze``: offline activity + catalogue -> alarms, evaluation, report.

Thin wiring: files are read here, the whole computation is ``namazu.analytics.assessment.assess``
(the same pipeline as the panel's evaluation page); the report is rendered by
``namazu.server.research.report``. Outputs in ``--out`` (default ``analysis-out``):

- ``summary.json``: inputs, all parameters (rule and evaluation versions included), the
  catalogue counts (``catalog``: events read, dropped as not earthquakes, near-duplicates
  merged before scoring, history events for declustering), the alarms (start,
  declared_at, end = last anomalous sample, peak ratio), the evaluation with and without
  declustering (with intervals and power), the seismicity reference forecast and the
  conditional test, per period when ``--periods`` is given, both Molchan trajectories,
  plain statements, the sweep's summary with ``--sweep``, and a ``provenance`` block
  (SHA-256 and size of every input file, software versions, the command as invoked and
  an explicit command to rerun it, the UTC time of the run);
- ``alarms.csv``: one row per alarm episode, with a ``reaction`` flag;
- ``samples.csv``: one row per sample: value, baseline, threshold, ratio, anomalous flag,
  episode id (the row number in ``alarms.csv``, from 1; empty outside episodes);
- ``targets.csv``: every event of target magnitude within its radius: status (hit, miss,
  reaction cover, not monitored; not counted = removed by declustering or merging only
  in the declustered set), mainshock flag, epicentral and hypocentral distance, radius,
  lead time from the declaration;
- ``sweep.csv`` (``--sweep``): one row per grid combination with its scores, empirical p,
  and the p corrected for the whole sweep (Westfall-Young and Holm);
- ``report.html``: a self-contained page with the plots (no external URL).

``--farm LAT,LON[,ELEV_M]``: the farm's elevation [m] enters hypocentral distances.
``--decluster-catalog FILE``: a longer history catalogue for declustering (its events
outside the span of ``--catalog`` are added before declustering).
``--baseline-clock local`` with ``--timezone ZONE``: the baseline compares the same local
clock time across daylight-saving changes (default: UTC).

Activity input (``--activity-format``):

- ``csv`` (default): a table with a time column and the ``--column`` of activity
  (default ``animal``), on a regular grid of ``--resolution``;
- ``movebank``: a Movebank event file (``.csv`` or ``.csv.gz``, e-obs bursts or expanded
  UvA-BiTS rows, ``namazu.server.research.importer.read_movebank``);
  ``--column`` is ``odba`` (default) or
  ``vedba``. Each individual's bursts are averaged within each ``--resolution`` cell and
  the individuals are summed per cell (``namazu.analytics.assessment.bursts_to_series``).

Periods file (``--periods``): CSV with header ``start,end,label``; each row is the span
[start, end) (times as in the activity file); rows may share a label. Example in
``server/research/periods/wikelski2020.csv``, installed with the package: ``--periods
wikelski2020`` names it.

``namazu analyze --verify DIR/summary.json`` checks a recorded run: the input files must
still have the recorded SHA-256, and the analysis is rerun with the recorded inputs and
parameters; counts and texts must be identical and floating-point figures agree within a
relative tolerance of ``VERIFY_RTOL`` (1e-9: library versions may change last digits);
exit 0 when everything agrees, 1 naming each difference with its path in summary.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import platform
import shlex
import sys
import tempfile
from dataclasses import fields
from datetime import UTC, datetime
from importlib import metadata, resources
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from namazu.analytics.assessment import (
    MOLCHAN_INCREASE_PCT,
    NoMonitoredTimeError,
    assess,
    bursts_to_series,
)
from namazu.analytics.evaluation import EvaluationInputError, period_intervals
from namazu.analytics.params import (
    EVALUATION_VERSION,
    RULE_VERSION,
    EvaluationParams,
    RuleParams,
    rule_preset,
)
from namazu.analytics.rule import SeriesError
from namazu.analytics.sweep import SweepGrid, sweep
from namazu.analytics.tabular import TabularError, parse_activity_csv, parse_periods_csv
from namazu.server.core.cliargs import number_in_range

__all__ = ["MOLCHAN_INCREASE_PCT", "AnalysisError", "main", "run_analysis", "verify_summary"]

ACTIVITY_FORMATS = ("csv", "movebank")

#: Default activity column per activity format.
DEFAULT_COLUMN = {"csv": "animal", "movebank": "odba"}

#: Sections of summary.json that ``--verify`` compares.
VERIFIED_SECTIONS = (
    "catalog",
    "monitored",
    "alarms",
    "evaluation",
    "reference",
    "conditional",
    "periods",
    "molchan",
    "reference_molchan",
    "statement",
    "power",
    "reference_statement",
    "sweep",
)

#: Relative tolerance of floating-point figures in ``--verify`` [-].
VERIFY_RTOL = 1e-9

#: Sweep options: command-line flag -> SweepGrid field.
SWEEP_OPTIONS = {
    "sweep_columns": "columns",
    "sweep_increase_pct": "increase_pct",
    "sweep_min_duration_min": "min_duration_min",
    "sweep_lead_window_h": "lead_window_h",
    "sweep_min_magnitude": "min_magnitude",
}


class AnalysisError(Exception):
    """The analysis cannot run; the one-line message says why."""


def _read_bytes(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise AnalysisError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise AnalysisError(f"{what} is a directory, not a file: {path}") from None
    except OSError as exc:
        raise AnalysisError(f"{what} cannot be read: {path}: {exc.strerror}") from exc


def read_text_file(path: Path, what: str) -> str:
    try:
        return _read_bytes(path, what).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AnalysisError(f"{what} is not UTF-8 text: {path}") from exc


def file_fingerprint(path: Path) -> dict[str, Any]:
    """Absolute path, size [bytes] and SHA-256 (hex) of a file."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
            size += len(chunk)
    return {"path": str(path.resolve()), "bytes": size, "sha256": digest.hexdigest()}


def _read_catalog(path: Path, fmt: str | None, what: str = "catalogue") -> pd.DataFrame:
    from namazu.server.catalogue.files import read_catalog

    if not path.exists():
        raise AnalysisError(f"{what} file not found: {path}")
    try:
        return read_catalog(path, fmt)
    except Exception as exc:  # the catalogue shell has its own error family
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AnalysisError(f"{what} file {path}: {first}") from exc


def _read_activity(
    path: Path, fmt: str, column: str, resolution: str, timezone: str | None
) -> pd.Series:
    if fmt == "csv":
        table = parse_activity_csv(
            read_text_file(path, "activity file"), columns=[column], timezone=timezone
        )
        return table[column]
    if fmt != "movebank":
        raise AnalysisError(f"--activity-format must be one of {', '.join(ACTIVITY_FORMATS)}")
    from namazu.server.research.importer import ImportFileError, read_movebank

    if column not in ("odba", "vedba"):
        raise AnalysisError(f"--column must be odba or vedba for Movebank input, got {column!r}")
    _read_bytes(path, "activity file")  # the usual one-line errors for missing files
    try:
        bursts = read_movebank(path)
        return bursts_to_series(bursts, resolution, column)
    except ImportFileError as exc:
        raise AnalysisError(f"Movebank activity file {exc}") from exc
    except ValueError as exc:
        raise AnalysisError(f"Movebank activity file {path}: {exc}") from exc


def _parse_farm(text: str) -> tuple[float, float, float]:
    """LAT,LON[,ELEV_M] -> (latitude [deg N], longitude [deg E], elevation [m])."""
    try:
        parts = [float(part) for part in text.split(",")]
        if len(parts) not in (2, 3):
            raise ValueError
    except ValueError:
        raise AnalysisError(
            f"--farm must be LAT,LON[,ELEV_M] (degrees, metres), got {text!r}"
        ) from None
    lat, lon = parts[0], parts[1]
    elevation = parts[2] if len(parts) == 3 else 0.0
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise AnalysisError(f"--farm {text!r} is outside -90..90, -180..180 degrees")
    if not -500 <= elevation <= 9000:
        raise AnalysisError(f"--farm elevation {elevation} m is outside -500..9000 m")
    return lat, lon, elevation


def _parse_list(text: str, what: str, number: bool = True) -> tuple[Any, ...]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise AnalysisError(f"{what} needs a comma-separated list, got {text!r}")
    if not number:
        return tuple(items)
    try:
        return tuple(float(item) for item in items)
    except ValueError:
        raise AnalysisError(f"{what} must be numbers separated by commas, got {text!r}") from None


def software_versions() -> dict[str, str]:
    """Versions of namazu, Python and the numerical libraries behind the figures."""
    versions = {}
    for name in ("namazu", "numpy", "pandas", "scipy"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    versions["python"] = platform.python_version()
    return versions


def _rerun_argv(
    inputs: dict[str, Any],
    rule: RuleParams,
    evaluation: EvaluationParams,
    out_dir: Path,
    grid: SweepGrid | None = None,
) -> list[str]:
    """An explicit ``namazu analyze`` command line reproducing a run (every parameter)."""
    farm = inputs["farm"]
    argv = [
        "namazu", "analyze",
        "--activity", str(Path(inputs["activity"]).resolve()),
        "--activity-format", inputs["activity_format"],
        "--catalog", str(Path(inputs["catalog"]).resolve()),
        "--farm",
        f"{farm['latitude']!r},{farm['longitude']!r},{farm.get('elevation_m', 0.0)!r}",
        "--column", inputs["column"],
        "--resolution", inputs["resolution"],
    ]  # fmt: skip
    if inputs["timezone"] != "UTC":
        argv += ["--timezone", inputs["timezone"]]
    if inputs["periods"]:
        argv += ["--periods", str(Path(inputs["periods"]).resolve())]
    if inputs.get("catalog_format"):
        argv += ["--catalog-format", inputs["catalog_format"]]
    if inputs.get("decluster_catalog"):
        argv += ["--decluster-catalog", str(Path(inputs["decluster_catalog"]).resolve())]
    for params in (rule, evaluation):
        for item in fields(params):
            value = getattr(params, item.name)
            if item.name in ("quorum", "clock_timezone") or value is None:
                continue  # quorum: herd rule only; the clock's zone is --timezone
            text = value if isinstance(value, str) else repr(value)
            argv += ["--" + item.name.replace("_", "-"), text]
    if grid is not None:
        argv.append("--sweep")
        for option, name in SWEEP_OPTIONS.items():
            values = getattr(grid, name)
            argv += ["--" + option.replace("_", "-"), ",".join(str(v) for v in values)]
    return argv + ["--out", str(out_dir.resolve()), "--no-progress"]


def run_analysis(
    activity_path: Path,
    catalog_path: Path,
    farm: tuple[float, float],
    *,
    column: str | None = None,
    resolution: str = "15min",
    periods_path: Path | None = None,
    out_dir: Path = Path("analysis-out"),
    timezone: str | None = None,
    rule: RuleParams = RuleParams(),
    evaluation: EvaluationParams = EvaluationParams(),
    catalog_format: str | None = None,
    activity_format: str = "csv",
    farm_elevation_m: float = 0.0,
    decluster_catalog_path: Path | None = None,
    sweep_grid: SweepGrid | None = None,
    progress: bool | None = None,
    argv: list[str] | None = None,
) -> dict[str, Any]:
    """Run the offline analysis and write summary.json, the CSV tables and report.html.

    activity_path : activity file; ``activity_format`` "csv" (a time column and the
        ``column`` of activity) or "movebank" (a Movebank event file; ``column`` odba or
        vedba [g]). column : None = ``DEFAULT_COLUMN`` of the format.
    catalog_path : earthquake catalogue in any format ``namazu.server.catalogue.files`` reads.
    farm : (latitude [deg N], longitude [deg E]). farm_elevation_m : [m].
    resolution : activity step ("15min").
    periods_path : optional CSV start,end,label for stratified results.
    decluster_catalog_path : optional longer history catalogue for declustering.
    sweep_grid : optional grid; writes sweep.csv and the sweep summary.
    progress : tqdm progress bar on stderr (None = only on a terminal).
    argv : the command-line arguments as invoked, recorded in the provenance.
    Returns the summary dict (also written to ``out_dir/summary.json``).
    Raises AnalysisError with a one-line message for unusable inputs.
    """
    started = datetime.now(UTC)
    column = column or DEFAULT_COLUMN.get(activity_format, "animal")
    quiet = True if progress is False else None  # None: tqdm shows the bar on a terminal only
    steps = tqdm(total=6, desc="analyze", unit="step", disable=quiet)
    sweep_result = None
    try:
        series = _read_activity(activity_path, activity_format, column, resolution, timezone)
        periods = None
        if periods_path is not None:
            table = parse_periods_csv(read_text_file(periods_path, "periods file"), timezone)
            periods = period_intervals(table)
        steps.update()
        catalog = _read_catalog(catalog_path, catalog_format)
        history = (
            None
            if decluster_catalog_path is None
            else _read_catalog(decluster_catalog_path, None, "declustering catalogue")
        )
        steps.update()
        assessment = assess(
            series,
            catalog,
            farm,
            resolution,
            rule,
            evaluation,
            periods,
            MOLCHAN_INCREASE_PCT,
            history=history,
            farm_elevation_km=farm_elevation_m / 1000.0,
            on_step=lambda _stage: steps.update(),
        )
        if sweep_grid is not None:
            columns = {
                name: (
                    series
                    if name == column
                    else _read_activity(activity_path, activity_format, name, resolution, timezone)
                )
                for name in sweep_grid.columns
            }
            sweep_result = sweep(
                columns, assessment.catalog, farm, resolution, sweep_grid, rule, evaluation
            )
    except NoMonitoredTimeError as exc:
        raise AnalysisError(str(exc)) from exc
    except (TabularError, SeriesError, EvaluationInputError) as exc:
        raise AnalysisError(str(exc)) from exc
    finally:
        steps.close()

    inputs = {
        "activity": str(activity_path),
        "catalog": str(catalog_path),
        "decluster_catalog": str(decluster_catalog_path) if decluster_catalog_path else None,
        "column": column,
        "resolution": resolution,
        "timezone": timezone or "UTC",
        "periods": str(periods_path) if periods_path else None,
        "farm": {"latitude": farm[0], "longitude": farm[1], "elevation_m": farm_elevation_m},
        "samples": int(series.notna().sum()),
        "first_sample": series.index[0].isoformat(),
        "last_sample": series.index[-1].isoformat(),
        "catalog_events": len(catalog),
        "catalog_mainshocks": int(assessment.mainshocks.sum()),
        "activity_format": activity_format,
        "catalog_format": catalog_format,
    }
    outcome = assessment.as_dict()
    files = {
        "activity": activity_path,
        "catalog": catalog_path,
        "periods": periods_path,
        "decluster_catalog": decluster_catalog_path,
    }
    rerun = _rerun_argv(inputs, rule, evaluation, out_dir, sweep_grid)
    provenance = {
        "inputs": {k: file_fingerprint(p) for k, p in files.items() if p is not None},
        "software": software_versions(),
        "argv": None if argv is None else ["namazu", "analyze", *argv],
        "cwd": str(Path.cwd()),
        "rerun": rerun,
        "rerun_command": shlex.join(rerun),
        "run_utc": started.isoformat(timespec="seconds").replace("+00:00", "Z"),
    }
    summary = {
        "inputs": inputs,
        "rule_version": RULE_VERSION,
        "evaluation_version": EVALUATION_VERSION,
        "parameters": {"rule": rule.as_dict(), "evaluation": evaluation.as_dict()},
        **{key: outcome[key] for key in VERIFIED_SECTIONS if key in outcome},
        "sweep": None if sweep_result is None else sweep_result.as_dict(),
        "provenance": provenance,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.json").write_text(
        json.dumps(summary, indent=2, allow_nan=False) + "\n", encoding="utf-8"
    )
    _write_tables(out_dir, summary, assessment, sweep_result)

    from namazu.server.research.report import render_report

    html = render_report(
        summary=summary,
        components=assessment.components,
        episodes=assessment.episodes,
        reactions=assessment.reactions,
        results=assessment.results,
        molchan=assessment.molchan,
        confidence=assessment.confidence,
        catalog=assessment.catalog,
        periods=periods,
    )
    (out_dir / "report.html").write_text(html, encoding="utf-8")
    return summary


#: Columns of alarms.csv.
ALARM_CSV_COLUMNS = (
    "series",
    "start",
    "declared_at",
    "end",
    "n_samples",
    "duration_min",
    "peak_ratio",
    "mean_ratio",
    "reaction",
)

#: Columns of targets.csv.
TARGET_CSV_COLUMNS = (
    "time",
    "magnitude",
    "latitude",
    "longitude",
    "depth_km",
    "distance_km",
    "hypocentral_km",
    "radius_km",
    "status",
    "status_declustered",
    "mainshock",
    "alarm_declared_at",
    "lead_time_h",
)


def sample_table(assessment: Any) -> pd.DataFrame:
    """Per-sample table: time, value, baseline, threshold, ratio, anomalous, episode id."""
    frame = assessment.components.copy()
    episode = pd.Series(pd.NA, index=frame.index, dtype="Int64")
    for number, item in enumerate(assessment.episodes, start=1):
        episode[item.start : item.end] = number
    frame["episode"] = episode
    frame.index.name = "time"
    return frame.reset_index()


def target_table(assessment: Any) -> pd.DataFrame:
    """Every candidate target with its status, with and without declustering."""
    results = assessment.results
    rows: dict[str, dict[str, Any]] = {}
    for item in results["all_events"].target_list + results["all_events"].uncounted:
        rows[item["time"] + repr(item["magnitude"])] = {**item, "status_declustered": ""}
    for item in results["declustered"].target_list + results["declustered"].uncounted:
        key = item["time"] + repr(item["magnitude"])
        if key in rows:
            rows[key]["status_declustered"] = item["status"]
    catalog = assessment.catalog
    stamp = catalog["time"].map(lambda t: t.isoformat()) + catalog["magnitude"].map(repr)
    mainshock = dict(zip(stamp, assessment.mainshocks, strict=True))
    table = pd.DataFrame(list(rows.values()), columns=[*TARGET_CSV_COLUMNS, "hit"])
    table["mainshock"] = [bool(mainshock.get(k, True)) for k in rows]
    return table.loc[:, list(TARGET_CSV_COLUMNS)].sort_values("time", kind="stable")


def _write_tables(out_dir: Path, summary: dict[str, Any], assessment: Any, sweep_result) -> None:
    """alarms.csv, samples.csv, targets.csv and (with a sweep) sweep.csv."""
    pd.DataFrame(summary["alarms"], columns=list(ALARM_CSV_COLUMNS)).to_csv(
        out_dir / "alarms.csv", index=False
    )
    sample_table(assessment).to_csv(out_dir / "samples.csv", index=False)
    target_table(assessment).to_csv(out_dir / "targets.csv", index=False)
    if sweep_result is not None:
        sweep_result.table.to_csv(out_dir / "sweep.csv", index=False)


def _recorded_params(summary: dict[str, Any]) -> tuple[RuleParams, EvaluationParams]:
    try:
        recorded = summary["parameters"]
        rule_values = {k: v for k, v in recorded["rule"].items() if k != "rule_version"}
        eval_values = {k: v for k, v in recorded["evaluation"].items() if k != "evaluation_version"}
        return RuleParams(**rule_values), EvaluationParams(**eval_values)
    except (KeyError, TypeError, ValueError) as exc:
        raise AnalysisError(f"summary has no usable parameters: {exc}") from exc


def compare_figures(
    recorded: Any, again: Any, path: str = "", rtol: float = VERIFY_RTOL
) -> list[str]:
    """Differences between two JSON values: counts, texts and flags exactly, floats within
    a relative tolerance ``rtol``. Returns one line per difference, naming its path."""
    where = path or "summary"
    if isinstance(recorded, bool) or isinstance(again, bool) or recorded is None or again is None:
        return [] if recorded == again else [f"{where}: {again!r} (recorded {recorded!r})"]
    if isinstance(recorded, float) or isinstance(again, float):
        numbers = isinstance(recorded, int | float) and isinstance(again, int | float)
        if numbers and math.isclose(recorded, again, rel_tol=rtol, abs_tol=0.0):
            return []
        return [f"{where}: {again!r} (recorded {recorded!r})"]
    if isinstance(recorded, dict) and isinstance(again, dict):
        lines = []
        for key in dict.fromkeys([*recorded, *again]):
            if key not in recorded or key not in again:
                lines.append(f"{where}.{key}: present in only one of the runs")
            else:
                lines += compare_figures(recorded[key], again[key], f"{where}.{key}", rtol)
        return lines
    if isinstance(recorded, list) and isinstance(again, list):
        if len(recorded) != len(again):
            return [f"{where}: {len(again)} entries (recorded {len(recorded)})"]
        lines = []
        for i, (a, b) in enumerate(zip(recorded, again, strict=True)):
            lines += compare_figures(a, b, f"{where}[{i}]", rtol)
        return lines
    return [] if recorded == again else [f"{where}: {again!r} (recorded {recorded!r})"]


def verify_summary(summary_path: Path) -> list[str]:
    """Rerun a recorded analysis and list what differs (empty list = reproduced).

    summary_path : a summary.json written by ``run_analysis`` (with ``provenance``).
    Checks each input file's SHA-256 and size against the record, the rule and evaluation
    versions, then reruns with the recorded inputs and parameters and compares
    ``VERIFIED_SECTIONS`` (``compare_figures``: floats within ``VERIFY_RTOL``).
    Returns one line per difference. Raises AnalysisError when the summary is unusable
    or the rerun fails.
    """
    try:
        summary = json.loads(read_text_file(summary_path, "summary file"))
        inputs, provenance = summary["inputs"], summary["provenance"]
        recorded_files = provenance["inputs"]
    except json.JSONDecodeError as exc:
        raise AnalysisError(f"summary file {summary_path} is not JSON: {exc.msg}") from exc
    except (KeyError, TypeError) as exc:
        raise AnalysisError(
            f"summary file {summary_path} has no provenance record ({exc}); "
            "it was written by an older version"
        ) from exc
    differences = []
    for name, record in recorded_files.items():
        path = Path(record["path"])
        if not path.is_file():
            raise AnalysisError(f"recorded {name} file is missing: {path}")
        now = file_fingerprint(path)
        if now["sha256"] != record["sha256"]:
            differences.append(
                f"{name} file {path} changed: sha256 {now['sha256']} "
                f"(recorded {record['sha256']}, {now['bytes']} vs {record['bytes']} bytes)"
            )
    if summary.get("rule_version") != RULE_VERSION:
        differences.append(
            f"rule version {RULE_VERSION} differs from the recorded {summary.get('rule_version')}"
        )
    if summary.get("evaluation_version") != EVALUATION_VERSION:
        differences.append(
            f"evaluation version {EVALUATION_VERSION} differs from the recorded "
            f"{summary.get('evaluation_version')}"
        )
    rule, evaluation = _recorded_params(summary)
    farm = (inputs["farm"]["latitude"], inputs["farm"]["longitude"])
    timezone = None if inputs.get("timezone", "UTC") == "UTC" else inputs["timezone"]
    periods = recorded_files.get("periods")
    history = recorded_files.get("decluster_catalog")
    grid = None
    if summary.get("sweep"):
        recorded_grid = summary["sweep"]["grid"]
        grid = SweepGrid(**{k: tuple(v) for k, v in recorded_grid.items()})
    with tempfile.TemporaryDirectory(prefix="namazu-verify-") as scratch:
        again = run_analysis(
            Path(recorded_files["activity"]["path"]),
            Path(recorded_files["catalog"]["path"]),
            farm,
            column=inputs["column"],
            resolution=inputs["resolution"],
            periods_path=Path(periods["path"]) if periods else None,
            out_dir=Path(scratch),
            timezone=timezone,
            rule=rule,
            evaluation=evaluation,
            catalog_format=inputs.get("catalog_format"),
            activity_format=inputs.get("activity_format", "csv"),
            farm_elevation_m=inputs["farm"].get("elevation_m", 0.0),
            decluster_catalog_path=Path(history["path"]) if history else None,
            sweep_grid=grid,
            progress=False,
        )
    for section in VERIFIED_SECTIONS:
        differences += compare_figures(summary.get(section), again.get(section), section)
    return differences


#: Periods files installed with the package, by the name ``--periods`` accepts.
BUNDLED_PERIODS = {"wikelski2020": "wikelski2020.csv"}


def periods_file(text: str) -> Path:
    """``--periods``: a bundled periods file by name, otherwise a path."""
    if text in BUNDLED_PERIODS:
        resource = resources.files("namazu.server.research").joinpath(
            "periods", BUNDLED_PERIODS[text]
        )
        return Path(str(resource))
    return Path(text)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="namazu analyze",
        description="Offline analysis: activity + earthquake catalogue -> alarms, "
        "evaluation (with and without declustering, beside a seismicity reference), report.",
    )
    parser.add_argument("--activity", type=Path, help="activity file (see --activity-format)")
    parser.add_argument(
        "--activity-format",
        choices=ACTIVITY_FORMATS,
        default="csv",
        help="csv: time + columns (default); movebank: Movebank event file",
    )
    parser.add_argument("--catalog", type=Path, help="earthquake catalogue file")
    parser.add_argument(
        "--decluster-catalog", type=Path, help="longer history catalogue for declustering"
    )
    parser.add_argument("--farm", help="farm location LAT,LON[,ELEV_M] [deg, deg, m]")
    parser.add_argument(
        "--column", help="activity column (default animal; odba for Movebank input)"
    )
    parser.add_argument("--resolution", default="15min", help="activity step (default 15min)")
    parser.add_argument(
        "--periods",
        type=periods_file,
        help="CSV start,end,label for stratified results, or the name of a bundled one "
        f"({', '.join(sorted(BUNDLED_PERIODS))})",
    )
    parser.add_argument("--out", type=Path, default=Path("analysis-out"), help="output directory")
    parser.add_argument(
        "--timezone",
        help="IANA zone of times written without one, and of --baseline-clock local (default UTC)",
    )
    parser.add_argument("--catalog-format", help="catalogue format (default: detected)")
    parser.add_argument("--preset", default="default", help="rule preset (default, strict, ...)")
    for item in fields(RuleParams):
        if item.name in ("quorum", "clock_timezone"):
            continue
        parser.add_argument(
            "--" + item.name.replace("_", "-"),
            type=_field_type(item),
            help=_help(RuleParams, item.name),
        )
    for item in fields(EvaluationParams):
        parser.add_argument(
            "--" + item.name.replace("_", "-"),
            type=_field_type(item),
            help=_help(EvaluationParams, item.name),
        )
    sweep_group = parser.add_argument_group("sweep (family-wise corrected)")
    sweep_group.add_argument(
        "--sweep", action="store_true", help="score a grid of parameters, write sweep.csv"
    )
    defaults = SweepGrid(columns=("COLUMN",))
    for option, name in SWEEP_OPTIONS.items():
        default = (
            "--column" if name == "columns" else ",".join(f"{v:g}" for v in getattr(defaults, name))
        )
        sweep_group.add_argument(
            "--" + option.replace("_", "-"),
            metavar="LIST",
            help=f"comma-separated (default {default})",
        )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--alarm-log",
        type=Path,
        help="the live alarm log: list the targets its alarms provably preceded "
        "(needs --log-keys and --tsa-ca; writes logged_alarms.csv)",
    )
    parser.add_argument("--log-keys", type=Path, help="keyring of the alarm log's public keys")
    parser.add_argument("--tsa-ca", type=Path, help="CA file of the time-stamping authority")
    parser.add_argument("--log-farm", help="only logged alarms of this farm id")
    parser.add_argument(
        "--verify",
        type=Path,
        metavar="SUMMARY",
        help="rerun the analysis recorded in a summary.json and compare every figure",
    )
    return parser


#: Ranges the command line checks before anything runs: (minimum, maximum, minimum
#: excluded). The rule itself takes more (its Molchan trajectory starts at 0 %), but on
#: the command line an increase must increase.
CLI_RANGES: dict[str, tuple[float | None, float | None, bool]] = {
    "increase_pct": (0, None, True),
    "min_duration_min": (0, None, True),
    "baseline_days": (1, None, False),
    "min_baseline_days": (1, None, False),
    "lead_window_h": (0, None, True),
    "min_magnitude": (-2, 10, False),
    "fixed_radius_km": (0, None, True),
    "reaction_window_min": (0, None, False),
    "reaction_min_magnitude": (-2, 10, False),
    "reaction_radius_km": (0, None, True),
    "max_gap_h": (0, None, True),
    "n_shifts": (0, None, False),
    "seed": (0, None, False),
}


def _field_type(item: Any) -> Any:
    kind = str(item.type)
    number = int if kind.startswith("int") else float if kind.startswith("float") else None
    if number is None:
        return str
    if item.name in CLI_RANGES:
        low, high, excluded = CLI_RANGES[item.name]
        return number_in_range(number, low, high, exclusive_minimum=excluded)
    return number


def _help(params: type, name: str) -> str:
    from namazu.server.core.config_reference import parameter_descriptions

    text = parameter_descriptions(params).get(name, ("", ""))[1]
    return text.replace("%", "%%")


def _params(args: argparse.Namespace) -> tuple[RuleParams, EvaluationParams]:
    rule_over = {
        item.name: getattr(args, item.name)
        for item in fields(RuleParams)
        if getattr(args, item.name, None) is not None
    }
    if args.timezone and rule_over.get("baseline_clock") == "local":
        rule_over["clock_timezone"] = args.timezone
    elif rule_over.get("baseline_clock") == "local":
        raise AnalysisError("--baseline-clock local needs --timezone (the farm's IANA zone)")
    eval_over = {
        item.name: getattr(args, item.name)
        for item in fields(EvaluationParams)
        if getattr(args, item.name, None) is not None
    }
    try:
        rule = rule_preset(args.preset, **rule_over)
        evaluation = EvaluationParams(**eval_over)
    except KeyError as exc:
        raise AnalysisError(str(exc.args[0])) from exc
    except ValueError as exc:
        raise AnalysisError(str(exc)) from exc
    return rule, evaluation


def _sweep_grid(args: argparse.Namespace, column: str) -> SweepGrid | None:
    given = {name: getattr(args, option) for option, name in SWEEP_OPTIONS.items()}
    if not args.sweep:
        if any(v is not None for v in given.values()):
            raise AnalysisError("the --sweep-* options need --sweep")
        return None
    values: dict[str, Any] = {"columns": (column,)}
    for name, text in given.items():
        if text is not None:
            values[name] = _parse_list(text, f"--sweep {name}", number=name != "columns")
    try:
        return SweepGrid(**values)
    except ValueError as exc:
        raise AnalysisError(str(exc)) from exc


def _verify_main(summary_path: Path) -> int:
    try:
        differences = verify_summary(summary_path)
    except AnalysisError as exc:
        print(f"namazu analyze: error: {exc}", file=sys.stderr)
        return 1
    if differences:
        for line in differences:
            print(f"namazu analyze: not reproduced: {line}", file=sys.stderr)
        return 1
    print(
        "reproduced: inputs unchanged, counts identical and every figure within a relative "
        f"{VERIFY_RTOL:g} ({summary_path})"
    )
    return 0


def main(argv: list[str]) -> int:
    """``namazu analyze``: see the module docstring; exit 0, 1 (bad input), 2 (usage)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.verify is not None:
        return _verify_main(args.verify)
    missing = [f"--{k}" for k in ("activity", "catalog", "farm") if getattr(args, k) is None]
    if args.alarm_log is not None:
        missing += [f"--{k.replace('_', '-')}" for k in ("log_keys", "tsa_ca")
                    if getattr(args, k) is None]  # fmt: skip
    if missing:
        parser.error(f"the following arguments are required: {', '.join(missing)}")
    try:
        latitude, longitude, elevation = _parse_farm(args.farm)
        rule, evaluation = _params(args)
        column = args.column or DEFAULT_COLUMN.get(args.activity_format, "animal")
        grid = _sweep_grid(args, column)
        summary = run_analysis(
            args.activity,
            args.catalog,
            (latitude, longitude),
            column=column,
            resolution=args.resolution,
            periods_path=args.periods,
            out_dir=args.out,
            timezone=args.timezone,
            rule=rule,
            evaluation=evaluation,
            catalog_format=args.catalog_format,
            activity_format=args.activity_format,
            farm_elevation_m=elevation,
            decluster_catalog_path=args.decluster_catalog,
            sweep_grid=grid,
            progress=False if args.no_progress else None,
            argv=list(argv),
        )
    except AnalysisError as exc:
        print(f"namazu analyze: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        where = exc.filename or args.out
        print(
            f"namazu analyze: error: cannot write {where}: {exc.strerror or exc}", file=sys.stderr
        )
        return 1
    print(text_summary(summary))
    written = ["summary.json", "alarms.csv", "samples.csv", "targets.csv"]
    written += ["sweep.csv"] if grid is not None else []
    print("written: " + ", ".join(str(args.out / name) for name in [*written, "report.html"]))
    if args.alarm_log is not None:
        return _logged_alarms_main(args, (latitude, longitude), evaluation)
    return 0


def _logged_alarms_main(args: argparse.Namespace, farm: Any, evaluation: Any) -> int:
    """``--alarm-log``: the targets the logged alarms provably preceded."""
    from namazu.server.research.logged_alarms import LoggedAlarmsError, logged_targets

    try:
        catalog = _read_catalog(args.catalog, args.catalog_format)
        logged = logged_targets(
            args.alarm_log,
            args.log_keys,
            args.tsa_ca,
            catalog,
            farm,
            evaluation.min_magnitude,
            evaluation.lead_window_h,
            evaluation.fixed_radius_km,
            farm_id=args.log_farm,
        )
    except (AnalysisError, LoggedAlarmsError) as exc:
        print(f"namazu analyze: error: {exc}", file=sys.stderr)
        return 1
    path = args.out / "logged_alarms.csv"
    logged.table.to_csv(path, index=False)
    print(logged.summary())
    print(f"written: {path}")
    return 0


def format_value(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _interval(pair: list[Any] | None) -> str:
    if not pair or pair[0] is None:
        return "n/a"
    return f"{format_value(pair[0])}-{format_value(pair[1])}"


def score_line(label: str, result: dict[str, Any]) -> str:
    """One printed line of scores: N, h, false alarms, τ, gain with its interval, hit-rate
    interval, both p-values (n/a = undefined, the reason is in summary.json)."""
    return (
        f"{label:<30} N {result['targets']:>3}  h {result['hits']:>3}  "
        f"false alarms {result['false_alarms']:>4}  tau {format_value(result['alarm_fraction'])}  "
        f"h/N CI {_interval(result.get('hit_rate_interval'))}  "
        f"gain {format_value(result['probability_gain'])} "
        f"CI {_interval(result.get('gain_interval'))}  "
        f"p_binom {format_value(result['p_binomial'])}  p_shift {format_value(result['p_shift'])}"
    )


def text_summary(summary: dict[str, Any]) -> str:
    """The lines ``namazu analyze`` prints."""
    n_alarms = len(summary["alarms"])
    n_reactions = sum(a["reaction"] for a in summary["alarms"])
    catalog = summary["catalog"]
    lines = [
        f"{catalog['events_read'] + catalog.get('non_earthquakes_dropped', 0)} catalogue "
        f"events read, {catalog.get('non_earthquakes_dropped', 0)} dropped as not earthquakes, "
        f"{catalog['near_duplicates_merged']} near-duplicates merged"
        + (
            f", {catalog['history_events']} history events for declustering"
            if catalog.get("history_events")
            else ""
        ),
        f"{n_alarms} alarm episodes ({n_reactions} reactions to local shaking), "
        f"{summary['monitored']['hours']:.1f} h monitored",
    ]
    for key, label in (("all_events", "all events"), ("declustered", "declustered")):
        lines.append(score_line(label, summary["evaluation"][key]))
        if summary.get("reference"):
            lines.append(score_line(f"{label}: reference", summary["reference"][key]))
    for label, pair in summary["periods"].items():
        lines.append(score_line(f"{label}: all events", pair["all_events"]))
        lines.append(score_line(f"{label}: declustered", pair["declustered"]))
    for key, label in (("all_events", "all events"), ("declustered", "declustered")):
        lines.append(f"{label}: {summary['statement'][key]}")
        if summary.get("power"):
            lines.append(f"{label}: {summary['power'][key]}")
        if summary.get("reference_statement"):
            lines.append(f"{label}: {summary['reference_statement'][key]}")
            lines.append(f"{label}: {summary['reference_statement'][key + '_conditional']}")
    if summary.get("sweep"):
        lines.append(f"sweep: {summary['sweep']['statement']}")
    return "\n".join(lines)
