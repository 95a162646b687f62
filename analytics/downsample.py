"""Downsampling of activity series for plotting: keep the peaks, keep the gaps.

A month of 1-minute samples (43,200 points) is more than a screen can show. The
panel reduces a series to at most a few thousand points with the *min/max per bucket*
scheme: the time range is cut into equal buckets and each bucket is represented by its
smallest and its largest sample, in the order in which they occurred. Peaks (the surges
the alarm rule looks for) and troughs therefore survive any zoom level, unlike a mean.

Gaps stay gaps: wherever consecutive points are further apart than ``gap_factor`` times
the expected spacing, a NaN point is inserted, which plotting libraries draw as a break
in the line instead of a straight segment across the missing data.

Pure numpy; times are int64 UTC epoch milliseconds, values are floats in any unit.
"""

from __future__ import annotations

import numpy as np


class DownsampleError(ValueError):
    """Invalid input to a downsampling function (reason in the message)."""


def _check(times_ms: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(times_ms, dtype=np.int64)
    v = np.asarray(values, dtype=np.float64)
    if t.ndim != 1 or v.ndim != 1 or t.shape != v.shape:
        raise DownsampleError(
            f"times and values must be 1-D of equal length, got {t.shape} and {v.shape}"
        )
    if t.size > 1 and np.any(np.diff(t) < 0):
        raise DownsampleError("times must be sorted in increasing order")
    return t, v


def bucket_width_ms(start_ms: int, end_ms: int, max_points: int, resolution_ms: int) -> int:
    """Width of the min/max buckets so that a range yields at most ``max_points`` points.

    start_ms, end_ms : range [UTC epoch ms], end exclusive.
    max_points : largest number of points wanted (each bucket gives up to two) [-].
    resolution_ms : native sample spacing [ms]; buckets are a whole multiple of it.
    Returns the bucket width [ms]; equal to ``resolution_ms`` when no reduction is needed.
    """
    if max_points < 2:
        raise DownsampleError(f"max_points must be >= 2, got {max_points}")
    if resolution_ms <= 0:
        raise DownsampleError(f"resolution_ms must be > 0, got {resolution_ms}")
    span = max(int(end_ms) - int(start_ms), resolution_ms)
    n_buckets = max(max_points // 2, 1)
    if span // resolution_ms <= max_points:
        return int(resolution_ms)
    width = -(-span // n_buckets)  # ceiling division
    return int(-(-width // resolution_ms) * resolution_ms)


def minmax_downsample(
    times_ms: np.ndarray, values: np.ndarray, max_points: int, start_ms: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Reduce a series to the min and max sample of each time bucket (peaks kept).

    times_ms : sorted sample times [UTC epoch ms].
    values : sample values [any unit]; NaN samples are ignored.
    max_points : largest number of points returned [-] (>= 2).
    start_ms : left edge of the first bucket [UTC epoch ms]; default the first sample.
    Returns (times_ms, values) of at most ``max_points`` points, in time order. Each
    bucket contributes its minimum and maximum at their own sample times (one point when
    they coincide). A series already short enough is returned unchanged (minus NaNs).
    """
    t, v = _check(times_ms, values)
    keep = np.isfinite(v)
    t, v = t[keep], v[keep]
    if max_points < 2:
        raise DownsampleError(f"max_points must be >= 2, got {max_points}")
    if t.size <= max_points:
        return t, v
    origin = int(t[0] if start_ms is None else min(start_ms, int(t[0])))
    n_buckets = max_points // 2
    span = int(t[-1]) - origin + 1
    width = -(-span // n_buckets)
    bucket = (t - origin) // width
    # boundaries of each bucket's run of samples (t is sorted, so buckets are contiguous)
    starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
    # argmin/argmax per bucket, vectorised: sort by (bucket, value); since buckets are
    # contiguous runs of the sorted times, a bucket's first sorted position is its start.
    idx_min = np.lexsort((v, bucket))[starts]
    idx_max = np.lexsort((-v, bucket))[starts]
    picked = np.unique(np.concatenate([idx_min, idx_max]))
    return t[picked], v[picked]


def insert_gaps(
    times_ms: np.ndarray, values: np.ndarray, spacing_ms: int, gap_factor: float = 1.5
) -> tuple[np.ndarray, np.ndarray]:
    """Insert a NaN point wherever consecutive points are further apart than expected.

    times_ms : sorted point times [UTC epoch ms].
    values : point values [any unit].
    spacing_ms : expected spacing between consecutive points [ms] (the resolution, or
        for min/max output the bucket width; a pair inside one bucket is closer).
    gap_factor : a step longer than ``gap_factor * spacing_ms`` is a gap [-].
    Returns (times_ms, values) with one NaN point in the middle of every gap.
    """
    t, v = _check(times_ms, values)
    if spacing_ms <= 0:
        raise DownsampleError(f"spacing_ms must be > 0, got {spacing_ms}")
    if t.size < 2:
        return t, v
    steps = np.diff(t)
    gaps = np.flatnonzero(steps > gap_factor * spacing_ms)
    if gaps.size == 0:
        return t, v
    gap_times = t[gaps] + steps[gaps] // 2
    out_t = np.insert(t, gaps + 1, gap_times)
    out_v = np.insert(v, gaps + 1, np.nan)
    return out_t, out_v


def merge_bucket_extremes(
    bucket_ms: np.ndarray, minima: np.ndarray, maxima: np.ndarray, width_ms: int
) -> tuple[np.ndarray, np.ndarray]:
    """Turn per-bucket (min, max) aggregates into a plottable line that keeps the peaks.

    bucket_ms : bucket start times [UTC epoch ms], sorted.
    minima, maxima : smallest and largest value in each bucket [any unit].
    width_ms : bucket width [ms].
    Returns (times_ms, values): for each bucket the minimum at 1/4 and the maximum at 3/4
    of the bucket (or a single point at the bucket centre when they are equal), with NaN
    points inserted across empty buckets so that gaps are drawn as gaps.
    """
    b, lo = _check(bucket_ms, minima)
    _, hi = _check(bucket_ms, maxima)
    if width_ms <= 0:
        raise DownsampleError(f"width_ms must be > 0, got {width_ms}")
    keep = np.isfinite(lo) & np.isfinite(hi)
    b, lo, hi = b[keep], lo[keep], hi[keep]
    if b.size == 0:
        return b, lo
    same = lo == hi
    times = np.empty(2 * b.size, dtype=np.int64)
    vals = np.empty(2 * b.size, dtype=np.float64)
    times[0::2] = b + width_ms // 4
    times[1::2] = b + (3 * width_ms) // 4
    vals[0::2] = lo
    vals[1::2] = hi
    drop = np.zeros(2 * b.size, dtype=bool)
    drop[1::2] = same
    times[0::2][same] = b[same] + width_ms // 2
    times, vals = times[~drop], vals[~drop]
    # points of adjacent buckets are at most 0.75 widths apart; across an empty bucket
    # they are at least 1.5 widths apart
    return insert_gaps(times, vals, width_ms, gap_factor=1.25)
