"""The sustained-surge rule: baseline, anomalous samples, alarm episodes, herd and quorum.

Definitions (DESIGN.md, "The anomaly rule"; all parameters in ``RuleParams``):

- baseline b(t) = median of x(t - k * 24 h) for k = 1..``baseline_days`` (the same time of
  day on each previous day, never the current day), defined only when at least
  ``min_baseline_days`` of those values exist. "Same time of day" is taken in **UTC**:
  t - k * 24 h exactly. A local daylight-saving change therefore needs no special case
  (every UTC day has 24 h), but a routine that follows local clock time (milking at 07:00
  local) moves by one hour in UTC on the change day and is compared with the other hour
  for the next few days; ``tests/analytics/test_rule.py`` shows the effect.
- a sample is anomalous when x(t) >= b(t) * (1 + ``increase_pct`` / 100). Where b(t) = 0
  the ratio x/b is infinite for x > 0 (anomalous) and undefined for x = 0 (not anomalous).
- an episode is a maximal run of consecutive anomalous samples on the regular grid of
  resolution Δ (a missing sample breaks the run) whose span end - start + Δ is at least
  ``min_duration_min``. ``end`` is the last anomalous sample.
- declaration time: the rule can only know an episode once its run has lasted
  ``min_duration``. ``declared_at`` = the end of the sample at which the span first reaches
  ``min_duration``: with k = ceil(min_duration / Δ) samples, start + k·Δ when a timestamp
  labels the start of its window (``sample_label`` "start", the default: a sample labelled
  t covers [t, t + Δ)), start + (k - 1)·Δ when it labels the end. ``declaration_time`` is
  the one implementation, shared by offline analysis, the panel and live detection.

Series are regular: timestamps must lie on a grid of step Δ (missing samples allowed, they
become NaN), and 24 h must be a whole number of steps. Everything is computed in UTC.

Incremental use: the flags of a sample depend only on the sample and on the
``baseline_days`` previous days, never on later data. Running ``detect`` on a window that
starts ``baseline_days`` * 24 h (plus ``min_duration``) before the first new sample gives
exactly the flags and episodes of a full run for the new samples.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from namazu.analytics.params import RuleParams

#: Elements processed per chunk by ``detect_matrix`` (bounds memory to a few tens of MB).
CHUNK_ELEMENTS = 1 << 19

_DAY = pd.Timedelta(days=1)


class SeriesError(ValueError):
    """An activity series cannot be put on a regular UTC grid (reason in the message)."""


@dataclass(frozen=True)
class Episode:
    """One alarm episode of the rule.

    start, end : pd.Timestamp (UTC). First and last anomalous sample.
    declared_at : pd.Timestamp (UTC). When the rule could first know the episode: the end
        of the sample at which the span reached ``min_duration`` (``declaration_time``).
    n_samples : int. Number of samples in the run.
    peak_ratio, mean_ratio : float. Largest and mean x/b over the run [-].
    duration_min : float. end - start + Δ [min].
    params : dict. ``RuleParams.as_dict()`` (includes the rule version).
    series : str. Name of the series the episode belongs to ("" when unnamed).
    """

    start: pd.Timestamp
    end: pd.Timestamp
    declared_at: pd.Timestamp
    n_samples: int
    peak_ratio: float
    mean_ratio: float
    duration_min: float
    params: dict[str, Any] = field(hash=False, compare=True)
    series: str = ""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict: ISO 8601 UTC times, numbers, parameters."""
        return {
            "series": self.series,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "declared_at": self.declared_at.isoformat(),
            "n_samples": self.n_samples,
            "duration_min": self.duration_min,
            "peak_ratio": _json_float(self.peak_ratio),
            "mean_ratio": _json_float(self.mean_ratio),
            "params": dict(self.params),
        }


def _json_float(value: float) -> float | str:
    return value if np.isfinite(value) else ("inf" if value > 0 else "nan")


def _resolution(resolution: Any) -> pd.Timedelta:
    try:
        step = pd.Timedelta(pd.tseries.frequencies.to_offset(resolution))
    except (ValueError, TypeError) as exc:
        raise SeriesError(f"resolution {resolution!r} is not a time step like '15min'") from exc
    if step <= pd.Timedelta(0):
        raise SeriesError(f"resolution must be positive, got {resolution!r}")
    if _DAY % step != pd.Timedelta(0):
        raise SeriesError(f"resolution {resolution!r} does not divide 24 h into whole steps")
    return step


def samples_per_day(resolution: Any) -> int:
    """Number of samples in 24 h at this resolution (e.g. "15min" -> 96) [-]."""
    return int(_DAY // _resolution(resolution))


def samples_to_declare(resolution: Any, params: RuleParams = RuleParams()) -> int:
    """Samples a run needs before its span reaches ``min_duration``: ceil(min_duration / Δ)."""
    step_ns = _resolution(resolution).value
    min_ns = pd.Timedelta(minutes=params.min_duration_min).value
    return max(1, -(-min_ns // step_ns))


def declaration_time(
    start: pd.Timestamp, resolution: Any, params: RuleParams = RuleParams()
) -> pd.Timestamp:
    """When an episode that starts at ``start`` is first known to the rule.

    start : pd.Timestamp. Label of the first anomalous sample of the run.
    resolution : the grid step Δ ("15min").
    params : RuleParams (``min_duration_min`` and ``sample_label`` are used).
    Returns the end of the sample at which the span end - start + Δ first reaches
    ``min_duration``: start + k·Δ with k = ``samples_to_declare`` for ``sample_label``
    "start" (a sample covers [t, t + Δ)), start + (k - 1)·Δ for "end" (it covers
    [t - Δ, t)). At 15 min and 45 min: start + 45 min, or start + 30 min.
    """
    step = _resolution(resolution)
    k = samples_to_declare(step, params)
    return pd.Timestamp(start) + (k if params.sample_label == "start" else k - 1) * step


def _utc_index(index: pd.Index) -> pd.DatetimeIndex:
    if not isinstance(index, pd.DatetimeIndex):
        raise SeriesError("the series index must be a DatetimeIndex of sample times")
    if index.tz is None:
        raise SeriesError("the series index has no time zone; localise it (UTC) first")
    utc = index.tz_convert("UTC").as_unit("ns")
    if not utc.is_monotonic_increasing:
        raise SeriesError("sample times are not sorted in increasing order")
    if utc.has_duplicates:
        first = utc[utc.duplicated()][0]
        raise SeriesError(f"duplicated sample time {first.isoformat()}")
    return utc


def regular_grid(index: pd.Index, resolution: Any) -> pd.DatetimeIndex:
    """The regular UTC grid from the first to the last sample time at this resolution.

    index : DatetimeIndex, tz-aware, sorted, unique; every time on the grid of step Δ.
    resolution : pandas offset, Timedelta or string ("1min", "15min").
    Returns DatetimeIndex (UTC, ns) including the times of missing samples.
    Raises SeriesError when a time is off the grid, unsorted, duplicated or naive.
    """
    step = _resolution(resolution)
    utc = _utc_index(index)
    if len(utc) == 0:
        return utc
    offsets = (utc - utc[0]) % step
    off = offsets != pd.Timedelta(0)
    if off.any():
        bad = utc[np.asarray(off)][0]
        raise SeriesError(
            f"sample time {bad.isoformat()} is not on the {step} grid starting at "
            f"{utc[0].isoformat()}"
        )
    return pd.date_range(utc[0], utc[-1], freq=step, tz="UTC").as_unit("ns")


def _on_grid(values: pd.Series | pd.DataFrame, resolution: Any):
    grid = regular_grid(values.index, resolution)
    frame = values.copy()
    frame.index = _utc_index(values.index)
    frame = frame.reindex(grid)
    return grid, frame


# ---------------------------------------------------------------------------- core


def _sorting_network(n: int) -> list[tuple[int, int]]:
    """Batcher odd-even merge sort comparators for n inputs (padding above n dropped)."""
    size = 1
    while size < n:
        size *= 2
    pairs: list[tuple[int, int]] = []
    p = 1
    while p < size:
        k = p
        while k >= 1:
            j = k % p
            while j < size - k:
                for i in range(min(k, size - j - k)):
                    a, b = i + j, i + j + k
                    if (a // (2 * p)) == (b // (2 * p)) and b < n:
                        pairs.append((a, b))
                j += 2 * k
            k //= 2
        p *= 2
    return pairs


def _lagged_median(x: np.ndarray, per_day: int, days: int, min_days: int) -> np.ndarray:
    """Median of x[..., t - k*per_day], k=1..days, where >= min_days exist (NaN otherwise)."""
    rows, n = x.shape
    lags: list[np.ndarray] = []
    count = np.zeros((rows, n), dtype=np.int8)
    for k in range(1, days + 1):
        lag = np.full((rows, n), np.inf)
        shift = k * per_day
        if shift < n:
            lag[:, shift:] = x[:, : n - shift]
        valid = np.isfinite(lag)
        count += valid
        lag[~valid] = np.inf  # missing values sort to the top
        lags.append(lag)
    spare = np.empty((rows, n))
    for a, b in _sorting_network(days):
        np.minimum(lags[a], lags[b], out=spare)
        np.maximum(lags[a], lags[b], out=lags[b])
        lags[a], spare = spare, lags[a]
    median = np.full((rows, n), np.nan)
    for c in range(min_days, days + 1):
        lo, hi = (c - 1) // 2, c // 2
        middle = lags[lo] if lo == hi else 0.5 * (lags[lo] + lags[hi])
        np.copyto(median, middle, where=count == c)
    return median


def _anomalous(x: np.ndarray, base: np.ndarray, params: RuleParams) -> np.ndarray:
    factor = 1.0 + params.increase_pct / 100.0
    with np.errstate(invalid="ignore"):
        flags = (x >= base * factor) & ((base > 0) | (x > 0))
    return flags & np.isfinite(x) & np.isfinite(base)


def detect_matrix(
    values: np.ndarray, samples_per_day: int, params: RuleParams = RuleParams()
) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised rule over many regular series at once.

    values : ndarray, shape (n_series, n_samples) or (n_samples,). Activity on a regular
        grid, NaN = missing [any unit; the rule is scale-free].
    samples_per_day : int. Samples per 24 h at the grid's resolution [-].
    params : RuleParams.
    Returns (anomalous, baseline): bool and float ndarrays of the input's shape; baseline
    in the unit of ``values``, NaN where undefined. Processed in chunks of about
    ``CHUNK_ELEMENTS`` so memory stays bounded.
    """
    x = np.asarray(values, dtype=np.float64)
    squeeze = x.ndim == 1
    if squeeze:
        x = x[None, :]
    if x.ndim != 2:
        raise ValueError(f"values must be 1-D or 2-D, got shape {x.shape}")
    if samples_per_day < 1:
        raise ValueError(f"samples_per_day must be >= 1, got {samples_per_day}")
    if params.baseline_clock != "utc":
        raise ValueError(
            "detect_matrix compares the same UTC time of day; baseline_clock local needs the "
            "sample times (detect, or local_baseline)"
        )
    n_series, n = x.shape
    base = np.empty_like(x)
    flags = np.zeros(x.shape, dtype=bool)
    if n:
        rows = max(1, CHUNK_ELEMENTS // n)
        for r0 in range(0, n_series, rows):
            chunk = x[r0 : r0 + rows]
            b = _lagged_median(
                chunk, samples_per_day, params.baseline_days, params.min_baseline_days
            )
            base[r0 : r0 + rows] = b
            flags[r0 : r0 + rows] = _anomalous(chunk, b, params)
    if squeeze:
        return flags[0], base[0]
    return flags, base


def local_baseline(
    values: np.ndarray, index: pd.DatetimeIndex, resolution: Any, params: RuleParams
) -> np.ndarray:
    """Baseline at the same local clock time of the previous days (``baseline_clock`` local).

    values : ndarray (n_series, n_samples) on the regular UTC grid ``index`` [any unit].
    index : DatetimeIndex (UTC) of the grid.
    resolution : the grid step Δ; it must divide the zone's UTC-offset changes.
    params : RuleParams (baseline_days, min_baseline_days, clock_timezone).
    Returns ndarray like ``values`` [unit of values], NaN where fewer than
    min_baseline_days previous days have a value at that local clock time.
    """
    step = _resolution(resolution)
    x = np.atleast_2d(np.asarray(values, dtype=np.float64))
    if len(index) == 0:
        return np.full(x.shape, np.nan)
    wall = pd.DatetimeIndex(index).tz_convert(params.clock_timezone).tz_localize(None)
    offset = wall - wall.min()
    if (offset % step != pd.Timedelta(0)).any():
        raise SeriesError(
            f"resolution {resolution!r} does not divide the UTC-offset changes of "
            f"{params.clock_timezone}; a local-clock baseline needs it"
        )
    position = np.asarray(offset // step, dtype=np.int64)
    slots, first = np.unique(position, return_index=True)  # a repeated wall time: the first
    wall_values = np.full((x.shape[0], int(slots[-1]) + 1), np.nan)
    wall_values[:, slots] = x[:, first]
    wall_base = _lagged_median(
        wall_values, int(_DAY // step), params.baseline_days, params.min_baseline_days
    )
    return wall_base[:, position]


def _flags_and_baseline(
    x: np.ndarray, grid: pd.DatetimeIndex, resolution: Any, params: RuleParams
) -> tuple[np.ndarray, np.ndarray]:
    """``detect_matrix`` on the UTC clock, ``local_baseline`` on the local one."""
    if params.baseline_clock == "utc":
        return detect_matrix(x, samples_per_day(resolution), params)
    matrix = np.atleast_2d(x)
    base = local_baseline(matrix, grid, resolution, params)
    flags = _anomalous(matrix, base, params)
    return (flags[0], base[0]) if x.ndim == 1 else (flags, base)


def _ratio(x: np.ndarray, base: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = x / base
    ratio[~(np.isfinite(x) & np.isfinite(base))] = np.nan
    ratio[(base == 0) & (x == 0)] = np.nan
    return ratio


def episodes_from_flags(
    flags: np.ndarray,
    index: pd.DatetimeIndex,
    resolution: Any,
    params: RuleParams = RuleParams(),
    ratio: np.ndarray | None = None,
    series: str = "",
) -> list[Episode]:
    """Alarm episodes from per-sample anomalous flags.

    flags : bool array, one per time of ``index``.
    index : DatetimeIndex (tz-aware), sorted. Consecutive times further apart than Δ
        break a run (so a grid with missing samples removed also works).
    resolution : the series' step Δ.
    params : RuleParams (min_duration_min is used; all are recorded).
    ratio : optional float array x/b per sample, for peak and mean ratio [-].
    series : name stored with each episode.
    Returns list[Episode] ordered by start, each with span end - start + Δ >= min_duration
    and its ``declared_at`` (``declaration_time``).
    """
    step = _resolution(resolution)
    utc = _utc_index(pd.DatetimeIndex(index))
    on = np.asarray(flags, dtype=bool)
    if on.shape != (len(utc),):
        raise ValueError(f"flags has shape {on.shape}, index has {len(utc)} times")
    if not on.any():
        return []
    t = utc.asi8
    step_ns = step.value
    contiguous = np.zeros(len(t), dtype=bool)  # sample continues the previous one's run
    contiguous[1:] = (np.diff(t) == step_ns) & on[:-1]
    starts = np.flatnonzero(on & ~contiguous)
    # a run continues while the next sample is anomalous and exactly one step later
    ends_mask = on.copy()
    ends_mask[:-1] &= ~(on[1:] & (np.diff(t) == step_ns))
    ends = np.flatnonzero(ends_mask)
    ratios = None if ratio is None else np.asarray(ratio, dtype=np.float64)
    min_ns = pd.Timedelta(minutes=params.min_duration_min).value
    record = params.as_dict()
    spans_ns = t[ends] - t[starts] + step_ns
    long_enough = spans_ns >= min_ns  # most runs are short: dropped here, not in the loop
    episodes = []
    for s, e, span_ns in zip(
        starts[long_enough], ends[long_enough], spans_ns[long_enough].tolist(), strict=True
    ):
        if ratios is not None:
            run = ratios[s : e + 1]
            finite = run[~np.isnan(run)]
            peak = float(finite.max()) if finite.size else float("nan")
            mean = float(finite.mean()) if finite.size else float("nan")
        else:
            peak = mean = float("nan")
        episodes.append(
            Episode(
                start=utc[s],
                end=utc[e],
                declared_at=declaration_time(utc[s], step, params),
                n_samples=int(e - s + 1),
                peak_ratio=peak,
                mean_ratio=mean,
                duration_min=span_ns / 60e9,
                params=record,
                series=series,
            )
        )
    return episodes


# ---------------------------------------------------------------------- Series API


def baseline(values: pd.Series, resolution: Any, params: RuleParams = RuleParams()) -> pd.Series:
    """Baseline of a series: median of the same time of day (UTC or local) on previous days.

    values : pd.Series indexed by tz-aware sample times on a grid of step ``resolution``
        (missing samples allowed). Activity [any unit, e.g. g].
    resolution : pandas offset, Timedelta or string ("1min", "15min").
    params : RuleParams (baseline_days, min_baseline_days).
    Returns pd.Series on the full regular UTC grid, in the unit of ``values``; NaN where
    fewer than min_baseline_days previous-day values exist.
    """
    grid, series = _on_grid(values.astype(np.float64), resolution)
    _, base = _flags_and_baseline(series.to_numpy(), grid, resolution, params)
    return pd.Series(base, index=grid, name="baseline")


def detect(
    values: pd.Series,
    resolution: Any,
    params: RuleParams = RuleParams(),
    return_components: bool = False,
) -> list[Episode] | tuple[list[Episode], pd.DataFrame]:
    """Alarm episodes of one activity series under the sustained-surge rule.

    values : pd.Series indexed by tz-aware sample times on a grid of step ``resolution``.
        Activity [any unit]; NaN or absent times are missing samples.
    resolution : the grid step Δ ("15min", "1min", Timedelta).
    params : RuleParams.
    return_components : also return a DataFrame on the full UTC grid with columns
        ``value``, ``baseline``, ``threshold`` (baseline * (1 + increase_pct/100)),
        ``ratio`` (value / baseline [-]) and ``anomalous`` (bool).
    Returns list[Episode], or (list[Episode], DataFrame) with return_components.
    """
    grid, series = _on_grid(values.astype(np.float64), resolution)
    x = series.to_numpy()
    flags, base = _flags_and_baseline(x, grid, resolution, params)
    ratio = _ratio(x, base)
    name = "" if values.name is None else str(values.name)
    episodes = episodes_from_flags(flags, grid, resolution, params, ratio, series=name)
    if not return_components:
        return episodes
    components = pd.DataFrame(
        {
            "value": x,
            "baseline": base,
            "threshold": base * (1.0 + params.increase_pct / 100.0),
            "ratio": ratio,
            "anomalous": flags,
        },
        index=grid,
    )
    return episodes, components


# ------------------------------------------------------------------ herds, quorum


def reporting_counts(wide: pd.DataFrame) -> pd.Series:
    """Number of animals with a value at each time.

    wide : DataFrame, one column per animal, rows = sample times.
    Returns pd.Series of int [animals].
    """
    return wide.notna().sum(axis=1).rename("reporting")


def herd_series(wide: pd.DataFrame, missing: Literal["sum", "scale"] = "sum") -> pd.Series:
    """Collective activity of a herd.

    wide : DataFrame, one column per animal, rows = sample times. Activity [g].
    missing : how animals without a value at a time are treated.
        "sum" (default): the sum over the animals reporting at that time; an animal that
        drops out lowers the sum and one that returns raises it, so compare with
        ``reporting_counts`` when reading herd alarms.
        "scale": the mean over the reporting animals times the number of animals
        (columns), i.e. missing animals are imputed by the herd mean.
    Returns pd.Series [g], NaN where no animal reports.
    """
    count = wide.notna().sum(axis=1)
    if missing == "sum":
        total = wide.sum(axis=1, min_count=1)
    elif missing == "scale":
        total = wide.mean(axis=1) * wide.shape[1]
    else:
        raise ValueError(f"missing must be 'sum' or 'scale', got {missing!r}")
    return total.where(count > 0).rename("herd")


def species_series(
    wide: pd.DataFrame, species: Mapping[str, str], missing: Literal["sum", "scale"] = "sum"
) -> pd.DataFrame:
    """Collective activity per species group (``herd_series`` of each group).

    wide : DataFrame, one column per animal. Activity [g].
    species : mapping animal id -> species name; every column must be mapped.
    Returns DataFrame, one column per species [g].
    """
    unmapped = [str(c) for c in wide.columns if c not in species]
    if unmapped:
        raise KeyError(f"no species given for animals: {', '.join(unmapped)}")
    groups = {}
    for name in sorted({species[c] for c in wide.columns}):
        columns = [c for c in wide.columns if species[c] == name]
        groups[name] = herd_series(wide[columns], missing=missing)
    return pd.DataFrame(groups, index=wide.index)


def quorum_flags(
    anomalous: np.ndarray,
    judged: np.ndarray,
    quorum: float,
    min_judged: float = 1.0,
    return_components: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Samples at which the herd quorum holds.

    anomalous : bool ndarray, shape (n_animals, n_samples). The rule's per-animal flags.
    judged : bool ndarray, same shape. True where the animal has a value and a defined
        baseline; only judged animals count (an anomalous flag elsewhere is ignored).
    quorum : float. Fraction of the judged animals that must be anomalous at once [0..1].
    min_judged : float. Fewest judged animals for the quorum to be decided at all
        [animals]; at least one animal is always required. Where fewer are judged the
        sample is not a quorum sample (too little data is never read as unrest).
    return_components : also return the counts of judged and of anomalous animals per
        sample (int ndarrays of shape (n_samples,)).
    Returns bool ndarray (n_samples,): anomalous >= quorum * judged and
    judged >= max(1, min_judged); or (flags, judged_count, anomalous_count).
    """
    flags_in = np.asarray(anomalous, dtype=bool)
    judged_in = np.asarray(judged, dtype=bool)
    if flags_in.shape != judged_in.shape or flags_in.ndim != 2:
        raise ValueError(
            f"anomalous {flags_in.shape} and judged {judged_in.shape} must be the same 2-D shape"
        )
    judged_count = judged_in.sum(axis=0)
    anomalous_count = (flags_in & judged_in).sum(axis=0)
    flags = (judged_count >= max(1.0, float(min_judged))) & (
        anomalous_count >= quorum * judged_count
    )
    if return_components:
        return flags, judged_count, anomalous_count
    return flags


def quorum_episodes(
    wide: pd.DataFrame,
    resolution: Any,
    params: RuleParams = RuleParams(),
    return_components: bool = False,
) -> list[Episode] | tuple[list[Episode], pd.DataFrame]:
    """Herd quorum alarms: at least ``quorum`` of the judged animals anomalous at once.

    wide : DataFrame indexed by tz-aware sample times on the grid, one column per animal.
    resolution : grid step Δ.
    params : RuleParams (quorum and min_duration_min in particular).
    An animal is *judged* at a time when it has a value and a defined baseline; the
    quorum holds when anomalous >= quorum * judged and judged >= 1. Episodes are runs of
    quorum samples lasting >= min_duration; their ratio is the median x/b of the judged
    animals. With return_components, also a DataFrame with columns ``judged``,
    ``anomalous`` (counts), ``fraction`` and ``quorum`` (bool).
    """
    grid, frame = _on_grid(wide.astype(np.float64), resolution)
    x = frame.to_numpy().T
    flags, base = _flags_and_baseline(x, grid, resolution, params)
    quorum, judged, anomalous = quorum_flags(
        flags, np.isfinite(x) & np.isfinite(base), params.quorum, return_components=True
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        fraction = np.where(judged > 0, anomalous / np.maximum(judged, 1), np.nan)
    ratio = _ratio(x, base)
    all_nan = np.isnan(ratio).all(axis=0)
    median_ratio = np.full(len(grid), np.nan)
    if (~all_nan).any():
        median_ratio[~all_nan] = np.nanmedian(ratio[:, ~all_nan], axis=0)
    episodes = episodes_from_flags(quorum, grid, resolution, params, median_ratio, "quorum")
    if not return_components:
        return episodes
    components = pd.DataFrame(
        {"judged": judged, "anomalous": anomalous, "fraction": fraction, "quorum": quorum},
        index=grid,
    )
    return episodes, components
