"""Min/max downsampling keeps peaks, troughs and gaps."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from namazu.analytics.downsample import (
    DownsampleError,
    bucket_width_ms,
    insert_gaps,
    merge_bucket_extremes,
    minmax_downsample,
)

MIN = 60_000


def month_of_minutes(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    t = np.arange(30 * 1440, dtype=np.int64) * MIN
    v = np.random.default_rng(seed).gamma(2.0, 0.05, t.size)
    return t, v


def test_minmax_keeps_every_bucket_extreme():
    t, v = month_of_minutes()
    v[12_345] = 9.0  # a one-sample spike
    v[23_456] = -1.0  # a one-sample dip
    out_t, out_v = minmax_downsample(t, v, 1000)
    assert out_t.size <= 1000
    assert out_v.max() == 9.0 and out_v.min() == -1.0
    assert 12_345 * MIN in out_t and 23_456 * MIN in out_t
    assert np.all(np.diff(out_t) > 0)
    # every output point is a real sample
    assert_allclose(out_v, v[out_t // MIN])


def test_minmax_of_each_bucket_matches_a_direct_computation():
    t, v = month_of_minutes(1)
    out_t, out_v = minmax_downsample(t, v, 200)
    width = -(-(t[-1] + 1) // 100)
    for b in range(100):
        inside = (t // width) == b
        picked = (out_t // width) == b
        assert set(out_v[picked]) == {v[inside].min(), v[inside].max()}


def test_short_series_and_nans():
    t = np.arange(5, dtype=np.int64) * MIN
    v = np.array([1.0, np.nan, 3.0, 2.0, 0.5])
    out_t, out_v = minmax_downsample(t, v, 10)
    assert_array_equal(out_t, t[[0, 2, 3, 4]])
    assert_array_equal(out_v, [1.0, 3.0, 2.0, 0.5])


def test_bad_input_is_named():
    with pytest.raises(DownsampleError, match="sorted"):
        minmax_downsample(np.array([2, 1]), np.array([1.0, 2.0]), 10)
    with pytest.raises(DownsampleError, match="equal length"):
        minmax_downsample(np.array([1, 2]), np.array([1.0]), 10)
    with pytest.raises(DownsampleError, match="max_points"):
        bucket_width_ms(0, 10, 1, MIN)


def test_bucket_width():
    day = 86_400_000
    assert bucket_width_ms(0, day, 2000, MIN) == MIN  # 1440 samples fit
    width = bucket_width_ms(0, 30 * day, 2000, MIN)
    assert width % MIN == 0 and (30 * day) / width <= 1000
    assert bucket_width_ms(0, 365 * day, 2000, MIN) >= 365 * day / 1000


def test_insert_gaps_marks_each_gap_once():
    t = np.array([0, 1, 2, 10, 11, 30], dtype=np.int64) * MIN
    v = np.arange(6, dtype=float)
    out_t, out_v = insert_gaps(t, v, MIN)
    assert np.isnan(out_v).sum() == 2
    assert_array_equal(out_t[np.isnan(out_v)], [6 * MIN, (11 * MIN + 30 * MIN) // 2])


def test_merge_bucket_extremes_orders_points_and_breaks_at_empty_buckets():
    width = 10 * MIN
    buckets = np.array([0, 1, 2, 5], dtype=np.int64) * width
    lo = np.array([1.0, 2.0, 3.0, 4.0])
    hi = np.array([5.0, 2.0, 7.0, 8.0])
    t, v = merge_bucket_extremes(buckets, lo, hi, width)
    # bucket 1 has min == max: one point at its centre; a NaN across buckets 3-4
    assert np.isnan(v).sum() == 1
    finite = v[np.isfinite(v)]
    assert_array_equal(finite, [1.0, 5.0, 2.0, 3.0, 7.0, 4.0, 8.0])
    assert np.all(np.diff(t) > 0)
