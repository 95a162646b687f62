"""How far an activity series strays from its rule baseline, and what that costs a surge.

The sustained-surge rule (``namazu.analytics.rule``) flags x(t) >= b(t) · (1 + increase/100)
with a fixed factor (2.4 for rule v1). A surge that multiplies an animal's activity by m
is therefore seen only where m · x/b reaches that factor, i.e. where the animal's own
ratio x/b without the surge is at least 2.4 / m. How often it is not depends only on the
spread of ln(x/b) on ordinary days, which this module measures: no grid step, aggregate
or baseline estimator can see a ×3 surge at a moment when the animal, surge aside, is
at 0.75 of its usual level for that time of day.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from namazu.analytics.params import RuleParams
from namazu.analytics.rule import detect

#: Scale factor of the median absolute deviation to the standard deviation of a normal.
MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True)
class Variability:
    """Spread of one series around its rule baseline.

    samples : samples with a defined baseline and a positive value and baseline [-].
    log_ratio_median : median of ln(x/b) [-].
    log_ratio_sigma : robust spread of ln(x/b), 1.4826 · MAD [-] (0.22 ≈ ±25 %).
    lag_correlation : correlation of ln(x/b) with itself one step and one hour later [-],
        (one step, one hour); how slowly the deviations change.
    surge_unseen : surge multiplier m -> share of samples at which a surge of ×m would
        stay under the rule's threshold, i.e. x/b < (1 + increase/100) / m [-].
    episodes : rule episodes on the series itself [-].
    weeks : time with a defined baseline [weeks].
    """

    samples: int
    log_ratio_median: float
    log_ratio_sigma: float
    lag_correlation: tuple[float, float]
    surge_unseen: dict[float, float]
    episodes: int
    weeks: float

    @property
    def episodes_per_week(self) -> float:
        """Rule episodes per week of defined baseline [1/week]; NaN without baseline."""
        return self.episodes / self.weeks if self.weeks > 0 else float("nan")

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready figures."""
        return {
            "samples": self.samples,
            "log_ratio_median": self.log_ratio_median,
            "log_ratio_sigma": self.log_ratio_sigma,
            "lag_correlation": list(self.lag_correlation),
            "surge_unseen": {f"x{m:g}": v for m, v in self.surge_unseen.items()},
            "episodes": self.episodes,
            "weeks": self.weeks,
            "episodes_per_week": self.episodes_per_week,
        }


def _lag_correlation(log_ratio: np.ndarray, lag: int) -> float:
    """Pearson correlation of a series with itself ``lag`` samples later (NaN-aware)."""
    if lag <= 0 or lag >= log_ratio.size:
        return float("nan")
    a, b = log_ratio[:-lag], log_ratio[lag:]
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3:
        return float("nan")
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def ratio_variability(
    values: pd.Series,
    resolution: Any,
    params: RuleParams = RuleParams(),
    multipliers: Iterable[float] = (3.0, 4.0, 5.0),
) -> Variability:
    """Spread of ln(x/b) of one activity series under the rule's own baseline.

    values : pd.Series of activity [any unit] indexed by tz-aware times on a grid of step
        ``resolution`` (missing samples allowed).
    resolution : the grid step Δ ("15min").
    params : RuleParams (baseline and threshold as the rule uses them).
    multipliers : surge sizes m [-] for ``surge_unseen``.
    """
    episodes, parts = detect(values, resolution, params, return_components=True)
    value = parts["value"].to_numpy()
    base = parts["baseline"].to_numpy()
    usable = np.isfinite(value) & np.isfinite(base) & (value > 0) & (base > 0)
    log_ratio = np.full(value.shape, np.nan)
    log_ratio[usable] = np.log(value[usable] / base[usable])
    kept = log_ratio[usable]
    factor = 1.0 + params.increase_pct / 100.0
    step = pd.Timedelta(pd.tseries.frequencies.to_offset(resolution))
    per_hour = max(1, int(pd.Timedelta(hours=1) // step))
    defined = np.isfinite(base)
    if kept.size == 0:
        nan = float("nan")
        return Variability(0, nan, nan, (nan, nan), {float(m): nan for m in multipliers},
                           len(episodes), 0.0)  # fmt: skip
    median = float(np.median(kept))
    return Variability(
        samples=int(kept.size),
        log_ratio_median=median,
        log_ratio_sigma=float(MAD_TO_SIGMA * np.median(np.abs(kept - median))),
        lag_correlation=(_lag_correlation(log_ratio, 1), _lag_correlation(log_ratio, per_hour)),
        surge_unseen={float(m): float(np.mean(kept < np.log(factor / m))) for m in multipliers},
        episodes=len(episodes),
        weeks=float(defined.sum() * step / pd.Timedelta(weeks=1)),
    )
