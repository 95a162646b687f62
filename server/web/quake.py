""" "Did they react before this quake?": one earthquake, every series of the farm over
±48 h around it, and the event's verdict.

Wiring only. The verdict is ``namazu.analytics.evaluation.evaluate`` run on the farm's
stored herd alarms (the live rule's alarms of the herd series, with their declaration
times) and the herd series' monitored time over the window, with the catalogue of the
window (for the reaction mask); the event's own entry of the result gives its status:
hit, miss, reaction cover (only an alarm that reacted to local shaking covers it), not
monitored, not counted, or "not a target" (too small or too far).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from namazu.analytics import evaluation as ev
from namazu.server.core.config import FarmConfig
from namazu.server.store import queries
from namazu.server.web import data

#: The window shown around the earthquake, each side [h].
WINDOW_H = 48
_H_MS = 3_600_000

#: What each status means, in one sentence for the page.
EXPLAIN = {
    "hit": "an alarm declared before the earthquake covers it: the animals surged in the "
    "lead window",
    "miss": "no alarm covers it although the herd was monitored: no surge was declared in "
    "the lead window",
    "reaction cover": "only an alarm that reacted to local shaking covers it; a reaction is "
    "not a precursor",
    "not monitored": "the herd series could not be judged then (no data or no baseline), so "
    "the earthquake does not count",
    "not counted": "it is monitored but removed as an aftershock or as a near-duplicate of "
    "another target",
    "not a target": "it is too small or too far from the farm to be a target earthquake",
}


def find_quake(handles: Any, farm: FarmConfig, event_id: str) -> dict[str, Any]:
    """The catalogue event ``event_id`` as a quake record (distance from the farm,
    ``is_target``); NotFound when the catalogue does not list it."""
    if not event_id or len(event_id) > 200:
        raise data.InputError("event_id: 1 to 200 characters")
    frame = handles.influx.query_frame(*queries.earthquake_by_id(event_id))
    if frame.empty or "magnitude" not in frame:
        raise data.NotFound(f"earthquake {event_id!r} is not in the catalogue")
    t_ms = data._stamp_ms(frame.sort_values("time")["time"].iloc[0])
    window = data.quakes_frame(handles, farm, t_ms, t_ms + 1, -10.0)
    window = window[window["event_id"].astype(str) == event_id]
    params = handles.config.evaluation_params()
    return data.mark_targets(data.quake_records(window.head(1)), params)[0]


def _monitored(handles: Any, farm: FarmConfig, start_ms: int, end_ms: int) -> ev.Intervals:
    """Monitored time of the herd series in [start, end): samples with a value and a
    defined baseline, on the live grid."""
    resolution_s = int(handles.config.scheduler.resolution_s)
    influx = handles.influx_for(farm.id)
    frame = influx.query_frame(*queries.baseline_raw(farm.id, "herd", start_ms, end_ms))
    if frame.empty or "baseline" not in frame:
        return ev.merge_intervals(np.zeros(0, np.int64), np.zeros(0, np.int64))
    index = pd.DatetimeIndex(frame["time"])
    judged = frame["baseline"].notna().to_numpy() & frame["value"].notna().to_numpy()
    params = handles.config.evaluation_params()
    return ev.monitored_intervals(index, judged, f"{resolution_s}s", params.max_gap_h)


def _herd_alarms(handles: Any, farm: FarmConfig, start_ms: int, end_ms: int) -> pd.DataFrame:
    rows = data.alarms_query(handles, farm.id, None, 5000, start_ms=start_ms, end_ms=end_ms)
    herd = [a for a in rows if a.kind == "herd"]
    return pd.DataFrame(
        {
            "id": [a.id for a in herd],
            "start": pd.to_datetime([a.start for a in herd], utc=True),
            "end": pd.to_datetime([a.end or a.last_anomalous for a in herd], utc=True),
            "declared_at": pd.to_datetime(
                [getattr(a, "declared_at", None) or a.opened_at for a in herd], utc=True
            ),
        }
    )


def _status(result: ev.EvaluationResult, quake: dict[str, Any]) -> str:
    """The event's status in the evaluation result (``target_list`` and ``uncounted``,
    matched by time and magnitude); "not a target" when it is in neither."""
    t = pd.Timestamp(quake["time"])
    for item in [*result.target_list, *result.uncounted]:
        if pd.Timestamp(item["time"]) == t and abs(item["magnitude"] - quake["magnitude"]) < 1e-6:
            return str(item["status"])
    return "not a target"


def quake_view(handles: Any, farm: FarmConfig, event_id: str) -> dict[str, Any]:
    """The earthquake, the window (±``WINDOW_H`` h), the lead-window band
    [t - lead_window_h, t], the series to show and the verdict (``status``,
    ``explanation``, the covering alarm and lead time for a hit)."""
    quake = find_quake(handles, farm, event_id)
    params = handles.config.evaluation_params()
    t_ms = int(quake["time_ms"])
    lead_ms = int(params.lead_window_h * _H_MS)
    window = (t_ms - WINDOW_H * _H_MS, t_ms + WINDOW_H * _H_MS)
    # alarms whose cover can reach the event start up to a lead window (+ a day) before
    look = (window[0] - lead_ms - 24 * _H_MS, window[1])
    monitored = _monitored(handles, farm, *look)
    alarms = _herd_alarms(handles, farm, *look)
    catalog = data.quakes_frame(
        handles, farm, look[0], look[1], min(params.min_magnitude, params.reaction_min_magnitude)
    )
    # statuses only: no circular shifts needed
    result = ev.evaluate(
        alarms, catalog, (farm.latitude, farm.longitude), monitored, replace(params, n_shifts=0)
    )
    status = _status(result, quake)
    verdict: dict[str, Any] = {"status": status, "explanation": EXPLAIN.get(status, "")}
    for hit in result.hit_list:
        if pd.Timestamp(hit["time"]) == pd.Timestamp(quake["time"]):
            verdict["lead_time_h"] = hit.get("lead_time_h")
            verdict["alarm_start"] = hit.get("alarm_start")
            covering = alarms[alarms["start"] == pd.Timestamp(hit["alarm_start"])]
            if not covering.empty:
                verdict["alarm_id"] = int(covering["id"].iloc[0])
    overview = [o for o in data.overview(handles) if o["farm"] == farm.id]
    animals = overview[0]["animals"] if overview else []
    species = sorted({a["species"] for a in animals if a["species"] in data.SPECIES})
    series = ["herd", *(f"species:{s}" for s in species), *(a["animal"] for a in animals)]
    return {
        "farm": farm.id,
        "farm_name": farm.name or farm.id,
        "timezone": farm.timezone,
        "quake": quake,
        "start": data._iso_ms(window[0]),
        "end": data._iso_ms(window[1]),
        "lead_window": {
            "start": data._iso_ms(t_ms - lead_ms),
            "end": quake["time"],
            "hours": params.lead_window_h,
        },
        "series": series,
        "verdict": verdict,
        "params": params.as_dict(),
    }
