"""Activity metrics of accelerometer bursts: static and dynamic components, ODBA, VeDBA.

A *burst* is a short block of consecutive accelerometer samples recorded by a collar
(for example 3 s at 10 Hz). All functions are vectorised over any number of bursts:
``bursts`` is array-like of shape ``(..., n_samples, n_axes)`` with ``n_axes`` in 1..3,
in units of standard gravity [g]. Leading dimensions (animals, bursts, ...) are kept.

Definitions (Wilson et al. 2006, J. Anim. Ecol. 75:1081; Qasem et al. 2012, PLoS ONE
7:e31187), with the static component taken as the per-burst mean of each axis, as the
Movebank Acceleration Viewer does for e-obs bursts:

- static component  s_a      = mean_i a_i                     (per axis a) [g]
- dynamic component d_a(i)   = a_i - s_a                                   [g]
- ODBA  = mean_i sum_a |d_a(i)|                                            [g]
- VeDBA = mean_i sqrt(sum_a d_a(i)**2)                                     [g]

Movebank's exported "ODBA" for a burst is the *sum* over the burst's samples, i.e.
``odba(burst) * n_samples``; Namazu reports the per-sample mean so that values do not
depend on burst length.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

#: Standard gravity [m/s^2] (CGPM 1901).
STANDARD_GRAVITY_MS2 = 9.80665

#: Zero-acceleration offset of e-obs raw accelerometer counts (12-bit ADC mid-scale) [counts].
EOBS_OFFSET_COUNTS = 2048.0

#: e-obs conversion slopes [g/count] by tag generation and sensitivity, as implemented in
#: the moveACC R package (A. K. Scharf, ``TransformRawACC``, https://gitlab.com/anneks/moveACC),
#: which follows the e-obs tag manuals: g = (raw - 2048) * slope.
#: First generation (tag id <= 2241): 0.001 (high sensitivity) or 0.0027 (low sensitivity);
#: second generation (tag ids 2242..4117): 0.0022; later tags: 1/512.
EOBS_SLOPES_G_PER_COUNT: dict[str, float] = {
    "gen1-high": 0.001,
    "gen1-low": 0.0027,
    "gen2": 0.0022,
    "gen3": 1.0 / 512.0,
}

#: Default slope [g/count]: first-generation e-obs tag, high sensitivity (moveACC default).
EOBS_DEFAULT_SLOPE_G_PER_COUNT = EOBS_SLOPES_G_PER_COUNT["gen1-high"]


class BurstShapeError(ValueError):
    """The bursts array does not have shape (..., n_samples, n_axes) with 1..3 axes."""


def _as_bursts(bursts: npt.ArrayLike) -> np.ndarray:
    array = np.asarray(bursts, dtype=np.float64)
    if array.ndim < 2:
        raise BurstShapeError(
            f"bursts must have shape (..., n_samples, n_axes); got shape {array.shape}"
        )
    if not 1 <= array.shape[-1] <= 3:
        raise BurstShapeError(
            f"bursts must have 1 to 3 axes in the last dimension; got {array.shape[-1]}"
        )
    if array.shape[-2] < 1:
        raise BurstShapeError("bursts must contain at least one sample each")
    return array


def static_component(bursts: npt.ArrayLike) -> np.ndarray:
    """Static (gravity/posture) component of each burst: the mean of each axis.

    bursts : array-like, shape (..., n_samples, n_axes). Acceleration [g].
    Returns ndarray, shape (..., n_axes). Static acceleration per axis [g].
    """
    return _as_bursts(bursts).mean(axis=-2)


def dynamic_component(bursts: npt.ArrayLike) -> np.ndarray:
    """Dynamic component of each sample: acceleration minus its burst's static component.

    bursts : array-like, shape (..., n_samples, n_axes). Acceleration [g].
    Returns ndarray, shape (..., n_samples, n_axes). Dynamic acceleration [g].
    """
    array = _as_bursts(bursts)
    return array - array.mean(axis=-2, keepdims=True)


def odba(bursts: npt.ArrayLike) -> np.ndarray:
    """Overall dynamic body acceleration of each burst (per-sample mean).

    bursts : array-like, shape (..., n_samples, n_axes). Acceleration [g].
    Returns ndarray, shape (...). ODBA, mean over samples of sum over axes of
    |dynamic acceleration| [g].
    """
    return np.abs(dynamic_component(bursts)).sum(axis=-1).mean(axis=-1)


def vedba(bursts: npt.ArrayLike) -> np.ndarray:
    """Vectorial dynamic body acceleration of each burst (per-sample mean).

    bursts : array-like, shape (..., n_samples, n_axes). Acceleration [g].
    Returns ndarray, shape (...). VeDBA, mean over samples of the Euclidean norm of
    the dynamic acceleration [g].
    """
    dynamic = dynamic_component(bursts)
    return np.sqrt((dynamic * dynamic).sum(axis=-1)).mean(axis=-1)


def eobs_raw_to_g(
    raw: npt.ArrayLike,
    offset: float = EOBS_OFFSET_COUNTS,
    slope: float = EOBS_DEFAULT_SLOPE_G_PER_COUNT,
) -> np.ndarray:
    """Convert e-obs raw accelerometer counts to acceleration.

    raw : array-like. Raw ADC counts as stored in Movebank ``eobs_accelerations_raw``
        [counts].
    offset : float. Count that corresponds to zero acceleration [counts]; default 2048.
    slope : float. Sensitivity [g/count]; default 0.001 (first-generation tag, high
        sensitivity). See ``EOBS_SLOPES_G_PER_COUNT`` and ``eobs_slope``.
    Returns ndarray of the same shape. Acceleration [g].
    """
    if not np.isfinite(slope) or slope <= 0:
        raise ValueError(f"slope must be a positive number of g per count, got {slope}")
    return (np.asarray(raw, dtype=np.float64) - offset) * slope


def eobs_slope(tag_local_identifier: int, sensitivity: Literal["high", "low"] = "high") -> float:
    """Conversion slope of an e-obs tag from its serial number (moveACC convention).

    tag_local_identifier : int. e-obs tag serial number.
    sensitivity : "high" or "low". Only matters for first-generation tags (id <= 2241).
    Returns float. Slope [g/count] for ``eobs_raw_to_g``.
    """
    if sensitivity not in ("high", "low"):
        raise ValueError(f"sensitivity must be 'high' or 'low', got {sensitivity!r}")
    tag = int(tag_local_identifier)
    if tag <= 2241:
        return EOBS_SLOPES_G_PER_COUNT[f"gen1-{sensitivity}"]
    if tag <= 4117:
        return EOBS_SLOPES_G_PER_COUNT["gen2"]
    return EOBS_SLOPES_G_PER_COUNT["gen3"]


def ms2_to_g(acceleration_ms2: npt.ArrayLike) -> np.ndarray:
    """Convert acceleration from metres per second squared to standard gravity.

    acceleration_ms2 : array-like. Acceleration [m/s^2].
    Returns ndarray. Acceleration [g] (divided by 9.80665 m/s^2).
    """
    return np.asarray(acceleration_ms2, dtype=np.float64) / STANDARD_GRAVITY_MS2
