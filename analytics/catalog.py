"""Earthquake-catalogue parsers: text in, one normalised DataFrame out.

Every parser takes the *text* of a catalogue (file contents or an HTTP body) and
returns a DataFrame with exactly the columns of ``CATALOG_COLUMNS``:

=============  =======================  =============================================
column         dtype                    meaning
=============  =======================  =============================================
``time``       datetime64[ns, UTC]      origin time
``latitude``   float64                  epicentre latitude [deg N]
``longitude``  float64                  epicentre longitude [deg E]
``depth_km``   float64                  hypocentre depth [km], NaN if unknown
``magnitude``  float64                  preferred magnitude, NaN if unknown
``mag_type``   str                      magnitude type (``ML``, ``mww``...), '' if unknown
``event_id``   str                      the provider's event id, '' if unknown
``source``     str                      ``<format>/<agency>`` or ``<format>``
=============  =======================  =============================================

rows sorted by time (stable), index reset. Times without a zone suffix are UTC (the
FDSN and QuakeML conventions; the study catalogue was checked against INGV UTC origin
times, see the data README).

Vendor column names are mapped once, in the ``*_VARIABLE_MAP`` dicts. Events whose
type is known and is not an earthquake (``quarry blast``, ``explosion``...) are dropped
unless ``earthquakes_only=False``; the parsed frame's ``attrs[DROPPED_ATTR]`` counts them
by type. Bad input raises ``CatalogFormatError`` (a
``ValueError``) naming the line, field and value.

The module is pure: it reads no files and opens no connections (``namazu.server.catalogue.files``
and ``namazu.server.catalogue.fdsn`` are the shells).
"""

from __future__ import annotations

import io
import json
import re
import xml.etree.ElementTree as ET  # noqa: S405 - DOCTYPEs are rejected before parsing
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from namazu.analytics.geo import great_circle_km

CATALOG_COLUMNS: tuple[str, ...] = (
    "time",
    "latitude",
    "longitude",
    "depth_km",
    "magnitude",
    "mag_type",
    "event_id",
    "source",
)

#: ``DataFrame.attrs`` key of a parsed catalogue: events dropped as not earthquakes, as
#: {event type: count} (empty when none was dropped or the format has no event type).
DROPPED_ATTR = "non_earthquakes_dropped"

#: Optional column of the project's own CSV: when each row (revision) was retrieved.
REVISION_COLUMN = "revision_time"


class CatalogFormatError(ValueError):
    """The catalogue text is malformed; the message names the line/field and value."""


# --- vendor name maps (header text lower-cased and stripped -> project name) ----------

FDSN_TEXT_VARIABLE_MAP: dict[str, str] = {
    "eventid": "event_id",
    "time": "time",
    "latitude": "latitude",
    "longitude": "longitude",
    "depth/km": "depth_km",  # IRIS/USGS spell it Depth/km, INGV Depth/Km
    "author": "author",
    "magtype": "mag_type",
    "magnitude": "magnitude",
    "eventtype": "event_type",  # INGV's 14th column
}

COMCAT_CSV_VARIABLE_MAP: dict[str, str] = {
    "time": "time",
    "latitude": "latitude",
    "longitude": "longitude",
    "depth": "depth_km",
    "mag": "magnitude",
    "magtype": "mag_type",
    "id": "event_id",
    "locationsource": "author",
    "type": "event_type",
}

GEOJSON_VARIABLE_MAP: dict[str, str] = {
    "time": "time",  # properties.time [ms since epoch]
    "mag": "magnitude",
    "magType": "mag_type",
    "net": "author",
    "type": "event_type",
}

CSEP_CSV_VARIABLE_MAP: dict[str, str] = {
    "lon": "longitude",
    "lat": "latitude",
    "mag": "magnitude",
    "time_string": "time",
    "depth": "depth_km",
    "event_id": "event_id",
}

STUDY_CSV_VARIABLE_MAP: dict[str, str] = {
    "time": "time",
    "latitude": "latitude",
    "longitude": "longitude",
    "depth_km": "depth_km",
    "magnitude": "magnitude",
    "mag_type": "mag_type",
    "event_id": "event_id",
    "source": "source",
    REVISION_COLUMN: REVISION_COLUMN,
}

#: Event types (lower case, underscores as spaces) that count as earthquakes; '' and
#: "not reported" mean unknown and are kept.
EARTHQUAKE_TYPES: frozenset[str] = frozenset({"earthquake", "", "not reported"})

#: QuakeML 1.2 specifies origin depth in metres. Providers known to serve kilometres
#: anyway, matched against the eventParameters/event publicID (IRIS ws/event does).
QUAKEML_DEPTH_IN_KM_PROVIDERS: tuple[str, ...] = ("www.iris.edu/ws/event",)

_REQUIRED = ("time", "latitude", "longitude")


# --- shared normalisation ------------------------------------------------------------


def _empty_catalog() -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "time": pd.Series([], dtype="datetime64[ns, UTC]"),
            "latitude": pd.Series([], dtype="float64"),
            "longitude": pd.Series([], dtype="float64"),
            "depth_km": pd.Series([], dtype="float64"),
            "magnitude": pd.Series([], dtype="float64"),
            "mag_type": pd.Series([], dtype=object),
            "event_id": pd.Series([], dtype=object),
            "source": pd.Series([], dtype=object),
        }
    )
    return frame


def empty_catalog() -> pd.DataFrame:
    """An empty catalogue with the ``CATALOG_COLUMNS`` schema and dtypes."""
    return _empty_catalog()


def _where(fmt: str, lines: Sequence[int] | None, row: int) -> str:
    if lines is None:
        return f"{fmt} record {row + 1}"
    return f"{fmt} line {lines[row]}"


def _parse_times(values: pd.Series, fmt: str, field: str, lines: Sequence[int] | None) -> pd.Series:
    text = values.astype(str).str.strip()
    for row, value in enumerate(text):
        if value == "":
            raise CatalogFormatError(f"{_where(fmt, lines, row)}: field {field!r} is empty")
    parsed = pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce")
    bad = np.flatnonzero(parsed.isna().to_numpy())
    if bad.size:
        row = int(bad[0])
        raise CatalogFormatError(
            f"{_where(fmt, lines, row)}: field {field!r}: {text.iloc[row]!r} is not an "
            "ISO 8601 time"
        )
    outside = np.flatnonzero(((parsed < _EARLIEST) | (parsed > _LATEST)).to_numpy())
    if outside.size:
        row = int(outside[0])
        raise CatalogFormatError(
            f"{_where(fmt, lines, row)}: field {field!r}: {text.iloc[row]!r} is outside "
            "the representable years 1678-2261"
        )
    return parsed.dt.as_unit("ns")


#: Range of nanosecond timestamps (pandas parses wider ranges at coarser units).
_EARLIEST = pd.Timestamp("1678-01-01", tz="UTC")
_LATEST = pd.Timestamp("2261-12-31", tz="UTC")


def _parse_numbers(
    values: pd.Series,
    fmt: str,
    field: str,
    lines: Sequence[int] | None,
    *,
    required: bool,
    valid: tuple[float, float] | None = None,
) -> pd.Series:
    text = values.astype(str).str.strip()
    numbers = pd.to_numeric(text.where(text != "", None), errors="coerce").astype("float64")
    blank = (text == "") | values.isna()
    bad = np.flatnonzero((numbers.isna() & ~blank).to_numpy())
    if bad.size:
        row = int(bad[0])
        raise CatalogFormatError(
            f"{_where(fmt, lines, row)}: field {field!r}: {text.iloc[row]!r} is not a number"
        )
    if required:
        missing = np.flatnonzero(blank.to_numpy())
        if missing.size:
            raise CatalogFormatError(
                f"{_where(fmt, lines, int(missing[0]))}: field {field!r} is empty"
            )
    if valid is not None:
        low, high = valid
        out = np.flatnonzero(((numbers < low) | (numbers > high)).to_numpy())
        if out.size:
            row = int(out[0])
            raise CatalogFormatError(
                f"{_where(fmt, lines, row)}: field {field!r}: {numbers.iloc[row]} is outside "
                f"[{low}, {high}]"
            )
    return numbers


def _normalise(
    raw: pd.DataFrame,
    fmt: str,
    *,
    lines: Sequence[int] | None = None,
    earthquakes_only: bool = True,
    default_source: str | None = None,
    parsed_time: pd.Series | None = None,
) -> pd.DataFrame:
    """Turn a frame of project-named string columns into the catalogue schema."""
    raw = raw.reset_index(drop=True)
    for name in _REQUIRED:
        if name not in raw.columns and not (name == "time" and parsed_time is not None):
            raise CatalogFormatError(f"{fmt}: required column {name!r} is missing")
    dropped: dict[str, int] = {}
    if "event_type" in raw.columns and earthquakes_only:
        kinds = raw["event_type"].fillna("").astype(str).str.strip().str.lower()
        kinds = kinds.str.replace("_", " ")
        keep = kinds.isin(EARTHQUAKE_TYPES).to_numpy()
        dropped = {str(k): int(v) for k, v in kinds[~keep].value_counts().sort_index().items()}
        raw = raw.loc[keep].reset_index(drop=True)
        if lines is not None:
            lines = [line for line, k in zip(lines, keep, strict=True) if k]
        if parsed_time is not None:
            parsed_time = parsed_time.loc[keep].reset_index(drop=True)
    if raw.empty:
        empty = _empty_catalog()
        empty.attrs[DROPPED_ATTR] = dropped
        return empty
    out = pd.DataFrame(index=raw.index)
    if parsed_time is not None:
        out["time"] = parsed_time.dt.as_unit("ns")
    else:
        out["time"] = _parse_times(raw["time"], fmt, "time", lines)
    out["latitude"] = _parse_numbers(
        raw["latitude"], fmt, "latitude", lines, required=True, valid=(-90.0, 90.0)
    )
    out["longitude"] = _parse_numbers(
        raw["longitude"], fmt, "longitude", lines, required=True, valid=(-180.0, 360.0)
    )
    out["longitude"] = ((out["longitude"] + 180.0) % 360.0) - 180.0
    out.loc[out["longitude"] == -180.0, "longitude"] = 180.0
    for name in ("depth_km", "magnitude"):
        if name in raw.columns:
            out[name] = _parse_numbers(raw[name], fmt, name, lines, required=False)
        else:
            out[name] = np.nan
    for name in ("mag_type", "event_id"):
        if name in raw.columns:
            out[name] = raw[name].fillna("").astype(str).str.strip().astype(object)
        else:
            out[name] = ""
    if "source" in raw.columns:
        out["source"] = raw["source"].fillna("").astype(str).str.strip().astype(object)
    elif "author" in raw.columns:
        author = raw["author"].fillna("").astype(str).str.strip()
        out["source"] = np.where(author == "", fmt, fmt + "/" + author)
    else:
        out["source"] = default_source or fmt
    out["source"] = out["source"].astype(object)
    if REVISION_COLUMN in raw.columns:
        out = _latest_revisions(out, raw[REVISION_COLUMN], fmt, lines)
    out = out.sort_values("time", kind="stable").reset_index(drop=True)
    out = out.loc[:, list(CATALOG_COLUMNS)]
    out.attrs[DROPPED_ATTR] = dropped
    return out


def _latest_revisions(
    frame: pd.DataFrame, revisions: pd.Series, fmt: str, lines: Sequence[int] | None
) -> pd.DataFrame:
    """Keep, per non-empty event_id, the row with the newest revision time."""
    text = revisions.fillna("").astype(str).str.strip()
    when = pd.Series(pd.NaT, index=frame.index, dtype="datetime64[ns, UTC]")
    filled = text != ""
    if filled.any():
        when[filled] = _parse_times(
            text[filled].reset_index(drop=True),
            fmt,
            REVISION_COLUMN,
            None if lines is None else [lines[int(i)] for i in np.flatnonzero(filled.to_numpy())],
        ).to_numpy()
    keyed = frame["event_id"] != ""
    order = pd.DataFrame({"when": when, "row": np.arange(len(frame))})
    order = order[keyed.to_numpy()].sort_values(["when", "row"], kind="stable")
    latest_rows = (
        order.assign(event_id=frame.loc[order.index, "event_id"])
        .groupby("event_id", sort=False)["row"]
        .last()
    )
    keep = np.zeros(len(frame), dtype=bool)
    keep[latest_rows.to_numpy()] = True
    keep |= ~keyed.to_numpy()
    return frame.loc[keep]


def _read_csv(text: str, fmt: str) -> pd.DataFrame:
    try:
        frame = pd.read_csv(
            io.StringIO(text), dtype=str, keep_default_na=False, skipinitialspace=True
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise CatalogFormatError(f"{fmt}: not a readable CSV: {exc}") from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def _rename(frame: pd.DataFrame, variable_map: dict[str, str], *, lower: bool) -> pd.DataFrame:
    def key(name: str) -> str:
        return name.strip().lower() if lower else name.strip()

    return frame.rename(columns={c: variable_map[key(c)] for c in frame if key(c) in variable_map})


# --- FDSN text -------------------------------------------------------------------------


def parse_fdsn_text(text: str, *, earthquakes_only: bool = True) -> pd.DataFrame:
    """Parse an FDSN event web-service ``format=text`` response.

    text : str. The response: a ``#``-prefixed pipe-separated header (the 13-column
        standard header, or INGV's 14-column one with ``Depth/Km`` and ``EventType``;
        spaces around the pipes allowed) followed by one event per line, in any order.
        Depth is in km. Times without a zone are UTC.
    earthquakes_only : bool. Drop rows whose ``EventType`` is known and not an earthquake.

    Returns the catalogue DataFrame (see module docstring); ``source`` is
    ``fdsn-text/<Author>``. A header with no event lines gives an empty catalogue.
    Raises CatalogFormatError naming the line for a missing header, a row with the
    wrong number of fields, or a bad value.
    """
    fmt = "fdsn-text"
    all_lines = text.splitlines()
    numbered = [(i + 1, line) for i, line in enumerate(all_lines) if line.strip()]
    if not numbered:
        raise CatalogFormatError(f"{fmt}: the text is empty")
    header_no, header = numbered[0]
    if not header.lstrip().startswith("#") or "|" not in header:
        raise CatalogFormatError(
            f"{fmt} line {header_no}: expected a '#EventID|Time|...' header, got {header[:60]!r}"
        )
    names = [n.strip() for n in header.lstrip()[1:].split("|")]
    mapped = [FDSN_TEXT_VARIABLE_MAP.get(n.lower(), n) for n in names]
    missing = [n for n in _REQUIRED if n not in mapped]
    if missing:
        raise CatalogFormatError(
            f"{fmt} line {header_no}: header lacks column(s) {', '.join(missing)}"
        )
    rows, lines = [], []
    for number, line in numbered[1:]:
        if line.lstrip().startswith("#"):
            continue
        fields = [f.strip() for f in line.split("|")]
        if len(fields) != len(names):
            raise CatalogFormatError(
                f"{fmt} line {number}: {len(fields)} fields, the header has {len(names)}"
            )
        rows.append(fields)
        lines.append(number)
    raw = pd.DataFrame(rows, columns=mapped, dtype=object)
    return _normalise(raw, fmt, lines=lines, earthquakes_only=earthquakes_only)


# --- USGS ComCat CSV -------------------------------------------------------------------


def parse_comcat_csv(text: str, *, earthquakes_only: bool = True) -> pd.DataFrame:
    """Parse a USGS ComCat CSV (``format=csv`` / the feed CSVs).

    text : str. Header ``time,latitude,longitude,depth,mag,magType,...,id,...,type,...``;
        depth in km; times ISO 8601 UTC with ``Z``. Empty numeric fields are allowed
        except for time/latitude/longitude.
    earthquakes_only : bool. Drop rows whose ``type`` is not ``earthquake``.

    Returns the catalogue DataFrame; ``source`` is ``comcat-csv/<locationSource>``.
    Raises CatalogFormatError naming the line for bad values or missing columns.
    """
    fmt = "comcat-csv"
    frame = _rename(_read_csv(text, fmt), COMCAT_CSV_VARIABLE_MAP, lower=True)
    lines = list(range(2, len(frame) + 2))
    return _normalise(frame, fmt, lines=lines, earthquakes_only=earthquakes_only)


# --- USGS GeoJSON ----------------------------------------------------------------------


def parse_geojson(text: str, *, earthquakes_only: bool = True) -> pd.DataFrame:
    """Parse a USGS GeoJSON FeatureCollection (feeds and ``format=geojson``).

    text : str. ``features[*].properties.time`` in ms since 1970-01-01 UTC,
        ``geometry.coordinates`` = [longitude deg E, latitude deg N, depth km].
    earthquakes_only : bool. Drop features whose ``properties.type`` is not an earthquake.

    Returns the catalogue DataFrame; ``source`` is ``geojson/<net>``; ``event_id`` the
    feature ``id``. Raises CatalogFormatError naming the feature index on bad content.
    """
    fmt = "geojson"
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CatalogFormatError(f"{fmt}: not valid JSON: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("features"), list):
        raise CatalogFormatError(f"{fmt}: expected a FeatureCollection with a 'features' list")
    records = []
    for index, feature in enumerate(document["features"]):
        where = f"{fmt} feature {index}"
        try:
            props = feature["properties"]
            coords = feature["geometry"]["coordinates"]
        except (KeyError, TypeError) as exc:
            raise CatalogFormatError(f"{where}: missing {exc}") from exc
        if not isinstance(coords, list) or len(coords) < 2:
            raise CatalogFormatError(f"{where}: geometry.coordinates {coords!r} is not [lon, lat]")
        millis = props.get("time")
        if not isinstance(millis, int | float) or isinstance(millis, bool):
            raise CatalogFormatError(f"{where}: properties.time {millis!r} is not epoch ms")
        record = {GEOJSON_VARIABLE_MAP[k]: props.get(k) for k in GEOJSON_VARIABLE_MAP}
        record.update(
            time=millis,
            longitude=coords[0],
            latitude=coords[1],
            depth_km=coords[2] if len(coords) > 2 else None,
            event_id=feature.get("id") or props.get("ids", "").strip(",").split(",")[0],
        )
        records.append({k: "" if v is None else v for k, v in record.items()})
    raw = pd.DataFrame(records, columns=[*GEOJSON_VARIABLE_MAP.values(), *_GEO_EXTRA])
    times = pd.to_datetime(
        pd.to_numeric(raw["time"], errors="coerce").astype("int64"), unit="ms", utc=True
    )
    raw = raw.drop(columns="time").astype(str)
    return _normalise(raw, fmt, lines=None, earthquakes_only=earthquakes_only, parsed_time=times)


_GEO_EXTRA = ("longitude", "latitude", "depth_km", "event_id")


# --- QuakeML ---------------------------------------------------------------------------


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(element: ET.Element, *path: str) -> ET.Element | None:
    node: ET.Element | None = element
    for name in path:
        if node is None:
            return None
        node = next((c for c in node if _local(c.tag) == name), None)
    return node


def _child_text(element: ET.Element, *path: str) -> str:
    node = _child(element, *path)
    return (node.text or "").strip() if node is not None else ""


_EVENT_ID_IN_URI = re.compile(r"[?&](?:amp;)*eventid=([^&]+)", re.IGNORECASE)


def _quakeml_event_id(event: ET.Element) -> str:
    attributes = {_local(k): v for k, v in event.attrib.items()}
    if attributes.get("eventsource") and attributes.get("eventid"):
        return attributes["eventsource"] + attributes["eventid"]  # ANSS catalog: namespace
    public_id = attributes.get("publicID", "")
    match = _EVENT_ID_IN_URI.search(public_id)
    return match.group(1) if match else public_id


def _pick(event: ET.Element, kind: str, preferred_tag: str) -> ET.Element | None:
    candidates = [c for c in event if _local(c.tag) == kind]
    wanted = _child_text(event, preferred_tag)
    for candidate in candidates:
        if candidate.get("publicID", "").strip() == wanted:
            return candidate
    return candidates[0] if candidates else None


def parse_quakeml(
    text: str, *, earthquakes_only: bool = True, depth_unit: str = "auto"
) -> pd.DataFrame:
    """Parse a QuakeML 1.2 document (namespaced or not) with the standard library.

    text : str. The XML text. Each ``event`` contributes its preferred origin
        (``preferredOriginID``, else its first origin) and preferred magnitude
        (``preferredMagnitudeID``, else its first magnitude).
    earthquakes_only : bool. Drop events whose ``type`` is known and not an earthquake
        (for example ``quarry blast``; USGS writes ``quarry_blast``).
    depth_unit : {"auto", "m", "km"}. Unit of ``origin/depth/value``. QuakeML 1.2 says
        metres; "auto" uses metres except for providers listed in
        ``QUAKEML_DEPTH_IN_KM_PROVIDERS`` (IRIS ws/event serves km, e.g. Tohoku 29.0),
        recognised by the eventParameters/event publicID. A value-size guess is not used:
        USGS serves real 10 m depths.

    Returns the catalogue DataFrame; ``source`` is ``quakeml/<agencyID or author>``.
    Raises CatalogFormatError for malformed XML, a DOCTYPE (entities are not accepted),
    or an event without time or coordinates (naming the event).
    """
    fmt = "quakeml"
    if depth_unit not in {"auto", "m", "km"}:
        raise CatalogFormatError(f"{fmt}: depth_unit must be auto, m or km, got {depth_unit!r}")
    if "<!DOCTYPE" in text[:4096].upper():
        raise CatalogFormatError(f"{fmt}: documents with a DOCTYPE are not accepted")
    try:
        root = ET.fromstring(text)  # noqa: S314 - DOCTYPE rejected above; expat 2.4+

    except ET.ParseError as exc:
        raise CatalogFormatError(f"{fmt}: malformed XML: {exc}") from exc
    if _local(root.tag) != "quakeml" and not any(
        _local(e.tag) == "eventParameters" for e in root.iter()
    ):
        raise CatalogFormatError(
            f"{fmt}: <{_local(root.tag)}> is not a QuakeML document (no eventParameters)"
        )
    records = []
    for index, event in enumerate(e for e in root.iter() if _local(e.tag) == "event"):
        public_id = event.get("publicID", "")
        origin = _pick(event, "origin", "preferredOriginID")
        magnitude = _pick(event, "magnitude", "preferredMagnitudeID")
        if origin is None:
            raise CatalogFormatError(f"{fmt} event {index} ({public_id}): no origin")
        in_km = depth_unit == "km" or (
            depth_unit == "auto" and any(p in public_id for p in QUAKEML_DEPTH_IN_KM_PROVIDERS)
        )
        depth = _child_text(origin, "depth", "value")
        if depth:
            try:
                depth_km = float(depth) if in_km else float(depth) / 1000.0
            except ValueError as exc:
                raise CatalogFormatError(
                    f"{fmt} event {index} ({public_id}): depth {depth!r} is not a number"
                ) from exc
        else:
            depth_km = None
        agency = (
            _child_text(origin, "creationInfo", "agencyID")
            or _child_text(event, "creationInfo", "agencyID")
            or _child_text(origin, "creationInfo", "author")
        )
        records.append(
            {
                "time": _child_text(origin, "time", "value"),
                "latitude": _child_text(origin, "latitude", "value"),
                "longitude": _child_text(origin, "longitude", "value"),
                "depth_km": "" if depth_km is None else repr(depth_km),
                "magnitude": "" if magnitude is None else _child_text(magnitude, "mag", "value"),
                "mag_type": "" if magnitude is None else _child_text(magnitude, "type"),
                "event_id": _quakeml_event_id(event),
                "event_type": _child_text(event, "type"),
                "author": agency,
            }
        )
    raw = pd.DataFrame(
        records,
        columns=[
            "time",
            "latitude",
            "longitude",
            "depth_km",
            "magnitude",
            "mag_type",
            "event_id",
            "event_type",
            "author",
        ],
    )
    return _normalise(raw, fmt, lines=None, earthquakes_only=earthquakes_only)


# --- csep-csv and the study / project CSV ----------------------------------------------


def parse_csep_csv(text: str) -> pd.DataFrame:
    """Parse a pyCSEP ``csep-csv`` catalogue.

    text : str. Header ``lon,lat,mag,time_string,depth,catalog_id,event_id``; lon/lat
        [deg], depth [km], ``time_string`` ISO 8601 without zone (UTC). The format does
        not record the magnitude type (``mag_type`` is '').

    Returns the catalogue DataFrame; ``source`` is ``csep-csv``. Rows are sorted by time
    (the BSI file has two pairs out of order by < 1 s).
    Raises CatalogFormatError naming the line for bad values.
    """
    fmt = "csep-csv"
    frame = _rename(_read_csv(text, fmt), CSEP_CSV_VARIABLE_MAP, lower=False)
    lines = list(range(2, len(frame) + 2))
    return _normalise(frame, fmt, lines=lines)


def parse_study_csv(text: str, *, source: str = "study-csv") -> pd.DataFrame:
    """Parse the study's catalogue CSV and the project's own catalogue CSV.

    text : str. Header with at least ``time,latitude,longitude`` and usually
        ``depth_km,magnitude``; the project's CSV
        (``namazu.server.catalogue.files.write_catalog_csv``)
        adds ``mag_type,event_id,source`` and optionally ``revision_time`` (one row per
        retrieved revision of an event: only the newest revision of each event_id is
        returned). Other columns (distances, PGA) are ignored. Times without a zone are
        UTC.
    source : str. ``source`` value when the text has no ``source`` column.

    Returns the catalogue DataFrame. Raises CatalogFormatError naming the line.
    """
    fmt = "study-csv"
    frame = _rename(_read_csv(text, fmt), STUDY_CSV_VARIABLE_MAP, lower=False)
    frame = frame.loc[:, [c for c in frame.columns if c in STUDY_CSV_VARIABLE_MAP.values()]]
    lines = list(range(2, len(frame) + 2))
    return _normalise(frame, fmt, lines=lines, default_source=source)


# --- format detection and dispatch -----------------------------------------------------

CATALOG_PARSERS: dict[str, Callable[[str], pd.DataFrame]] = {
    "fdsn-text": parse_fdsn_text,
    "comcat-csv": parse_comcat_csv,
    "geojson": parse_geojson,
    "quakeml": parse_quakeml,
    "csep-csv": parse_csep_csv,
    "study-csv": parse_study_csv,
}


def sniff_format(text: str) -> str:
    """Name the catalogue format of ``text`` (one of ``CATALOG_PARSERS``' keys).

    Decided from the first non-blank characters/line: ``<`` → quakeml, ``{`` → geojson,
    ``#...|`` → fdsn-text, and for CSV headers: ``time_string`` + ``lon`` → csep-csv,
    ``mag`` + ``magType`` → comcat-csv, ``time`` + ``latitude`` + ``longitude`` →
    study-csv. Raises CatalogFormatError quoting the first line otherwise.
    """
    stripped = text.lstrip("\ufeff \t\r\n")
    if not stripped:
        raise CatalogFormatError("catalogue text is empty")
    if stripped.startswith("<"):
        return "quakeml"
    if stripped.startswith("{"):
        return "geojson"
    first = stripped.splitlines()[0]
    if first.startswith("#") and "|" in first:
        return "fdsn-text"
    header = {c.strip().strip('"').lower() for c in first.split(",")}
    if {"time_string", "lon", "lat"} <= header:
        return "csep-csv"
    if {"time", "latitude", "longitude", "mag", "magtype"} <= header:
        return "comcat-csv"
    if {"time", "latitude", "longitude"} <= header:
        return "study-csv"
    raise CatalogFormatError(
        f"unrecognised catalogue format; first line: {first[:80]!r} "
        f"(supported: {', '.join(CATALOG_PARSERS)})"
    )


def parse_catalog(text: str, fmt: str | None = None) -> pd.DataFrame:
    """Parse catalogue text of format ``fmt`` (sniffed when None) into the schema.

    fmt : str | None. One of ``CATALOG_PARSERS``' keys. Raises CatalogFormatError naming
        the valid formats when unknown, and whatever the format's parser raises.
    """
    name = sniff_format(text) if fmt is None else fmt
    try:
        parser = CATALOG_PARSERS[name]
    except KeyError:
        raise CatalogFormatError(
            f"unknown catalogue format {name!r}; valid formats: {', '.join(CATALOG_PARSERS)}"
        ) from None
    return parser(text.lstrip("\ufeff"))


# --- near-duplicate merging ------------------------------------------------------------


def near_groups(
    times_ns: np.ndarray,
    latitude: np.ndarray,
    longitude: np.ndarray,
    max_dt_s: float,
    max_km: float,
) -> np.ndarray:
    """Group events linked by being within ``max_dt_s`` and ``max_km`` of each other.

    times_ns : int64 ndarray, sorted ascending. Origin times [ns since the epoch].
    latitude, longitude : float ndarrays. Epicentres [deg N, deg E].
    max_dt_s : float. Largest time difference of linked events [s].
    max_km : float. Largest great-circle distance of linked events [km].
    Linked events form one group, so a chain can span more than the limits. Returns int
    ndarray: each event's group label, the row of the group's earliest event.
    """
    if max_dt_s < 0 or max_km < 0:
        raise ValueError(f"max_dt_s and max_km must be >= 0, got {max_dt_s}, {max_km}")
    times = np.asarray(times_ns, dtype=np.int64)
    lat = np.asarray(latitude, dtype=float)
    lon = np.asarray(longitude, dtype=float)
    n = len(times)
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = int(parent[i])
        return i

    limit_ns = int(round(max_dt_s * 1e9))
    shift = 1
    while shift < n:
        dt = times[shift:] - times[:-shift]
        close_in_time = dt <= limit_ns
        if not close_in_time.any():
            break
        first = np.flatnonzero(close_in_time)
        dist = great_circle_km(lat[first], lon[first], lat[first + shift], lon[first + shift])
        for i in first[dist <= max_km]:
            a, b = find(int(i)), find(int(i) + shift)
            if a != b:
                parent[max(a, b)] = min(a, b)
        shift += 1
    return np.array([find(i) for i in range(n)], dtype=np.int64)


def merge_near_duplicates(
    catalog: pd.DataFrame, max_dt_s: float = 2.0, max_km: float = 5.0
) -> pd.DataFrame:
    """Merge events closer than ``max_dt_s`` in time and ``max_km`` in epicentre.

    catalog : DataFrame with the ``CATALOG_COLUMNS`` schema (any order of rows).
    max_dt_s : float. Largest origin-time difference of duplicates [s].
    max_km : float. Largest great-circle epicentral distance of duplicates [km].

    Pairs within both limits are linked and linked events form one group (so a chain
    can span more than the limits). Each group keeps one row: the one with the largest
    magnitude (NaN counts as smallest; ties: earliest). The BSI catalogue's duplicate
    solutions (e.g. M 4.5 and M 5.2 0.8 s and 0.5 km apart) thus keep the larger
    magnitude, the conservative choice for target counts. Returns a new frame sorted
    by time with index reset.
    """
    if max_dt_s < 0 or max_km < 0:
        raise ValueError(f"max_dt_s and max_km must be >= 0, got {max_dt_s}, {max_km}")
    frame = catalog.sort_values("time", kind="stable").reset_index(drop=True)
    n = len(frame)
    if n < 2:
        return frame
    times = frame["time"].dt.as_unit("ns").astype("int64").to_numpy()
    groups = near_groups(
        times,
        frame["latitude"].to_numpy(dtype=float),
        frame["longitude"].to_numpy(dtype=float),
        max_dt_s,
        max_km,
    )
    magnitude = frame["magnitude"].to_numpy(dtype=float)
    rank = np.where(np.isnan(magnitude), -np.inf, magnitude)
    order = pd.DataFrame({"group": groups, "rank": rank, "row": np.arange(n)})
    order = order.sort_values(["group", "rank", "row"], ascending=[True, False, True])
    keep = order.drop_duplicates("group")["row"].to_numpy()
    return frame.iloc[np.sort(keep)].reset_index(drop=True)
