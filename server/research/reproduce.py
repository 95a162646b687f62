"""``namazu reproduce wikelski2020``: the study's own analysis, then honest tests of it.

Thin wiring: files are read here, the computation is ``namazu.analytics.wikelski2020``
(``reproduce`` and ``score_exceedance_alarms``), the page is rendered by
``namazu.server.research.reproduce_report``. Outputs in ``--out`` (default
``reproduce-wikelski2020``):

- ``summary.json``: inputs with SHA-256, parameters, the quirks of the original, per
  period the BIC choices, the VAR information criteria, residual figures, trigger
  counts and per group the median regression (original and complete windows), the
  naive and circular-shift p-values of the slope, the t-grid's extremes and its
  multiple-comparison test, the exceedances scored as alarms, and the plain verdict;
- ``report.html``: one self-contained page (inline SVG) with the heat maps, the
  distance-warning-time figures and the null distributions;
- per period ``<label>/``: ``fourier_bic.csv``, ``fourier_aic.csv``,
  ``daily_pattern.csv``, ``var_lags.csv``, ``var_summary.txt``, ``residuals.csv``,
  ``triggers.csv``, ``alarms.csv``; per group ``<label>/<group>/``: ``pairs.csv``,
  ``t_grid.csv``, ``null_slopes.csv``, ``distance_warning.svg``.

The catalogue must be the study's CSV (``pga_g`` and ``hypocentral_distance_km``
columns, as in the data pack); the activity a CSV with ``animal``, ``cow``, ``dog`` and
``sheep`` columns on a 15-min grid.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from namazu.analytics.catalog import parse_study_csv
from namazu.analytics.params import EvaluationParams
from namazu.analytics.tabular import TabularError, parse_activity_csv, parse_times
from namazu.analytics.wikelski2020 import (
    GROUPS,
    StudyInputError,
    StudyParams,
    StudyResult,
    parse_study_catalog,
    reproduce,
    score_exceedance_alarms,
    verdict,
)
from namazu.server.research.analysis import (
    AnalysisError,
    file_fingerprint,
    format_value,
    read_text_file,
    software_versions,
)

METHODS = ("wikelski2020",)

#: The study's split between the housed and the pasture period (UTC).
STUDY_SPLIT = "2017-03-11T00:00:00"


def run_reproduction(
    activity_path: Path,
    catalog_path: Path,
    farm: tuple[float, float],
    *,
    out_dir: Path = Path("reproduce-wikelski2020"),
    split: str = STUDY_SPLIT,
    labels: tuple[str, str] = ("stable", "pasture"),
    params: StudyParams = StudyParams(),
    evaluation: EvaluationParams = EvaluationParams(),
    timezone: str | None = None,
    farm_elevation_km: float = 0.0,
    progress: bool | None = None,
    argv: list[str] | None = None,
) -> dict[str, Any]:
    """Run the reproduction and its tests; write the outputs; return the summary.

    activity_path : CSV with time, animal, cow, dog, sheep [activity units].
    catalog_path : the study catalogue CSV (pga_g [g], hypocentral_distance_km [km]).
    farm : (latitude [deg N], longitude [deg E]) for the alarm scoring's targets.
    split : first time of the second period (ISO 8601, read in ``timezone``).
    params : the method's parameters and the number of shifts.
    evaluation : the scoring of the exceedance alarms (lead window, targets, shifts).
    farm_elevation_km : for hypocentral distances of targets [km].
    Raises AnalysisError with a one-line message for unusable inputs.
    """
    started = datetime.now(UTC)
    try:
        activity = parse_activity_csv(
            read_text_file(activity_path, "activity file"), columns=list(GROUPS), timezone=timezone
        )
        catalog_text = read_text_file(catalog_path, "catalogue file")
        events = parse_study_catalog(catalog_text, timezone)
        catalog = parse_study_csv(catalog_text)
        split_time = parse_times(pd.Series([split]), timezone, "--split")[0]
    except (TabularError, StudyInputError, ValueError) as exc:
        raise AnalysisError(str(exc).splitlines()[0]) from exc
    quiet = True if progress is False else None
    bar = tqdm(total=2 * len(GROUPS), desc="reproduce", unit="group", disable=quiet)
    try:
        with threadpool_limits(limits=1):  # small matrices: threads only contend
            result = reproduce(
                activity, events, split_time, labels, params, on_group=lambda _g: bar.update()
            )
            alarms = {
                label: score_exceedance_alarms(
                    period, catalog, farm, evaluation, farm_elevation_km=farm_elevation_km
                )
                for label, period in result.periods.items()
            }
    except StudyInputError as exc:
        raise AnalysisError(str(exc)) from exc
    finally:
        bar.close()

    summary = result.as_dict()
    for label, scored in alarms.items():
        summary["periods"][label]["alarms"] = scored
    summary["inputs"] = {
        "activity": str(activity_path),
        "catalog": str(catalog_path),
        "farm": {"latitude": farm[0], "longitude": farm[1], "elevation_km": farm_elevation_km},
        "timezone": timezone or "UTC",
        "labels": list(labels),
        "samples_read": len(activity),
        "events_read": len(events),
    }
    summary["evaluation_parameters"] = evaluation.as_dict()
    summary["verdict"] = verdict(summary)
    rerun = [
        "namazu", "reproduce", "wikelski2020",
        "--activity", str(activity_path.resolve()),
        "--catalog", str(catalog_path.resolve()),
        "--farm", f"{farm[0]!r},{farm[1]!r},{farm_elevation_km * 1000.0!r}",
        "--split", split,
        "--labels", ",".join(labels),
        "--n-shifts", str(params.n_shifts),
        "--alarm-shifts", str(evaluation.n_shifts),
        "--out", str(out_dir.resolve()),
        "--no-progress",
    ]  # fmt: skip
    if timezone:
        rerun[-2:-2] = ["--timezone", timezone]
    summary["provenance"] = {
        "inputs": {
            "activity": file_fingerprint(activity_path),
            "catalog": file_fingerprint(catalog_path),
        },
        "software": {**software_versions(), "statsmodels": _version("statsmodels")},
        "argv": None if argv is None else ["namazu", "reproduce", *argv],
        "rerun": rerun,
        "rerun_command": shlex.join(rerun),
        "run_utc": started.isoformat(timespec="seconds").replace("+00:00", "Z"),
    }
    _write_outputs(out_dir, result, summary)
    return summary


def _write_outputs(out_dir: Path, result: StudyResult, summary: dict[str, Any]) -> None:
    from namazu.server.research.reproduce_report import distance_warning_figure, render_report

    out_dir.mkdir(parents=True, exist_ok=True)
    scatter: dict[tuple[str, str], str] = {}
    for label, period in result.periods.items():
        folder = out_dir / label
        folder.mkdir(exist_ok=True)
        period.fourier["bic"].to_csv(folder / "fourier_bic.csv")
        period.fourier["aic"].to_csv(folder / "fourier_aic.csv")
        period.daily_pattern.to_csv(folder / "daily_pattern.csv", index_label="time")
        period.var_criteria.to_csv(folder / "var_lags.csv")
        (folder / "var_summary.txt").write_text(period.var_summary, encoding="utf-8")
        residuals = period.residuals.join(period.standardised.add_prefix("z_"))
        residuals.to_csv(folder / "residuals.csv", index_label="time")
        period.events.to_csv(folder / "triggers.csv", index=False)
        period.alarms().to_csv(folder / "alarms.csv", index=False)
        for group, outcome in period.groups.items():
            sub = folder / group
            sub.mkdir(exist_ok=True)
            outcome.pairs.to_csv(sub / "pairs.csv", index=False)
            outcome.t_grid.to_csv(sub / "t_grid.csv")
            pd.Series(outcome.null_slopes, name="slope_h_per_km").to_csv(
                sub / "null_slopes.csv", index_label="shift"
            )
            scatter[label, group] = distance_warning_figure(outcome, f"{label}, {group}")
            (sub / "distance_warning.svg").write_text(scatter[label, group], encoding="utf-8")
    (out_dir / "summary.json").write_text(
        json.dumps(summary, indent=2, allow_nan=False) + "\n", encoding="utf-8"
    )
    (out_dir / "report.html").write_text(render_report(summary, result, scatter), encoding="utf-8")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="namazu reproduce",
        description="Run a published study's own analysis on its data, then test it "
        "honestly beside it (dependence-aware p-values, the grid's multiple comparisons, "
        "the exceedances scored as alarms).",
    )
    parser.add_argument("method", choices=METHODS, help="the study whose analysis to run")
    parser.add_argument("--activity", type=Path, required=True, help="activity CSV")
    parser.add_argument("--catalog", type=Path, required=True, help="the study catalogue CSV")
    parser.add_argument(
        "--farm", required=True, help="farm location LAT,LON[,ELEV_M] [deg, deg, m]"
    )
    parser.add_argument(
        "--split", default=STUDY_SPLIT, help=f"start of the second period (default {STUDY_SPLIT})"
    )
    parser.add_argument(
        "--labels",
        default="stable,pasture",
        help="names of the two periods (default stable,pasture)",
    )
    parser.add_argument(
        "--n-shifts",
        type=int,
        default=StudyParams().n_shifts,
        help=f"circular shifts of the slope and grid tests (default {StudyParams().n_shifts})",
    )
    parser.add_argument(
        "--alarm-shifts",
        type=int,
        default=EvaluationParams().n_shifts,
        help="circular shifts of the alarm scoring's empirical p "
        f"(default {EvaluationParams().n_shifts})",
    )
    parser.add_argument("--timezone", help="IANA zone of times written without one (default UTC)")
    parser.add_argument(
        "--out", type=Path, default=Path("reproduce-wikelski2020"), help="output directory"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def parse_farm(text: str) -> tuple[tuple[float, float], float]:
    """``LAT,LON[,ELEV_M]`` -> ((latitude [deg N], longitude [deg E]), elevation [km])."""
    try:
        numbers = [float(part) for part in text.split(",")]
    except ValueError:
        numbers = []
    if len(numbers) not in (2, 3):
        raise AnalysisError(f"--farm must be LAT,LON or LAT,LON,ELEV_M, got {text!r}")
    lat, lon = numbers[0], numbers[1]
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise AnalysisError(f"--farm {text!r} is outside -90..90, -180..180 degrees")
    return (lat, lon), (numbers[2] / 1000.0 if len(numbers) == 3 else 0.0)


def _labels(text: str) -> tuple[str, str]:
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 2 or not all(parts) or parts[0] == parts[1]:
        raise AnalysisError(f"--labels must be two different names, got {text!r}")
    if any(p in {".", ".."} or "/" in p or "\\" in p for p in parts):
        raise AnalysisError(f"--labels are folder names; got {text!r}")
    return parts[0], parts[1]


def main(argv: list[str]) -> int:
    """``namazu reproduce``: see the module docstring; exit 0, 1 (bad input), 2 (usage)."""
    args = _parser().parse_args(argv)
    try:
        farm, elevation_km = parse_farm(args.farm)
        try:
            params = StudyParams(n_shifts=args.n_shifts)
            evaluation = EvaluationParams(n_shifts=args.alarm_shifts)
        except ValueError as exc:
            raise AnalysisError(str(exc)) from exc
        summary = run_reproduction(
            args.activity,
            args.catalog,
            farm,
            out_dir=args.out,
            split=args.split,
            labels=_labels(args.labels),
            params=params,
            evaluation=evaluation,
            timezone=args.timezone,
            farm_elevation_km=elevation_km,
            progress=False if args.no_progress else None,
            argv=list(argv),
        )
    except AnalysisError as exc:
        print(f"namazu reproduce: error: {exc}", file=sys.stderr)
        return 1
    print(text_summary(summary))
    print(
        f"written: {args.out / 'summary.json'}, {args.out / 'report.html'} and per period folders"
    )
    return 0


def text_summary(summary: dict[str, Any]) -> str:
    """Terminal lines: per period and group the slope with its naive and shift p."""
    lines = []
    for label, period in summary["periods"].items():
        lines.append(
            f"{label}: {period['samples']} samples, {period['triggers']} triggers "
            f"({period['triggers_window_cut']} with a cut look-back), {period['shifts']} shifts"
        )
        for group, outcome in period["groups"].items():
            test = outcome["shift_test"]
            complete = outcome["shift_test_complete_windows"]
            grid = outcome["grid_test"]
            lines.append(
                f"  {group:<7} pairs {outcome['pairs']:>4}  "
                f"slope {format_value(test['slope'])} h/km  "
                f"p naive {format_value(test['p_naive_two_sided'])}  "
                f"p shift {format_value(test['p_shift']['two_sided'])}  | complete windows: slope "
                f"{format_value(complete['slope'])} "
                f"p shift {format_value(complete['p_shift']['two_sided'])}  "
                f"| grid |t|>1.96: {grid['significant_cells']} cells "
                f"(null median {format_value(grid['null_significant_cells']['median'])})"
            )
        scored = period["alarms"]["results"]["all_events"]["animals"]
        lines.append(
            f"  alarms (animal > {period['alarms']['threshold']:g} sd): {scored['alarms']} "
            f"alarms, targets {scored['targets']}, hits {scored['hits']}, "
            f"tau {format_value(scored['alarm_fraction'])}, "
            f"gain {format_value(scored['probability_gain'])}, "
            f"p binomial {format_value(scored['p_binomial'])}, "
            f"p shift {format_value(scored['p_shift'])}"
        )
    lines.append(summary["verdict"])
    return "\n".join(lines)
