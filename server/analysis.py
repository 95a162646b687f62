"""``namazu analyze``: offline activity + catalogue -> alarms, evaluation, report.

Thin wiring: files are read here, every computation is in ``analytics``; the report is
rendered by ``server.report``. Outputs in ``--out`` (default ``analysis-out``):

- ``summary.json``: inputs, all parameters (rule version included), the alarms (start,
  end = last anomalous sample, peak ratio), the evaluation with and without
  declustering, per period when ``--periods`` is given, and the Molchan trajectory;
- ``alarms.csv``: one row per alarm episode, with a ``reaction`` flag;
- ``report.html``: a self-contained page with the plots (no external URL).

Periods file (``--periods``): CSV with header ``start,end,label``; each row is the span
[start, end) (times as in the activity file); rows may share a label. Example in
``docs/periods-wikelski2020.csv``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from analytics.decluster import gardner_knopoff
from analytics.evaluation import (
    EvaluationInputError,
    alarm_table,
    binomial_confidence_curve,
    evaluate,
    molchan_points,
    monitored_intervals,
    period_intervals,
    reaction_mask,
)
from analytics.params import RULE_VERSION, EvaluationParams, RuleParams, rule_preset
from analytics.rule import Episode, SeriesError, detect
from analytics.tabular import TabularError, parse_activity_csv, parse_periods_csv

#: Rule thresholds [%] of the Molchan trajectory (the configured one is added).
MOLCHAN_INCREASE_PCT = tuple(range(0, 501, 20))


class AnalysisError(Exception):
    """The analysis cannot run; the one-line message says why."""


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AnalysisError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise AnalysisError(f"{what} is a directory, not a file: {path}") from None
    except UnicodeDecodeError as exc:
        raise AnalysisError(f"{what} is not UTF-8 text: {path}") from exc
    except OSError as exc:
        raise AnalysisError(f"{what} cannot be read: {path}: {exc.strerror}") from exc


def _read_catalog(path: Path, fmt: str | None) -> pd.DataFrame:
    from server.catalog_io import read_catalog

    if not path.exists():
        raise AnalysisError(f"catalogue file not found: {path}")
    try:
        return read_catalog(path, fmt)
    except Exception as exc:  # the catalogue shell has its own error family
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AnalysisError(f"catalogue file {path}: {first}") from exc


def _parse_farm(text: str) -> tuple[float, float]:
    try:
        lat_text, lon_text = text.split(",")
        lat, lon = float(lat_text), float(lon_text)
    except ValueError:
        raise AnalysisError(f"--farm must be LAT,LON in degrees, got {text!r}") from None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise AnalysisError(f"--farm {text!r} is outside -90..90, -180..180 degrees")
    return lat, lon


def _episode_row(episode: Episode, reaction: bool) -> dict[str, Any]:
    row = episode.as_dict()
    row.pop("params")
    row["reaction"] = bool(reaction)
    return row


def run_analysis(
    activity_path: Path,
    catalog_path: Path,
    farm: tuple[float, float],
    *,
    column: str = "animal",
    resolution: str = "15min",
    periods_path: Path | None = None,
    out_dir: Path = Path("analysis-out"),
    timezone: str | None = None,
    rule: RuleParams = RuleParams(),
    evaluation: EvaluationParams = EvaluationParams(),
    catalog_format: str | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Run the offline analysis and write summary.json, alarms.csv and report.html.

    activity_path : CSV with a time column and the ``column`` of activity.
    catalog_path : earthquake catalogue in any format ``server.catalog_io`` reads.
    farm : (latitude [deg N], longitude [deg E]).
    resolution : activity step ("15min").
    periods_path : optional CSV start,end,label for stratified results.
    progress : tqdm progress bar on stderr (None = only on a terminal).
    Returns the summary dict (also written to ``out_dir/summary.json``).
    Raises AnalysisError with a one-line message for unusable inputs.
    """
    quiet = True if progress is False else None  # None: tqdm shows the bar on a terminal only
    steps = tqdm(total=6, desc="analyze", unit="step", disable=quiet)
    try:
        activity = parse_activity_csv(
            _read_text(activity_path, "activity file"), columns=[column], timezone=timezone
        )
        periods = None
        if periods_path is not None:
            periods = parse_periods_csv(_read_text(periods_path, "periods file"), timezone)
        steps.update()
        catalog = _read_catalog(catalog_path, catalog_format)
        steps.update()
        series = activity[column]
        episodes, components = detect(series, resolution, rule, return_components=True)
        steps.update()
        judged = np.isfinite(components["value"]) & np.isfinite(components["baseline"])
        monitored = monitored_intervals(
            components.index, judged.to_numpy(), resolution, evaluation.max_gap_h
        )
        if monitored.total_ns == 0:
            raise AnalysisError(
                f"no monitored time: the baseline needs {rule.min_baseline_days} previous days "
                f"of data at the same time of day"
            )
        mainshocks = gardner_knopoff(catalog)
        table = alarm_table(episodes)
        reactions = reaction_mask(table, catalog, farm[0], farm[1], evaluation)

        def both(window_monitored, params=evaluation):
            return {
                "all_events": evaluate(
                    episodes, catalog, farm, window_monitored, params, mainshocks=mainshocks
                ),
                "declustered": evaluate(
                    episodes,
                    catalog,
                    farm,
                    window_monitored,
                    params,
                    declustered=True,
                    mainshocks=mainshocks,
                ),
            }

        results = both(monitored)
        steps.update()
        by_period = {}
        if periods is not None:
            for label, span in period_intervals(periods).items():
                by_period[label] = both(monitored.intersect(span))
        steps.update()
        trajectory = []
        quick = replace(evaluation, n_shifts=0)
        pcts = sorted({*MOLCHAN_INCREASE_PCT, rule.increase_pct})
        for pct in tqdm(pcts, desc="molchan", leave=False, disable=quiet):
            trial = detect(series, resolution, replace(rule, increase_pct=pct))
            trajectory.append(
                (pct, evaluate(trial, catalog, farm, monitored, quick, mainshocks=mainshocks))
            )
        molchan = molchan_points(trajectory).rename(columns={"threshold": "increase_pct"})
        steps.update()
    except (TabularError, SeriesError, EvaluationInputError) as exc:
        raise AnalysisError(str(exc)) from exc
    finally:
        steps.close()

    summary = {
        "inputs": {
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
            "catalog_mainshocks": int(mainshocks.sum()),
        },
        "rule_version": RULE_VERSION,
        "parameters": {"rule": rule.as_dict(), "evaluation": evaluation.as_dict()},
        "monitored": {
            "hours": monitored.total_ns / 3.6e12,
            "intervals": [
                [s.isoformat(), e.isoformat()]
                for s, e in monitored.as_frame().itertuples(index=False)
            ],
        },
        "alarms": [_episode_row(e, r) for e, r in zip(episodes, reactions, strict=True)],
        "evaluation": {k: v.as_dict() for k, v in results.items()},
        "periods": {
            label: {k: v.as_dict() for k, v in pair.items()} for label, pair in by_period.items()
        },
        "molchan": _records(molchan),
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
            "n_samples",
            "duration_min",
            "peak_ratio",
            "mean_ratio",
            "reaction",
        ],
    )
    alarms_frame.to_csv(out_dir / "alarms.csv", index=False)

    from server.report import render_report

    n_targets = results["all_events"].targets
    curve = binomial_confidence_curve(n_targets) if n_targets else None
    html = render_report(
        summary=summary,
        components=components,
        episodes=episodes,
        reactions=reactions,
        results=results,
        molchan=molchan,
        confidence=curve,
        catalog=catalog,
    )
    (out_dir / "report.html").write_text(html, encoding="utf-8")
    return summary


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    rows = []
    for row in frame.to_dict(orient="records"):
        rows.append(
            {
                k: (None if isinstance(v, float) and not np.isfinite(v) else v)
                for k, v in row.items()
            }
        )
    return rows


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="namazu analyze",
        description="Offline analysis: activity + earthquake catalogue -> alarms, "
        "evaluation (with and without declustering), report.",
    )
    parser.add_argument(
        "--activity", required=True, type=Path, help="activity CSV (time + columns)"
    )
    parser.add_argument("--catalog", required=True, type=Path, help="earthquake catalogue file")
    parser.add_argument("--farm", required=True, help="farm location LAT,LON [deg]")
    parser.add_argument("--column", default="animal", help="activity column (default animal)")
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
    parser.add_argument("--max-gap-h", type=float, help="longest gap still monitored [h]")
    parser.add_argument("--n-shifts", type=int, help="circular shifts for the empirical p")
    parser.add_argument("--seed", type=int, help="seed of the shifts")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
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


def main(argv: list[str]) -> int:
    """``namazu analyze``: see the module docstring; exit 0, 1 (bad input), 2 (usage)."""
    args = _parser().parse_args(argv)
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
            progress=False if args.no_progress else None,
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
    lines = [
        f"{n_alarms} alarm episodes ({n_reactions} reactions to local shaking), "
        f"{summary['monitored']['hours']:.1f} h monitored",
        _line("all events", summary["evaluation"]["all_events"]),
        _line("declustered", summary["evaluation"]["declustered"]),
    ]
    for label, pair in summary["periods"].items():
        lines.append(_line(f"{label}: all events", pair["all_events"]))
        lines.append(_line(f"{label}: declustered", pair["declustered"]))
    return "\n".join(lines)
