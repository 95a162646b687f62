"""``namazu analyze``: offline activity + catalogue -> alarms, evaluation, report.

Thin wiring: files are read here, the whole computation is ``namazu.analytics.assessment.assess``
(the same pipeline as the panel's evaluation page); the report is rendered by
``namazu.server.research.report``. Outputs in ``--out`` (default ``analysis-out``):

- ``summary.json``: inputs, all parameters (rule version included), the catalogue
  counts (``catalog``: events read, near-duplicates merged before scoring), the alarms
  (start, end = last anomalous sample, peak ratio), the evaluation with and without
  declustering, per period when ``--periods`` is given, the Molchan trajectory, a plain
  chance statement, and a ``provenance`` block (SHA-256 and size of every input file,
  software versions, the command as invoked and an explicit command to rerun it, the UTC
  time of the run);
- ``alarms.csv``: one row per alarm episode, with a ``reaction`` flag;
- ``report.html``: a self-contained page with the plots (no external URL).

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
``docs/periods-wikelski2020.csv``.

``namazu analyze --verify DIR/summary.json`` checks a recorded run: the input files must
still have the recorded SHA-256, and the analysis is rerun with the recorded inputs and
parameters; exit 0 when every figure is identical, 1 naming what differs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import shlex
import sys
import tempfile
from dataclasses import fields
from datetime import UTC, datetime
from importlib import metadata
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
from namazu.analytics.params import RULE_VERSION, EvaluationParams, RuleParams, rule_preset
from namazu.analytics.rule import SeriesError
from namazu.analytics.tabular import TabularError, parse_activity_csv, parse_periods_csv

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
    "periods",
    "molchan",
    "statement",
)


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


def _read_text(path: Path, what: str) -> str:
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


def _read_catalog(path: Path, fmt: str | None) -> pd.DataFrame:
    from namazu.server.catalogue.files import read_catalog

    if not path.exists():
        raise AnalysisError(f"catalogue file not found: {path}")
    try:
        return read_catalog(path, fmt)
    except Exception as exc:  # the catalogue shell has its own error family
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AnalysisError(f"catalogue file {path}: {first}") from exc


def _read_activity(
    path: Path, fmt: str, column: str, resolution: str, timezone: str | None
) -> pd.Series:
    if fmt == "csv":
        table = parse_activity_csv(
            _read_text(path, "activity file"), columns=[column], timezone=timezone
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


def _parse_farm(text: str) -> tuple[float, float]:
    try:
        lat_text, lon_text = text.split(",")
        lat, lon = float(lat_text), float(lon_text)
    except ValueError:
        raise AnalysisError(f"--farm must be LAT,LON in degrees, got {text!r}") from None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise AnalysisError(f"--farm {text!r} is outside -90..90, -180..180 degrees")
    return lat, lon


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
    inputs: dict[str, Any], rule: RuleParams, evaluation: EvaluationParams, out_dir: Path
) -> list[str]:
    """An explicit ``namazu analyze`` command line reproducing a run (every parameter)."""
    farm = inputs["farm"]
    argv = [
        "namazu", "analyze",
        "--activity", str(Path(inputs["activity"]).resolve()),
        "--activity-format", inputs["activity_format"],
        "--catalog", str(Path(inputs["catalog"]).resolve()),
        "--farm", f"{farm['latitude']!r},{farm['longitude']!r}",
        "--column", inputs["column"],
        "--resolution", inputs["resolution"],
    ]  # fmt: skip
    if inputs["timezone"] != "UTC":
        argv += ["--timezone", inputs["timezone"]]
    if inputs["periods"]:
        argv += ["--periods", str(Path(inputs["periods"]).resolve())]
    if inputs.get("catalog_format"):
        argv += ["--catalog-format", inputs["catalog_format"]]
    for params in (rule, evaluation):
        for item in fields(params):
            value = getattr(params, item.name)
            if item.name == "quorum" or value is None:
                continue  # quorum: herd rule only, not used by the offline analysis
            argv += ["--" + item.name.replace("_", "-"), repr(value)]
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
    progress: bool | None = None,
    argv: list[str] | None = None,
) -> dict[str, Any]:
    """Run the offline analysis and write summary.json, alarms.csv and report.html.

    activity_path : activity file; ``activity_format`` "csv" (a time column and the
        ``column`` of activity) or "movebank" (a Movebank event file; ``column`` odba or
        vedba [g]). column : None = ``DEFAULT_COLUMN`` of the format.
    catalog_path : earthquake catalogue in any format ``namazu.server.catalogue.files`` reads.
    farm : (latitude [deg N], longitude [deg E]).
    resolution : activity step ("15min").
    periods_path : optional CSV start,end,label for stratified results.
    progress : tqdm progress bar on stderr (None = only on a terminal).
    argv : the command-line arguments as invoked, recorded in the provenance.
    Returns the summary dict (also written to ``out_dir/summary.json``).
    Raises AnalysisError with a one-line message for unusable inputs.
    """
    started = datetime.now(UTC)
    column = column or DEFAULT_COLUMN.get(activity_format, "animal")
    quiet = True if progress is False else None  # None: tqdm shows the bar on a terminal only
    steps = tqdm(total=6, desc="analyze", unit="step", disable=quiet)
    try:
        series = _read_activity(activity_path, activity_format, column, resolution, timezone)
        periods = None
        if periods_path is not None:
            table = parse_periods_csv(_read_text(periods_path, "periods file"), timezone)
            periods = period_intervals(table)
        steps.update()
        catalog = _read_catalog(catalog_path, catalog_format)
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
            on_step=lambda _stage: steps.update(),
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
        "column": column,
        "resolution": resolution,
        "timezone": timezone or "UTC",
        "periods": str(periods_path) if periods_path else None,
        "farm": {"latitude": farm[0], "longitude": farm[1]},
        "samples": int(series.notna().sum()),
        "first_sample": series.index[0].isoformat(),
        "last_sample": series.index[-1].isoformat(),
        "catalog_events": len(catalog),
        "catalog_mainshocks": int(assessment.mainshocks.sum()),
        "activity_format": activity_format,
        "catalog_format": catalog_format,
    }
    outcome = assessment.as_dict()
    files = {"activity": activity_path, "catalog": catalog_path, "periods": periods_path}
    rerun = _rerun_argv(inputs, rule, evaluation, out_dir)
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
        "parameters": {"rule": rule.as_dict(), "evaluation": evaluation.as_dict()},
        "catalog": outcome["catalog"],
        "monitored": outcome["monitored"],
        "alarms": outcome["alarms"],
        "evaluation": outcome["evaluation"],
        "periods": outcome["periods"],
        "molchan": outcome["molchan"],
        "statement": outcome["statement"],
        "provenance": provenance,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.json").write_text(
        json.dumps(summary, indent=2, allow_nan=False) + "\n", encoding="utf-8"
    )
    alarms_frame = pd.DataFrame(
        summary["alarms"],
        columns=[
            "series",
            "start",
            "end",
            "declared_at",
            "n_samples",
            "duration_min",
            "peak_ratio",
            "mean_ratio",
            "reaction",
        ],
    )
    alarms_frame.to_csv(out_dir / "alarms.csv", index=False)

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
    )
    (out_dir / "report.html").write_text(html, encoding="utf-8")
    return summary


def _recorded_params(summary: dict[str, Any]) -> tuple[RuleParams, EvaluationParams]:
    try:
        recorded = summary["parameters"]
        rule_values = {k: v for k, v in recorded["rule"].items() if k != "rule_version"}
        return RuleParams(**rule_values), EvaluationParams(**recorded["evaluation"])
    except (KeyError, TypeError, ValueError) as exc:
        raise AnalysisError(f"summary has no usable parameters: {exc}") from exc


def verify_summary(summary_path: Path) -> list[str]:
    """Rerun a recorded analysis and list what differs (empty list = reproduced).

    summary_path : a summary.json written by ``run_analysis`` (with ``provenance``).
    Checks each input file's SHA-256 and size against the record, the rule version,
    then reruns with the recorded inputs and parameters and compares
    ``VERIFIED_SECTIONS``.
    Returns one line per difference. Raises AnalysisError when the summary is unusable
    or the rerun fails.
    """
    try:
        summary = json.loads(_read_text(summary_path, "summary file"))
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
    rule, evaluation = _recorded_params(summary)
    farm = (inputs["farm"]["latitude"], inputs["farm"]["longitude"])
    timezone = None if inputs.get("timezone", "UTC") == "UTC" else inputs["timezone"]
    periods = recorded_files.get("periods")
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
            progress=False,
        )
    for section in VERIFIED_SECTIONS:
        if summary.get(section) != again.get(section):
            differences.append(f"{section}: the rerun gives different figures")
    return differences


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="namazu analyze",
        description="Offline analysis: activity + earthquake catalogue -> alarms, "
        "evaluation (with and without declustering), report.",
    )
    parser.add_argument("--activity", type=Path, help="activity file (see --activity-format)")
    parser.add_argument(
        "--activity-format",
        choices=ACTIVITY_FORMATS,
        default="csv",
        help="csv: time + columns (default); movebank: Movebank event file",
    )
    parser.add_argument("--catalog", type=Path, help="earthquake catalogue file")
    parser.add_argument("--farm", help="farm location LAT,LON [deg]")
    parser.add_argument(
        "--column", help="activity column (default animal; odba for Movebank input)"
    )
    parser.add_argument("--resolution", default="15min", help="activity step (default 15min)")
    parser.add_argument("--periods", type=Path, help="CSV start,end,label for stratified results")
    parser.add_argument("--out", type=Path, default=Path("analysis-out"), help="output directory")
    parser.add_argument("--timezone", help="IANA zone of times written without one (default UTC)")
    parser.add_argument("--catalog-format", help="catalogue format (default: detected)")
    parser.add_argument("--preset", default="default", help="rule preset (default, strict, ...)")
    parser.add_argument("--increase-pct", type=float, help="rule threshold over baseline [%%]")
    parser.add_argument("--min-duration-min", type=float, help="minimum episode span [min]")
    parser.add_argument("--baseline-days", type=int, help="previous days in the baseline")
    parser.add_argument("--min-baseline-days", type=int, help="days needed for a baseline")
    parser.add_argument("--lead-window-h", type=float, help="alarm cover after episode end [h]")
    parser.add_argument("--min-magnitude", type=float, help="target magnitude threshold")
    parser.add_argument("--fixed-radius-km", type=float, help="fixed target radius [km]")
    parser.add_argument(
        "--reaction-window-min", type=float, help="alarm start after shaking = reaction [min]"
    )
    parser.add_argument("--reaction-min-magnitude", type=float, help="magnitude of local shaking")
    parser.add_argument("--reaction-radius-km", type=float, help="radius of local shaking [km]")
    parser.add_argument("--max-gap-h", type=float, help="longest gap still monitored [h]")
    parser.add_argument("--n-shifts", type=int, help="circular shifts for the empirical p")
    parser.add_argument("--seed", type=int, help="seed of the shifts")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--verify",
        type=Path,
        metavar="SUMMARY",
        help="rerun the analysis recorded in a summary.json and compare every figure",
    )
    return parser


def _params(args: argparse.Namespace) -> tuple[RuleParams, EvaluationParams]:
    rule_over = {
        k: getattr(args, k)
        for k in ("increase_pct", "min_duration_min", "baseline_days", "min_baseline_days")
        if getattr(args, k) is not None
    }
    eval_over = {
        k: getattr(args, k)
        for k in (
            "lead_window_h",
            "min_magnitude",
            "fixed_radius_km",
            "reaction_window_min",
            "reaction_min_magnitude",
            "reaction_radius_km",
            "max_gap_h",
            "n_shifts",
            "seed",
        )
        if getattr(args, k) is not None
    }
    try:
        rule = rule_preset(args.preset, **rule_over)
        evaluation = EvaluationParams(**eval_over)
    except KeyError as exc:
        raise AnalysisError(str(exc.args[0])) from exc
    except ValueError as exc:
        raise AnalysisError(str(exc)) from exc
    return rule, evaluation


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
    print(f"reproduced: inputs unchanged and every figure identical ({summary_path})")
    return 0


def main(argv: list[str]) -> int:
    """``namazu analyze``: see the module docstring; exit 0, 1 (bad input), 2 (usage)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.verify is not None:
        return _verify_main(args.verify)
    missing = [f"--{k}" for k in ("activity", "catalog", "farm") if getattr(args, k) is None]
    if missing:
        parser.error(f"the following arguments are required: {', '.join(missing)}")
    try:
        farm = _parse_farm(args.farm)
        rule, evaluation = _params(args)
        summary = run_analysis(
            args.activity,
            args.catalog,
            farm,
            column=args.column,
            resolution=args.resolution,
            periods_path=args.periods,
            out_dir=args.out,
            timezone=args.timezone,
            rule=rule,
            evaluation=evaluation,
            catalog_format=args.catalog_format,
            activity_format=args.activity_format,
            progress=False if args.no_progress else None,
            argv=list(argv),
        )
    except AnalysisError as exc:
        print(f"namazu analyze: error: {exc}", file=sys.stderr)
        return 1
    print(_text_summary(summary))
    print(
        f"written: {args.out / 'summary.json'}, {args.out / 'alarms.csv'}, "
        f"{args.out / 'report.html'}"
    )
    return 0


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _line(label: str, result: dict[str, Any]) -> str:
    return (
        f"{label:<28} targets {result['targets']:>3}  hits {result['hits']:>3}  "
        f"false alarms {result['false_alarms']:>4}  tau {_fmt(result['alarm_fraction'])}  "
        f"gain {_fmt(result['probability_gain'])}  p_binom {_fmt(result['p_binomial'])}  "
        f"p_shift {_fmt(result['p_shift'])}"
    )


def _text_summary(summary: dict[str, Any]) -> str:
    n_alarms = len(summary["alarms"])
    n_reactions = sum(a["reaction"] for a in summary["alarms"])
    catalog = summary["catalog"]
    lines = [
        f"{catalog['events_read']} catalogue events read, "
        f"{catalog['near_duplicates_merged']} near-duplicates merged",
        f"{n_alarms} alarm episodes ({n_reactions} reactions to local shaking), "
        f"{summary['monitored']['hours']:.1f} h monitored",
        _line("all events", summary["evaluation"]["all_events"]),
        _line("declustered", summary["evaluation"]["declustered"]),
    ]
    for label, pair in summary["periods"].items():
        lines.append(_line(f"{label}: all events", pair["all_events"]))
        lines.append(_line(f"{label}: declustered", pair["declustered"]))
    lines.append(f"all events: {summary['statement']['all_events']}")
    lines.append(f"declustered: {summary['statement']['declustered']}")
    return "\n".join(lines)
