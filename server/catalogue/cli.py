"""``namazu catalog fetch|import``: earthquake catalogues into the project's CSV.

fetch  : query an FDSN event service (INGV, USGS, EMSC or a URL) and store the events
         in a project CSV. When the file already holds revisions, only events created
         or updated since the last retrieval are asked for (``updatedafter``) and every
         changed revision is appended, so no revision is ever lost.
import : normalise any supported catalogue file (FDSN text, ComCat CSV, GeoJSON,
         QuakeML, csep-csv, study CSV; ``.gz`` too) to the project's CSV.

Errors are one line on stderr: exit code 2 for bad arguments, 1 for failures.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from namazu.analytics.catalog import CATALOG_PARSERS, merge_near_duplicates
from namazu.server.catalogue.fdsn import FdsnClient, FdsnError, resolve_service
from namazu.server.catalogue.files import (
    CatalogFileError,
    append_catalog_revisions,
    last_revision_time,
    read_catalog,
    write_catalog_csv,
)

#: Safety margin subtracted from the last retrieval time for ``updatedafter``.
UPDATED_AFTER_OVERLAP = pd.Timedelta(minutes=10)


class UsageError(Exception):
    """A command-line value is invalid; the message names the option."""


@dataclass(frozen=True)
class RefreshResult:
    """Outcome of one catalogue refresh."""

    url: str
    events_received: int
    revisions_appended: int
    updated_after: pd.Timestamp | None


def refresh_catalog_file(
    client: FdsnClient,
    path: str | Path,
    *,
    starttime: pd.Timestamp,
    endtime: pd.Timestamp,
    minmagnitude: float | None = None,
    latitude: float | None = None,
    longitude: float | None = None,
    maxradius_km: float | None = None,
    incremental: bool = True,
    now: pd.Timestamp | None = None,
) -> RefreshResult:
    """Query ``client`` and append changed revisions to the project CSV at ``path``.

    incremental : ask only for events updated after the newest stored revision time
        minus ``UPDATED_AFTER_OVERLAP`` (clock skew between us and the service; unchanged
        events that come back are not stored twice).
    now : retrieval time recorded as ``revision_time`` [UTC]; default the clock, taken
        *before* the query so that an update racing the query is fetched next time.
    Raises FdsnError / CatalogFileError.
    """
    retrieved_at = pd.Timestamp.now(tz="UTC") if now is None else now
    last = last_revision_time(path) if incremental else None
    updated_after = None if last is None else last - UPDATED_AFTER_OVERLAP
    events = client.query(
        starttime,
        endtime,
        minmagnitude=minmagnitude,
        latitude=latitude,
        longitude=longitude,
        maxradius_km=maxradius_km,
        updatedafter=updated_after,
    )
    appended = append_catalog_revisions(events, path, retrieved_at)
    return RefreshResult(client.base_url, len(events), appended, updated_after)


def _time(text: str, option: str) -> pd.Timestamp:
    try:
        stamp = pd.Timestamp(text)
    except ValueError as exc:
        raise UsageError(f"{option}: {text!r} is not an ISO 8601 date/time") from exc
    if pd.isna(stamp):
        raise UsageError(f"{option}: {text!r} is not an ISO 8601 date/time")
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _farm(text: str) -> tuple[float, float]:
    try:
        lat_text, lon_text = text.split(",")
        lat, lon = float(lat_text), float(lon_text)
    except ValueError as exc:
        raise UsageError(f"--farm: {text!r} is not LAT,LON in decimal degrees") from exc
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise UsageError(f"--farm: {text!r} is outside latitude ±90 / longitude ±180")
    return lat, lon


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="namazu catalog", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    fetch = sub.add_parser("fetch", help="fetch events from an FDSN event service")
    fetch.add_argument("--source", required=True, help="INGV, USGS, EMSC or an fdsnws URL")
    fetch.add_argument("--start", required=True, help="start time, ISO 8601 (UTC if no zone)")
    fetch.add_argument("--end", required=True, help="end time, ISO 8601 (UTC if no zone)")
    fetch.add_argument("--min-magnitude", type=float, help="lowest magnitude")
    fetch.add_argument("--farm", help="circle centre LAT,LON [deg]")
    fetch.add_argument("--radius-km", type=float, help="circle radius around --farm [km]")
    fetch.add_argument("--out", required=True, help="project CSV to create or extend")
    fetch.add_argument(
        "--full", action="store_true", help="ignore stored revisions (no updatedafter)"
    )
    fetch.add_argument("--retries", type=int, default=4, help="retries on 429/5xx")
    fetch.add_argument("--backoff-s", type=float, default=2.0, help="first retry wait [s]")
    imp = sub.add_parser("import", help="normalise a catalogue file to the project CSV")
    imp.add_argument("file", help="catalogue file (.gz allowed)")
    imp.add_argument("--format", choices=sorted(CATALOG_PARSERS), help="default: detected")
    imp.add_argument("--out", required=True, help="project CSV to write")
    imp.add_argument(
        "--merge-duplicates",
        action="store_true",
        help="merge events within 2 s and 5 km (keeps the larger magnitude)",
    )
    return parser


def _fetch(args: argparse.Namespace) -> str:
    start, end = _time(args.start, "--start"), _time(args.end, "--end")
    if end <= start:
        raise UsageError(f"--end {args.end} is not after --start {args.start}")
    lat = lon = None
    if (args.farm is None) != (args.radius_km is None):
        raise UsageError("--farm and --radius-km must be given together")
    if args.farm is not None:
        lat, lon = _farm(args.farm)
        if args.radius_km <= 0:
            raise UsageError(f"--radius-km must be > 0, got {args.radius_km}")
    if args.retries < 0 or args.backoff_s < 0:
        raise UsageError("--retries and --backoff-s must be >= 0")
    try:
        base_url = resolve_service(args.source)
    except FdsnError as exc:
        raise UsageError(f"--source: {exc}") from exc
    client = FdsnClient(base_url, max_retries=args.retries, backoff_s=args.backoff_s)
    result = refresh_catalog_file(
        client,
        args.out,
        starttime=start,
        endtime=end,
        minmagnitude=args.min_magnitude,
        latitude=lat,
        longitude=lon,
        maxradius_km=args.radius_km,
        incremental=not args.full,
    )
    since = "" if result.updated_after is None else f" updated after {result.updated_after}"
    return (
        f"{result.events_received} events{since} from {result.url}; "
        f"{result.revisions_appended} new revisions appended to {args.out}"
    )


def _import(args: argparse.Namespace) -> str:
    catalog = read_catalog(args.file, args.format)
    count = len(catalog)
    if args.merge_duplicates:
        catalog = merge_near_duplicates(catalog)
    write_catalog_csv(catalog, args.out)
    merged = f" ({count - len(catalog)} near-duplicates merged)" if args.merge_duplicates else ""
    return f"{len(catalog)} events{merged} written to {args.out}"


def main(argv: list[str]) -> int:
    """``namazu catalog fetch|import ...``; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        message = _fetch(args) if args.action == "fetch" else _import(args)
    except UsageError as exc:
        print(f"namazu catalog {args.action}: {exc}", file=sys.stderr)
        return 2
    except (FdsnError, CatalogFileError) as exc:
        print(f"namazu catalog {args.action}: {exc}", file=sys.stderr)
        return 1
    print(message)
    return 0
