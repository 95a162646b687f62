"""``namazu analyze --alarm-log``: which target earthquakes the live system's logged
alarms provably preceded.

The alarm log is verified first (signatures with the keyring, chain, RFC 3161 tokens
with the TSA's CA: ``namazu.server.detection.alarmlog.verify``); a broken log is an
error. For every logged alarm, the target earthquakes of the catalogue (M >=
``min_magnitude`` within the Dobrovolsky radius, or the fixed radius, of the farm) whose
origin time lies in [declared_at, declared_at + ``lead_window_h``] (``declared_at`` of
the record, else its ``opened_at``, else its start) are listed with ``preceded_proven``:
true only when the record's earliest proven time is before the origin time. A logged
alarm claims nothing before it can be proven to have existed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from namazu.analytics.geo import dobrovolsky_radius_km, great_circle_km
from namazu.server.detection import alarmlog
from namazu.server.detection.logkeys import Keyring, LogKeyError

COLUMNS = (
    "record", "farm", "series", "kind", "declared_at", "proven_at", "event_id", "time",
    "magnitude", "distance_km", "preceded_proven",
)  # fmt: skip


class LoggedAlarmsError(Exception):
    """The alarm log cannot be used (missing, unverifiable, broken); says why."""


@dataclass(frozen=True)
class LoggedTargets:
    """Targets in the lead windows of logged alarms.

    table : one row per (logged alarm, target) with ``COLUMNS``. alarms : logged
    alarms read [count]; stamped : of those, with a proven time [count].
    """

    table: pd.DataFrame
    alarms: int
    stamped: int

    def summary(self) -> str:
        proven = int(self.table["preceded_proven"].sum()) if len(self.table) else 0
        return (
            f"alarm log: {self.alarms} logged alarms ({self.stamped} time-stamped); "
            f"{len(self.table)} target earthquakes in their lead windows, {proven} provably "
            "preceded by the logged alarm"
        )


def _utc(value: Any) -> pd.Timestamp | None:
    if value in (None, ""):
        return None
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def logged_targets(
    log_path: Path,
    keyring_path: Path,
    tsa_ca: Path,
    catalog: pd.DataFrame,
    farm: tuple[float, float],
    min_magnitude: float,
    lead_window_h: float,
    fixed_radius_km: float | None = None,
    farm_id: str | None = None,
) -> LoggedTargets:
    """Verify the log and list the targets of each logged alarm (see the module doc).

    catalog : the catalogue schema (``time`` UTC, ``latitude``, ``longitude``,
    ``magnitude``, ``event_id``). farm : (latitude [deg N], longitude [deg E]).
    farm_id : only records of this farm (None: all).
    """
    try:
        keyring = Keyring.from_file(keyring_path)
        result = alarmlog.verify(log_path, keyring=keyring, tsa_ca=tsa_ca)
    except (LogKeyError, FileNotFoundError, OSError) as exc:
        raise LoggedAlarmsError(f"alarm log {log_path}: {exc}") from exc
    if not result.ok:
        raise LoggedAlarmsError(
            f"alarm log {log_path}: BROKEN at record {result.first_bad_index}: {result.reason}"
        )
    lat, lon = farm
    quakes = catalog.dropna(subset=["magnitude"]).reset_index(drop=True)
    distance = great_circle_km(lat, lon, quakes["latitude"], quakes["longitude"])
    radius = (
        dobrovolsky_radius_km(quakes["magnitude"])
        if fixed_radius_km is None
        else np.full(len(quakes), fixed_radius_km)
    )
    targets = quakes[(quakes["magnitude"] >= min_magnitude) & (distance <= radius)]
    target_distance = distance[targets.index.to_numpy()]
    rows = []
    alarms = stamped = 0
    for record in alarmlog.iter_records(log_path):
        alarm = record["alarm"]
        if farm_id is not None and alarm.get("farm") != farm_id:
            continue
        alarms += 1
        proven = result.proven_by(int(record["index"]))
        stamped += proven is not None
        declared = _utc(alarm.get("declared_at") or alarm.get("opened_at") or alarm["start"])
        end = declared + pd.Timedelta(hours=lead_window_h)
        inside = (targets["time"] >= declared) & (targets["time"] <= end)
        for position in np.flatnonzero(inside.to_numpy()):
            quake = targets.iloc[position]
            rows.append(
                {
                    "record": int(record["index"]),
                    "farm": alarm.get("farm"),
                    "series": alarm.get("series"),
                    "kind": alarm.get("kind"),
                    "declared_at": declared,
                    "proven_at": None if proven is None else pd.Timestamp(proven),
                    "event_id": quake.get("event_id"),
                    "time": quake["time"],
                    "magnitude": float(quake["magnitude"]),
                    "distance_km": float(target_distance[position]),
                    "preceded_proven": proven is not None and pd.Timestamp(proven) < quake["time"],
                }
            )
    return LoggedTargets(pd.DataFrame(rows, columns=list(COLUMNS)), alarms, stamped)
