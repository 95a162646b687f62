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
    statement = f'SELECT {which}("odba") AS "odba" FROM "activity" WHERE "farm" = $farm'
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
