"""The evaluation page and endpoint: the figures of ``namazu analyze`` over a chosen
period, farm, species, rule parameters and catalogue filters, from the live stores.

Wiring only: activity and the catalogue come from InfluxDB, farm events from the state
store; detection (with each alarm's declaration time), monitored time, association,
scores with and without declustering (intervals, power), the seismicity reference
forecast and the conditional test, the split inside/outside farm events, both Molchan
trajectories, the binomial curve and the statements are
``namazu.analytics.assessment.assess`` (the same pipeline as ``namazu analyze``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from namazu.analytics import evaluation as ev
from namazu.analytics import rule
from namazu.analytics.assessment import ALPHA, assess, chance_statement
from namazu.server.store import queries
from namazu.server.store.models import EVENT_KINDS
from namazu.server.web import data

__all__ = ["ALPHA", "RESOLUTIONS_MIN", "chance_statement", "evaluate_request"]

RESOLUTIONS_MIN = (1, 5, 15, 30, 60)


def _series(handles: Any, farm: str, species: str | None, start: int, end: int, res_ms: int):
    frame = handles.influx_for(farm).query_frame(
        *queries.activity_means(farm, start, end, res_ms, species or None)
    )
    if frame.empty or "odba" not in frame:
        return pd.Series(dtype=float)
    wide = frame.pivot_table(index="time", columns="animal", values="odba", aggfunc="mean")
    wide.index = pd.DatetimeIndex(wide.index).as_unit("ns")
    return rule.herd_series(wide).astype(float)


def evaluate_request(handles: Any, args: Any) -> dict[str, Any]:
    """Run the evaluation for request arguments.

    farm, species (optional), start, end (default ``data.default_period``: the last 30
    days of the farm's data, or its span), resolution_min
    (1/5/15/30/60, default 15), increase_pct, min_duration_min, min_magnitude,
    lead_window_h, fixed_radius_km, n_shifts (0..2000, capped at
    ``web.evaluation_max_shifts``; ``shifts`` in the result says requested, cap and
    used), split (a farm-event kind).
    Returns a JSON-ready dict with ``result`` and ``declustered`` scores, ``molchan``
    trajectory, ``confidence_curve`` (95 %), ``lead_vs_distance``, ``statement`` and,
    with ``split``, scores inside and outside the events of that kind.
    """
    farm = data.farm_config(handles, args.get("farm"))
    species = args.get("species") or None
    if species is not None and species not in data.SPECIES:
        raise data.InputError(f"species: must be one of {', '.join(data.SPECIES)}")
    start, end = data.default_period(handles, farm, args)
    res_min = data.int_arg(args, "resolution_min", 15, 1, 60)
    if res_min not in RESOLUTIONS_MIN:
        raise data.InputError(f"resolution_min: must be one of {RESOLUTIONS_MIN}")
    shift_cap = handles.config.web.evaluation_max_shifts
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
            n_shifts=data.int_arg(args, "n_shifts", eval_params.n_shifts, 0, 2000),
        )
    except ValueError as exc:
        raise data.InputError(str(exc)) from exc
    shifts = {"requested": eval_params.n_shifts, "cap": shift_cap}
    eval_params = replace(eval_params, n_shifts=min(eval_params.n_shifts, shift_cap))
    shifts["used"] = eval_params.n_shifts
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
        "shifts": shifts,
        "rule_params": rule_params.as_dict(),
        "evaluation_params": eval_params.as_dict(),
        "n_shifts_configured": handles.config.evaluation_params().n_shifts,
        "samples": int(series.notna().sum()),
        "catalogue_events": len(catalog),
    }
    if series.notna().sum() == 0:
        base.update(
            result=None,
            declustered=None,
            reference=None,
            molchan=[],
            reference_molchan=[],
            confidence_curve=[],
            lead_vs_distance=[],
            statement="No activity data in this period: nothing to evaluate.",
        )
        return base
    periods = None
    if split:
        events = [e for e in data.farm_events(handles, farm.id, start, end) if e.kind == split]
        # An event without an end (e.g. "on pasture since ...") lasts to the period's end.
        inside = ev.merge_intervals(
            np.asarray([pd.Timestamp(e.start).value for e in events], np.int64),
            np.asarray(
                [end * 1_000_000 if e.end is None else pd.Timestamp(e.end).value for e in events],
                np.int64,
            ),
        )
        periods = {
            "inside": inside,
            "outside": inside.complement(start * 1_000_000, end * 1_000_000),
        }
    assessment = assess(
        series,
        catalog,
        (farm.latitude, farm.longitude),
        resolution,
        rule_params,
        eval_params,
        periods,
        period_n_shifts=0,
        require_monitored=False,
    )
    outcome = assessment.as_dict()
    statements = outcome["statement"]
    base.update(
        result=outcome["evaluation"]["all_events"],
        declustered=outcome["evaluation"]["declustered"],
        alarms=[e.as_dict() for e in assessment.episodes][:500],
        molchan=[
            {"threshold": row["increase_pct"], "tau": row["tau"], "nu": row["nu"]}
            for row in outcome["molchan"]
        ],
        reference_molchan=[
            {"threshold": row["window_h"], "tau": row["tau"], "nu": row["nu"]}
            for row in outcome["reference_molchan"]
        ],
        confidence_curve=outcome["confidence_curve"],
        lead_vs_distance=outcome["lead_vs_distance"],
        statement=statements["all_events"],
        statement_declustered=statements["declustered"],
        power=outcome["power"]["all_events"],
        reference=outcome["reference"]["all_events"],
        reference_declustered=outcome["reference"]["declustered"],
        conditional=outcome["conditional"]["all_events"],
        reference_statement=outcome["reference_statement"]["all_events"],
        conditional_statement=outcome["reference_statement"]["all_events_conditional"],
    )
    if split:
        base["split"] = {
            "kind": split,
            "periods": len(events),
            "inside": outcome["periods"]["inside"]["all_events"],
            "outside": outcome["periods"]["outside"]["all_events"],
        }
    return base
