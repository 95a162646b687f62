"""The evaluation page and endpoint: the figures of ``namazu analyze`` over a chosen
period, farm, species, rule parameters and catalogue filters, from the live stores.

Wiring only: activity and the catalogue come from InfluxDB, farm events from the state
store; baseline, episodes, monitored time, association, scores, declustering, the
Molchan trajectory and its 95 % curve are ``analytics.rule`` / ``analytics.evaluation``.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from analytics import evaluation as ev
from analytics import rule
from analytics.decluster import gardner_knopoff
from server import queries
from server.analysis import MOLCHAN_INCREASE_PCT
from server.web import data
from server.web.models import EVENT_KINDS

RESOLUTIONS_MIN = (1, 5, 15, 30, 60)
ALPHA = 0.05


def _series(handles: Any, farm: str, species: str | None, start: int, end: int, res_ms: int):
    frame = handles.influx.query_frame(
        *queries.activity_means(farm, start, end, res_ms, species or None)
    )
    if frame.empty or "odba" not in frame:
        return pd.Series(dtype=float)
    wide = frame.pivot_table(index="time", columns="animal", values="odba", aggfunc="mean")
    wide.index = pd.DatetimeIndex(wide.index).as_unit("ns")
    return rule.herd_series(wide).astype(float)


def _complement(intervals: ev.Intervals, start_ns: int, end_ns: int) -> ev.Intervals:
    starts, ends, cursor = [], [], start_ns
    for s, e in zip(intervals.start, intervals.end, strict=True):
        if s > cursor:
            starts.append(cursor)
            ends.append(min(int(s), end_ns))
        cursor = max(cursor, int(e))
    if cursor < end_ns:
        starts.append(cursor)
        ends.append(end_ns)
    return ev.merge_intervals(np.asarray(starts, np.int64), np.asarray(ends, np.int64))


def chance_statement(result: dict[str, Any]) -> str:
    """A plain sentence on whether a result is distinguishable from chance (α = 5 %)."""
    n, h = result["targets"], result["hits"]
    p_bin, p_shift = result.get("p_binomial"), result.get("p_shift")
    if not n:
        return "No target earthquake fell in monitored time: the alarms cannot be judged."
    ps = [p for p in (p_bin, p_shift) if p is not None and math.isfinite(p)]
    if not ps or max(ps) > ALPHA:
        return (
            f"{h} of {n} target earthquakes were preceded by an alarm; this is "
            "indistinguishable from chance (p > 0.05): no forecasting skill is shown."
        )
    return (
        f"{h} of {n} target earthquakes were preceded by an alarm; both p-values are "
        "below 0.05, so the hit rate is unlikely under random alarms (this is not proof "
        "of a mechanism, and few targets make the estimate uncertain)."
    )


def evaluate_request(handles: Any, args: Any) -> dict[str, Any]:
    """Run the evaluation for request arguments.

    farm, species (optional), start, end (default the last 90 days), resolution_min
    (1/5/15/30/60, default 15), increase_pct, min_duration_min, min_magnitude,
    lead_window_h, fixed_radius_km, n_shifts (<= 2000), split (a farm-event kind).
    Returns a JSON-ready dict with ``result`` and ``declustered`` scores, ``molchan``
    trajectory, ``confidence_curve`` (95 %), ``lead_vs_distance``, ``statement`` and,
    with ``split``, scores inside and outside the events of that kind.
    """
    farm = data.farm_config(handles, args.get("farm"))
    species = args.get("species") or None
    if species is not None and species not in data.SPECIES:
        raise data.InputError(f"species: must be one of {', '.join(data.SPECIES)}")
    start, end = data.time_range(args, default_days=90)
    res_min = data.int_arg(args, "resolution_min", 15, 1, 60)
    if res_min not in RESOLUTIONS_MIN:
        raise data.InputError(f"resolution_min: must be one of {RESOLUTIONS_MIN}")
    rule_params = handles.config.rule_params()
    eval_params = handles.config.evaluation_params()
    try:
        rule_params = replace(
            rule_params,
            increase_pct=data.float_arg(args, "increase_pct", rule_params.increase_pct, 1, 10000),
            min_duration_min=data.float_arg(
                args, "min_duration_min", rule_params.min_duration_min, 1, 10000
            ),
        )
        eval_params = replace(
            eval_params,
            min_magnitude=data.float_arg(args, "min_magnitude", eval_params.min_magnitude, 0, 10),
            lead_window_h=data.float_arg(
                args, "lead_window_h", eval_params.lead_window_h, 0.1, 1000
            ),
            fixed_radius_km=data.float_arg(
                args, "fixed_radius_km", eval_params.fixed_radius_km, 1, 20000
            ),
            n_shifts=data.int_arg(args, "n_shifts", min(eval_params.n_shifts, 500), 0, 2000),
        )
    except ValueError as exc:
        raise data.InputError(str(exc)) from exc
    split = args.get("split") or None
    if split is not None and split not in EVENT_KINDS:
        raise data.InputError(f"split: must be one of {', '.join(EVENT_KINDS)}")

    res_ms = res_min * 60_000
    resolution = f"{res_min}min"
    series = _series(handles, farm.id, species, start, end, res_ms)
    lead_ms = int(eval_params.lead_window_h * 3_600_000)
    catalog = data.quakes_frame(handles, farm, start, end + lead_ms, -10.0)
    catalog = catalog.dropna(subset=["magnitude"]).reset_index(drop=True)
    catalog["time"] = catalog["time"].dt.as_unit("ns")
    base: dict[str, Any] = {
        "farm": farm.id,
        "species": species,
        "start": data._iso_ms(start),
        "end": data._iso_ms(end),
        "resolution_min": res_min,
        "rule_params": rule_params.as_dict(),
        "evaluation_params": eval_params.as_dict(),
        "samples": int(series.notna().sum()),
        "catalogue_events": len(catalog),
    }
    if series.notna().sum() == 0:
        base.update(
            result=None,
            declustered=None,
            molchan=[],
            confidence_curve=[],
            lead_vs_distance=[],
            statement="No activity data in this period: nothing to evaluate.",
        )
        return base
    episodes, components = rule.detect(series, resolution, rule_params, return_components=True)
    judged = components["value"].notna().to_numpy() & components["baseline"].notna().to_numpy()
    monitored = ev.monitored_intervals(components.index, judged, resolution, eval_params.max_gap_h)
    farm_pos = (farm.latitude, farm.longitude)
    mainshocks = gardner_knopoff(catalog) if len(catalog) else np.zeros(0, dtype=bool)
    result = ev.evaluate(episodes, catalog, farm_pos, monitored, eval_params)
    declustered = ev.evaluate(
        episodes, catalog, farm_pos, monitored, eval_params, declustered=True,
        mainshocks=mainshocks,
    )  # fmt: skip
    quick = replace(eval_params, n_shifts=0)
    trajectory = []
    # the same trajectory as ``namazu analyze`` (its thresholds plus the chosen one)
    for pct in sorted({*MOLCHAN_INCREASE_PCT, rule_params.increase_pct}):
        eps = rule.detect(series, resolution, replace(rule_params, increase_pct=pct))
        trajectory.append(
            (pct, ev.evaluate(eps, catalog, farm_pos, monitored, quick, mainshocks=mainshocks))
        )
    molchan = ev.molchan_points(trajectory)
    curve = (
        ev.binomial_confidence_curve(result.targets, ALPHA)
        if result.targets
        else pd.DataFrame(columns=["tau", "nu"])
    )
    result_dict = result.as_dict()
    base.update(
        result=result_dict,
        declustered=declustered.as_dict(),
        alarms=[e.as_dict() for e in episodes][:500],
        molchan=ev._clean(molchan.to_dict(orient="records")),
        confidence_curve=ev._clean(curve.to_dict(orient="records")),
        lead_vs_distance=[
            {
                "lead_time_h": h["lead_time_h"],
                "distance_km": h["distance_km"],
                "magnitude": h["magnitude"],
            }
            for h in result_dict["hit_list"]
        ],  # fmt: skip
        statement=chance_statement(result_dict),
        statement_declustered=chance_statement(declustered.as_dict()),
    )
    if split:
        events = [
            e
            for e in data.farm_events(handles, farm.id, start, end)
            if e.kind == split and e.end is not None
        ]
        periods = ev.merge_intervals(
            np.asarray([pd.Timestamp(e.start).value for e in events], np.int64),
            np.asarray([pd.Timestamp(e.end).value for e in events], np.int64),
        )
        outside = _complement(periods, start * 1_000_000, end * 1_000_000)
        base["split"] = {
            "kind": split,
            "periods": len(events),
            "inside": ev.evaluate(
                episodes, catalog, farm_pos, monitored.intersect(periods), quick
            ).as_dict(),
            "outside": ev.evaluate(
                episodes, catalog, farm_pos, monitored.intersect(outside), quick
            ).as_dict(),
        }
    return base
