"""Window declustering (Gardner and Knopoff 1974) with a choice of window tables.

Gardner J. K. and Knopoff L. (1974), BSSA 64(5):1363-1367. Window tables, as given by
van Stiphout T., Zhuang J. and Marsan D. (2012), "Seismicity declustering", CORSSA,
doi:10.5078/corssa-52382934 (``DECLUSTER_WINDOW_TABLES``; M = magnitude):

- ``gardner-knopoff`` (the fit of the original table, the default):
  d(M) = 10**(0.1238 M + 0.983) km; t(M) = 10**(0.032 M + 2.7389) days for M >= 6.5,
  10**(0.5409 M - 0.547) days otherwise;
- ``uhrhammer`` (Uhrhammer R. 1986, Earthquake Notes 57(1):21):
  d(M) = exp(-1.024 + 0.804 M) km; t(M) = exp(-2.87 + 1.235 M) days;
- ``gruenthal`` (Grünthal G., 1985, as in van Stiphout et al. 2012):
  d(M) = exp(1.77 + sqrt(0.037 + 1.02 M)) km; t(M) = |exp(-3.95 + sqrt(0.62 + 17.32 M))|
  days for M < 6.5, 10**(2.8 + 0.024 M) days otherwise.

Algorithm: events are taken in order of decreasing magnitude (ties: earlier first). Each
event that is not yet marked dependent opens a cluster; every not-larger event within
d(M) and within (t, t + t(M)] is an aftershock, and, if ``foreshock_fraction`` > 0,
within [t - foreshock_fraction * t(M), t) a foreshock. Dependent events open no cluster
of their own. What remains are the mainshocks.

A longer history catalogue (``with_history``) lets events before the scored catalogue
mark its events as aftershocks (e.g. the 2017 events after the October 2016 mainshocks).
"""

from __future__ import annotations

from collections.abc import Callable

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


def uhrhammer_windows(magnitude: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Uhrhammer (1986) windows: (distance [km], time [days])."""
    m = np.asarray(magnitude, dtype=np.float64)
    return np.exp(-1.024 + 0.804 * m), np.exp(-2.87 + 1.235 * m)


def gruenthal_windows(magnitude: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Grünthal windows (van Stiphout et al. 2012): (distance [km], time [days])."""
    m = np.asarray(magnitude, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        small = np.abs(np.exp(-3.95 + np.sqrt(0.62 + 17.32 * m)))
    return np.exp(1.77 + np.sqrt(np.maximum(0.037 + 1.02 * m, 0.0))), np.where(
        m >= 6.5, 10.0 ** (2.8 + 0.024 * m), small
    )


#: Window tables by name: magnitude -> (distance window [km], time window [days]).
DECLUSTER_WINDOW_TABLES: dict[str, Callable[[npt.ArrayLike], tuple[np.ndarray, np.ndarray]]] = {
    "gardner-knopoff": lambda m: (gk_distance_window_km(m), gk_time_window_days(m)),
    "uhrhammer": uhrhammer_windows,
    "gruenthal": gruenthal_windows,
}


def decluster_windows(name: str, magnitude: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """(distance [km], time [days]) windows of the named table; KeyError names the valid ones."""
    try:
        table = DECLUSTER_WINDOW_TABLES[name]
    except KeyError:
        valid = ", ".join(DECLUSTER_WINDOW_TABLES)
        raise KeyError(f"unknown declustering window {name!r}; valid windows: {valid}") from None
    return table(magnitude)


def gardner_knopoff(
    catalog: pd.DataFrame, foreshock_fraction: float = 0.0, window: str = "gardner-knopoff"
) -> np.ndarray:
    """Mainshock mask of a catalogue by window declustering.

    catalog : DataFrame with columns time (datetime64, UTC), latitude [deg N],
        longitude [deg E], magnitude [-]. Any row order.
    foreshock_fraction : float. Fraction of the time window searched before a mainshock
        for foreshocks [-]; 0 (default) = aftershocks only, as in the original method.
    window : name of the window table (``DECLUSTER_WINDOW_TABLES``).
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
    radius, days = decluster_windows(window, mag)
    window_ns = np.nan_to_num(days * _NS_PER_DAY).astype(np.int64)
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


def with_history(
    catalog: pd.DataFrame,
    history: pd.DataFrame,
    foreshock_fraction: float = 0.0,
    window: str = "gardner-knopoff",
) -> np.ndarray:
    """Mainshock mask of ``catalog`` declustered together with a history catalogue.

    catalog : the scored catalogue (columns as for ``gardner_knopoff``).
    history : a longer catalogue; only its events outside the scored catalogue's time span
        [first event, last event] are added (inside it the scored catalogue is used as is,
        so no event is counted twice).
    Returns bool ndarray in ``catalog``'s row order: True = mainshock.
    """
    if len(catalog) == 0 or len(history) == 0:
        return gardner_knopoff(catalog, foreshock_fraction, window)
    columns = ["time", "latitude", "longitude", "magnitude"]
    times = pd.DatetimeIndex(catalog["time"])
    history_times = pd.DatetimeIndex(history["time"])
    outside = (history_times < times.min()) | (history_times > times.max())
    joined = pd.concat(
        [catalog[columns], history.loc[np.asarray(outside), columns]], ignore_index=True
    )
    joined["time"] = pd.DatetimeIndex(joined["time"]).as_unit("ns")
    return gardner_knopoff(joined, foreshock_fraction, window)[: len(catalog)]
