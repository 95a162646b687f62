"""Catalogue refresh job: FDSN event services -> quake revisions + ``earthquake`` points.

For each configured service (INGV, USGS, EMSC by name, or any fdsnws-event URL) and
each farm, the job asks for events within ``max_radius_km`` of the farm with magnitude
>= ``min_magnitude``. The first run fetches ``history_days`` of events; later runs add
``updatedafter=<start of the previous successful run - overlap>`` so only new or revised
events come back. The HTTP behaviour (204 = nothing new, 429/5xx retried with backoff)
is ``namazu.server.catalogue.fdsn``'s.

Every distinct version of an event is kept as a ``QuakeRevision`` row (revision 1, 2, ...;
an unchanged event is not stored twice). The latest version is written to InfluxDB as an
``earthquake`` point (tag ``source``; time = origin time) for Grafana annotations; when a
revision moves the origin time, the point at the old time is deleted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
from sqlalchemy import Engine, select

from namazu.server.catalogue.fdsn import FdsnClient, resolve_service
from namazu.server.store.influx import InfluxClient, point_line
from namazu.server.store.state import Checkpoint, QuakeRevision, session_scope

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FarmLocation:
    """Where to look: farm id and position [deg N, deg E]."""

    id: str
    latitude: float
    longitude: float


@dataclass
class RefreshResult:
    """One source's refresh: events returned, new revisions stored [count]."""

    source: str
    events: int = 0
    new_revisions: int = 0
    updatedafter: str | None = None


def _num(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def event_fields(row: Any) -> dict[str, Any]:
    """The stored fields of one catalogue row (JSON-ready; times ISO 8601 UTC)."""
    stamp = pd.Timestamp(row.time).tz_convert("UTC")
    return {
        "time": stamp.isoformat().replace("+00:00", "Z"),
        "latitude": _num(row.latitude),
        "longitude": _num(row.longitude),
        "depth_km": _num(row.depth_km),
        "magnitude": _num(row.magnitude),
        "mag_type": str(row.mag_type or ""),
        "event_id": str(row.event_id or ""),
    }


class CatalogRefreshJob:
    """Incremental catalogue refresh of several FDSN services.

    sources : service names or URLs. farms : where to look.
    client_factory : base URL -> FdsnClient (tests inject fast retry settings).
    min_magnitude : smallest magnitude fetched. max_radius_km : circle radius [km].
    history_days : depth of the first fetch [days]. overlap : safety margin on
    ``updatedafter`` (clock skew between us and the service).
    """

    def __init__(
        self,
        influx: InfluxClient,
        engine: Engine,
        sources: Sequence[str],
        farms: Sequence[FarmLocation],
        client_factory: Callable[[str], FdsnClient] = FdsnClient,
        min_magnitude: float = 2.5,
        max_radius_km: float = 1000.0,
        history_days: float = 365.0,
        overlap: timedelta = timedelta(minutes=10),
    ):
        self.influx = influx
        self.engine = engine
        self.sources = [(name, resolve_service(name)) for name in sources]
        self.farms = list(farms)
        self.client_factory = client_factory
        self.min_magnitude = min_magnitude
        self.max_radius_km = max_radius_km
        self.history = timedelta(days=history_days)
        self.overlap = overlap

    def run(self, now: datetime) -> list[RefreshResult]:
        """Refresh every source at time ``now`` [UTC]; a failing source is logged and
        skipped (its checkpoint is not advanced), the others still run."""
        results = []
        errors = []
        for name, url in self.sources:
            try:
                results.append(self._refresh(name, url, now))
            except Exception as exc:  # noqa: BLE001 - one bad service must not stop others
                log.error("catalogue refresh failed", extra={"source": name, "error": str(exc)})
                errors.append(f"{name}: {exc}")
        if errors and not results:
            raise CatalogRefreshError("; ".join(errors))
        return results

    def _refresh(self, name: str, url: str, now: datetime) -> RefreshResult:
        label = name.upper() if not name.startswith("http") else url
        result = RefreshResult(label)
        key = f"catalog:{url}"
        with session_scope(self.engine) as session:
            ckpt = session.get(Checkpoint, key)
            since = ckpt.time if ckpt is not None else None
        client = self.client_factory(url)
        updatedafter = None if since is None else since - self.overlap
        result.updatedafter = None if updatedafter is None else updatedafter.isoformat()
        frames = []
        for farm in self.farms:
            frames.append(
                client.query(
                    now - self.history,
                    now,
                    minmagnitude=self.min_magnitude,
                    latitude=farm.latitude,
                    longitude=farm.longitude,
                    maxradius_km=self.max_radius_km,
                    updatedafter=updatedafter,
                )
            )
        catalog = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        if len(catalog):
            catalog = catalog.drop_duplicates(subset=["event_id", "time"])
        result.events = len(catalog)
        lines: list[str] = []
        deletes: list[int] = []
        with session_scope(self.engine) as session:
            for row in catalog.itertuples(index=False):
                fields = event_fields(row)
                event_id = fields["event_id"] or f"{fields['time']}"
                fingerprint = hashlib.sha256(
                    json.dumps(fields, sort_keys=True).encode()
                ).hexdigest()
                latest = session.scalars(
                    select(QuakeRevision)
                    .where(QuakeRevision.source == label, QuakeRevision.event_id == event_id)
                    .order_by(QuakeRevision.revision.desc())
                ).first()
                if latest is not None and latest.fingerprint == fingerprint:
                    continue
                origin = pd.Timestamp(row.time).tz_convert("UTC").to_pydatetime()
                session.add(
                    QuakeRevision(
                        source=label,
                        event_id=event_id,
                        revision=1 if latest is None else latest.revision + 1,
                        fetched_at=now,
                        time=origin,
                        latitude=fields["latitude"],
                        longitude=fields["longitude"],
                        depth_km=fields["depth_km"],
                        magnitude=fields["magnitude"],
                        mag_type=fields["mag_type"],
                        fingerprint=fingerprint,
                        fields=fields,
                    )
                )
                result.new_revisions += 1
                if latest is not None and latest.time != origin:
                    deletes.append(int(round(latest.time.timestamp() * 1000)))
                values: dict[str, Any] = {"event_id": event_id}
                for field_name in ("magnitude", "latitude", "longitude", "depth_km"):
                    if fields[field_name] is not None:
                        values[field_name] = float(fields[field_name])
                t_ms = int(pd.Timestamp(row.time).value // 1_000_000)
                lines.append(point_line("earthquake", {"source": label}, values, t_ms))
            for t_ms in deletes:
                self.influx.query(
                    f'DELETE FROM "earthquake" WHERE "source" = $source AND time = {t_ms}ms',
                    params={"source": label},
                )
            self.influx.write_lines(lines)
            ckpt = session.get(Checkpoint, key)
            if ckpt is None:
                ckpt = Checkpoint(name=key)
                session.add(ckpt)
            ckpt.time = now
            ckpt.updated_at = datetime.now(UTC)
        log.info(
            "catalogue refreshed",
            extra={"source": label, "events": result.events, "new": result.new_revisions},
        )
        return result


class CatalogRefreshError(Exception):
    """Every configured catalogue source failed in this run (messages joined)."""
