"""Pure parsing of activity tables (CSV text) and analysis periods into UTC-indexed frames.

Activity CSV: one header row, a time column (default ``time``) and one or more numeric
activity columns (animals, species groups, herd). Times with a zone or offset are
converted to UTC; times without one are read as UTC, or, when a ``timezone`` is named
(``Europe/Rome``), localised to it, where a local time that is ambiguous or does not
exist at a daylight-saving change is an error that names the rows. Unsorted or
duplicated times are errors naming the rows. File lines are counted from 1 with the
header as line 1.

Periods CSV: columns ``start,end,label``; each row is the half-open span [start, end)
with the same time rules; several rows may share a label.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd


class TabularError(ValueError):
    """A table cannot be used; the one-line message names the column or the lines."""


def _lines(positions: np.ndarray, limit: int = 5) -> str:
    shown = ", ".join(str(int(p) + 2) for p in positions[:limit])
    more = len(positions) - limit
    return shown + (f" and {more} more" if more > 0 else "")


def _read(text: str, what: str) -> pd.DataFrame:
    if not text.strip():
        raise TabularError(f"{what} is empty")
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TabularError(f"{what} is not a readable CSV table: {first}") from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def _require(frame: pd.DataFrame, columns: list[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        available = ", ".join(frame.columns) or "none"
        raise TabularError(
            f"{what} has no column {', '.join(repr(m) for m in missing)}; "
            f"columns present: {available}"
        )


def parse_times(values: pd.Series, timezone: str | None, what: str) -> pd.DatetimeIndex:
    """Parse time strings to a UTC DatetimeIndex (ns).

    values : strings, ISO 8601 (with or without zone/offset).
    timezone : IANA zone for times without one; None = UTC.
    what : name used in error messages (e.g. "activity file column 'time'").
    Raises TabularError naming lines that cannot be parsed or are ambiguous/nonexistent.
    """
    text = values.astype(str).str.strip()
    empty = np.flatnonzero((text == "").to_numpy())
    if empty.size:
        raise TabularError(f"{what}: empty time on line(s) {_lines(empty)}")
    has_zone = text.str.contains(r"(?:Z|[+-]\d\d:?\d\d)$", regex=True)
    if has_zone.any() and not has_zone.all():
        mixed = np.flatnonzero((~has_zone).to_numpy())
        raise TabularError(
            f"{what}: times without a zone mixed with zoned times, line(s) {_lines(mixed)}"
        )
    try:
        parsed = pd.to_datetime(text, format="ISO8601", utc=bool(has_zone.all()))
    except (ValueError, TypeError) as exc:
        bad = np.flatnonzero(
            pd.to_datetime(text, format="ISO8601", errors="coerce", utc=True).isna().to_numpy()
        )
        where = f" on line(s) {_lines(bad)}" if bad.size else ""
        raise TabularError(f"{what}: unreadable time{where}") from exc
    index = pd.DatetimeIndex(parsed)
    if index.tz is None:
        if timezone:
            try:
                local = index.tz_localize(timezone, ambiguous="NaT", nonexistent="NaT")
            except Exception as exc:  # unknown zone names raise various pytz/zoneinfo errors
                raise TabularError(f"unknown time zone {timezone!r}") from exc
            bad = np.flatnonzero(local.isna())
            if bad.size:
                raise TabularError(
                    f"{what}: local times ambiguous or nonexistent in {timezone} at a "
                    f"daylight-saving change on line(s) {_lines(bad)}"
                )
            index = local
        else:
            index = index.tz_localize("UTC")
    utc = index.tz_convert("UTC")
    outside = np.flatnonzero(
        (utc < pd.Timestamp("1678-01-01", tz="UTC")) | (utc > pd.Timestamp("2261-12-31", tz="UTC"))
    )
    if outside.size:
        raise TabularError(f"{what}: time outside the years 1678-2261 on line(s) {_lines(outside)}")
    return utc.as_unit("ns")


def parse_activity_csv(
    text: str,
    time_column: str = "time",
    columns: list[str] | None = None,
    timezone: str | None = None,
) -> pd.DataFrame:
    """Parse an activity table into a DataFrame indexed by UTC sample time.

    text : CSV text.
    time_column : name of the time column.
    columns : activity columns to keep (default: all others); each must exist.
    timezone : IANA zone for times written without a zone; None = UTC.
    Returns DataFrame of float64 activity [unit of the file], index ``time`` (UTC, ns),
    sorted and unique. Empty cells are NaN.
    Raises TabularError (one line) for an unreadable table, missing columns, bad times or
    numbers, unsorted or duplicated times, ambiguous or nonexistent local times.
    """
    frame = _read(text, "activity file")
    _require(frame, [time_column], "activity file")
    keep = columns if columns is not None else [c for c in frame.columns if c != time_column]
    _require(frame, list(keep), "activity file")
    if not keep:
        raise TabularError("activity file has no activity column besides the time")
    index = parse_times(frame[time_column], timezone, f"activity file column {time_column!r}")
    data = {}
    for column in keep:
        raw = frame[column].str.strip()
        numbers = pd.to_numeric(raw.where(raw != ""), errors="coerce")
        bad = np.flatnonzero((numbers.isna() & (raw != "")).to_numpy())
        if bad.size:
            raise TabularError(f"activity column {column!r}: not a number on line(s) {_lines(bad)}")
        data[column] = numbers.to_numpy(dtype=np.float64)
    t = index.asi8
    backwards = np.flatnonzero(np.diff(t) < 0) + 1
    if backwards.size:
        raise TabularError(
            f"activity times are not sorted: line(s) {_lines(backwards)} go back in time"
        )
    repeated = np.flatnonzero(np.diff(t) == 0) + 1
    if repeated.size:
        raise TabularError(f"activity times are duplicated on line(s) {_lines(repeated)}")
    return pd.DataFrame(data, index=index.rename("time"))


def parse_periods_csv(text: str, timezone: str | None = None) -> pd.DataFrame:
    """Parse a periods table ``start,end,label`` (e.g. "stable" vs "pasture").

    Returns DataFrame with ``start``, ``end`` (UTC) and ``label`` (str); each row is the
    half-open span [start, end). Raises TabularError when end <= start or a column is
    missing.
    """
    frame = _read(text, "periods file")
    _require(frame, ["start", "end", "label"], "periods file")
    start = parse_times(frame["start"], timezone, "periods file column 'start'")
    end = parse_times(frame["end"], timezone, "periods file column 'end'")
    bad = np.flatnonzero(end.asi8 <= start.asi8)
    if bad.size:
        raise TabularError(f"periods file: end is not after start on line(s) {_lines(bad)}")
    labels = frame["label"].str.strip()
    empty = np.flatnonzero((labels == "").to_numpy())
    if empty.size:
        raise TabularError(f"periods file: empty label on line(s) {_lines(empty)}")
    return pd.DataFrame({"start": start, "end": end, "label": labels.to_numpy()})
