"""Alarm-earthquake association and skill scores (DESIGN.md, "Association and evaluation",
evaluation v2, ``EVALUATION_VERSION``).

Definitions (all parameters in ``EvaluationParams``):

- **monitored time**: the union of sample cells of the samples at which the rule can judge
  (value present and baseline defined), with gaps of at most ``max_gap_h`` between such
  samples bridged. A sample labelled t covers [t, t + Δ) (``sample_label`` "start") or
  [t - Δ, t) ("end"). Monitored time therefore starts at the first sample with a defined
  baseline, ends at the end of the last sample, and leaves out longer gaps (and the days
  after a long gap until the baseline is defined again).
- **alarm**: an episode is first known at its ``declared_at`` (``analytics.rule``); it
  covers [declared_at, end + ``lead_window_h``] (end = last anomalous sample). Nothing is
  credited to an alarm before its declaration. An alarm counts in the monitored time that
  holds its declaration time. ``alarm_cover`` is the one implementation.
- **reaction**: an alarm with an event of magnitude >= ``reaction_min_magnitude`` within
  ``reaction_radius_km`` of the farm (full, not declustered, catalogue) at any time from
  ``reaction_window_min`` before its first anomalous sample up to its ``declared_at`` is a
  reaction to shaking, not a precursor (``reaction_mask``). Reaction alarms are removed
  before scoring: they cannot hit, are not false alarms, and the time they cover is not
  alarm time (it stays monitored). They are counted in ``reactions``.
- **targets**: events with magnitude >= ``min_magnitude`` whose great-circle distance from
  the farm is <= the Dobrovolsky radius 10**(0.43 M) km (or ``fixed_radius_km``) and whose
  time is in monitored time. With ``merge_targets_h``/``merge_targets_km`` set, targets
  linked by being that close in time and distance count once, as their earliest event.
- **hit**: a target whose time lies in the cover of at least one alarm; **miss**: the
  others; **false alarm**: an alarm whose cover contains no target. Lead time = target
  time - ``declared_at`` of the first alarm covering it [h].
- alarm fraction τ = |alarm covers ∩ monitored| / |monitored|; miss rate ν = 1 - h/N;
  probability gain G = (h/N) / τ; binomial p = P(H >= h) for H ~ Binomial(N, τ).
- **intervals**: the exact Clopper-Pearson interval of h/N at confidence 1 - ``alpha``,
  and the gain interval = that interval / τ (τ is known exactly, it is measured, not
  estimated).
- **empirical p** (circular shifts): monitored time is laid end to end as one circle of
  length T; the alarm covers are shifted together by U·T, U ~ Uniform[0, 1), ``n_shifts``
  times (keeping their clustering and durations; targets keep theirs), and
  p = (1 + #{shifts with hits >= h}) / (1 + n_shifts).
- **power**: the p-values a perfect record (h = N) would reach with the same alarms:
  τ**N (binomial) and (1 + #{shifts with hits >= N}) / (1 + n_shifts).
- **undefined p**: with no target or no alarm time in monitored time (and, for the
  empirical p, without shifts) a p-value is NaN (null in JSON) and its reason is given in
  ``p_binomial_reason`` / ``p_shift_reason``; it is never 1 by default.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from namazu.analytics.catalog import near_groups
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
    sample_label: str = "start",
) -> Intervals:
    """Monitored time of a series (see module docstring).

    index : DatetimeIndex (tz-aware) of the series' grid.
    judged : bool per time; True where a value is present and the baseline defined.
    resolution : the grid step Δ.
    max_gap_h : gaps between judged samples up to this are bridged [h].
    sample_label : "start" (a sample labelled t covers [t, t + Δ)) or "end" ([t - Δ, t)).
    Returns Intervals [ns].
    """
    step = pd.Timedelta(pd.tseries.frequencies.to_offset(resolution)).value
    t = pd.DatetimeIndex(index).tz_convert("UTC").as_unit("ns").asi8[np.asarray(judged, bool)]
    if sample_label == "end":
        t = t - step
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
    """Alarms as a DataFrame with UTC ``start``, ``declared_at`` and ``end``.

    alarms : list of Episode (or objects with .start/.declared_at/.end) or a DataFrame with
        ``start`` (first anomalous sample), ``declared_at`` (when the alarm was first
        known) and ``end`` (last anomalous sample) columns.
    Raises EvaluationInputError when a column is missing or the times are out of order.
    """
    if isinstance(alarms, pd.DataFrame):
        missing = [c for c in ALARM_COLUMNS if c not in alarms]
        if missing:
            raise EvaluationInputError(
                f"alarms lack columns: {', '.join(missing)} (declared_at = when each alarm "
                "was first known)"
            )
        frame = alarms[list(ALARM_COLUMNS)].copy()
    else:
        frame = pd.DataFrame(
            {c: [getattr(a, c) for a in alarms] for c in ALARM_COLUMNS},
            dtype="datetime64[ns, UTC]" if len(alarms) == 0 else None,
        )
    for column in ALARM_COLUMNS:
        frame[column] = pd.to_datetime(frame[column], utc=True).dt.as_unit("ns")
    if (frame["end"] < frame["start"]).any():
        raise EvaluationInputError("an alarm ends before it starts")
    if (frame["declared_at"] < frame["start"]).any():
        raise EvaluationInputError("an alarm is declared before it starts")
    return frame.sort_values("start", kind="stable").reset_index(drop=True)


#: Columns of ``alarm_table``.
ALARM_COLUMNS: tuple[str, ...] = ("start", "declared_at", "end")


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


def _radius_km(magnitude: np.ndarray, params: EvaluationParams) -> np.ndarray:
    if params.fixed_radius_km is None:
        return dobrovolsky_radius_km(magnitude)
    return np.full(magnitude.shape, float(params.fixed_radius_km))


def candidate_mask(
    catalog: pd.DataFrame, farm_lat: float, farm_lon: float, params: EvaluationParams
) -> np.ndarray:
    """Events large and close enough to be targets, whatever their time [bool per row]."""
    cat = _catalog_arrays(catalog)
    distance = great_circle_km(farm_lat, farm_lon, cat["lat"], cat["lon"])
    return (cat["mag"] >= params.min_magnitude) & (distance <= _radius_km(cat["mag"], params))


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
    Returns bool ndarray in catalogue row order (before any merging of close targets).
    """
    cat = _catalog_arrays(catalog)
    return candidate_mask(catalog, farm_lat, farm_lon, params) & monitored.contains(cat["time"])


def merge_close_targets(
    catalog: pd.DataFrame, is_target: np.ndarray, params: EvaluationParams
) -> np.ndarray:
    """With ``merge_targets_h``/``_km`` set: keep the earliest of each group of close targets.

    is_target : bool per catalogue row. Returns a new bool mask (unchanged when the option
    is off). Targets closer than both limits are linked; linked targets form one group.
    """
    if params.merge_targets_h is None or params.merge_targets_km is None:
        return np.asarray(is_target, dtype=bool)
    rows = np.flatnonzero(is_target)
    if rows.size < 2:
        return np.asarray(is_target, dtype=bool)
    cat = _catalog_arrays(catalog)
    order = rows[np.argsort(cat["time"][rows], kind="stable")]
    groups = near_groups(
        cat["time"][order],
        cat["lat"][order],
        cat["lon"][order],
        params.merge_targets_h * 3600.0,
        params.merge_targets_km,
    )
    keep = np.zeros(len(catalog), dtype=bool)
    keep[order[np.unique(groups)]] = True
    return keep


def _shaking_times(
    catalog: pd.DataFrame, farm_lat: float, farm_lon: float, params: EvaluationParams
) -> np.ndarray:
    if catalog.empty:
        return np.zeros(0, np.int64)
    cat = _catalog_arrays(catalog)
    near = (cat["mag"] >= params.reaction_min_magnitude) & (
        great_circle_km(farm_lat, farm_lon, cat["lat"], cat["lon"]) <= params.reaction_radius_km
    )
    return np.sort(cat["time"][near])


def reaction_mask(
    alarms: pd.DataFrame,
    catalog: pd.DataFrame,
    farm_lat: float,
    farm_lon: float,
    params: EvaluationParams,
) -> np.ndarray:
    """Which alarms are reactions: local shaking from ``reaction_window_min`` before their
    first anomalous sample up to their ``declared_at`` (both ends included).

    alarms : DataFrame from ``alarm_table``.
    catalog : the full catalogue (not declustered).
    Returns bool ndarray, one per alarm row.
    """
    shaking = _shaking_times(catalog, farm_lat, farm_lon, params)
    if alarms.empty or shaking.size == 0:
        return np.zeros(len(alarms), dtype=bool)
    window = int(params.reaction_window_min * 60 * 10**9)
    first = np.searchsorted(shaking, _ns(alarms["start"]) - window, side="left")
    after_declared = np.searchsorted(shaking, _ns(alarms["declared_at"]), side="right")
    return after_declared > first


def alarm_cover(alarms: pd.DataFrame, lead_window_h: float) -> tuple[np.ndarray, np.ndarray]:
    """The closed cover [declared_at, end + lead_window] of each alarm as half-open [ns).

    alarms : DataFrame from ``alarm_table``. lead_window_h : [h].
    Returns (start_ns, end_ns); end_ns is one nanosecond past end + lead window.
    """
    start = _ns(alarms["declared_at"])
    end = _ns(alarms["end"])
    return start, end + int(round(lead_window_h * _NS_PER_H)) + 1


def lead_time_h(target_time: Any, declared_at: Any) -> float:
    """Lead time of a hit: target time - declaration time of the alarm [h]."""
    return (pd.Timestamp(target_time) - pd.Timestamp(declared_at)) / pd.Timedelta(hours=1)


def _to_clock(times_ns: np.ndarray, monitored: Intervals) -> np.ndarray:
    """Map times inside monitored intervals to elapsed monitored time [ns]."""
    before = np.concatenate([[0], np.cumsum(monitored.end - monitored.start)])
    i = np.searchsorted(monitored.start, times_ns, side="right") - 1
    i = np.clip(i, 0, max(len(monitored) - 1, 0))
    return before[i] + np.clip(
        times_ns - monitored.start[i], 0, monitored.end[i] - monitored.start[i]
    )


def shift_offsets_ns(total_ns: int, n_shifts: int, seed: int) -> np.ndarray:
    """Circular shifts U·T along monitored time, U ~ Uniform[0, 1) seeded [ns].

    The same seed gives the same fractions U for any length T, so several evaluations
    (a sweep, the conditional test) share their shifts.
    """
    fractions = np.random.default_rng(seed).random(n_shifts)
    return np.floor(fractions * total_ns).astype(np.int64)


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
    if total == 0 or len(cover) == 0 or np.asarray(target_ns).size == 0:
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


def shift_pvalue(shift_hits: np.ndarray, observed_hits: int) -> float:
    """(1 + #{shifts with hits >= observed}) / (1 + n_shifts); NaN without shifts."""
    hits = np.asarray(shift_hits)
    if hits.size == 0:
        return float("nan")
    return float((1 + np.count_nonzero(hits >= observed_hits)) / (1 + hits.size))


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
    n_shifts is 0, there is no target or no alarm time.
    """
    if n_shifts <= 0 or np.asarray(target_ns).size == 0 or monitored.total_ns == 0:
        return float("nan")
    if cover.total_ns == 0:
        return float("nan")
    shifts = shift_offsets_ns(monitored.total_ns, n_shifts, seed)
    return shift_pvalue(circular_shift_hits(cover, target_ns, monitored, shifts), observed_hits)


def binomial_pvalue(hits: int, targets: int, alarm_fraction: float) -> float:
    """P(H >= hits) for H ~ Binomial(targets, alarm_fraction) [-].

    NaN without targets or without alarm time (alarm_fraction 0 or undefined).
    """
    if targets == 0 or not np.isfinite(alarm_fraction) or alarm_fraction <= 0:
        return float("nan")
    if hits <= 0:
        return 1.0
    return float(stats.binom.sf(hits - 1, targets, alarm_fraction))


def clopper_pearson(hits: int, targets: int, alpha: float = 0.05) -> tuple[float, float]:
    """Exact (Clopper-Pearson) two-sided interval of a binomial proportion h/N.

    hits, targets : h and N. alpha : 1 - confidence [-].
    Returns (lower, upper) [-]: Beta(α/2; h, N - h + 1) and Beta(1 - α/2; h + 1, N - h)
    quantiles, 0 for h = 0 and 1 for h = N; (NaN, NaN) without targets.
    One hit of one target at 95 %: (0.025, 1).
    """
    if targets <= 0:
        return float("nan"), float("nan")
    lower = 0.0 if hits == 0 else float(stats.beta.ppf(alpha / 2, hits, targets - hits + 1))
    upper = (
        1.0 if hits == targets else float(stats.beta.ppf(1 - alpha / 2, hits + 1, targets - hits))
    )
    return lower, upper


def gain_interval(
    hits: int, targets: int, alarm_fraction: float, alpha: float = 0.05
) -> tuple[float, float]:
    """Interval of the probability gain (h/N)/τ: the Clopper-Pearson interval divided by τ.

    τ is measured exactly (it is the alarms' share of monitored time), so the uncertainty
    is that of the hit rate. Returns (NaN, NaN) without targets or alarm time.
    """
    if targets <= 0 or not np.isfinite(alarm_fraction) or alarm_fraction <= 0:
        return float("nan"), float("nan")
    lower, upper = clopper_pearson(hits, targets, alpha)
    return lower / alarm_fraction, upper / alarm_fraction


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


#: Reasons for an undefined p-value.
NO_TARGETS = "no target earthquake in monitored time"
NO_TARGETS_LEFT = "no target earthquake left after declustering"
NO_ALARMS = "no alarm time in monitored time"
NO_SHIFTS = "no circular shifts were requested"

#: Target statuses (``target_list`` and ``targets.csv``).
TARGET_STATUSES = ("hit", "miss", "reaction cover", "not monitored", "not counted")

#: Fields of EvaluationResult that stay in memory (for sweeps and the conditional test).
_INTERNAL_FIELDS = frozenset({"cover", "target_ns", "shift_hits"})


@dataclass
class EvaluationResult:
    """Scores of one alarm set against one catalogue (see the module docstring).

    hit_rate_interval, gain_interval : [lower, upper] at confidence 1 - alpha.
    perfect_p_binomial, perfect_p_shift : the p-values of a perfect record (power).
    p_binomial_reason, p_shift_reason : why a p-value is undefined (None when defined).
    target_list : every counted target (status hit, miss or reaction cover); with
        ``uncounted`` also the candidates (M and distance) outside monitored time
        ("not monitored") or removed by declustering or merging ("not counted").
    cover, target_ns, shift_hits : the alarm covers [ns], target times [ns] and hits per
        circular shift, kept in memory only.
    """

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
    hit_rate: float = float("nan")
    hit_rate_interval: list[float] = field(default_factory=lambda: [float("nan")] * 2)
    gain_interval: list[float] = field(default_factory=lambda: [float("nan")] * 2)
    confidence_level: float = 0.95
    p_binomial_reason: str | None = None
    p_shift_reason: str | None = None
    perfect_p_binomial: float = float("nan")
    perfect_p_shift: float = float("nan")
    hit_list: list[dict[str, Any]] = field(default_factory=list)
    target_list: list[dict[str, Any]] = field(default_factory=list)
    uncounted: list[dict[str, Any]] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    cover: Intervals | None = field(default=None, repr=False, compare=False)
    target_ns: np.ndarray | None = field(default=None, repr=False, compare=False)
    shift_hits: np.ndarray | None = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN becomes None; the in-memory arrays are left out)."""
        return _clean(
            {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _INTERNAL_FIELDS}
        )


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
    mask_reactions: bool = True,
) -> EvaluationResult:
    """Associate alarms with target earthquakes and score them.

    alarms : list of Episode or DataFrame with ``start``, ``declared_at``, ``end``
        (``alarm_table``).
    catalog : DataFrame with time (UTC), latitude [deg N], longitude [deg E], magnitude,
        and optionally depth_km [km].
    farm : (latitude [deg N], longitude [deg E]).
    monitored : Intervals from ``monitored_intervals`` (optionally cut to a period).
    params : EvaluationParams.
    declustered : keep only mainshocks as targets (reactions still use the full catalogue).
    mainshocks : precomputed mainshock mask (default: ``gardner_knopoff`` of ``catalog``
        with ``params.decluster_window`` and ``params.foreshock_fraction``).
    farm_elevation_km : for the hypocentral distance in the target list [km].
    mask_reactions : remove reactions to local shaking (off for the seismicity reference,
        whose alarms are opened by earthquakes by design).
    Returns EvaluationResult.
    """
    table = alarm_table(alarms)
    table = table[monitored.contains(_ns(table["declared_at"]))].reset_index(drop=True)
    farm_lat, farm_lon = farm
    if mask_reactions:
        reactions = reaction_mask(table, catalog, farm_lat, farm_lon, params)
    else:
        reactions = np.zeros(len(table), dtype=bool)
    precursors = table[~reactions].reset_index(drop=True)
    starts, ends = alarm_cover(precursors, params.lead_window_h)
    cover = merge_intervals(starts, ends).intersect(monitored)
    reaction_starts, reaction_ends = alarm_cover(table[reactions], params.lead_window_h)
    reaction_cover = merge_intervals(reaction_starts, reaction_ends)

    candidates = candidate_mask(catalog, farm_lat, farm_lon, params)
    cat = _catalog_arrays(catalog)
    is_target = candidates & monitored.contains(cat["time"])
    if declustered:
        if mainshocks is None:
            mainshocks = gardner_knopoff(
                catalog, params.foreshock_fraction, params.decluster_window
            )
        is_target &= np.asarray(mainshocks, dtype=bool)
    is_target = merge_close_targets(catalog, is_target, params)
    target_rows = np.flatnonzero(is_target)
    target_rows = target_rows[np.argsort(cat["time"][target_rows], kind="stable")]
    target_ns = cat["time"][target_rows]
    hit = cover.contains(target_ns)
    n_targets, n_hits = int(target_rows.size), int(hit.sum())

    # false alarms: covers containing no target
    sorted_targets = np.sort(target_ns)
    if len(precursors) and n_targets:
        first = np.searchsorted(sorted_targets, starts, side="left")
        has = first < n_targets
        has[has] = sorted_targets[first[has]] < ends[has]
        false_alarms = int((~has).sum())
    else:
        false_alarms = len(precursors)

    total = monitored.total_ns
    tau = cover.total_ns / total if total else float("nan")
    rate = n_hits / n_targets if n_targets else float("nan")
    has_alarm_time = bool(total) and cover.total_ns > 0
    gain = rate / tau if n_targets and has_alarm_time else float("nan")
    if n_targets:
        reason = None if has_alarm_time else NO_ALARMS
    else:
        in_monitored = candidates & monitored.contains(cat["time"])
        reason = NO_TARGETS_LEFT if declustered and in_monitored.any() else NO_TARGETS
    shift_reason = reason or (NO_SHIFTS if params.n_shifts <= 0 else None)
    if shift_reason is None:
        shifts = shift_offsets_ns(total, params.n_shifts, params.seed)
        shift_hits = circular_shift_hits(cover, target_ns, monitored, shifts)
    else:
        shift_hits = np.zeros(0, dtype=np.int64)
    p_shift = shift_pvalue(shift_hits, n_hits) if shift_reason is None else float("nan")
    perfect_shift = shift_pvalue(shift_hits, n_targets) if shift_reason is None else float("nan")

    distance = great_circle_km(farm_lat, farm_lon, cat["lat"], cat["lon"])
    radius = _radius_km(cat["mag"], params)
    depth = (
        catalog["depth_km"].to_numpy(np.float64)
        if "depth_km" in catalog
        else np.full(len(catalog), np.nan)
    )

    def row_of(r: int) -> dict[str, Any]:
        return {
            "time": pd.Timestamp(int(cat["time"][r]), tz="UTC").isoformat(),
            "magnitude": float(cat["mag"][r]),
            "latitude": float(cat["lat"][r]),
            "longitude": float(cat["lon"][r]),
            "depth_km": float(depth[r]),
            "distance_km": float(distance[r]),
            "hypocentral_km": float(hypocentral_km(distance[r], depth[r], farm_elevation_km)),
            "radius_km": float(radius[r]),
        }

    targets_out, hits_out = [], []
    for k, r in enumerate(target_rows):
        t = int(cat["time"][r])
        item = row_of(int(r))
        if hit[k]:
            covering = np.flatnonzero((starts <= t) & (t < ends))
            alarm = precursors.iloc[int(covering[0])]
            item.update(
                status="hit",
                hit=True,
                alarm_start=alarm["start"].isoformat(),
                alarm_declared_at=alarm["declared_at"].isoformat(),
                lead_time_h=lead_time_h(item["time"], alarm["declared_at"]),
                hours_after_alarm_end=(t - alarm["end"].value) / _NS_PER_H,
            )
            hits_out.append(item)
        else:
            in_reaction = bool(reaction_cover.contains(np.array([t]))[0])
            item.update(status="reaction cover" if in_reaction else "miss", hit=False)
        targets_out.append(item)
    uncounted = []
    for r in np.flatnonzero(candidates & ~is_target):
        item = row_of(int(r))
        inside = bool(monitored.contains(np.array([cat["time"][r]]))[0])
        item.update(status="not counted" if inside else "not monitored", hit=False)
        uncounted.append(item)

    ci = clopper_pearson(n_hits, n_targets, params.alpha)
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
        p_binomial=binomial_pvalue(n_hits, n_targets, tau) if reason is None else float("nan"),
        p_shift=p_shift,
        n_shifts=params.n_shifts,
        monitored_h=total / _NS_PER_H,
        alarmed_h=cover.total_ns / _NS_PER_H,
        declustered=declustered,
        hit_rate=rate,
        hit_rate_interval=list(ci),
        gain_interval=list(gain_interval(n_hits, n_targets, tau, params.alpha)),
        confidence_level=1.0 - params.alpha,
        p_binomial_reason=reason,
        p_shift_reason=shift_reason,
        perfect_p_binomial=float(tau**n_targets) if reason is None else float("nan"),
        perfect_p_shift=perfect_shift,
        hit_list=hits_out,
        target_list=targets_out,
        uncounted=uncounted,
        params=params.as_dict(),
        cover=cover,
        target_ns=target_ns,
        shift_hits=shift_hits,
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
