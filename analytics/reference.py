"""A seismicity-only reference forecast, scored on the same footing as the animals' alarms.

The reference (DESIGN.md, "Association and evaluation"): "alarm for W h after every event of
magnitude >= m within R km of the farm" (``EvaluationParams.reference_window_h``,
``reference_min_magnitude``, ``reference_radius_km``; defaults 20 h, 2.5, 30 km: the
animals' lead window and the local-shaking definition, fixed before any data were scored).
Each such event opens an alarm declared 1 ns after its origin time that covers
(t, t + W]; the event itself is never its own hit. The alarms are scored by
``analytics.evaluation.evaluate`` exactly like the animals' (τ, ν, gain, intervals, both
p-values, power) except that they are not masked as reactions: they are opened by shaking by
design. This is what seismic clustering alone predicts (Zöller et al. 2021, Ethology,
doi:10.1111/eth.13105, ask whether a precursor beats it).

The **conditional test** asks whether the animal alarms hit the targets that the reference
misses more often than chance: N' = targets outside the reference cover, h' = those the
animal alarms hit, τ' = |animal cover ∩ (monitored \\ reference cover)| / |monitored \\
reference cover|; binomial p' = P(H >= h' | N', τ'), and the empirical p' from the same
circular shifts of the animal covers as the main evaluation (counting hits among the N'
targets only).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from namazu.analytics.evaluation import (
    NO_SHIFTS,
    NO_TARGETS,
    EvaluationResult,
    Intervals,
    _catalog_arrays,
    _clean,
    binomial_pvalue,
    circular_shift_hits,
    clopper_pearson,
    evaluate,
    shift_offsets_ns,
    shift_pvalue,
)
from namazu.analytics.geo import great_circle_km
from namazu.analytics.params import EvaluationParams

#: Windows W [h] of the reference's Molchan trajectory (the configured one is added).
REFERENCE_WINDOWS_H: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0)

#: Reasons for an undefined conditional p-value.
REFERENCE_HITS_ALL = "the reference forecast covers every target"
NO_ANIMAL_TIME = "no animal alarm time outside the reference alarms"


def reference_alarms(
    catalog: pd.DataFrame, farm: tuple[float, float], params: EvaluationParams
) -> pd.DataFrame:
    """Alarm table of the reference forecast: one alarm per qualifying event.

    catalog : the full catalogue (time UTC, latitude [deg N], longitude [deg E], magnitude).
    farm : (latitude [deg N], longitude [deg E]).
    Returns DataFrame ``start``, ``declared_at``, ``end`` (all the event's time + 1 ns) and
    ``magnitude``; scored with ``lead_window_h = reference_window_h`` its cover is
    (t, t + W].
    """
    if catalog.empty:
        times = pd.DatetimeIndex([], tz="UTC").as_unit("ns")
        return pd.DataFrame({"start": times, "declared_at": times, "end": times, "magnitude": []})
    cat = _catalog_arrays(catalog)
    near = (cat["mag"] >= params.reference_min_magnitude) & (
        great_circle_km(farm[0], farm[1], cat["lat"], cat["lon"]) <= params.reference_radius_km
    )
    opened = pd.to_datetime(np.sort(cat["time"][near]) + 1, utc=True).as_unit("ns")
    return pd.DataFrame(
        {
            "start": opened,
            "declared_at": opened,
            "end": opened,
            "magnitude": cat["mag"][near][np.argsort(cat["time"][near], kind="stable")],
        }
    )


def reference_params(params: EvaluationParams, window_h: float | None = None) -> EvaluationParams:
    """The evaluation parameters with which the reference alarms are scored."""
    return replace(
        params, lead_window_h=params.reference_window_h if window_h is None else window_h
    )


def evaluate_reference(
    catalog: pd.DataFrame,
    farm: tuple[float, float],
    monitored: Intervals,
    params: EvaluationParams = EvaluationParams(),
    *,
    declustered: bool = False,
    mainshocks: np.ndarray | None = None,
    farm_elevation_km: float = 0.0,
    window_h: float | None = None,
) -> EvaluationResult:
    """Scores of the reference forecast (``evaluate`` without reaction masking).

    The targets are those of the animals' evaluation with the same arguments; window_h
    overrides ``reference_window_h`` (for the Molchan trajectory).
    """
    return evaluate(
        reference_alarms(catalog, farm, params),
        catalog,
        farm,
        monitored,
        reference_params(params, window_h),
        declustered=declustered,
        mainshocks=mainshocks,
        farm_elevation_km=farm_elevation_km,
        mask_reactions=False,
    )


def conditional_test(
    animal: EvaluationResult,
    reference: EvaluationResult,
    monitored: Intervals,
    params: EvaluationParams = EvaluationParams(),
) -> dict[str, Any]:
    """Do the animal alarms hit the targets the reference misses more often than chance?

    animal, reference : results of ``evaluate`` and ``evaluate_reference`` on the same
        targets and monitored time.
    Returns a JSON-ready dict: ``both``, ``animals_only``, ``reference_only``, ``neither``
    (target counts), ``targets`` (N' = targets the reference misses), ``hits`` (h'),
    ``alarm_fraction`` (τ'), ``hit_rate_interval``, ``p_binomial``, ``p_shift``,
    ``perfect_p_shift``, reasons for undefined p-values, ``n_shifts``.
    """
    if animal.cover is None or reference.cover is None or animal.target_ns is None:
        raise ValueError("conditional_test needs results of evaluate() (kept in memory)")
    if not np.array_equal(animal.target_ns, reference.target_ns):
        raise ValueError("the animal and reference results must share their targets")
    targets = animal.target_ns
    by_animal = animal.cover.contains(targets)
    by_reference = reference.cover.contains(targets)
    missed = targets[~by_reference]
    outside = reference.cover.complement(
        int(monitored.start[0]) if len(monitored) else 0,
        int(monitored.end[-1]) if len(monitored) else 0,
    ).intersect(monitored)
    animal_outside = animal.cover.intersect(outside)
    tau = animal_outside.total_ns / outside.total_ns if outside.total_ns else float("nan")
    n, h = int(missed.size), int(np.count_nonzero(by_animal & ~by_reference))
    reason = (
        (REFERENCE_HITS_ALL if targets.size else (animal.p_binomial_reason or NO_TARGETS))
        if n == 0
        else (NO_ANIMAL_TIME if not animal_outside.total_ns else None)
    )
    shift_reason = reason or (NO_SHIFTS if params.n_shifts <= 0 else None)
    p_shift = perfect = float("nan")
    if shift_reason is None:
        shifts = shift_offsets_ns(monitored.total_ns, params.n_shifts, params.seed)
        hits = circular_shift_hits(animal.cover, missed, monitored, shifts)
        p_shift, perfect = shift_pvalue(hits, h), shift_pvalue(hits, n)
    return _clean(
        {
            "both": int(np.count_nonzero(by_animal & by_reference)),
            "animals_only": h,
            "reference_only": int(np.count_nonzero(~by_animal & by_reference)),
            "neither": int(np.count_nonzero(~by_animal & ~by_reference)),
            "targets": n,
            "hits": h,
            "alarm_fraction": tau,
            "hit_rate_interval": list(clopper_pearson(h, n, params.alpha)),
            "p_binomial": binomial_pvalue(h, n, tau) if reason is None else float("nan"),
            "p_shift": p_shift,
            "perfect_p_shift": perfect,
            "p_binomial_reason": reason,
            "p_shift_reason": shift_reason,
            "n_shifts": params.n_shifts,
        }
    )
