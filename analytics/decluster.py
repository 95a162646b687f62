"""Gardner-Knopoff window declustering with the van Stiphout et al. (2012) windows.

Gardner J. K. and Knopoff L. (1974), BSSA 64(5):1363-1367; window fits as given by
van Stiphout T., Zhuang J. and Marsan D. (2012), "Seismicity declustering", CORSSA,
doi:10.5078/corssa-52382934:

- distance window  d(M) = 10**(0.1238 M + 0.983) [km]
- time window      t(M) = 10**(0.032 M + 2.7389) [days] for M >= 6.5,
                          10**(0.5409 M - 0.547) [days] otherwise.

Algorithm: events are taken in order of decreasing magnitude (ties: earlier first). Each
event that is not yet marked dependent opens a cluster; every not-larger event within
d(M) and within (t, t + t(M)] is an aftershock, and, if ``foreshock_fraction`` > 0,
within [t - foreshock_fraction * t(M), t) a foreshock. Dependent events open no cluster
of their own. What remains are the mainshocks.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pandas as pd

from namazu.analytics.geo import great_circle_km

_NS_PER_DAY = 86_400 * 10**9


def gk_distance_window_km(magnitude: npt.ArrayLike) -> np.ndarray:
    """Gardner-Knopoff distance window (van Stiphout et al. 2012 fit) [km]."""
    return 10.0 ** (0.1238 * np.asarray(magnitude, dtype=np.float64) + 0.983)


def gk_time_window_days(magnitude: npt.ArrayLike) -> np.ndarray:
    """Gardner-Knopoff time window (van Stiphout et al. 2012 fit) [days]."""
    m = np.asarray(magnitude, dtype=np.float64)
    return np.where(m >= 6.5, 10.0 ** (0.032 * m + 2.7389), 10.0 ** (0.5409 * m - 0.547))


def gardner_knopoff(catalog: pd.DataFrame, foreshock_fraction: float = 0.0) -> np.ndarray:
    """Mainshock mask of a catalogue by Gardner-Knopoff window declustering.

    catalog : DataFrame with columns time (datetime64, UTC), latitude [deg N],
        longitude [deg E], magnitude [-]. Any row order.
    foreshock_fraction : float. Fraction of the time window searched before a mainshock
        for foreshocks [-]; 0 (default) = aftershocks only, as in the original method.
    Returns bool ndarray in the catalogue's row order: True = mainshock (independent).
    """
    if foreshock_fraction < 0:
        raise ValueError(f"foreshock_fraction must be >= 0, got {foreshock_fraction}")
    n = len(catalog)
    mainshock = np.ones(n, dtype=bool)
    if n == 0:
        return mainshock
    times = pd.DatetimeIndex(catalog["time"]).as_unit("ns").asi8
    lat = catalog["latitude"].to_numpy(dtype=np.float64)
    lon = catalog["longitude"].to_numpy(dtype=np.float64)
    mag = catalog["magnitude"].to_numpy(dtype=np.float64)
    by_time = np.argsort(times, kind="stable")
    sorted_times = times[by_time]
    window_ns = (gk_time_window_days(mag) * _NS_PER_DAY).astype(np.int64)
    radius = gk_distance_window_km(mag)
    order = np.lexsort((times, -mag))
    dependent = np.zeros(n, dtype=bool)
    for i in order:
        if dependent[i] or not np.isfinite(mag[i]):
            continue
        lo_t = times[i] - int(foreshock_fraction * window_ns[i])
        hi_t = times[i] + window_ns[i]
        lo = np.searchsorted(sorted_times, lo_t, side="left")
        hi = np.searchsorted(sorted_times, hi_t, side="right")
        candidates = by_time[lo:hi]
        candidates = candidates[(candidates != i) & (mag[candidates] <= mag[i])]
        if foreshock_fraction == 0:
            candidates = candidates[times[candidates] >= times[i]]
        if candidates.size == 0:
            continue
        near = great_circle_km(lat[i], lon[i], lat[candidates], lon[candidates]) <= radius[i]
        dependent[candidates[near]] = True
    mainshock[dependent] = False
    return mainshock
