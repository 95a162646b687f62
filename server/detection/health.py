"""Data health: gateways whose Last Will fired and animals that stopped reporting.

Each run reads, per farm, the last activity sample of every animal seen within
``lookback`` and the last ``gateway_status`` report of every gateway (the ingest service
stores the retained status, and the Last Will's offline status, there). An animal with no
sample for longer than ``stale_after_s`` is ``silent``; a gateway whose last status says
``online = false`` is ``offline``, and so are the animals behind it. The result is kept
in the state store's ``data_health`` table (status, last seen, since when), so silence is
never mistaken for calm: the panel and every alarm show how many animals were reporting.

The same findings go to InfluxDB as ``health`` points (tags ``farm``, ``subject``,
``kind``) for Grafana and the panel:

- ``kind`` = ``gateway`` or ``animal``: one point whenever a subject's status changes
  (and when it is first seen), fields ``status`` ("ok", "silent", "offline"),
  ``healthy`` (bool) and ``silent_s`` (time since its last data [s]);
- ``kind`` = ``radio`` (``subject`` = an animal with a LoRaWAN collar): one point per
  run, fields ``uplinks_received``, ``uplinks_missing`` [count] and ``loss_pct`` [%]:
  packet loss counted from the gaps in the collar's frame counters (the ``uplink``
  points ingest stores) within ``lookback``;
- ``kind`` = ``farm`` (``subject`` = the farm id): one point per run, fields
  ``animals_total``, ``animals_ok``, ``animals_silent``, ``animals_offline`` and
  ``gateways_offline`` [count], and ``uplinks_missing`` [count] when the farm has
  LoRaWAN collars.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, select

from namazu.firmware_bridge.lorawan import frame_counter_loss
from namazu.server.core.metrics import FARM_ANIMALS, GATEWAY_UP
from namazu.server.store.influx import InfluxClient, point_line
from namazu.server.store.influx_router import InfluxRouter
from namazu.server.store.state import DataHealth, session_scope

log = logging.getLogger(__name__)


@dataclass
class HealthReport:
    """Changes of one run: names newly flagged and newly recovered, per kind."""

    flagged: list[tuple[str, str, str, str]] = field(default_factory=list)
    recovered: list[tuple[str, str, str]] = field(default_factory=list)
    points: int = 0
    #: (farm, animal) -> (uplinks received, uplinks missing by frame counter) [count]
    loss: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)


def _ms(value: datetime) -> int:
    return int(round(value.timestamp() * 1000))


class HealthJob:
    """The data-health check.

    stale_after_s : an animal is silent after this long without a sample [s].
    lookback : how far back the last sample is searched; animals silent longer keep
        their stored status.
    """

    def __init__(
        self,
        influx: InfluxClient | InfluxRouter,
        engine: Engine,
        farms: Sequence[str],
        stale_after_s: float = 600.0,
        lookback: timedelta = timedelta(days=2),
    ):
        self.router = influx if isinstance(influx, InfluxRouter) else InfluxRouter.single(influx)
        self.engine = engine
        self.farms = list(farms)
        self.stale = timedelta(seconds=stale_after_s)
        self.lookback = lookback

    def run(self, now: datetime, farms: Sequence[str] | None = None) -> HealthReport:
        """Check every farm (or only ``farms``) at time ``now`` [UTC]; return what changed."""
        report = HealthReport()
        for farm in self.farms if farms is None else farms:
            self._farm(farm, now, report)
        for item in report.flagged:
            log.warning(
                "data health: %s %s is %s",
                item[1],
                item[2],
                item[3],
                extra={"farm": item[0], "kind": item[1], "subject": item[2], "status": item[3]},
            )
        return report

    def _farm(self, farm: str, now: datetime, report: HealthReport) -> None:
        lo, hi = _ms(now - self.lookback), _ms(now)
        window = f"time > {lo}ms AND time <= {hi}ms"
        influx = self.router.for_farm(farm)
        animals = influx.query(
            f'SELECT last("odba") FROM "activity" WHERE "farm" = $farm AND {window} '
            'GROUP BY "animal", "species", "gateway"',
            params={"farm": farm},
        )
        gateways = influx.query(
            f'SELECT last("online") FROM "gateway_status" WHERE "farm" = $farm AND {window} '
            'GROUP BY "gateway"',
            params={"farm": farm},
        )
        uplinks = influx.query(
            f'SELECT "f_cnt" FROM "uplink" WHERE "farm" = $farm AND {window} GROUP BY "animal"',
            params={"farm": farm},
        )
        offline = set()
        observed: dict[tuple[str, str], tuple[datetime | None, str, str | None, str | None]] = {}
        for item in gateways:
            tags = item.get("tags") or {}
            t_ms, online = item["values"][0][0], item["values"][0][1]
            gateway = tags.get("gateway", "")
            seen = datetime.fromtimestamp(t_ms / 1000, UTC)
            status = "ok" if online in (True, "true", 1) else "offline"
            if status == "offline":
                offline.add(gateway)
            observed[("gateway", gateway)] = (seen, status, None, None)
        for item in animals:
            tags = item.get("tags") or {}
            t_ms = item["values"][0][0]
            seen = datetime.fromtimestamp(t_ms / 1000, UTC)
            gateway = tags.get("gateway")
            if gateway in offline:
                status = "offline"
            elif now - seen > self.stale:
                status = "silent"
            else:
                status = "ok"
            observed[("animal", tags.get("animal", ""))] = (
                seen,
                status,
                tags.get("species"),
                gateway,
            )
        lines: list[str] = []
        for item in uplinks:
            animal = (item.get("tags") or {}).get("animal", "")
            received, missing = frame_counter_loss([int(v[1]) for v in item["values"]])
            report.loss[(farm, animal)] = (received, missing)
            lines.append(
                point_line(
                    "health",
                    {"farm": farm, "subject": animal, "kind": "radio"},
                    {
                        "uplinks_received": received,
                        "uplinks_missing": missing,
                        "loss_pct": 100.0 * missing / max(1, received + missing),
                    },
                    hi,
                )
            )
        with session_scope(self.engine) as session:
            rows = {
                (r.kind, r.name): r
                for r in session.scalars(select(DataHealth).where(DataHealth.farm == farm))
            }
            for key, row in rows.items():  # known but no longer seen within the lookback
                if key not in observed:
                    status = "silent" if row.status == "ok" else row.status
                    observed[key] = (row.last_seen, status, row.species, row.gateway)
            for (kind, name), (seen, status, species, gateway) in observed.items():
                row = rows.get((kind, name))
                if row is None:
                    row = DataHealth(farm=farm, kind=kind, name=name, status="ok", since=now)
                    session.add(row)
                    changed = True
                else:
                    changed = status != row.status
                if status != row.status:
                    if status == "ok":
                        report.recovered.append((farm, kind, name))
                    else:
                        report.flagged.append((farm, kind, name, status))
                    row.status = status
                    row.since = now
                if changed:
                    fields: dict[str, object] = {"status": status, "healthy": status == "ok"}
                    if seen is not None:
                        fields["silent_s"] = max(0.0, (now - seen).total_seconds())
                    lines.append(
                        point_line(
                            "health", {"farm": farm, "subject": name, "kind": kind}, fields, hi
                        )
                    )
                row.last_seen = seen
                row.species = species or row.species
                row.gateway = gateway or row.gateway
                row.updated_at = now
            statuses = [
                status for (kind, _), (_, status, _, _) in observed.items() if kind == "animal"
            ]
            for status in ("ok", "silent", "offline"):
                FARM_ANIMALS.labels(farm=farm, status=status).set(statuses.count(status))
            for (kind, name), (_, status, _, _) in observed.items():
                if kind == "gateway":
                    GATEWAY_UP.labels(farm=farm, gateway=name).set(1 if status == "ok" else 0)
            lines.append(
                point_line(
                    "health",
                    {"farm": farm, "subject": farm, "kind": "farm"},
                    {
                        "animals_total": len(statuses),
                        "animals_ok": statuses.count("ok"),
                        "animals_silent": statuses.count("silent"),
                        "animals_offline": statuses.count("offline"),
                        "gateways_offline": len(offline),
                    }
                    | (
                        {
                            "uplinks_missing": sum(
                                m for (f, _), (_, m) in report.loss.items() if f == farm
                            )
                        }
                        if uplinks
                        else {}
                    ),
                    hi,
                )
            )
            influx.write_lines(lines)
            report.points += len(lines)
