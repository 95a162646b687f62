"""One assessment of an activity series against an earthquake catalogue.

The single pure pipeline behind ``namazu analyze`` and the panel's evaluation page:

1. detect alarm episodes with the anomaly rule (``namazu.analytics.rule.detect``), each
   with its declaration time;
2. monitored time: where the rule can judge (value and baseline defined), gaps up to
   ``max_gap_h`` bridged (``namazu.analytics.evaluation.monitored_intervals``);
3. near-duplicate catalogue events (solutions within ``DUPLICATE_MAX_DT_S`` and
   ``DUPLICATE_MAX_KM``) merged into one (``namazu.analytics.catalog.merge_near_duplicates``),
   then the mainshocks of the merged catalogue by window declustering
   (``namazu.analytics.decluster``), with a longer history catalogue when one is given;
4. scores with and without declustering (``namazu.analytics.evaluation.evaluate``), and the
   same inside each named period (monitored time cut to the period);
5. the seismicity reference forecast scored the same way, and the conditional test of the
   animal alarms on the targets the reference misses (``namazu.analytics.reference``);
6. the Molchan trajectories: the rule re-run at ``MOLCHAN_INCREASE_PCT`` thresholds (plus
   the configured one) and the reference at ``REFERENCE_WINDOWS_H`` windows, scored without
   shifts; the binomial curve at level alpha for the observed N;
7. lead time against distance of the hits, plain statements on chance and on power.

Nothing here reads files or talks to a store; callers pass the series and the catalogue.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, cast

import numpy as np
import pandas as pd

from namazu.analytics.catalog import DROPPED_ATTR, merge_near_duplicates
from namazu.analytics.decluster import gardner_knopoff, with_history
from namazu.analytics.evaluation import (
    NO_ALARMS,
    NO_TARGETS,
    NO_TARGETS_LEFT,
    EvaluationResult,
    Intervals,
    _clean,
    alarm_table,
    binomial_confidence_curve,
    evaluate,
    molchan_points,
    monitored_intervals,
    reaction_mask,
)
from namazu.analytics.params import EvaluationParams, RuleParams
from namazu.analytics.reference import (
    REFERENCE_WINDOWS_H,
    conditional_test,
    evaluate_reference,
)
from namazu.analytics.rule import Episode, detect, herd_series

#: Rule thresholds [%] of the Molchan trajectory (the configured one is added).
MOLCHAN_INCREASE_PCT: tuple[float, ...] = tuple(range(0, 501, 20))

#: Near-duplicate catalogue events: origin times within this [s] ...
DUPLICATE_MAX_DT_S = 2.0
#: ... and epicentres within this [km] are one event (the larger magnitude is kept).
DUPLICATE_MAX_KM = 5.0

#: Default significance level of statements and the Molchan curve [-].
ALPHA = EvaluationParams().alpha
#: Default fewest targets for a skill sentence [targets].
MIN_TARGETS_FOR_SKILL = EvaluationParams().min_targets_for_skill

#: The result sets scored with and without declustering.
SETS: tuple[str, ...] = ("all_events", "declustered")

_NS_PER_H = 3.6e12


class NoMonitoredTimeError(ValueError):
    """The rule cannot judge any sample: no baseline is ever defined."""


@dataclass
class Assessment:
    """Everything one assessment computed (see the module docstring).

    episodes : alarm episodes of the configured rule, in time order.
    components : the rule's intermediates per sample (value, baseline, threshold, ratio,
        anomalous) on the regular grid.
    reactions : bool per episode; True = local shaking from the reaction window before its
        start up to its declaration (full catalogue).
    monitored : monitored time [ns].
    catalog : the catalogue as scored: near-duplicates merged, sorted by time.
    events_read : events in the catalogue as passed in [-].
    mainshocks : mainshock mask in the row order of ``catalog``.
    results : ``all_events`` and ``declustered`` scores of the animal alarms.
    reference : the same for the seismicity reference forecast.
    conditional : per set, the conditional test (``analytics.reference.conditional_test``).
    periods : per period label, ``all_events`` and ``declustered`` scores.
    molchan : DataFrame ``increase_pct`` [%], ``tau`` [-], ``nu`` [-].
    reference_molchan : DataFrame ``window_h`` [h], ``tau`` [-], ``nu`` [-].
    confidence : the binomial curve at level alpha (``tau``, ``nu``), None without targets.
    alpha : significance level of ``confidence`` and the statements [-].
    history_events : events of the history catalogue used for declustering (0 = none).
    non_earthquakes_dropped : events the catalogue parser dropped as not earthquakes, by
        type (``DataFrame.attrs`` of the catalogue passed in).
    """

    episodes: list[Episode]
    components: pd.DataFrame
    reactions: np.ndarray
    monitored: Intervals
    catalog: pd.DataFrame
    events_read: int
    mainshocks: np.ndarray
    results: dict[str, EvaluationResult]
    reference: dict[str, EvaluationResult] = field(default_factory=dict)
    conditional: dict[str, dict[str, Any]] = field(default_factory=dict)
    periods: dict[str, dict[str, EvaluationResult]] = field(default_factory=dict)
    molchan: pd.DataFrame = field(default_factory=pd.DataFrame)
    reference_molchan: pd.DataFrame = field(default_factory=pd.DataFrame)
    confidence: pd.DataFrame | None = None
    alpha: float = ALPHA
    history_events: int = 0
    non_earthquakes_dropped: dict[str, int] = field(default_factory=dict)

    @property
    def near_duplicates_merged(self) -> int:
        """Catalogue events removed as near-duplicates of another event [-]."""
        return self.events_read - len(self.catalog)

    @property
    def monitored_h(self) -> float:
        """Monitored time [h]."""
        return self.monitored.total_ns / _NS_PER_H

    def lead_vs_distance(self) -> list[dict[str, float]]:
        """Hits of the all-events result: lead time [h] (from the declaration), distance
        [km], hypocentral distance [km], magnitude."""
        return [
            {
                "lead_time_h": hit["lead_time_h"],
                "distance_km": hit["distance_km"],
                "hypocentral_km": hit["hypocentral_km"],
                "magnitude": hit["magnitude"],
            }
            for hit in self.results["all_events"].as_dict()["hit_list"]
        ]

    def statements(self) -> dict[str, str]:
        """Plain chance statements of the all-events and declustered results."""
        return {
            key: chance_statement(result.as_dict(), self.alpha)
            for key, result in self.results.items()
        }

    def power_statements(self) -> dict[str, str]:
        """What a perfect record would have given, per set."""
        return {key: power_statement(result.as_dict()) for key, result in self.results.items()}

    def reference_statements(self) -> dict[str, str]:
        """Chance statements of the reference forecast and of the conditional test."""
        out = {}
        for key, result in self.reference.items():
            out[key] = "Seismicity reference: " + chance_statement(result.as_dict(), self.alpha)
            out[f"{key}_conditional"] = conditional_statement(
                self.conditional[key], result.params, self.alpha
            )
        return out

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict: catalogue counts, monitored time, alarms, scores, reference,
        conditional test, periods, Molchan trajectories, statements.

        ``alarms`` rows are ``Episode.as_dict()`` without the rule parameters, plus a
        ``reaction`` flag; NaN becomes None.
        """
        return {
            "catalog": {
                "events_read": self.events_read,
                "non_earthquakes_dropped": sum(self.non_earthquakes_dropped.values()),
                "non_earthquakes_by_type": dict(self.non_earthquakes_dropped),
                "near_duplicates_merged": self.near_duplicates_merged,
                "duplicate_max_dt_s": DUPLICATE_MAX_DT_S,
                "duplicate_max_km": DUPLICATE_MAX_KM,
                "events_scored": len(self.catalog),
                "history_events": self.history_events,
                "mainshocks": int(self.mainshocks.sum()),
            },
            "monitored": {
                "hours": self.monitored_h,
                "intervals": [
                    [s.isoformat(), e.isoformat()]
                    for s, e in self.monitored.as_frame().itertuples(index=False)
                ],
            },
            "alarms": [
                _episode_row(e, r) for e, r in zip(self.episodes, self.reactions, strict=True)
            ],
            "evaluation": {k: v.as_dict() for k, v in self.results.items()},
            "reference": {k: v.as_dict() for k, v in self.reference.items()},
            "conditional": dict(self.conditional),
            "periods": {
                label: {k: v.as_dict() for k, v in pair.items()}
                for label, pair in self.periods.items()
            },
            "molchan": _clean(self.molchan.to_dict(orient="records")),
            "reference_molchan": _clean(self.reference_molchan.to_dict(orient="records")),
            "confidence_curve": (
                [] if self.confidence is None else _clean(self.confidence.to_dict("records"))
            ),
            "lead_vs_distance": self.lead_vs_distance(),
            "statement": self.statements(),
            "power": self.power_statements(),
            "reference_statement": self.reference_statements(),
        }


def _episode_row(episode: Episode, reaction: bool) -> dict[str, Any]:
    row = episode.as_dict()
    row.pop("params")
    row["reaction"] = bool(reaction)
    return row


def _level(result: Mapping[str, Any], alpha: float | None, min_targets: int | None):
    params = result.get("params") or {}
    return (
        float(params.get("alpha", ALPHA)) if alpha is None else alpha,
        int(params.get("min_targets_for_skill", MIN_TARGETS_FOR_SKILL))
        if min_targets is None
        else min_targets,
    )


def _defined(value: Any) -> bool:
    return value is not None and math.isfinite(value)


def _verdict(
    n: int, p_bin: Any, p_shift: Any, reasons: list[Any], alpha: float, min_targets: int
) -> str:
    """The clause after "h of N ...": skill only with N >= min_targets and both p <= alpha."""
    if not (_defined(p_bin) and _defined(p_shift)):
        why = next((r for r in reasons if r), "a p-value is undefined")
        return f"{why}, so chance cannot be judged: no forecasting skill is shown."
    if max(p_bin, p_shift) > alpha:
        return (
            f"this is indistinguishable from chance (p > {alpha:g}): no forecasting skill is shown."
        )
    if n < min_targets:
        return (
            f"both p-values are at or below {alpha:g}, but "
            f"{'1 target is' if n == 1 else f'{n} targets are'} fewer than the {min_targets} "
            "a skill statement needs: no forecasting skill is shown."
        )
    return (
        f"both p-values are at or below {alpha:g} with {n} targets, so the hit rate is "
        "unlikely under random alarms (this is not proof of a mechanism)."
    )


def chance_statement(
    result: Mapping[str, Any], alpha: float | None = None, min_targets: int | None = None
) -> str:
    """A plain sentence on whether a result is distinguishable from chance.

    result : ``EvaluationResult.as_dict()`` (targets, hits, p_binomial, p_shift, reasons,
        params).
    alpha : significance level [-]; min_targets : fewest targets for a skill sentence.
        None = the values recorded in ``result["params"]`` (else 0.05 and 5).
    Skill is claimed only when N >= min_targets and both p-values exist and are at or
    below alpha. Returns one sentence for a lay reader.
    """
    alpha, min_targets = _level(result, alpha, min_targets)
    n, h = result["targets"], result["hits"]
    if not n:
        if result.get("p_binomial_reason") == NO_TARGETS_LEFT:
            return (
                "Declustering left no target earthquake (every one is an aftershock): the "
                "alarms cannot be judged."
            )
        return "No target earthquake fell in monitored time: the alarms cannot be judged."
    verdict = _verdict(
        n,
        result.get("p_binomial"),
        result.get("p_shift"),
        [result.get("p_binomial_reason"), result.get("p_shift_reason")],
        alpha,
        min_targets,
    )
    quakes = "target earthquake was" if n == 1 else "target earthquakes were"
    return f"{h} of {n} {quakes} preceded by an alarm; {verdict}"


def power_statement(result: Mapping[str, Any], alpha: float | None = None) -> str:
    """What a perfect record would have given with these alarms and targets.

    result : ``EvaluationResult.as_dict()``. Returns e.g. "With N = 2 targets and τ = 0.076,
    a perfect record (2 of 2 hits) would give p_binom = 0.0058 and p_shift = 0.075: no
    result on these data could show skill."
    """
    alpha, min_targets = _level(result, alpha, None)
    n, tau = result["targets"], result.get("alarm_fraction")
    if not n:
        return "With no target earthquake, no result could show skill."
    if result.get("p_binomial_reason") == NO_ALARMS or not tau:
        return f"With N = {n} targets and no alarm time, no result on these data could show skill."
    p_bin, p_shift = result.get("perfect_p_binomial"), result.get("perfect_p_shift")
    text = (
        f"With N = {n} target{'' if n == 1 else 's'} and τ = {tau:.3g}, a perfect record "
        f"({n} of {n} hits) would give p_binom = {p_bin:.2g}"
    )
    if _defined(p_shift):
        text += f" and p_shift = {p_shift:.2g}"
    both = [float(p) for p in (p_bin, p_shift) if p is not None and math.isfinite(p)]
    reachable = n >= min_targets and len(both) == 2 and max(both) <= alpha
    if reachable:
        return text + ": a skill statement is possible with these data."
    return text + ": no result on these data could show skill."


def conditional_statement(
    conditional: Mapping[str, Any], params: Mapping[str, Any], alpha: float | None = None
) -> str:
    """A plain sentence on the conditional test against the seismicity reference."""
    alpha, min_targets = _level({"params": params}, alpha, None)
    n, h = conditional["targets"], conditional["hits"]
    head = "Beyond seismic clustering: "
    if not n:
        why = conditional.get("p_binomial_reason") or NO_TARGETS
        return head + f"{why}, so the animals cannot add to it."
    verdict = _verdict(
        n,
        conditional.get("p_binomial"),
        conditional.get("p_shift"),
        [conditional.get("p_binomial_reason"), conditional.get("p_shift_reason")],
        alpha,
        min_targets,
    )
    return (
        head + f"of the {n} target earthquakes the reference forecast missed, the animal "
        f"alarms preceded {h}; {verdict}"
    )


def assess(
    series: pd.Series,
    catalog: pd.DataFrame,
    farm: tuple[float, float],
    resolution: Any,
    rule: RuleParams = RuleParams(),
    evaluation: EvaluationParams = EvaluationParams(),
    periods: Mapping[str, Intervals] | None = None,
    molchan_increase_pct: tuple[float, ...] = MOLCHAN_INCREASE_PCT,
    *,
    period_n_shifts: int | None = None,
    alpha: float | None = None,
    require_monitored: bool = True,
    history: pd.DataFrame | None = None,
    farm_elevation_km: float = 0.0,
    reference_windows_h: tuple[float, ...] = REFERENCE_WINDOWS_H,
    on_step: Callable[[str], None] | None = None,
) -> Assessment:
    """Detect, associate and score one activity series (see the module docstring).

    series : activity on a regular grid, tz-aware DatetimeIndex [unit of the data].
    catalog : DataFrame with time (UTC), latitude [deg N], longitude [deg E], magnitude
        [-], optionally depth_km [km]; near-duplicates are merged here, once, before
        anything is counted.
    farm : (latitude [deg N], longitude [deg E]).
    resolution : the grid step Δ ("15min").
    rule, evaluation : the rule and evaluation parameters.
    periods : optional label -> Intervals [ns]; each is scored on monitored time cut to it.
    molchan_increase_pct : thresholds of the Molchan trajectory [%].
    period_n_shifts : circular shifts of the period results (None = ``evaluation.n_shifts``).
    alpha : significance level (None = ``evaluation.alpha``) [-].
    require_monitored : raise NoMonitoredTimeError when nothing is monitored (else the
        scores come out empty: no targets, NaN fractions).
    history : a longer catalogue for declustering (``analytics.decluster.with_history``);
        its near-duplicates are merged the same way.
    farm_elevation_km : farm elevation for hypocentral distances [km].
    reference_windows_h : windows of the reference's Molchan trajectory [h].
    on_step : called with a stage name ("detect", "evaluate", "periods", "molchan") after
        each stage, e.g. to drive a progress bar.
    Returns Assessment.
    Raises NoMonitoredTimeError; SeriesError / EvaluationInputError on bad inputs.
    """
    if alpha is not None and alpha != evaluation.alpha:
        evaluation = replace(evaluation, alpha=alpha)

    def step(name: str) -> None:
        if on_step is not None:
            on_step(name)

    episodes, components = cast(
        tuple[list[Episode], pd.DataFrame],
        detect(series, resolution, rule, return_components=True),
    )
    step("detect")
    judged = np.isfinite(components["value"].to_numpy(np.float64)) & np.isfinite(
        components["baseline"].to_numpy(np.float64)
    )
    monitored = monitored_intervals(
        components.index, judged, resolution, evaluation.max_gap_h, rule.sample_label
    )
    if require_monitored and monitored.total_ns == 0:
        raise NoMonitoredTimeError(
            f"no monitored time: the baseline needs {rule.min_baseline_days} previous days "
            f"of data at the same time of day"
        )
    events_read = len(catalog)
    dropped = dict(catalog.attrs.get(DROPPED_ATTR, {}))
    catalog = merge_near_duplicates(catalog, DUPLICATE_MAX_DT_S, DUPLICATE_MAX_KM)
    history_events = 0
    if history is not None and len(history):
        history = merge_near_duplicates(history, DUPLICATE_MAX_DT_S, DUPLICATE_MAX_KM)
        history_events = len(history)
        mainshocks = with_history(
            catalog, history, evaluation.foreshock_fraction, evaluation.decluster_window
        )
    else:
        mainshocks = gardner_knopoff(
            catalog, evaluation.foreshock_fraction, evaluation.decluster_window
        )
    reactions = reaction_mask(alarm_table(episodes), catalog, farm[0], farm[1], evaluation)

    def both(window: Intervals, params: EvaluationParams) -> dict[str, EvaluationResult]:
        return {
            key: evaluate(
                episodes,
                catalog,
                farm,
                window,
                params,
                declustered=key == "declustered",
                mainshocks=mainshocks,
                farm_elevation_km=farm_elevation_km,
            )
            for key in SETS
        }

    results = both(monitored, evaluation)
    reference = {
        key: evaluate_reference(
            catalog,
            farm,
            monitored,
            evaluation,
            declustered=key == "declustered",
            mainshocks=mainshocks,
            farm_elevation_km=farm_elevation_km,
        )
        for key in SETS
    }
    conditional = {
        key: conditional_test(results[key], reference[key], monitored, evaluation) for key in SETS
    }
    step("evaluate")
    by_period: dict[str, dict[str, EvaluationResult]] = {}
    if periods:
        period_params = (
            evaluation if period_n_shifts is None else replace(evaluation, n_shifts=period_n_shifts)
        )
        for label, span in periods.items():
            by_period[label] = both(monitored.intersect(span), period_params)
    step("periods")
    quick = replace(evaluation, n_shifts=0)
    trajectory = []
    for pct in sorted({*molchan_increase_pct, rule.increase_pct}):
        trial = detect(series, resolution, replace(rule, increase_pct=pct))
        trajectory.append(
            (pct, evaluate(trial, catalog, farm, monitored, quick, mainshocks=mainshocks))
        )
    molchan = molchan_points(trajectory).rename(columns={"threshold": "increase_pct"})
    reference_trajectory = [
        (w, evaluate_reference(catalog, farm, monitored, quick, window_h=w))
        for w in sorted({*reference_windows_h, evaluation.reference_window_h})
    ]
    reference_molchan = molchan_points(reference_trajectory).rename(
        columns={"threshold": "window_h"}
    )
    step("molchan")
    n_targets = results["all_events"].targets
    return Assessment(
        episodes=episodes,
        components=components,
        reactions=reactions,
        monitored=monitored,
        catalog=catalog,
        events_read=events_read,
        mainshocks=mainshocks,
        results=results,
        reference=reference,
        conditional=conditional,
        periods=by_period,
        molchan=molchan,
        reference_molchan=reference_molchan,
        confidence=binomial_confidence_curve(n_targets, evaluation.alpha) if n_targets else None,
        alpha=evaluation.alpha,
        history_events=history_events,
        non_earthquakes_dropped=dropped,
    )


def bursts_to_series(bursts: pd.DataFrame, resolution: Any, column: str = "odba") -> pd.Series:
    """Per-individual burst activity as one regular collective series.

    bursts : DataFrame ``individual``, ``time`` (burst start, UTC) and the activity
        ``column`` [g] (``namazu.analytics.movebank.bursts_to_activity``).
    resolution : the grid step Δ ("15min").
    column : ``odba`` or ``vedba``.
    Each individual's bursts are averaged within each grid cell [t, t + Δ) (burst start
    in the cell), then the individuals are summed per cell (``namazu.analytics.rule.herd_series``,
    "sum": the sum over individuals reporting in that cell). Cells between the first and
    last with data that hold no burst are NaN (not monitored by the rule).
    Returns pd.Series [g] on a regular tz-aware UTC grid, named ``column``.
    Raises ValueError naming a missing column or an empty input.
    """
    missing = [c for c in ("individual", "time", column) if c not in bursts]
    if missing:
        raise ValueError(f"burst table lacks columns: {', '.join(missing)}")
    values = bursts[["individual", "time", column]].dropna()
    if values.empty:
        raise ValueError(f"no burst has a {column} value")
    step = pd.Timedelta(pd.tseries.frequencies.to_offset(resolution))
    times = pd.DatetimeIndex(pd.to_datetime(values["time"], utc=True)).as_unit("ns")
    cells = times.floor(step)
    wide = (
        pd.DataFrame(
            {
                "cell": cells,
                "individual": values["individual"].astype(str).to_numpy(),
                column: values[column].to_numpy(np.float64),
            }
        )
        .pivot_table(index="cell", columns="individual", values=column, aggfunc="mean")
        .sort_index()
    )
    grid = pd.date_range(wide.index[0], wide.index[-1], freq=step, tz="UTC", unit="ns")
    return herd_series(wide.reindex(grid)).rename(column).astype(np.float64)
