"""One assessment of an activity series against an earthquake catalogue.

The single pure pipeline behind ``namazu analyze`` and the panel's evaluation page:

1. detect alarm episodes with the anomaly rule (``namazu.analytics.rule.detect``);
2. monitored time: where the rule can judge (value and baseline defined), gaps up to
   ``max_gap_h`` bridged (``namazu.analytics.evaluation.monitored_intervals``);
3. near-duplicate catalogue events (solutions within ``DUPLICATE_MAX_DT_S`` and
   ``DUPLICATE_MAX_KM``) merged into one (``namazu.analytics.catalog.merge_near_duplicates``),
   then the Gardner-Knopoff mainshocks of the merged catalogue (``namazu.analytics.decluster``);
4. scores with and without declustering (``namazu.analytics.evaluation.evaluate``), and the same
   inside each named period (monitored time cut to the period);
5. the Molchan trajectory: the rule re-run at ``MOLCHAN_INCREASE_PCT`` thresholds (plus the
   configured one), scored without shifts; the 95 % binomial curve for the observed N;
6. lead time against distance of the hits, and a plain statement on chance.

Nothing here reads files or talks to a store; callers pass the series and the catalogue.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, cast

import numpy as np
import pandas as pd

from namazu.analytics.catalog import merge_near_duplicates
from namazu.analytics.decluster import gardner_knopoff
from namazu.analytics.evaluation import (
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
from namazu.analytics.rule import Episode, detect, herd_series

#: Rule thresholds [%] of the Molchan trajectory (the configured one is added).
MOLCHAN_INCREASE_PCT: tuple[float, ...] = tuple(range(0, 501, 20))

#: Near-duplicate catalogue events: origin times within this [s] ...
DUPLICATE_MAX_DT_S = 2.0
#: ... and epicentres within this [km] are one event (the larger magnitude is kept).
DUPLICATE_MAX_KM = 5.0

#: Significance level of the chance statement and of the Molchan confidence curve [-].
ALPHA = 0.05

_NS_PER_H = 3.6e12


class NoMonitoredTimeError(ValueError):
    """The rule cannot judge any sample: no baseline is ever defined."""


@dataclass
class Assessment:
    """Everything one assessment computed (see the module docstring).

    episodes : alarm episodes of the configured rule, in time order.
    components : the rule's intermediates per sample (value, baseline, threshold, ratio,
        anomalous) on the regular grid.
    reactions : bool per episode; True = started within the reaction window after local
        shaking (full catalogue).
    monitored : monitored time [ns].
    catalog : the catalogue as scored: near-duplicates merged, sorted by time.
    events_read : events in the catalogue as passed in [-].
    mainshocks : Gardner-Knopoff mainshock mask in the row order of ``catalog``.
    results : ``all_events`` and ``declustered`` scores.
    periods : per period label, ``all_events`` and ``declustered`` scores.
    molchan : DataFrame ``increase_pct`` [%], ``tau`` [-], ``nu`` [-].
    confidence : the 95 % binomial curve (``tau``, ``nu``), None without targets.
    alpha : significance level of ``confidence`` and the statements [-].
    """

    episodes: list[Episode]
    components: pd.DataFrame
    reactions: np.ndarray
    monitored: Intervals
    catalog: pd.DataFrame
    events_read: int
    mainshocks: np.ndarray
    results: dict[str, EvaluationResult]
    periods: dict[str, dict[str, EvaluationResult]] = field(default_factory=dict)
    molchan: pd.DataFrame = field(default_factory=pd.DataFrame)
    confidence: pd.DataFrame | None = None
    alpha: float = ALPHA

    @property
    def near_duplicates_merged(self) -> int:
        """Catalogue events removed as near-duplicates of another event [-]."""
        return self.events_read - len(self.catalog)

    @property
    def monitored_h(self) -> float:
        """Monitored time [h]."""
        return self.monitored.total_ns / _NS_PER_H

    def lead_vs_distance(self) -> list[dict[str, float]]:
        """Hits of the all-events result: lead time [h], distance [km], magnitude."""
        return [
            {
                "lead_time_h": hit["lead_time_h"],
                "distance_km": hit["distance_km"],
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

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict: catalogue counts, monitored time, alarms, scores, periods, Molchan,
        statements.

        ``alarms`` rows are ``Episode.as_dict()`` without the rule parameters, plus a
        ``reaction`` flag; NaN becomes None.
        """
        return {
            "catalog": {
                "events_read": self.events_read,
                "near_duplicates_merged": self.near_duplicates_merged,
                "duplicate_max_dt_s": DUPLICATE_MAX_DT_S,
                "duplicate_max_km": DUPLICATE_MAX_KM,
                "events_scored": len(self.catalog),
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
            "periods": {
                label: {k: v.as_dict() for k, v in pair.items()}
                for label, pair in self.periods.items()
            },
            "molchan": _clean(self.molchan.to_dict(orient="records")),
            "confidence_curve": (
                [] if self.confidence is None else _clean(self.confidence.to_dict("records"))
            ),
            "lead_vs_distance": self.lead_vs_distance(),
            "statement": self.statements(),
        }


def _episode_row(episode: Episode, reaction: bool) -> dict[str, Any]:
    row = episode.as_dict()
    row.pop("params")
    row["reaction"] = bool(reaction)
    return row


def chance_statement(result: Mapping[str, Any], alpha: float = ALPHA) -> str:
    """A plain sentence on whether a result is distinguishable from chance.

    result : ``EvaluationResult.as_dict()`` (targets, hits, p_binomial, p_shift).
    alpha : significance level [-]; skill is claimed only when both p-values that exist
        are at or below it.
    Returns one sentence (or two) for a lay reader.
    """
    n, h = result["targets"], result["hits"]
    p_bin, p_shift = result.get("p_binomial"), result.get("p_shift")
    if not n:
        return "No target earthquake fell in monitored time: the alarms cannot be judged."
    ps = [p for p in (p_bin, p_shift) if p is not None and math.isfinite(p)]
    if not ps or max(ps) > alpha:
        return (
            f"{h} of {n} target earthquakes were preceded by an alarm; this is "
            f"indistinguishable from chance (p > {alpha:g}): no forecasting skill is shown."
        )
    return (
        f"{h} of {n} target earthquakes were preceded by an alarm; both p-values are "
        f"below {alpha:g}, so the hit rate is unlikely under random alarms (this is not proof "
        "of a mechanism, and few targets make the estimate uncertain)."
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
    alpha: float = ALPHA,
    require_monitored: bool = True,
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
    alpha : significance level of the confidence curve and statements [-].
    require_monitored : raise NoMonitoredTimeError when nothing is monitored (else the
        scores come out empty: no targets, NaN fractions).
    on_step : called with a stage name ("detect", "evaluate", "periods", "molchan") after
        each stage, e.g. to drive a progress bar.
    Returns Assessment.
    Raises NoMonitoredTimeError; SeriesError / EvaluationInputError on bad inputs.
    """

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
    monitored = monitored_intervals(components.index, judged, resolution, evaluation.max_gap_h)
    if require_monitored and monitored.total_ns == 0:
        raise NoMonitoredTimeError(
            f"no monitored time: the baseline needs {rule.min_baseline_days} previous days "
            f"of data at the same time of day"
        )
    events_read = len(catalog)
    catalog = merge_near_duplicates(catalog, DUPLICATE_MAX_DT_S, DUPLICATE_MAX_KM)
    mainshocks = gardner_knopoff(catalog) if len(catalog) else np.zeros(0, dtype=bool)
    reactions = reaction_mask(alarm_table(episodes), catalog, farm[0], farm[1], evaluation)

    def both(window: Intervals, params: EvaluationParams) -> dict[str, EvaluationResult]:
        return {
            "all_events": evaluate(episodes, catalog, farm, window, params, mainshocks=mainshocks),
            "declustered": evaluate(
                episodes, catalog, farm, window, params, declustered=True, mainshocks=mainshocks
            ),
        }

    results = both(monitored, evaluation)
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
        periods=by_period,
        molchan=molchan,
        confidence=binomial_confidence_curve(n_targets, alpha) if n_targets else None,
        alpha=alpha,
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
