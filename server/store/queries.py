"""InfluxQL statements of the panel, built with bound parameters.

Every function is pure: it returns ``(statement, params)`` for
``InfluxClient.query(statement, params=params)``. User input (farm, animal, series ids,
times, magnitudes) only ever travels in ``params`` (``$name`` placeholders), never inside
the statement text. The only values formatted into a statement are integers computed
here (bucket widths, limits) and fixed identifiers.

Times are UTC epoch milliseconds at this interface and are bound as nanoseconds (the
unit InfluxQL compares ``time`` against).
"""

from __future__ import annotations

from typing import Any

Query = tuple[str, dict[str, Any]]

ACTIVITY_FIELDS = ("odba", "vedba")
BASELINE_FIELDS = ("baseline", "threshold", "value")
_NS_PER_MS = 1_000_000


class QueryError(ValueError):
    """A query cannot be built from these arguments (reason in the message)."""


def _range(start_ms: int, end_ms: int) -> dict[str, int]:
    if int(end_ms) <= int(start_ms):
        raise QueryError(f"end ({end_ms} ms) must be after start ({start_ms} ms)")
    return {"start": int(start_ms) * _NS_PER_MS, "end": int(end_ms) * _NS_PER_MS}


def _field(field: str, allowed: tuple[str, ...]) -> str:
    if field not in allowed:
        raise QueryError(f"field {field!r} is unknown; valid: {', '.join(allowed)}")
    return field


def _width(width_ms: int) -> int:
    width = int(width_ms)
    if width <= 0:
        raise QueryError(f"bucket width must be > 0 ms, got {width_ms}")
    return width


def activity_raw(farm: str, animal: str, start_ms: int, end_ms: int, field: str = "odba") -> Query:
    """Raw samples of one animal: columns ``time``, ``value`` [g]."""
    name = _field(field, ACTIVITY_FIELDS)
    statement = (
        f'SELECT "{name}" AS "value" FROM "activity" '
        'WHERE "farm" = $farm AND "animal" = $animal AND time >= $start AND time < $end'
    )
    return statement, {"farm": farm, "animal": animal, **_range(start_ms, end_ms)}


def activity_minmax(
    farm: str, animal: str, start_ms: int, end_ms: int, width_ms: int, field: str = "odba"
) -> Query:
    """Per-bucket min and max of one animal: columns ``time`` (bucket start), ``lo``, ``hi``."""
    name = _field(field, ACTIVITY_FIELDS)
    statement = (
        f'SELECT min("{name}") AS "lo", max("{name}") AS "hi" FROM "activity" '
        'WHERE "farm" = $farm AND "animal" = $animal AND time >= $start AND time < $end '
        f"GROUP BY time({_width(width_ms)}ms) fill(none)"
    )
    return statement, {"farm": farm, "animal": animal, **_range(start_ms, end_ms)}


def baseline_raw(farm: str, series: str, start_ms: int, end_ms: int) -> Query:
    """Baseline rows of one series: ``time``, ``baseline``, ``threshold``, ``value``."""
    statement = (
        'SELECT "baseline", "threshold", "value" FROM "baseline" '
        'WHERE "farm" = $farm AND "series" = $series AND time >= $start AND time < $end'
    )
    return statement, {"farm": farm, "series": series, **_range(start_ms, end_ms)}


def baseline_buckets(farm: str, series: str, start_ms: int, end_ms: int, width_ms: int) -> Query:
    """Per-bucket baseline and threshold means and value min/max of one series.

    Columns ``time`` (bucket start), ``baseline``, ``threshold``, ``lo``, ``hi``.
    """
    statement = (
        'SELECT mean("baseline") AS "baseline", mean("threshold") AS "threshold", '
        'min("value") AS "lo", max("value") AS "hi" FROM "baseline" '
        'WHERE "farm" = $farm AND "series" = $series AND time >= $start AND time < $end '
        f"GROUP BY time({_width(width_ms)}ms) fill(none)"
    )
    return statement, {"farm": farm, "series": series, **_range(start_ms, end_ms)}


# ------------------------------------------------------------------ rollups
#
# Downsampled copies of ``activity`` and ``baseline`` for long ranges (namazu.server.store.
# rollups): per bucket of a level, activity ``lo``/``hi``/``mean`` [g] and ``samples``; the
# baseline's mean ``baseline``/``threshold`` and the collective value's ``lo``/``hi``.

#: Source measurement -> its rollup measurements' name prefix.
ROLLUP_SOURCES = ("activity", "baseline")


def rollup_measurement(source: str, step_ms: int) -> str:
    """Name of the rollup of ``source`` at a step, e.g. ``activity_r15m``, ``baseline_r180m``."""
    if source not in ROLLUP_SOURCES:
        raise QueryError(f"no rollup of {source!r}; valid: {', '.join(ROLLUP_SOURCES)}")
    if step_ms <= 0 or step_ms % 60_000:
        raise QueryError(f"rollup step must be a whole number of minutes, got {step_ms} ms")
    return f"{source}_r{step_ms // 60_000}m"


def _qualified(measurement: str, retention_policy: str, database: str = "") -> str:
    """``"rp"."m"`` (or ``"db"."rp"."m"`` for INTO), or ``"m"`` in the default policy."""
    if not retention_policy:
        return f'"{measurement}"'
    for name in (retention_policy, database):
        if '"' in name or "\\" in name:
            raise QueryError(f"bad retention policy or database name {name!r}")
    prefix = f'"{database}".' if database else ""
    return f'{prefix}"{retention_policy}"."{measurement}"'


def rollup_into(
    source: str,
    step_ms: int,
    start_ms: int,
    end_ms: int,
    database: str,
    retention_policy: str = "",
    from_step_ms: int | None = None,
) -> Query:
    """SELECT ... INTO: the rollup of ``source`` at ``step_ms`` over [start, end), from the
    raw measurement or, with ``from_step_ms``, from a finer rollup (min of ``lo``, max of
    ``hi``, mean of the means: exact for lo/hi, sample-weighted only where buckets are
    full). Tags are kept (GROUP BY *); a bucket written again is overwritten."""
    target = _qualified(rollup_measurement(source, step_ms), retention_policy, database)
    if from_step_ms is None:
        origin = f'"{source}"'
        if source == "activity":
            fields = (
                'min("odba") AS "lo", max("odba") AS "hi", mean("odba") AS "mean", '
                'count("odba") AS "samples"'
            )
        else:
            fields = (
                'mean("baseline") AS "baseline", mean("threshold") AS "threshold", '
                'min("value") AS "lo", max("value") AS "hi"'
            )
    else:
        origin = _qualified(rollup_measurement(source, from_step_ms), retention_policy)
        if source == "activity":
            fields = (
                'min("lo") AS "lo", max("hi") AS "hi", mean("mean") AS "mean", '
                'sum("samples") AS "samples"'
            )
        else:
            fields = (
                'mean("baseline") AS "baseline", mean("threshold") AS "threshold", '
                'min("lo") AS "lo", max("hi") AS "hi"'
            )
    statement = (
        f"SELECT {fields} INTO {target} FROM {origin} WHERE time >= $start AND time < $end "
        f"GROUP BY time({_width(step_ms)}ms), *"
    )
    return statement, _range(start_ms, end_ms)


def rollup_edge(source: str, step_ms: int, retention_policy: str, which: str) -> Query:
    """The first or last bucket of a rollup (``which`` = "first"/"last"): ``time``.
    (``ORDER BY time LIMIT 1``: InfluxDB 1.6's ``first()`` over several shards may answer
    with a later shard's first point.)"""
    if which not in ("first", "last"):
        raise QueryError(f"which must be first or last, got {which!r}")
    origin = _qualified(rollup_measurement(source, step_ms), retention_policy)
    order = "ASC" if which == "first" else "DESC"
    return f'SELECT "hi" FROM {origin} ORDER BY time {order} LIMIT 1', {}


def source_edge(source: str, which: str) -> Query:
    """The first or last raw point of ``activity`` or ``baseline``: ``time``."""
    if which not in ("first", "last") or source not in ROLLUP_SOURCES:
        raise QueryError(f"bad edge query {source!r} {which!r}")
    field = "odba" if source == "activity" else "value"
    order = "ASC" if which == "first" else "DESC"
    return f'SELECT "{field}" FROM "{source}" ORDER BY time {order} LIMIT 1', {}


def activity_rollup_buckets(
    farm: str, animal: str, start_ms: int, end_ms: int, width_ms: int, step_ms: int,
    retention_policy: str = "",
) -> Query:  # fmt: skip
    """Per-bucket min and max of one animal from its rollup at ``step_ms`` (``width_ms`` a
    multiple of it): ``time``, ``lo``, ``hi``."""
    origin = _qualified(rollup_measurement("activity", step_ms), retention_policy)
    statement = (
        f'SELECT min("lo") AS "lo", max("hi") AS "hi" FROM {origin} '
        'WHERE "farm" = $farm AND "animal" = $animal AND time >= $start AND time < $end '
        f"GROUP BY time({_width(width_ms)}ms) fill(none)"
    )
    return statement, {"farm": farm, "animal": animal, **_range(start_ms, end_ms)}


def baseline_rollup_buckets(
    farm: str, series: str, start_ms: int, end_ms: int, width_ms: int, step_ms: int,
    retention_policy: str = "",
) -> Query:  # fmt: skip
    """As ``baseline_buckets``, from the baseline's rollup at ``step_ms``: ``time``,
    ``baseline``, ``threshold``, ``lo``, ``hi``."""
    origin = _qualified(rollup_measurement("baseline", step_ms), retention_policy)
    statement = (
        'SELECT mean("baseline") AS "baseline", mean("threshold") AS "threshold", '
        f'min("lo") AS "lo", max("hi") AS "hi" FROM {origin} '
        'WHERE "farm" = $farm AND "series" = $series AND time >= $start AND time < $end '
        f"GROUP BY time({_width(width_ms)}ms) fill(none)"
    )
    return statement, {"farm": farm, "series": series, **_range(start_ms, end_ms)}


def earthquakes(start_ms: int, end_ms: int, min_magnitude: float = -10.0) -> Query:
    """Catalogue events in a range: ``time``, ``magnitude``, ``latitude``, ``longitude``,
    ``depth_km``, ``event_id``, ``source`` (the tag)."""
    statement = (
        'SELECT "magnitude", "latitude", "longitude", "depth_km", "event_id" FROM "earthquake" '
        'WHERE time >= $start AND time < $end AND "magnitude" >= $min_magnitude GROUP BY "source"'
    )
    return statement, {"min_magnitude": float(min_magnitude), **_range(start_ms, end_ms)}


def earthquake_by_id(event_id: str) -> Query:
    """One catalogue event by its ``event_id`` (every source that lists it): ``time``,
    ``magnitude``, ``latitude``, ``longitude``, ``depth_km``, ``event_id``, ``source``."""
    statement = (
        'SELECT "magnitude", "latitude", "longitude", "depth_km", "event_id" FROM "earthquake" '
        'WHERE "event_id" = $event_id GROUP BY "source"'
    )
    return statement, {"event_id": str(event_id)}


def latest_earthquakes(limit: int = 200) -> Query:
    """The newest catalogue events (newest first), at most ``limit`` per source."""
    statement = (
        'SELECT "magnitude", "latitude", "longitude", "depth_km", "event_id" FROM "earthquake" '
        f'GROUP BY "source" ORDER BY time DESC LIMIT {max(1, int(limit))}'
    )
    return statement, {}


def gateway_status(farm: str) -> Query:
    """The latest status report of each gateway of a farm: ``time`` (report time),
    ``online``, ``clock_offset_s``, ``seq``, ``gateway`` (tag)."""
    statement = (
        'SELECT "online", "clock_offset_s", "seq" FROM "gateway_status" '
        'WHERE "farm" = $farm GROUP BY "gateway" ORDER BY time DESC LIMIT 1'
    )
    return statement, {"farm": farm}


def animals_last_seen(farm: str) -> Query:
    """The last sample of each animal of a farm: ``time``, ``odba``, ``animal``,
    ``species``, ``gateway`` (tags)."""
    statement = (
        'SELECT "odba" FROM "activity" WHERE "farm" = $farm '
        'GROUP BY "animal", "species", "gateway" ORDER BY time DESC LIMIT 1'
    )
    return statement, {"farm": farm}


def activity_edge(farm: str, which: str) -> Query:
    """The first or last activity sample of a farm (``which`` = "first" or "last"):
    ``time``, ``odba``."""
    if which not in ("first", "last"):
        raise ValueError(f"which must be first or last, got {which!r}")
    order = "ASC" if which == "first" else "DESC"
    statement = f'SELECT "odba" FROM "activity" WHERE "farm" = $farm ORDER BY time {order} LIMIT 1'
    return statement, {"farm": farm}


def activity_for_export(farm: str, animal: str, start_ms: int, end_ms: int) -> Query:
    """All activity fields of one animal for export: ``time``, ``odba``, ``vedba``,
    ``species``, ``gateway``."""
    statement = (
        'SELECT "odba", "vedba", "species", "gateway" FROM "activity" '
        'WHERE "farm" = $farm AND "animal" = $animal AND time >= $start AND time < $end'
    )
    return statement, {"farm": farm, "animal": animal, **_range(start_ms, end_ms)}


def activity_means(
    farm: str, start_ms: int, end_ms: int, width_ms: int, species: str | None = None
) -> Query:
    """Mean activity per animal and time bucket (optionally one species), for evaluation:
    columns ``time`` (bucket start), ``odba`` [g], ``animal`` and ``species`` (tags)."""
    params: dict[str, Any] = {"farm": farm, **_range(start_ms, end_ms)}
    species_clause = ""
    if species:
        species_clause = ' AND "species" = $species'
        params["species"] = species
    statement = (
        'SELECT mean("odba") AS "odba" FROM "activity" '
        f'WHERE "farm" = $farm AND time >= $start AND time < $end{species_clause} '
        f'GROUP BY time({_width(width_ms)}ms), "animal", "species" fill(none)'
    )
    return statement, params


def radio_loss() -> Query:
    """The latest radio packet loss of each LoRaWAN collar (``health`` points of kind
    ``radio``, written by the data-health job): ``time``, ``uplinks_received``,
    ``uplinks_missing`` [count], ``loss_pct`` [%], ``farm`` and ``subject`` (tags)."""
    statement = (
        'SELECT "uplinks_received", "uplinks_missing", "loss_pct" FROM "health" '
        'WHERE "kind" = \'radio\' GROUP BY "farm", "subject" ORDER BY time DESC LIMIT 1'
    )
    return statement, {}
