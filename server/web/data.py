"""What the pages and the API show, assembled once: input checks, InfluxDB and state-store
reads, and the pure maths from ``analytics``.

Views (HTML pages and JSON endpoints) call these functions and only format the result.
Bad user input raises ``InputError`` (answered with 400); unknown objects raise
``NotFound`` (404).
"""

from __future__ import annotations

import logging
import math
import re
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import or_, select

from namazu.analytics.downsample import bucket_width_ms, insert_gaps, merge_bucket_extremes
from namazu.analytics.episodes import group_episodes
from namazu.analytics.geo import dobrovolsky_radius_km, great_circle_km
from namazu.server.core.config import FarmConfig
from namazu.server.store import queries
from namazu.server.store.influx import InfluxQueryError
from namazu.server.store.models import EVENT_KINDS, FarmEvent, Review
from namazu.server.store.rollups import ROLLUP_STEPS_MS
from namazu.server.store.state import Alarm, get_by_id, session_scope

log = logging.getLogger(__name__)

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
SPECIES = ("cow", "sheep", "dog")
MAX_RANGE_DAYS = 400
#: The timeline reads rollups over long ranges, so it may span more [days].
TIMELINE_MAX_RANGE_DAYS = 3700
DEFAULT_MAX_POINTS = 2000
MAX_POINTS_LIMIT = 20000
#: Most series the timeline page stacks at once.
MAX_PANELS = 12
NEARBY_KM = 300.0
#: A gateway clock further than this from the server's is flagged on the overview [s].
CLOCK_TOLERANCE_S = 2.0
_DAY_MS = 86_400_000
#: Collars report one activity sample a minute (the stored ``activity`` resolution).
RAW_ACTIVITY_MS = 60_000
_LATEST_MS = 7_258_118_400_000  # 2200-01-01T00:00:00Z as UTC epoch ms


class InputError(ValueError):
    """A request parameter is invalid; the message names the parameter and the reason."""


class NotFound(LookupError):
    """The requested object does not exist."""


# ---------------------------------------------------------------- input checks


def parse_time_ms(value: str | None, name: str, default: int | None = None) -> int:
    """A request time as UTC epoch ms: ISO 8601 (zone-less = UTC) or integer epoch ms."""
    if value is None or value == "":
        if default is None:
            raise InputError(f"{name}: required (ISO 8601 time or epoch milliseconds)")
        return default
    text = str(value).strip()
    if re.fullmatch(r"-?\d{1,19}", text):
        epoch_ms = int(text)
        if not 0 <= epoch_ms <= _LATEST_MS:
            raise InputError(f"{name}: {text[:40]!r} epoch ms is outside 1970..2200")
        return epoch_ms
    try:
        stamp = pd.Timestamp(text)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InputError(f"{name}: {text[:40]!r} is not an ISO 8601 time") from exc
    if stamp is pd.NaT:
        raise InputError(f"{name}: {text[:40]!r} is not a time")
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize("UTC")
    if not pd.Timestamp("1970-01-01", tz="UTC") <= stamp <= pd.Timestamp("2200-01-01", tz="UTC"):
        raise InputError(f"{name}: {text[:40]!r} is outside 1970..2200")
    return _stamp_ms(stamp)


def time_range(
    args: Any, default_days: float = 7.0, max_days: int = MAX_RANGE_DAYS
) -> tuple[int, int]:
    """``start``/``end`` request arguments as a checked UTC ms range (end defaults to now),
    at most ``max_days`` long."""
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    end = parse_time_ms(args.get("end"), "end", default=now_ms)
    default_start = max(0, end - int(default_days * _DAY_MS))
    start = parse_time_ms(args.get("start"), "start", default=default_start)
    if end <= start:
        raise InputError("end: must be after start")
    if end - start > max_days * _DAY_MS:
        raise InputError(f"start..end: at most {max_days} days")
    return start, end


#: The evaluation page's default period: the last this many days of the farm's data.
DEFAULT_EVALUATION_DAYS = 30


def default_period(handles: Any, farm: FarmConfig, args: Any) -> tuple[int, int]:
    """``start``/``end`` from the request, else the last ``DEFAULT_EVALUATION_DAYS`` days
    of the farm's data (or the data's whole span when shorter); the last 30 days up to
    now when the farm has no data yet. UTC ms."""
    if args.get("start") or args.get("end"):
        return time_range(args, default_days=DEFAULT_EVALUATION_DAYS)
    edges = []
    for which in ("first", "last"):
        frame = handles.influx_for(farm.id).query_frame(*queries.activity_edge(farm.id, which))
        edges.append(None if frame.empty else _stamp_ms(frame["time"].iloc[0]))
    first, last = edges
    if first is None or last is None:
        return time_range(args, default_days=DEFAULT_EVALUATION_DAYS)
    end = last - last % _DAY_MS + _DAY_MS  # the end of the last day with data
    start = max(first - first % _DAY_MS, end - DEFAULT_EVALUATION_DAYS * _DAY_MS)
    return start, end


def _stored_row(db: Any, model: Any, row_id: int, what: str) -> Any:
    """The ``model`` row with primary key ``row_id``; NotFound when there is none.

    Ids beyond a signed 64-bit integer cannot exist in the store and are answered the
    same way instead of overflowing the database driver.
    """
    row = get_by_id(db, model, row_id)
    if row is None:
        raise NotFound(f"{what} {row_id} does not exist")
    return row


def _gateway_entry(row: Any) -> dict[str, Any]:
    """One gateway of the overview from its last ``gateway_status`` row; ``clock_ok``
    says whether its clock offset [s] is within CLOCK_TOLERANCE_S (None when it has not
    been measured)."""
    offset_s = _num(getattr(row, "clock_offset_s", None))
    return {
        "gateway": str(row.gateway),
        "online": bool(row.online) if not pd.isna(row.online) else None,
        "last_seen": row.time.isoformat().replace("+00:00", "Z"),
        "clock_offset_s": offset_s,
        "clock_ok": None if offset_s is None else abs(offset_s) <= CLOCK_TOLERANCE_S,
    }


def check_id(value: str | None, name: str) -> str:
    """An id (farm, animal, gateway) matching the topic-segment pattern; InputError else."""
    if not value or not ID_PATTERN.match(value):
        raise InputError(f"{name}: {str(value)[:40]!r} is not a valid id")
    return value


def check_series(value: str | None) -> str:
    """A series name: an animal id, ``species:<cow|sheep|dog>`` or ``herd``."""
    if value == "herd":
        return value
    if value and value.startswith("species:"):
        if value.split(":", 1)[1] not in SPECIES:
            raise InputError(f"series: species must be one of {', '.join(SPECIES)}")
        return value
    return check_id(value, "series")


def int_arg(args: Any, name: str, default: int, low: int, high: int) -> int:
    """An integer request argument within [low, high]; InputError otherwise."""
    raw = args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name}: {str(raw)[:20]!r} is not an integer") from exc
    if not low <= value <= high:
        raise InputError(f"{name}: must be in {low}..{high}")
    return value


def float_arg(args: Any, name: str, default: float | None, low: float, high: float) -> Any:
    """A finite float request argument within [low, high]; InputError otherwise."""
    raw = args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name}: {str(raw)[:20]!r} is not a number") from exc
    if not math.isfinite(value) or not low <= value <= high:
        raise InputError(f"{name}: must be a number in {low}..{high}")
    return value


def farm_config(handles: Any, farm_id: str | None) -> FarmConfig:
    """The configured farm (first farm when None); NotFound for an unknown id."""
    farms = handles.config.farms
    if not farm_id:
        if not farms:
            raise NotFound("no farm is configured")
        return farms[0]
    check_id(farm_id, "farm")
    for farm in farms:
        if farm.id == farm_id:
            return farm
    raise NotFound(f"farm {farm_id!r} is not configured")


def _stamp_ms(stamp: pd.Timestamp) -> int:
    """UTC epoch milliseconds of a timestamp (``Timestamp.value`` is always ns)."""
    return int(stamp.as_unit("ns").value // 1_000_000)


def _iso_ms(ms: int | float) -> str:
    return pd.Timestamp(int(ms), unit="ms", tz="UTC").isoformat().replace("+00:00", "Z")


def _json_list(values: np.ndarray) -> list[float | None]:
    return [float(v) if math.isfinite(v) else None for v in values.tolist()]


# ---------------------------------------------------------------- earthquakes


_QUAKE_FLOATS = (
    "magnitude", "latitude", "longitude", "depth_km", "distance_km", "east_km", "north_km",
    "dobrovolsky_km",
)  # fmt: skip


def quakes_frame(handles: Any, farm: FarmConfig, start_ms: int, end_ms: int, min_mag: float):
    """Catalogue events in a range with ``distance_km`` from the farm, ``east_km`` and
    ``north_km`` (position relative to the farm [km]) and ``dobrovolsky_km``."""
    frame = handles.influx.query_frame(*queries.earthquakes(start_ms, end_ms, min_mag))
    if frame.empty or "magnitude" not in frame:
        empty = {name: pd.Series([], dtype=float) for name in _QUAKE_FLOATS}
        return pd.DataFrame(
            {
                "time": pd.Series([], dtype="datetime64[ns, UTC]"),
                **empty,
                "event_id": pd.Series([], dtype=object),
                "source": pd.Series([], dtype=object),
            }
        )
    frame = frame.sort_values("time", kind="stable").reset_index(drop=True)
    lat, lon = frame["latitude"].astype(float), frame["longitude"].astype(float)
    frame["distance_km"] = great_circle_km(farm.latitude, farm.longitude, lat, lon)
    east = great_circle_km(farm.latitude, farm.longitude, farm.latitude, lon)
    north = great_circle_km(farm.latitude, farm.longitude, lat, farm.longitude)
    frame["east_km"] = np.sign(((lon - farm.longitude + 540) % 360) - 180) * east
    frame["north_km"] = np.sign(lat - farm.latitude) * north
    frame["dobrovolsky_km"] = dobrovolsky_radius_km(frame["magnitude"].astype(float))
    return frame


def quake_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-ready rows of a ``quakes_frame``."""
    out = []
    for row in frame.itertuples(index=False):
        out.append(
            {
                "time": row.time.isoformat().replace("+00:00", "Z"),
                "time_ms": _stamp_ms(row.time),
                "magnitude": _num(row.magnitude),
                "latitude": _num(row.latitude),
                "longitude": _num(row.longitude),
                "depth_km": _num(row.depth_km),
                "distance_km": _num(row.distance_km),
                "east_km": _num(row.east_km),
                "north_km": _num(row.north_km),
                "dobrovolsky_km": _num(row.dobrovolsky_km),
                "event_id": "" if pd.isna(row.event_id) else str(row.event_id),
                "source": "" if pd.isna(row.source) else str(row.source),
            }
        )
    return out


def _num(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return round(number, 4) if math.isfinite(number) else None


def catalog(handles: Any, farm: FarmConfig, args: Any) -> dict[str, Any]:
    """Filtered catalogue around a farm: start/end, min_magnitude, max_distance_km."""
    start, end = time_range(args, default_days=365)
    min_mag = float_arg(args, "min_magnitude", 2.5, -2.0, 10.0)
    max_km = float_arg(args, "max_distance_km", NEARBY_KM, 0.0, 20000.0)
    limit = int_arg(args, "limit", 500, 1, 5000)
    frame = quakes_frame(handles, farm, start, end, min_mag)
    frame = frame[frame["distance_km"] <= max_km]
    frame = frame.sort_values("time", ascending=False, kind="stable").head(limit)
    return {
        "farm": farm.id,
        "start": _iso_ms(start),
        "end": _iso_ms(end),
        "min_magnitude": min_mag,
        "max_distance_km": max_km,
        "events": quake_records(frame),
    }


# ---------------------------------------------------------------- overview


def overview(handles: Any) -> list[dict[str, Any]]:
    """Per farm: gateways (online, last seen, clock offset), animals (last sample; and
    ``reporting``: a sample within ``scheduler.stale_after_s``), open alarms and the
    latest quakes within NEARBY_KM."""
    result = []
    now = pd.Timestamp.now(tz="UTC")
    stale_after = pd.Timedelta(seconds=handles.config.scheduler.stale_after_s)
    latest = handles.influx.query_frame(*queries.latest_earthquakes(200))
    for farm in handles.config.farms:
        influx = handles.influx_for(farm.id)
        gateways = influx.query_frame(*queries.gateway_status(farm.id))
        animals = influx.query_frame(*queries.animals_last_seen(farm.id))
        nearby: list[dict[str, Any]] = []
        if not latest.empty and "latitude" in latest:
            frame = latest.copy()
            frame["distance_km"] = great_circle_km(
                farm.latitude, farm.longitude, frame["latitude"], frame["longitude"]
            )
            frame = frame[frame["distance_km"] <= NEARBY_KM].sort_values("time", ascending=False)
            for row in frame.head(10).itertuples(index=False):
                nearby.append(
                    {
                        "time": row.time.isoformat().replace("+00:00", "Z"),
                        "magnitude": _num(row.magnitude),
                        "distance_km": _num(row.distance_km),
                        "event_id": str(row.event_id),
                    }
                )
        result.append(
            {
                "farm": farm.id,
                "name": farm.name or farm.id,
                "latitude": farm.latitude,
                "longitude": farm.longitude,
                "gateways": [
                    _gateway_entry(row)
                    for row in gateways.itertuples(index=False)
                    if "gateway" in gateways
                ],
                "animals": [
                    {
                        "animal": str(row.animal),
                        "species": str(row.species),
                        "gateway": str(row.gateway),
                        "last_seen": row.time.isoformat().replace("+00:00", "Z"),
                        "reporting": bool(now - row.time <= stale_after),
                    }
                    for row in animals.sort_values("animal").itertuples(index=False)
                    if "animal" in animals
                ],
                "open_alarms": [a.to_dict() for a in alarms_query(handles, farm.id, "open", 100)],
                "nearby_quakes": nearby,
            }
        )
    return result


# ---------------------------------------------------------------- alarms


def alarms_query(
    handles: Any,
    farm: str | None = None,
    state: str | None = None,
    limit: int = 200,
    series: str | None = None,
    start_ms: int | None = None,
    end_ms: int | None = None,
) -> list[Alarm]:
    """Alarms newest first, optionally filtered by farm, state, series/animal and range."""
    statement = select(Alarm)
    if farm:
        statement = statement.where(Alarm.farm == farm)
    if state:
        statement = statement.where(Alarm.state == state)
    if start_ms is not None and end_ms is not None:
        lo = pd.Timestamp(start_ms, unit="ms", tz="UTC").to_pydatetime()
        hi = pd.Timestamp(end_ms, unit="ms", tz="UTC").to_pydatetime()
        statement = statement.where(Alarm.start < hi, or_(Alarm.end.is_(None), Alarm.end >= lo))
    statement = statement.order_by(Alarm.start.desc(), Alarm.id.desc()).limit(max(1, limit))
    with session_scope(handles.sessions) as db:
        rows = list(db.scalars(statement))
    if series and series != "herd" and not series.startswith("species:"):
        rows = [r for r in rows if r.series == series or series in (r.animals_involved or [])]
    elif series:
        rows = [r for r in rows if r.series == series]
    return rows


#: Review states the alarm list filters on ("none" = not reviewed yet).
REVIEW_STATES = ("none", "true", "false", "unsure")


def alarm_title(kind: str, series: str) -> str:
    """A short name for an alarm's series that never repeats a word: "herd",
    "herd quorum", "sheep (species)", "animal cow-007"."""
    if kind == "herd":
        return "herd" if series == "herd" else f"herd {series}"
    if kind == "quorum":
        return "herd quorum"
    if kind == "species":
        return f"{series.removeprefix('species:')} (species)"
    return f"{kind} {series}" if kind and kind != series else series


def _choice(args: Any, name: str, valid: tuple[str, ...]) -> str | None:
    value = args.get(name) or None
    if value is not None and value not in valid:
        raise InputError(f"{name}: must be one of {', '.join(valid)}, got {value!r}")
    return value


def alarm_list(handles: Any, args: Any, limit: int = 500) -> dict[str, Any]:
    """The alarm list grouped by episode, with reviews and filters.

    args : ``state`` (open/closed), ``kind`` (animal/species/herd/quorum), ``species``
    (cow/sheep/dog) and ``review`` (none/true/false/unsure: alarms with no review, or
    with at least one review of that verdict). Alarms of one farm whose spans overlap
    or lie within 30 min make one episode (``namazu.analytics.episodes``); an episode is
    listed when one of its alarms passes the filters, with its head alarm for context
    and only the members that pass. Each alarm carries ``title`` and ``reviews``
    (verdict and author).
    """
    from namazu.server.store.state import ALARM_KINDS

    filters = {
        "state": _choice(args, "state", ("open", "closed")),
        "kind": _choice(args, "kind", ALARM_KINDS),
        "species": _choice(args, "species", SPECIES),
        "review": _choice(args, "review", REVIEW_STATES),
    }
    rows = alarms_query(handles, None, filters["state"], limit)
    ids = [row.id for row in rows]
    verdicts: dict[int, list[dict[str, Any]]] = {}
    with session_scope(handles.sessions) as db:
        if ids:
            for review in db.scalars(
                select(Review).where(Review.alarm_id.in_(ids)).order_by(Review.created_at)
            ):
                verdicts.setdefault(review.alarm_id, []).append(
                    {"verdict": review.verdict, "user": review.user_name}
                )
    records = []
    for row in rows:
        record = row.to_dict()
        record["title"] = alarm_title(row.kind, row.series)
        record["reviews"] = verdicts.get(row.id, [])
        records.append(record)

    def passes(record: dict[str, Any]) -> bool:
        if filters["kind"] and record["kind"] != filters["kind"]:
            return False
        if filters["species"] and record["species"] != filters["species"]:
            return False
        wanted = filters["review"]
        given = {r["verdict"] for r in record["reviews"]}
        if wanted == "none":
            return not given
        return not wanted or wanted in given

    episodes = []
    for episode in group_episodes(records):
        shown = [a for a in episode.members if passes(a)]
        if not shown and not passes(episode.head):
            continue
        episodes.append(
            {
                "head": episode.head,
                "head_matches": passes(episode.head),
                "members": shown,
                "hidden": len(episode.members) - len(shown),
            }
        )
    return {"episodes": episodes, "filters": filters, "count": len(records)}


def alarm_detail(handles: Any, alarm_id: int) -> dict[str, Any]:
    """One alarm with its reviews, the quakes in its lead window and its reaction mask.

    ``lead_quakes``: target events (M >= min_magnitude, within the Dobrovolsky radius or
    the fixed radius) whose origin time lies in [start, end + lead_window]; each with
    ``preceded_proven``: the alarm's log record is proven (RFC 3161 time-stamp) to have
    existed before the origin time. ``proof``: that earliest proven time (``proven_at``),
    or why there is none (``reason``: no keyring/TSA configured, a broken log, ...).
    ``reaction``: local shaking (M >= reaction_min_magnitude within reaction_radius_km) in
    the ``reaction_window_min`` before the alarm start; when present the alarm is a
    reaction, not a precursor.
    """
    with session_scope(handles.sessions) as db:
        alarm = _stored_row(db, Alarm, alarm_id, "alarm")
        reviews = [
            r.to_dict()
            for r in db.scalars(
                select(Review).where(Review.alarm_id == alarm_id).order_by(Review.created_at)
            )
        ]
        record = alarm.to_dict()
    params = handles.config.evaluation_params()
    farm = farm_config(handles, record["farm"])
    start = pd.Timestamp(record["start"])
    end = pd.Timestamp(record["end"] or record["last_anomalous"])
    lead_end = end + pd.Timedelta(hours=params.lead_window_h)
    react_start = start - pd.Timedelta(minutes=params.reaction_window_min)
    frame = quakes_frame(
        handles,
        farm,
        _stamp_ms(react_start),
        _stamp_ms(lead_end) + 1,
        min(params.min_magnitude, params.reaction_min_magnitude),
    )
    radius = (
        frame["dobrovolsky_km"]
        if params.fixed_radius_km is None
        else pd.Series(params.fixed_radius_km, index=frame.index)
    )
    in_lead = (frame["time"] >= start) & (frame["time"] <= lead_end)
    targets = frame[
        in_lead & (frame["magnitude"] >= params.min_magnitude) & (frame["distance_km"] <= radius)
    ]
    shaking = frame[
        (frame["time"] >= react_start)
        & (frame["time"] <= start)
        & (frame["magnitude"] >= params.reaction_min_magnitude)
        & (frame["distance_km"] <= params.reaction_radius_km)
    ]
    proofs = handles.proofs.get()
    proven_at = proofs.proven_by(record.get("log_index"))
    lead_quakes = quake_records(targets)
    for quake in lead_quakes:
        # preceded only when the record provably existed before the origin time
        quake["preceded_proven"] = proven_at is not None and pd.Timestamp(quake["time"]) > (
            pd.Timestamp(proven_at)
        )
    record.update(
        {
            "reviews": reviews,
            "proof": {
                "proven_at": _iso(proven_at),
                "log_ok": proofs.ok,
                "reason": proofs.reason,
            },
            "lead_window": {"start": record["start"], "end": _iso(lead_end.to_pydatetime())},
            "lead_quakes": lead_quakes,
            "reaction": {
                "is_reaction": not shaking.empty,
                "window_start": _iso(react_start.to_pydatetime()),
                "shaking": quake_records(shaking),
            },
            "evaluation_params": params.as_dict(),
        }
    )
    return record


# ---------------------------------------------------------------- timeline


def timeline(
    handles: Any, farm: FarmConfig, series: str, start_ms: int, end_ms: int, max_points: int
) -> dict[str, Any]:
    """Activity with baseline and threshold, alarm spans, quakes and farm events.

    Activity of an animal comes from ``activity.odba`` [g], one collar sample a minute;
    of a species group or the herd from ``baseline.value`` (the collective series: the
    mean over the reporting animals, ``unit`` "mean ODBA per animal [g]"). Baseline,
    threshold and collective series are on the live rule's grid (``rule_grid_s``, e.g.
    900 s: the median of each 15-min step). Over long ranges the series is
    reduced in InfluxDB to min/max per bucket (``namazu.analytics.downsample``), so peaks stay;
    gaps are NaN points (``null`` in JSON).
    """
    grid_ms = int(handles.config.scheduler.resolution_s * 1000)
    is_animal = series != "herd" and not series.startswith("species:")
    resolution_ms = min(grid_ms, RAW_ACTIVITY_MS) if is_animal else grid_ms
    width = bucket_width_ms(start_ms, end_ms, max_points, resolution_ms)
    read = _read_activity(
        handles, farm, series, is_animal, start_ms, end_ms, width, resolution_ms, grid_ms
    )
    act_t, act_v, base_t, base_v, thr_v, width, source = read
    downsampled = width > resolution_ms
    if not act_t.size and not base_t.size:
        check_series_known(handles, farm, series)
    quakes = quakes_frame(handles, farm, start_ms, end_ms, 2.0)
    alarms = alarms_query(
        handles, farm.id, None, 1000, series=series, start_ms=start_ms, end_ms=end_ms
    )
    return {
        "farm": farm.id,
        "timezone": farm.timezone,
        "series": series,
        "label": series_label(series),
        "unit": "ODBA [g]" if is_animal else "mean ODBA per animal [g]",
        "start": _iso_ms(start_ms),
        "end": _iso_ms(end_ms),
        "resolution_s": resolution_ms / 1000,
        "rule_grid_s": grid_ms / 1000,
        "bucket_s": width / 1000,
        "downsampled": downsampled,
        "source": source,
        "activity": {"t": act_t.tolist(), "v": _json_list(act_v)},
        "baseline": {"t": base_t.tolist(), "v": _json_list(base_v)},
        "threshold": {"t": base_t.tolist(), "v": _json_list(thr_v)},
        "alarms": [
            {
                "id": a.id,
                "series": a.series,
                "kind": a.kind,
                "state": a.state,
                "title": alarm_title(a.kind, a.series),
                "own": a.series == series,
                "start": _iso(a.start),
                "end": _iso(a.end or a.last_anomalous),
                "declared_at": _iso(getattr(a, "declared_at", None) or a.opened_at),
                "declared_known": getattr(a, "declared_at", None) is not None,
                "peak_ratio": _num(a.peak_ratio),
            }
            for a in alarms
        ],
        "quakes": mark_targets(quake_records(quakes), handles.config.evaluation_params()),
        "events": [e.to_dict() for e in farm_events(handles, farm.id, start_ms, end_ms)],
    }


def _read_activity(
    handles: Any,
    farm: FarmConfig,
    series: str,
    is_animal: bool,
    start_ms: int,
    end_ms: int,
    width: int,
    resolution_ms: int,
    grid_ms: int,
) -> tuple[np.ndarray, ...]:
    """Activity, baseline and threshold of a series for buckets of ``width`` [ms].

    Long ranges read the coarsest rollup whose step fits the bucket
    (``namazu.server.store.rollups``; the bucket is widened to a multiple of that step);
    short ranges read the raw samples (min/max per bucket when ``width`` exceeds the
    resolution). A range where the chosen source is empty (rollups not built yet; raw data
    beyond its retention) falls back to the finest other data that exists. Returns
    (act_t, act_v, base_t, base_v, thr_v, width, source), ``source`` "raw" or
    "rollup N min".
    """
    policy = handles.rollup_policy(farm.id)
    influx = handles.influx_for(farm.id)

    def rollup(step: int, bucket: int) -> tuple[Any, ...] | None:
        try:
            return _rollup(step, bucket)
        except InfluxQueryError as exc:  # e.g. the configured policy does not exist
            log.warning("rollups unreadable; reading raw data", extra={"error": str(exc)})
            return None

    def _rollup(step: int, bucket: int) -> tuple[Any, ...] | None:
        bucket = max(step, -(-bucket // step) * step)
        base_q, params = queries.baseline_rollup_buckets(
            farm.id, series, start_ms, end_ms, bucket, step, policy
        )
        if is_animal:  # both in one round trip
            act_q, act_params = queries.activity_rollup_buckets(
                farm.id, series, start_ms, end_ms, bucket, step, policy
            )
            base, act = influx.query_frames([base_q, act_q], {**params, **act_params})
        else:
            base = act = influx.query_frame(base_q, params)
        if base.empty and act.empty:
            return None
        act_t, act_v = _extremes(act, bucket)
        base_t, base_v = _bucket_means(base, "baseline", bucket)
        _, thr_v = _bucket_means(base, "threshold", bucket)
        return act_t, act_v, base_t, base_v, thr_v, bucket, f"rollup {step // 60_000} min"

    def raw() -> tuple[Any, ...] | None:
        if width > resolution_ms:
            base_width = max(width, grid_ms)  # never finer than the baseline's grid
            base = influx.query_frame(
                *queries.baseline_buckets(farm.id, series, start_ms, end_ms, base_width)
            )
            act, act_width = base, base_width
            if is_animal:
                act, act_width = (
                    influx.query_frame(
                        *queries.activity_minmax(farm.id, series, start_ms, end_ms, width)
                    ),
                    width,
                )
            if base.empty and act.empty:
                return None
            act_t, act_v = _extremes(act, act_width)
            base_t, base_v = _bucket_means(base, "baseline", base_width)
            _, thr_v = _bucket_means(base, "threshold", base_width)
            return act_t, act_v, base_t, base_v, thr_v, act_width, "raw"
        base = influx.query_frame(*queries.baseline_raw(farm.id, series, start_ms, end_ms))
        act = base
        if is_animal:
            act = influx.query_frame(*queries.activity_raw(farm.id, series, start_ms, end_ms))
        if base.empty and act.empty:
            return None
        act_t, act_v = _raw(act, "value", resolution_ms)
        base_t, base_v = _raw(base, "baseline", grid_ms)
        _, thr_v = _raw(base, "threshold", grid_ms)
        return act_t, act_v, base_t, base_v, thr_v, width, "raw"

    fitting = [step for step in ROLLUP_STEPS_MS if step <= width]
    finer = [step for step in ROLLUP_STEPS_MS if step > width]
    # preferred first: the coarsest fitting rollup, raw, then the others finest first
    readers = [
        *(lambda step=step: rollup(step, width) for step in reversed(fitting)),
        raw,
        *(lambda step=step: rollup(step, step) for step in finer),
    ]
    for reader in readers:
        found = reader()
        if found is not None:
            return found
    empty = np.zeros(0, dtype=np.int64)
    nothing = np.zeros(0, dtype=float)
    return empty, nothing, empty, nothing, nothing, width, "raw"


def series_label(series: str) -> str:
    """How a series is named on screen: "herd", "all cows", "cow-007"."""
    if series.startswith("species:"):
        return f"all {series.removeprefix('species:')}s".replace("sheeps", "sheep")
    return series


def check_series_known(handles: Any, farm: FarmConfig, series: str) -> None:
    """NotFound when the farm has never reported ``series`` (an animal id or a species);
    the message names the series and the known ones."""
    if series == "herd":
        return
    frame = handles.influx_for(farm.id).query_frame(*queries.animals_last_seen(farm.id))
    animals = sorted(map(str, frame["animal"])) if "animal" in frame else []
    species = sorted(set(map(str, frame["species"]))) if "species" in frame else []
    if series.startswith("species:"):
        wanted = series.removeprefix("species:")
        if wanted not in species:
            known = ", ".join(species) or "none yet"
            raise NotFound(f"series {series!r}: farm {farm.id} has no {wanted}; species: {known}")
        return
    if series not in animals:
        known = ", ".join(animals[:12]) + (" …" if len(animals) > 12 else "")
        raise NotFound(
            f"series {series!r}: no such animal on farm {farm.id}; "
            f"known animals: {known or 'none yet'}"
        )


def mark_targets(quakes: list[dict[str, Any]], params: Any) -> list[dict[str, Any]]:
    """Flag each quake record that is a target earthquake by magnitude and distance
    (M >= ``min_magnitude`` within the Dobrovolsky radius, or ``fixed_radius_km``):
    ``is_target`` and its ``radius_km``."""
    for quake in quakes:
        radius = params.fixed_radius_km or quake["dobrovolsky_km"]
        magnitude, distance = quake["magnitude"], quake["distance_km"]
        quake["radius_km"] = radius
        quake["is_target"] = bool(
            magnitude is not None
            and distance is not None
            and radius is not None
            and magnitude >= params.min_magnitude
            and distance <= radius
        )
    return quakes


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def _ms(frame: pd.DataFrame) -> np.ndarray:
    if frame.empty:
        return np.array([], dtype=np.int64)
    return frame["time"].dt.as_unit("ms").astype("int64").to_numpy()


def _raw(frame: pd.DataFrame, column: str, resolution_ms: int) -> tuple[np.ndarray, np.ndarray]:
    if frame.empty or column not in frame:
        return np.array([], dtype=np.int64), np.array([], dtype=float)
    frame = frame.sort_values("time", kind="stable")
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
    return insert_gaps(_ms(frame), values, resolution_ms)


def _extremes(frame: pd.DataFrame, width_ms: int) -> tuple[np.ndarray, np.ndarray]:
    if frame.empty or "lo" not in frame:
        return np.array([], dtype=np.int64), np.array([], dtype=float)
    frame = frame.sort_values("time", kind="stable")
    lo = pd.to_numeric(frame["lo"], errors="coerce").to_numpy(dtype=float)
    hi = pd.to_numeric(frame["hi"], errors="coerce").to_numpy(dtype=float)
    return merge_bucket_extremes(_ms(frame), lo, hi, width_ms)


def _bucket_means(frame: pd.DataFrame, column: str, width_ms: int) -> tuple[np.ndarray, np.ndarray]:
    if frame.empty or column not in frame:
        return np.array([], dtype=np.int64), np.array([], dtype=float)
    frame = frame.sort_values("time", kind="stable")
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
    return insert_gaps(_ms(frame) + width_ms // 2, values, width_ms)


# ---------------------------------------------------------------- farm events, reviews


def farm_events(
    handles: Any, farm: str | None, start_ms: int | None = None, end_ms: int | None = None
) -> list[FarmEvent]:
    """Farm events (optionally of one farm, overlapping a range), oldest first."""
    statement = select(FarmEvent)
    if farm:
        statement = statement.where(FarmEvent.farm == farm)
    if start_ms is not None and end_ms is not None:
        lo = pd.Timestamp(start_ms, unit="ms", tz="UTC").to_pydatetime()
        hi = pd.Timestamp(end_ms, unit="ms", tz="UTC").to_pydatetime()
        statement = statement.where(
            FarmEvent.start < hi, or_(FarmEvent.end.is_(None), FarmEvent.end >= lo)
        )
    with session_scope(handles.sessions) as db:
        return list(db.scalars(statement.order_by(FarmEvent.start, FarmEvent.id)))


def new_farm_event(handles: Any, user: Any, values: Any) -> dict[str, Any]:
    """Record a farm event from form or JSON values (farm, kind, start, end, comment)."""
    farm = farm_config(handles, values.get("farm"))
    kind = values.get("kind")
    if kind not in EVENT_KINDS:
        raise InputError(f"kind: must be one of {', '.join(EVENT_KINDS)}")
    start = parse_time_ms(values.get("start"), "start")
    end = values.get("end")
    end_ms = parse_time_ms(end, "end") if end not in (None, "") else None
    if end_ms is not None and end_ms < start:
        raise InputError("end: must not be before start")
    comment = str(values.get("comment") or "")
    if len(comment) > 2000:
        raise InputError("comment: at most 2000 characters")
    with session_scope(handles.sessions) as db:
        event = FarmEvent(
            farm=farm.id,
            kind=kind,
            start=pd.Timestamp(start, unit="ms", tz="UTC").to_pydatetime(),
            end=None
            if end_ms is None
            else pd.Timestamp(end_ms, unit="ms", tz="UTC").to_pydatetime(),
            comment=comment,
            user_id=user.id,
            user_name=user.name,
        )
        db.add(event)
        db.flush()
        return event.to_dict()


def add_review(handles: Any, user: Any, alarm_id: int, values: Any) -> dict[str, Any]:
    """Annotate an alarm (verdict true/false/unsure, comment); the author is the
    logged-in user, never a request field."""
    from namazu.server.store.models import VERDICTS

    verdict = values.get("verdict")
    if verdict not in VERDICTS:
        raise InputError(f"verdict: must be one of {', '.join(VERDICTS)}")
    comment = str(values.get("comment") or "")
    if len(comment) > 4000:
        raise InputError("comment: at most 4000 characters")
    with session_scope(handles.sessions) as db:
        _stored_row(db, Alarm, alarm_id, "alarm")
        review = Review(
            alarm_id=alarm_id, user_id=user.id, user_name=user.name, verdict=verdict,
            comment=comment,
        )  # fmt: skip
        db.add(review)
        db.flush()
        return review.to_dict()


def update_review(
    handles: Any, user: Any, review_id: int, values: Any, delete: bool = False
) -> dict[str, Any] | None:
    """Change or delete a review: only its author or an admin may (else PermissionError)."""
    from namazu.server.store.models import VERDICTS

    with session_scope(handles.sessions) as db:
        review = _stored_row(db, Review, review_id, "review")
        if review.user_id != user.id and user.role != "admin":
            raise PermissionError("only the author or an admin may change a review")
        if delete:
            db.delete(review)
            return None
        verdict = values.get("verdict", review.verdict)
        if verdict not in VERDICTS:
            raise InputError(f"verdict: must be one of {', '.join(VERDICTS)}")
        review.verdict = verdict
        if "comment" in values:
            review.comment = str(values.get("comment") or "")[:4000]
        review.updated_at = datetime.now(UTC)
        db.flush()
        return review.to_dict()
