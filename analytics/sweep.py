"""Parameter sweeps with a family-wise correction (Westfall-Young max-statistic, and Holm).

A sweep scores every combination of a grid (activity column, rule increase, minimum
duration, lead window, minimum magnitude) like the configured rule
(``analytics.evaluation.evaluate``). Trying many combinations and reporting the best one
inflates the chance of a small p-value, so the best p is corrected for the whole sweep:

- **Westfall-Young (single-step min-p)**: the same circular shifts (fractions U of the
  monitored circle, ``analytics.evaluation.shift_offsets_ns``) are applied to every
  combination at once. With the observed alarms as shift 0 and the ``n_shifts`` shifts
  as 1..S, each combination c has hit counts h[c, j] and, at each j, the marginal p
  p[c, j] = #{j' in 0..S : h[c, j'] >= h[c, j]} / (S + 1) (so p[c, 0] is the
  combination's own empirical p). The adjusted p of c is
  #{j in 0..S : min over c' of p[c', j] <= p[c, 0]} / (S + 1). Combinations whose p is
  undefined (no target, no alarm time) take no part and get no adjusted p.
- **Holm (1979)**: step-down adjustment of the same marginal p-values.

Westfall P. H. and Young S. S. (1993), Resampling-Based Multiple Testing, Wiley; Holm S.
(1979), Scand. J. Statist. 6:65-70.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from namazu.analytics.evaluation import (
    circular_shift_hits,
    evaluate,
    monitored_intervals,
    shift_offsets_ns,
)
from namazu.analytics.params import EvaluationParams, RuleParams
from namazu.analytics.rule import detect

#: Grid dimensions of a sweep, in the order of the rows of ``sweep.csv``.
SWEEP_DIMENSIONS: tuple[str, ...] = (
    "column",
    "increase_pct",
    "min_duration_min",
    "lead_window_h",
    "min_magnitude",
)


@dataclass(frozen=True)
class SweepGrid:
    """The values tried per dimension.

    columns : activity columns (series names) [-].
    increase_pct : rule thresholds over baseline [%].
    min_duration_min : minimum episode spans [min].
    lead_window_h : lead windows [h].
    min_magnitude : target magnitude thresholds [-].
    """

    columns: tuple[str, ...]
    increase_pct: tuple[float, ...] = (100.0, 140.0, 200.0)
    min_duration_min: tuple[float, ...] = (30.0, 45.0, 90.0)
    lead_window_h: tuple[float, ...] = (10.0, 20.0, 48.0)
    min_magnitude: tuple[float, ...] = (3.5, 4.0, 4.5)

    def __post_init__(self) -> None:
        for name in ("columns", *SWEEP_DIMENSIONS[1:]):
            if not getattr(self, name):
                raise ValueError(f"sweep grid: {name} needs at least one value")

    def combinations(self) -> list[dict[str, Any]]:
        """Every combination, as dicts keyed by ``SWEEP_DIMENSIONS``."""
        return [
            dict(zip(SWEEP_DIMENSIONS, values, strict=True))
            for values in itertools.product(
                self.columns,
                self.increase_pct,
                self.min_duration_min,
                self.lead_window_h,
                self.min_magnitude,
            )
        ]

    def as_dict(self) -> dict[str, list[Any]]:
        """The grid as JSON-ready lists."""
        return {
            "columns": list(self.columns),
            **{name: list(getattr(self, name)) for name in SWEEP_DIMENSIONS[1:]},
        }


def min_p_adjusted(hits: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Marginal and Westfall-Young (single-step min-p) adjusted empirical p-values.

    hits : int ndarray (n_combinations, 1 + n_shifts). Column 0 = observed hits, the
        others the hits under each shared shift.
    valid : bool per combination; False = p undefined (left out, NaN in both outputs).
    Returns (p_marginal, p_adjusted), float ndarrays (n_combinations,).
    """
    h = np.asarray(hits, dtype=np.int64)
    ok = np.asarray(valid, dtype=bool)
    n_cases, k = h.shape
    marginal = np.full(n_cases, np.nan)
    adjusted = np.full(n_cases, np.nan)
    if not ok.any() or k == 0:
        return marginal, adjusted
    # count[c, j] = #{j' : h[c, j'] >= h[c, j]}; p = count / k (integers: exact ties)
    ordered = np.sort(h[ok], axis=1)
    count = np.empty((int(ok.sum()), k), dtype=np.int64)
    for row, (sorted_row, raw) in enumerate(zip(ordered, h[ok], strict=True)):
        count[row] = k - np.searchsorted(sorted_row, raw, side="left")
    smallest = count.min(axis=0)
    observed = count[:, 0]
    marginal[ok] = observed / k
    adjusted[ok] = np.count_nonzero(smallest[None, :] <= observed[:, None], axis=1) / k
    return marginal, adjusted


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values (NaN entries are left out and stay NaN)."""
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    m = finite.size
    if m == 0:
        return out
    order = finite[np.argsort(p[finite], kind="stable")]
    stepped = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(stepped)
    return out


@dataclass
class SweepResult:
    """One row per combination (``table``) and the sweep's family-wise summary."""

    table: pd.DataFrame
    grid: SweepGrid
    n_shifts: int
    alpha: float

    def best(self) -> dict[str, Any] | None:
        """The combination with the smallest empirical p (ties: first in grid order)."""
        scored = self.table.dropna(subset=["p_shift"])
        if scored.empty:
            return None
        row = scored.loc[scored["p_shift"].idxmin()]
        return {k: _plain(v) for k, v in row.items()}

    def statement(self) -> str:
        """One plain sentence: does anything survive the family-wise correction?"""
        n = len(self.table)
        best = self.best()
        if best is None:
            return (
                f"None of the {n} combinations has a defined p-value (no target or no alarm "
                "time): the sweep shows nothing."
            )
        label = ", ".join(f"{k} {best[k]}" for k in SWEEP_DIMENSIONS)
        survives = best["p_westfall_young"] <= self.alpha
        verdict = (
            "it survives the correction for the whole sweep"
            if survives
            else "after correction for the whole sweep nothing is distinguishable from chance"
        )
        return (
            f"Best of {n} combinations: {label} with {best['hits']} of {best['targets']} hits, "
            f"p_shift {best['p_shift']:.3g}; corrected p {best['p_westfall_young']:.3g} "
            f"(Westfall-Young) and {best['p_holm']:.3g} (Holm): {verdict} (alpha {self.alpha:g})."
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary (the rows are in ``sweep.csv``)."""
        return {
            "grid": self.grid.as_dict(),
            "combinations": len(self.table),
            "n_shifts": self.n_shifts,
            "best": self.best(),
            "statement": self.statement(),
        }


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def sweep(
    series: Mapping[str, pd.Series],
    catalog: pd.DataFrame,
    farm: tuple[float, float],
    resolution: Any,
    grid: SweepGrid,
    rule: RuleParams = RuleParams(),
    evaluation: EvaluationParams = EvaluationParams(),
    *,
    declustered: bool = False,
    mainshocks: np.ndarray | None = None,
) -> SweepResult:
    """Score every combination of ``grid`` and correct for the whole sweep.

    series : activity column name -> series on a regular tz-aware grid [unit of the data].
    catalog : the merged catalogue (as ``Assessment.catalog``).
    farm : (latitude [deg N], longitude [deg E]).
    resolution : the grid step Δ.
    grid : the values per dimension.
    rule, evaluation : the other parameters (shared by every combination).
    declustered, mainshocks : score mainshock targets only.
    Returns SweepResult: ``table`` with the dimensions and targets, hits, false_alarms,
    alarm_fraction, probability_gain, p_binomial, p_shift, p_westfall_young, p_holm.
    """
    missing = [c for c in grid.columns if c not in series]
    if missing:
        raise KeyError(f"sweep: no activity column {', '.join(missing)}")
    rows, hit_rows, valid = [], [], []
    quick = replace(evaluation, n_shifts=0)
    for column in grid.columns:
        values = series[column]
        monitored = None
        for pct, duration in itertools.product(grid.increase_pct, grid.min_duration_min):
            trial = replace(rule, increase_pct=pct, min_duration_min=duration)
            episodes, components = detect(values, resolution, trial, return_components=True)
            if monitored is None:  # the baseline, hence monitored time, is the same for all
                judged = components["value"].notna() & components["baseline"].notna()
                monitored = monitored_intervals(
                    components.index,
                    judged.to_numpy(),
                    resolution,
                    evaluation.max_gap_h,
                    rule.sample_label,
                )
                shifts = shift_offsets_ns(monitored.total_ns, evaluation.n_shifts, evaluation.seed)
            for lead, magnitude in itertools.product(grid.lead_window_h, grid.min_magnitude):
                params = replace(quick, lead_window_h=lead, min_magnitude=magnitude)
                result = evaluate(
                    episodes,
                    catalog,
                    farm,
                    monitored,
                    params,
                    declustered=declustered,
                    mainshocks=mainshocks,
                )
                shifted = circular_shift_hits(result.cover, result.target_ns, monitored, shifts)
                hit_rows.append(np.concatenate([[result.hits], shifted]))
                valid.append(result.p_binomial_reason is None and evaluation.n_shifts > 0)
                rows.append(
                    {
                        "column": column,
                        "increase_pct": pct,
                        "min_duration_min": duration,
                        "lead_window_h": lead,
                        "min_magnitude": magnitude,
                        "targets": result.targets,
                        "hits": result.hits,
                        "false_alarms": result.false_alarms,
                        "alarms": result.alarms,
                        "alarm_fraction": result.alarm_fraction,
                        "probability_gain": result.probability_gain,
                        "p_binomial": result.p_binomial,
                    }
                )
    marginal, adjusted = min_p_adjusted(np.vstack(hit_rows), np.asarray(valid))
    table = pd.DataFrame(rows)
    table["p_shift"] = marginal
    table["p_westfall_young"] = adjusted
    table["p_holm"] = holm(marginal)
    return SweepResult(table, grid, evaluation.n_shifts, evaluation.alpha)
