"""Alarm-earthquake association and skill scores (DESIGN.md, "Association and evaluation").

Definitions (all parameters in ``EvaluationParams``):

- **monitored time**: the union of sample cells [t, t + Δ) of the samples at which the
  rule can judge (value present and baseline defined), with gaps of at most
  ``max_gap_h`` between such samples bridged. Monitored time therefore starts at the
  first sample with a defined baseline, ends at the end of the last sample, and leaves
  out longer gaps (and the days after a long gap until the baseline is defined again).
- **alarm**: an episode covers [start, end + ``lead_window_h``] (end = last anomalous
  sample).
- **reaction**: an alarm whose start lies within ``reaction_window_min`` after an event of
  magnitude >= ``reaction_min_magnitude`` within ``reaction_radius_km`` of the farm (from
  the full, not declustered, catalogue) is a reaction to shaking, not a precursor. Reaction
  alarms are removed before scoring: they cannot hit, are not false alarms, and the time
  they cover is not alarm time (it stays monitored). They are counted in ``reactions``.
- **targets**: events with magnitude >= ``min_magnitude`` whose great-circle distance from
  the farm is <= the Dobrovolsky radius 10**(0.43 M) km (or ``fixed_radius_km``) and whose
  time is in monitored time.
- **hit**: a target whose time lies in the cover of at least one alarm; **miss**: the
  others; **false alarm**: an alarm whose cover contains no target.
- alarm fraction τ = |alarm covers ∩ monitored| / |monitored|; miss rate ν = 1 - h/N;
  probability gain G = (h/N) / τ; binomial p = P(H >= h) for H ~ Binomial(N, τ).
- **empirical p** (circular shifts): monitored time is laid end to end as one circle of
  length T; the alarm covers are shifted together by U ~ Uniform[0, T) ``n_shifts`` times
  (keeping their clustering and durations; targets keep theirs), and
  p = (1 + #{shifts with hits >= h}) / (1 + n_shifts).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from namazu.analytics.decluster import gardner_knopoff
from namazu.analytics.geo import dobrovolsky_radius_km, great_circle_km, hypocentral_km
from namazu.analytics.params import EvaluationParams

_NS_PER_H = 3600 * 10**9


class EvaluationInputError(ValueError):
    """Inputs to the evaluation are inconsistent (reason in the message)."""


@dataclass(frozen=True)
class Intervals:
    """Sorted, disjoint half-open time intervals [start, end) in int64 ns since the epoch."""

    start: np.ndarray
    end: np.ndarray

    @property
    def total_ns(self) -> int:
        """Summed length [ns]."""
        return int((self.end - self.start).sum())

    def __len__(self) -> int:
        return len(self.start)

    def contains(self, times_ns: np.ndarray) -> np.ndarray:
        """Whether each time [ns] lies in one of the intervals (start inclusive)."""
        t = np.asarray(times_ns, dtype=np.int64)
        i = np.searchsorted(self.start, t, side="right") - 1
        ok = i >= 0
        inside = np.zeros(t.shape, dtype=bool)
        inside[ok] = t[ok] < self.end[i[ok]]
        return inside

    def intersect(self, other: Intervals) -> Intervals:
        """Intersection with another interval set."""
        starts, ends = [], []
        i = j = 0
        while i < len(self) and j < len(other):
            lo = max(self.start[i], other.start[j])
            hi = min(self.end[i], other.end[j])
            if lo < hi:
                starts.append(lo)
                ends.append(hi)
            if self.end[i] < other.end[j]:
                i += 1
            else:
                j += 1
        return Intervals(np.asarray(starts, np.int64), np.asarray(ends, np.int64))

    def complement(self, start_ns: int, end_ns: int) -> Intervals:
        """The time in [start_ns, end_ns) [ns] that none of the intervals covers."""
        starts, ends, cursor = [], [], int(start_ns)
        for s, e in zip(self.start, self.end, strict=True):
            if s > cursor:
                starts.append(cursor)
                ends.append(min(int(s), int(end_ns)))
            cursor = max(cursor, int(e))
        if cursor < end_ns:
            starts.append(cursor)
            ends.append(int(end_ns))
        return merge_intervals(np.asarray(starts, np.int64), np.asarray(ends, np.int64))

    def as_frame(self) -> pd.DataFrame:
        """DataFrame with UTC ``start`` and ``end`` columns."""
        return pd.DataFrame(
            {
                "start": pd.to_datetime(self.start, utc=True),
                "end": pd.to_datetime(self.end, utc=True),
            }
        )


def merge_intervals(start_ns: np.ndarray, end_ns: np.ndarray) -> Intervals:
    """Union of possibly overlapping intervals [start, end) [ns] as sorted disjoint Intervals."""
    s = np.asarray(start_ns, dtype=np.int64)
    e = np.asarray(end_ns, dtype=np.int64)
    keep = e > s
    s, e = s[keep], e[keep]
    if s.size == 0:
        return Intervals(np.zeros(0, np.int64), np.zeros(0, np.int64))
    order = np.argsort(s, kind="stable")
    s, e = s[order], e[order]
    running_end = np.maximum.accumulate(e)
    new = np.ones(s.size, dtype=bool)
    new[1:] = s[1:] > running_end[:-1]
    group = np.cumsum(new) - 1
    out_end = np.zeros(group[-1] + 1, dtype=np.int64)
    np.maximum.at(out_end, group, e)
    return Intervals(s[new], out_end)


def monitored_intervals(
    index: pd.DatetimeIndex,
    judged: np.ndarray,
    resolution: Any,
    max_gap_h: float = EvaluationParams().max_gap_h,
) -> Intervals:
    """Monitored time of a series (see module docstring).

    index : DatetimeIndex (tz-aware) of the series' grid.
    judged : bool per time; True where a value is present and the baseline defined.
    resolution : the grid step Δ.
    max_gap_h : gaps between judged samples up to this are bridged [h].
    Returns Intervals [ns].
    """
    step = pd.Timedelta(pd.tseries.frequencies.to_offset(resolution)).value
    t = pd.DatetimeIndex(index).tz_convert("UTC").as_unit("ns").asi8[np.asarray(judged, bool)]
    if t.size == 0:
        return merge_intervals(t, t)
    gap = max(step, int(max_gap_h * _NS_PER_H))
    cell_end = t + step
    # bridge a gap between cells when the next judged sample starts within max_gap
    bridge = np.zeros(t.size, dtype=bool)
    bridge[:-1] = (t[1:] - cell_end[:-1]) <= gap
    cell_end[:-1] = np.where(bridge[:-1], t[1:], cell_end[:-1])
    return merge_intervals(t, cell_end)


def alarm_table(alarms: Any) -> pd.DataFrame:
    """Alarms as a DataFrame with UTC ``start`` and ``end`` (last anomalous sample).

    alarms : list of Episode (or objects with .start/.end) or a DataFrame with ``start``
        and ``end`` columns.
    """
    if isinstance(alarms, pd.DataFrame):
        frame = alarms[["start", "end"]].copy()
    else:
        frame = pd.DataFrame(
            {"start": [a.start for a in alarms], "end": [a.end for a in alarms]},
            dtype="datetime64[ns, UTC]" if len(alarms) == 0 else None,
        )
    for column in ("start", "end"):
        frame[column] = pd.to_datetime(frame[column], utc=True).dt.as_unit("ns")
    if (frame["end"] < frame["start"]).any():
        raise EvaluationInputError("an alarm ends before it starts")
    return frame.sort_values("start", kind="stable").reset_index(drop=True)


def _ns(column: pd.Series) -> np.ndarray:
    return pd.DatetimeIndex(column).as_unit("ns").asi8


def _catalog_arrays(catalog: pd.DataFrame) -> dict[str, np.ndarray]:
    missing = [c for c in ("time", "latitude", "longitude", "magnitude") if c not in catalog]
    if missing:
        raise EvaluationInputError(f"catalogue lacks columns: {', '.join(missing)}")
    return {
        "time": pd.DatetimeIndex(pd.to_datetime(catalog["time"], utc=True)).as_unit("ns").asi8,
        "lat": catalog["latitude"].to_numpy(np.float64),
        "lon": catalog["longitude"].to_numpy(np.float64),
        "mag": catalog["magnitude"].to_numpy(np.float64),
    }


def target_mask(
    catalog: pd.DataFrame,
    farm_lat: float,
    farm_lon: float,
    params: EvaluationParams,
    monitored: Intervals,
) -> np.ndarray:
    """Which catalogue rows are target earthquakes (magnitude, radius, monitored time).

    catalog : DataFrame with time, latitude [deg N], longitude [deg E], magnitude.
    farm_lat, farm_lon : farm location [deg N, deg E].
    Returns bool ndarray in catalogue row order.
    """
    cat = _catalog_arrays(catalog)
    distance = great_circle_km(farm_lat, farm_lon, cat["lat"], cat["lon"])
    if params.fixed_radius_km is None:
        radius = dobrovolsky_radius_km(cat["mag"])
    else:
        radius = np.full(distance.shape, float(params.fixed_radius_km))
    return (
        (cat["mag"] >= params.min_magnitude)
        & (distance <= radius)
        & monitored.contains(cat["time"])
    )


def reaction_mask(
    alarms: pd.DataFrame,
    catalog: pd.DataFrame,
    farm_lat: float,
    farm_lon: float,
    params: EvaluationParams,
) -> np.ndarray:
    """Which alarms start within the reaction window after local shaking.

    alarms : DataFrame from ``alarm_table``.
    catalog : the full catalogue (not declustered).
    Returns bool ndarray, one per alarm row.
    """
    if alarms.empty or catalog.empty:
        return np.zeros(len(alarms), dtype=bool)
    cat = _catalog_arrays(catalog)
    near = (cat["mag"] >= params.reaction_min_magnitude) & (
        great_circle_km(farm_lat, farm_lon, cat["lat"], cat["lon"]) <= params.reaction_radius_km
    )
    shaking = np.sort(cat["time"][near])
    if shaking.size == 0:
        return np.zeros(len(alarms), dtype=bool)
    start = _ns(alarms["start"])
    window = int(params.reaction_window_min * 60 * 10**9)
    last = np.searchsorted(shaking, start, side="right") - 1  # latest shaking at or before
    ok = last >= 0
    reaction = np.zeros(start.shape, dtype=bool)
    reaction[ok] = start[ok] - shaking[last[ok]] <= window
    return reaction


def _covers(alarms: pd.DataFrame, params: EvaluationParams) -> tuple[np.ndarray, np.ndarray]:
    start = _ns(alarms["start"])
    end = _ns(alarms["end"])
    # closed cover [start, end + lead]: one nanosecond added for the half-open Intervals
    return start, end + int(params.lead_window_h * _NS_PER_H) + 1


def _to_clock(times_ns: np.ndarray, monitored: Intervals) -> np.ndarray:
    """Map times inside monitored intervals to elapsed monitored time [ns]."""
    before = np.concatenate([[0], np.cumsum(monitored.end - monitored.start)])
    i = np.searchsorted(monitored.start, times_ns, side="right") - 1
    i = np.clip(i, 0, max(len(monitored) - 1, 0))
    return before[i] + np.clip(
        times_ns - monitored.start[i], 0, monitored.end[i] - monitored.start[i]
    )


def circular_shift_hits(
    cover: Intervals, target_ns: np.ndarray, monitored: Intervals, shifts_ns: np.ndarray
) -> np.ndarray:
    """Hits of the alarm covers shifted circularly over monitored time, for each shift.

    cover : alarm covers (already intersected with monitored time) [ns].
    target_ns : target times, inside monitored time [ns].
    monitored : the monitored intervals [ns].
    shifts_ns : shifts along monitored time [ns]; 0 gives the observed hits.
    Returns int ndarray, hits per shift.
    """
    total = monitored.total_ns
    if total == 0 or len(cover) == 0 or target_ns.size == 0:
        return np.zeros(len(shifts_ns), dtype=np.int64)
    a = _to_clock(cover.start, monitored)
    b = a + (cover.end - cover.start)
    q = _to_clock(np.asarray(target_ns, np.int64), monitored)
    position = np.mod(q[None, :] - np.asarray(shifts_ns, np.int64)[:, None], total)
    # covers are disjoint in clock time; a cover may wrap past the end of the circle
    wrapped_a = np.concatenate([a, a - total])
    wrapped_b = np.concatenate([b, b - total])
    order = np.argsort(wrapped_a)
    wa, wb = wrapped_a[order], wrapped_b[order]
    running_end = np.maximum.accumulate(wb)
    i = np.searchsorted(wa, position, side="right") - 1
    hit = (i >= 0) & (position < running_end[np.maximum(i, 0)])
    return hit.sum(axis=1)


def circular_shift_pvalue(
    cover: Intervals,
    target_ns: np.ndarray,
    monitored: Intervals,
    observed_hits: int,
    n_shifts: int,
    seed: int,
) -> float:
    """Empirical p of the observed hits under uniform circular shifts of the alarms.

    Returns (1 + #{shifts with hits >= observed_hits}) / (1 + n_shifts); NaN when
    n_shifts is 0 or there is no target.
    """
    if n_shifts <= 0 or np.asarray(target_ns).size == 0 or monitored.total_ns == 0:
        return float("nan")
    rng = np.random.default_rng(seed)
    shifts = rng.integers(0, monitored.total_ns, size=n_shifts, dtype=np.int64)
    hits = circular_shift_hits(cover, target_ns, monitored, shifts)
    return float((1 + np.count_nonzero(hits >= observed_hits)) / (1 + n_shifts))


def binomial_pvalue(hits: int, targets: int, alarm_fraction: float) -> float:
    """P(H >= hits) for H ~ Binomial(targets, alarm_fraction) [-]; NaN without targets."""
    if targets == 0 or not np.isfinite(alarm_fraction):
        return float("nan")
    if hits <= 0:
        return 1.0
    return float(stats.binom.sf(hits - 1, targets, alarm_fraction))


def binomial_confidence_curve(
    n_targets: int, alpha: float = 0.05, tau: np.ndarray | None = None
) -> pd.DataFrame:
    """The Molchan-diagram significance curve of a random guess.

    n_targets : int. Number of targets N.
    alpha : float. Significance level [-].
    tau : optional grid of alarm fractions in [0, 1].
    Returns DataFrame with ``tau`` and ``nu``: for each τ the largest miss rate ν = 1 - h/N
    at which P(H >= h | N, τ) <= alpha (a point on or below the curve beats a random
    guess at level alpha); NaN where no h qualifies.
    """
    if n_targets < 1:
        raise EvaluationInputError("the binomial curve needs at least one target")
    grid = np.linspace(0.0, 1.0, 201) if tau is None else np.asarray(tau, dtype=np.float64)
    h = np.arange(1, n_targets + 1)
    p = stats.binom.sf(h[None, :] - 1, n_targets, grid[:, None])
    ok = p <= alpha
    nu = np.full(grid.shape, np.nan)
    any_ok = ok.any(axis=1)
    smallest_h = h[np.argmax(ok, axis=1)]
    nu[any_ok] = 1.0 - smallest_h[any_ok] / n_targets
    return pd.DataFrame({"tau": grid, "nu": nu})


@dataclass
class EvaluationResult:
    """Scores of one alarm set against one catalogue (see the module docstring)."""

    targets: int
    hits: int
    misses: int
    false_alarms: int
    alarms: int
    reactions: int
    alarm_fraction: float
    miss_rate: float
    probability_gain: float
    p_binomial: float
    p_shift: float
    n_shifts: int
    monitored_h: float
    alarmed_h: float
    declustered: bool
    hit_list: list[dict[str, Any]] = field(default_factory=list)
    target_list: list[dict[str, Any]] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN becomes None)."""
        return _clean(asdict(self))


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def evaluate(
    alarms: Any,
    catalog: pd.DataFrame,
    farm: tuple[float, float],
    monitored: Intervals,
    params: EvaluationParams = EvaluationParams(),
    *,
    declustered: bool = False,
    mainshocks: np.ndarray | None = None,
    farm_elevation_km: float = 0.0,
) -> EvaluationResult:
    """Associate alarms with target earthquakes and score them.

    alarms : list of Episode or DataFrame with ``start``/``end`` (last anomalous sample).
    catalog : DataFrame with time (UTC), latitude [deg N], longitude [deg E], magnitude,
        and optionally depth_km [km].
    farm : (latitude [deg N], longitude [deg E]).
    monitored : Intervals from ``monitored_intervals`` (optionally cut to a period).
    params : EvaluationParams.
    declustered : keep only Gardner-Knopoff mainshocks as targets (reactions still use the
        full catalogue).
    mainshocks : precomputed mainshock mask (saves recomputing it).
    farm_elevation_km : for the hypocentral distance in the hit list [km].
    Returns EvaluationResult.
    """
    table = alarm_table(alarms)
    table = table[monitored.contains(_covers(table, params)[0])].reset_index(drop=True)
    farm_lat, farm_lon = farm
    reactions = reaction_mask(table, catalog, farm_lat, farm_lon, params)
    precursors = table[~reactions].reset_index(drop=True)
    starts, ends = _covers(precursors, params)
    cover = merge_intervals(starts, ends).intersect(monitored)

    is_target = target_mask(catalog, farm_lat, farm_lon, params, monitored)
    if declustered:
        if mainshocks is None:
            mainshocks = gardner_knopoff(catalog)
        is_target &= np.asarray(mainshocks, dtype=bool)
    cat = _catalog_arrays(catalog)
    target_rows = np.flatnonzero(is_target)
    target_ns = cat["time"][target_rows]
    hit = cover.contains(target_ns)
    n_targets, n_hits = int(target_rows.size), int(hit.sum())

    # false alarms: covers containing no target
    if len(precursors) and n_targets:
        first = np.searchsorted(np.sort(target_ns), starts, side="left")
        sorted_targets = np.sort(target_ns)
        has = first < n_targets
        has[has] = sorted_targets[first[has]] < ends[has]
        false_alarms = int((~has).sum())
    else:
        false_alarms = len(precursors)

    total = monitored.total_ns
    tau = cover.total_ns / total if total else float("nan")
    rate = n_hits / n_targets if n_targets else float("nan")
    gain = rate / tau if n_targets and tau > 0 else float("nan")
    p_shift = circular_shift_pvalue(
        cover, target_ns, monitored, n_hits, params.n_shifts, params.seed
    )
    distance = great_circle_km(farm_lat, farm_lon, cat["lat"], cat["lon"])
    depth = (
        catalog["depth_km"].to_numpy(np.float64)
        if "depth_km" in catalog
        else np.full(len(catalog), np.nan)
    )
    targets_out, hits_out = [], []
    for k, row in enumerate(target_rows):
        t = int(cat["time"][row])
        item = {
            "time": pd.Timestamp(t, tz="UTC").isoformat(),
            "magnitude": float(cat["mag"][row]),
            "distance_km": float(distance[row]),
            "hypocentral_km": float(hypocentral_km(distance[row], depth[row], farm_elevation_km)),
            "hit": bool(hit[k]),
        }
        targets_out.append(item)
        if hit[k]:
            covering = np.flatnonzero((starts <= t) & (t < ends))
            first_alarm = int(covering[0])
            alarm_start = int(starts[first_alarm])
            alarm_end = int(precursors["end"].iloc[first_alarm].value)
            hits_out.append(
                {
                    **item,
                    "alarm_start": pd.Timestamp(alarm_start, tz="UTC").isoformat(),
                    "lead_time_h": (t - alarm_start) / _NS_PER_H,
                    "hours_after_alarm_end": (t - alarm_end) / _NS_PER_H,
                }
            )
    return EvaluationResult(
        targets=n_targets,
        hits=n_hits,
        misses=n_targets - n_hits,
        false_alarms=false_alarms,
        alarms=len(precursors),
        reactions=int(reactions.sum()),
        alarm_fraction=tau,
        miss_rate=1.0 - rate if n_targets else float("nan"),
        probability_gain=gain,
        p_binomial=binomial_pvalue(n_hits, n_targets, tau),
        p_shift=p_shift,
        n_shifts=params.n_shifts,
        monitored_h=total / _NS_PER_H,
        alarmed_h=cover.total_ns / _NS_PER_H,
        declustered=declustered,
        hit_list=hits_out,
        target_list=targets_out,
        params=params.as_dict(),
    )


def period_intervals(periods: pd.DataFrame) -> dict[str, Intervals]:
    """User periods as Intervals per label.

    periods : DataFrame with ``start``, ``end`` (UTC) and ``label``; several rows may share
        a label. Each row is [start, end).
    Returns dict label -> Intervals (in first-appearance order).
    """
    out: dict[str, Intervals] = {}
    for label in dict.fromkeys(periods["label"]):
        rows = periods[periods["label"] == label]
        s = pd.DatetimeIndex(pd.to_datetime(rows["start"], utc=True)).as_unit("ns").asi8
        e = pd.DatetimeIndex(pd.to_datetime(rows["end"], utc=True)).as_unit("ns").asi8
        if (e <= s).any():
            raise EvaluationInputError(f"period {label!r} has an end that is not after its start")
        out[str(label)] = merge_intervals(s, e)
    return out


def molchan_points(
    results: Sequence[tuple[float, EvaluationResult]],
) -> pd.DataFrame:
    """Molchan error-diagram trajectory from results at several rule thresholds.

    results : sequence of (threshold value, EvaluationResult).
    Returns DataFrame with ``threshold``, ``tau`` (alarm fraction) and ``nu`` (miss rate).
    """
    return pd.DataFrame(
        {
            "threshold": [t for t, _ in results],
            "tau": [r.alarm_fraction for _, r in results],
            "nu": [r.miss_rate for _, r in results],
        }
    )
