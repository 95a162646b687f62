"""Catalogue files: thin shells around ``namazu.analytics.catalog``.

``read_catalog`` reads any supported format (plain or ``.gz``) through the pure
``namazu.analytics.catalog.parse_catalog``; ``write_catalog_csv`` writes the project's CSV,
which ``parse_study_csv`` reads back unchanged. The project CSV may hold several rows
per event, one per retrieved revision, told apart by ``revision_time`` (UTC, when the
revision was retrieved): ``append_catalog_revisions`` adds only revisions that differ
from the stored newest one, and reading returns the newest revision of each event.
"""

from __future__ import annotations

import gzip
import io
import os
from pathlib import Path

import numpy as np
import pandas as pd

from namazu.analytics.catalog import (
    CATALOG_COLUMNS,
    REVISION_COLUMN,
    CatalogFormatError,
    parse_catalog,
)

_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


class CatalogFileError(Exception):
    """A catalogue file cannot be read or written; the message names the path."""


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CatalogFileError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if path.suffix == ".gz" or raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise CatalogFileError(f"{path}: not a valid gzip file: {exc}") from exc
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def read_catalog(path: str | Path, fmt: str | None = None) -> pd.DataFrame:
    """Read a catalogue file of any supported format into the catalogue schema.

    path : file path (``.gz`` allowed). fmt : format name or None to sniff it.
    Returns the DataFrame of ``namazu.analytics.catalog.CATALOG_COLUMNS`` (UTC times, depth km).
    Raises CatalogFileError naming the path and what is wrong.
    """
    path = Path(path)
    text = _read_text(path)
    try:
        return parse_catalog(text, fmt)
    except CatalogFormatError as exc:
        raise CatalogFileError(f"{path}: {exc}") from exc


def _formatted(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.loc[:, list(CATALOG_COLUMNS)].copy()
    out["time"] = out["time"].dt.tz_convert("UTC").dt.strftime(_TIME_FORMAT)
    if REVISION_COLUMN in frame.columns:
        out[REVISION_COLUMN] = pd.to_datetime(frame[REVISION_COLUMN], utc=True).dt.strftime(
            _TIME_FORMAT
        )
    return out


def _write_atomic(frame: pd.DataFrame, path: Path, *, append: bool) -> None:
    text = frame.to_csv(index=False, header=not append, lineterminator="\n", float_format=None)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if append:
            with path.open("a", encoding="utf-8") as handle:
                handle.write(text)
            return
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        raise CatalogFileError(f"{path}: cannot write: {exc.strerror or exc}") from exc


def write_catalog_csv(catalog: pd.DataFrame, path: str | Path) -> None:
    """Write a catalogue DataFrame as the project's CSV (atomically replacing ``path``).

    Columns ``CATALOG_COLUMNS`` (plus ``revision_time`` when present); times ISO 8601
    UTC with microseconds and ``Z``; depth [km]; empty field = unknown.
    Raises CatalogFileError naming the path when it cannot be written.
    """
    _write_atomic(_formatted(catalog), Path(path), append=False)


def _read_revisions(path: Path) -> pd.DataFrame:
    """All stored rows of a project CSV (every revision), raw strings."""
    text = _read_text(path)
    try:
        return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise CatalogFileError(f"{path}: not a readable catalogue CSV: {exc}") from exc


def last_revision_time(path: str | Path) -> pd.Timestamp | None:
    """Newest ``revision_time`` stored in a project CSV, or None (no file / no revisions)."""
    path = Path(path)
    if not path.exists():
        return None
    rows = _read_revisions(path)
    if REVISION_COLUMN not in rows.columns or rows.empty:
        return None
    stamps = pd.to_datetime(rows[REVISION_COLUMN], utc=True, format="ISO8601", errors="coerce")
    return None if stamps.isna().all() else stamps.max()


def append_catalog_revisions(
    catalog: pd.DataFrame, path: str | Path, retrieved_at: pd.Timestamp
) -> int:
    """Append events as new revisions to a project CSV, keeping every earlier revision.

    catalog : DataFrame in the catalogue schema (e.g. one FDSN response).
    retrieved_at : UTC time of retrieval, stored as ``revision_time``.
    A row is appended when its event_id is new or any field differs from the newest
    stored revision of that event (rows with an empty event_id are always appended).
    Returns the number of rows appended. Raises CatalogFileError naming the path.
    """
    path = Path(path)
    new = _formatted(catalog.assign(**{REVISION_COLUMN: retrieved_at}))
    exists = path.exists() and path.stat().st_size > 0
    if exists:
        header = _read_revisions(path).columns
        missing = [c for c in (*CATALOG_COLUMNS, REVISION_COLUMN) if c not in header]
        if missing:
            raise CatalogFileError(
                f"{path}: not a catalogue revision CSV (missing {', '.join(missing)})"
            )
        current = _formatted(read_catalog(path, "study-csv"))
        current = current[current["event_id"] != ""].set_index("event_id")
        fields = [c for c in CATALOG_COLUMNS if c != "event_id"]
        changed = [
            not event_id
            or event_id not in current.index
            or not _same(row, current.loc[event_id, fields])
            for event_id, (_, row) in zip(new["event_id"], new[fields].iterrows(), strict=True)
        ]
        new = new.loc[changed]
    if new.empty:
        return 0
    _write_atomic(new, path, append=exists)
    return len(new)


def _same(a: pd.Series, b: pd.Series) -> bool:
    for name in a.index:
        left, right = a[name], b[name]
        if isinstance(left, float) or isinstance(right, float):
            lf, rf = float(left), float(right)
            if not (lf == rf or (np.isnan(lf) and np.isnan(rf))):
                return False
        elif str(left) != str(right):
            return False
    return True
