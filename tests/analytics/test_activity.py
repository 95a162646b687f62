"""Activity metrics: known answers, invariants and the real 10 Hz cow-collar recordings."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose

from namazu.analytics.activity import (
    EOBS_SLOPES_G_PER_COUNT,
    BurstShapeError,
    dynamic_component,
    eobs_raw_to_g,
    eobs_slope,
    ms2_to_g,
    odba,
    static_component,
    vedba,
)
from tests.conftest import require_data

COW_DIR = "collars/wasp-lab-cow-imu"
COW_FILES = {
    "Walking": [
        "352_Walking_3120_20241001_130544.csv",
        "37_Walking_2016_20240514_134629.csv",
        "60_Walking_1319_20240514_142035.csv",
    ],
    # 132_Grazing_1319 carries a faulty MPU9250 and a biased BNO055 (data README); excluded.
    "Grazing": ["143_Grazing_2016_20240517_122838.csv", "354_Grazing_3120_20241001_131022.csv"],
    "Resting": [
        "349_Resting_3120_20241001_130244.csv",
        "38_Resting_1319_20240514_131147.csv",
        "418_Resting_1219_20241021_125730.csv",
    ],
}


def test_sine_on_one_axis_has_known_odba_and_vedba():
    amplitude = 0.3
    t = np.arange(1000) / 1000.0
    x = 1.0 + amplitude * np.sin(2 * np.pi * 5 * t)  # 5 whole periods around 1 g of gravity
    burst = np.stack([x, np.full_like(x, -0.2), np.zeros_like(x)], axis=-1)
    assert_allclose(static_component(burst), [1.0, -0.2, 0.0], atol=1e-12)
    # mean |A sin| over whole periods = 2A/pi; a single moving axis makes ODBA == VeDBA
    assert_allclose(odba(burst), 2 * amplitude / np.pi, rtol=1e-3)
    assert_allclose(vedba(burst), odba(burst), rtol=1e-12)


def test_metrics_are_vectorised_over_leading_dimensions():
    rng = np.random.default_rng(1)
    bursts = rng.normal(size=(4, 5, 30, 3))
    values = odba(bursts)
    assert values.shape == (4, 5)
    assert_allclose(values[2, 3], odba(bursts[2, 3]))
    assert dynamic_component(bursts).shape == bursts.shape
    assert static_component(bursts).shape == (4, 5, 3)


def test_vedba_bounded_by_odba():
    rng = np.random.default_rng(2)
    bursts = rng.normal(size=(200, 20, 3))
    o, v = odba(bursts), vedba(bursts)
    assert np.all(v <= o + 1e-12)
    assert np.all(o <= np.sqrt(3) * v + 1e-12)


def test_constant_offset_changes_nothing_dynamic():
    rng = np.random.default_rng(3)
    bursts = rng.normal(size=(10, 25, 2))
    assert_allclose(odba(bursts + 7.5), odba(bursts), atol=1e-12)


@pytest.mark.parametrize("shape", [(10,), (5, 4), (2, 0, 3)])
def test_bad_burst_shapes_are_rejected(shape):
    with pytest.raises(BurstShapeError):
        odba(np.zeros(shape))


def test_eobs_conversion_and_slopes():
    assert_allclose(eobs_raw_to_g([2048, 3072, 1024], slope=1 / 1024), [0.0, 1.0, -1.0])
    assert_allclose(eobs_raw_to_g(2148), 0.1)  # default slope 0.001 g/count
    assert eobs_slope(134) == EOBS_SLOPES_G_PER_COUNT["gen1-high"]
    assert eobs_slope(134, "low") == 0.0027
    assert eobs_slope(3000) == 0.0022
    assert eobs_slope(5000) == 1 / 512
    with pytest.raises(ValueError, match="slope"):
        eobs_raw_to_g([1], slope=0)
    assert_allclose(ms2_to_g(9.80665), 1.0)


def _cow_odba(behaviour: str, burst_samples: int = 30) -> np.ndarray:
    values = []
    for name in COW_FILES[behaviour]:
        frame = pd.read_csv(require_data(f"{COW_DIR}/{behaviour}/{name}"))
        acc = ms2_to_g(frame[["BNO055_AX", "BNO055_AY", "BNO055_AZ"]].to_numpy())
        usable = len(acc) // burst_samples * burst_samples
        values.append(odba(acc[:usable].reshape(-1, burst_samples, 3)))
    return np.concatenate(values)


def test_real_cow_collar_activity_separates_moving_from_resting():
    """3 s bursts of the 10 Hz body-frame BNO055 acceleration of labelled cows.

    Moving behaviours have several times the ODBA of resting. On these neck collars
    grazing (head down, biting and chewing) is more active than walking: the measured
    order is Grazing (~0.32 g) > Walking (~0.23 g) >> Resting (~0.03 g), not the
    Walking > Grazing that one might expect; it is pinned here so that a change in the
    metric shows. Plus gravity near 1 g.
    """
    walking, grazing, resting = (np.median(_cow_odba(b)) for b in COW_FILES)
    assert grazing > walking > 4 * resting
    assert 0.28 < grazing < 0.36 and 0.19 < walking < 0.27
    assert 0.005 < resting < 0.1  # a resting cow is not perfectly still, but nearly
    frame = pd.read_csv(require_data(f"{COW_DIR}/Resting/{COW_FILES['Resting'][1]}"))
    acc = ms2_to_g(frame[["BNO055_AX", "BNO055_AY", "BNO055_AZ"]].to_numpy())
    gravity = np.linalg.norm(static_component(acc[None, :, :]), axis=-1)
    assert_allclose(gravity, 1.0, atol=0.1)
