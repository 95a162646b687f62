"""Geodesy for earthquake-farm association: great-circle and hypocentral distance, radii.

Distances use a spherical Earth of mean radius 6371.0 km (IUGG mean radius R1,
Moritz 2000). Over the tens of kilometres that matter here the spherical error
against the ellipsoid is below 0.5 %.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

#: Mean Earth radius R1 [km].
EARTH_RADIUS_KM = 6371.0


def great_circle_km(
    lat1: npt.ArrayLike, lon1: npt.ArrayLike, lat2: npt.ArrayLike, lon2: npt.ArrayLike
) -> np.ndarray:
    """Great-circle (epicentral) distance by the haversine formula, vectorised.

    lat1, lon1, lat2, lon2 : array-like, broadcastable. Coordinates [deg N, deg E].
    Returns ndarray. Distance along the sphere's surface [km].
    """
    phi1, lam1, phi2, lam2 = (
        np.radians(np.asarray(v, dtype=np.float64)) for v in (lat1, lon1, lat2, lon2)
    )
    half = (
        np.sin((phi2 - phi1) / 2.0) ** 2
        + np.cos(phi1) * np.cos(phi2) * np.sin((lam2 - lam1) / 2.0) ** 2
    )
    return 2.0 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(half, 0.0, 1.0)))


def hypocentral_km(
    epicentral_km: npt.ArrayLike, depth_km: npt.ArrayLike, elevation_km: float = 0.0
) -> np.ndarray:
    """Straight-line distance from a site to the hypocentre (flat-Earth approximation).

    epicentral_km : array-like. Epicentral distance [km].
    depth_km : array-like. Hypocentre depth below sea level [km].
    elevation_km : float. Site elevation above sea level [km].
    Returns ndarray. Hypocentral distance [km].
    """
    depth = np.asarray(depth_km, dtype=np.float64) + elevation_km
    return np.hypot(np.asarray(epicentral_km, dtype=np.float64), depth)


def dobrovolsky_radius_km(magnitude: npt.ArrayLike) -> np.ndarray:
    """Radius of the earthquake preparation zone, R = 10**(0.43 M) (Dobrovolsky et al. 1979).

    magnitude : array-like. Earthquake magnitude [-].
    Returns ndarray. Radius [km] (M 4 -> 52.5 km, M 5 -> 141 km).
    """
    return 10.0 ** (0.43 * np.asarray(magnitude, dtype=np.float64))
