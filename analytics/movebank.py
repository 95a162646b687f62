"""Movebank accelerometer data → bursts → per-burst activity (ODBA, VeDBA), and back.

Movebank data reach us in two spellings of the same attributes: the REST API / move2
names with underscores (``eobs_accelerations_raw``, ``individual_local_identifier``)
and the web-export names with hyphens and colon prefixes (``eobs:accelerations-raw``,
``individual-local-identifier``). ``MOVEBANK_COLUMN_MAP`` maps both, once, to the API
names; other columns are normalised by lower-casing and replacing ``:`` and ``-`` with
``_``.

Two layouts of acceleration data are understood:

- **e-obs burst rows**: one row per burst, ``eobs_accelerations_raw`` holding the
  space-separated raw counts interleaved by axis (``eobs_acceleration_axes``, e.g.
  ``XY``), ``eobs_acceleration_sampling_frequency_per_axis`` [Hz], first-sample time
  ``eobs_start_timestamp`` (else ``timestamp``). Counts are converted to g with
  ``namazu.analytics.activity.eobs_raw_to_g`` and the slope of the tag generation
  (``namazu.analytics.activity.eobs_slope`` of ``tag_local_identifier``; high sensitivity for
  first-generation tags; the default slope when the tag id is not a number).
- **expanded rows** (UvA-BiTS and others): one row per sample with
  ``acceleration_raw_x/_y/_z`` and/or ``tilt_x/_y/_z``; a burst is the set of rows of
  one individual with the same ``start_timestamp`` (without that column: consecutive
  samples less than 1 s apart). ``tilt_*`` are already acceleration in g and are used
  when present. Raw counts without calibration are converted with the nominal UvA-BiTS
  slope ``UVA_BITS_NOMINAL_SLOPE_G_PER_COUNT`` = 1/2048 g/count and no offset: ODBA and
  VeDBA use only the dynamic component (each axis minus its burst mean) and its
  absolute value / norm, so per-axis offsets and sign conventions cancel exactly and
  only the slope matters; the real gull tag's calibration (1/2046 to 1/2064 g/count per
  axis) differs from the nominal slope by < 1 %.

Bursts are keyed by the *individual* (``individual_local_identifier``), never by the tag:
tags move between animals. Rows with ``visible`` = false are dropped. Movebank's outlier
flags describe location quality and are ignored for acceleration rows (the gull export
flags every acceleration row). Times are UTC; web exports write them without a suffix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from namazu.analytics.activity import eobs_raw_to_g, eobs_slope, odba, vedba

_PAIRS: tuple[tuple[str, str], ...] = (
    ("individual_local_identifier", "individual-local-identifier"),
    ("tag_local_identifier", "tag-local-identifier"),
    ("timestamp", "timestamp"),
    ("start_timestamp", "start-timestamp"),
    ("eobs_start_timestamp", "eobs:start-timestamp"),
    ("eobs_accelerations_raw", "eobs:accelerations-raw"),
    ("eobs_acceleration_axes", "eobs:acceleration-axes"),
    (
        "eobs_acceleration_sampling_frequency_per_axis",
        "eobs:acceleration-sampling-frequency-per-axis",
    ),
    ("acceleration_raw_x", "acceleration-raw-x"),
    ("acceleration_raw_y", "acceleration-raw-y"),
    ("acceleration_raw_z", "acceleration-raw-z"),
    ("tilt_x", "tilt-x"),
    ("tilt_y", "tilt-y"),
    ("tilt_z", "tilt-z"),
    ("sensor_type_id", "sensor-type-id"),
    ("sensor_type", "sensor-type"),
    ("visible", "visible"),
    ("event_id", "event-id"),
    ("study_name", "study-name"),
    ("individual_taxon_canonical_name", "individual-taxon-canonical-name"),
    ("barometric_pressure", "bar:barometric-pressure"),
    ("gps_dop", "gps:dop"),
    ("gps_satellite_count", "gps:satellite-count"),
    ("location_long", "location-long"),
    ("location_lat", "location-lat"),
)

#: Movebank attribute names in either spelling → the API (underscore) name.
MOVEBANK_COLUMN_MAP: dict[str, str] = {
    spelling: api for api, web in _PAIRS for spelling in (api, web)
}

#: Nominal UvA-BiTS accelerometer slope for uncalibrated raw counts [g/count].
UVA_BITS_NOMINAL_SLOPE_G_PER_COUNT = 1.0 / 2048.0

#: Expanded-layout samples further apart than this start a new burst (when there is no
#: ``start_timestamp`` column) [s].
MAX_SAMPLE_GAP_S = 1.0

_AXES = ("x", "y", "z")


class MovebankFormatError(ValueError):
    """Movebank data are malformed; the message names the column and rows/values."""


@dataclass(frozen=True)
class Bursts:
    """Accelerometer bursts of one or more individuals.

    table : DataFrame, one row per burst: ``individual`` (str), ``tag`` (str, '' if
        unknown), ``start`` (datetime64[ns, UTC], first sample), ``sampling_hz``
        (float, samples per second per axis [Hz], NaN if unknown), ``n_samples`` (int),
        ``axes`` (str, e.g. ``"XY"``), ``layout`` ("eobs" or "expanded"), sorted by
        individual then start.
    samples : tuple of ndarray, one per table row, shape (n_samples, n_axes).
        Acceleration [g].
    """

    table: pd.DataFrame
    samples: tuple[np.ndarray, ...]

    def __len__(self) -> int:
        return len(self.samples)


def normalise_movebank_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Rename Movebank columns of either spelling to the API (underscore) names.

    Known attributes go through ``MOVEBANK_COLUMN_MAP``; any other column is
    lower-cased with ``:`` and ``-`` replaced by ``_``. Raises MovebankFormatError
    when two columns end up with the same name.
    """
    renamed = {}
    for column in frame.columns:
        key = str(column).strip()
        name = MOVEBANK_COLUMN_MAP.get(key) or MOVEBANK_COLUMN_MAP.get(key.lower())
        renamed[column] = name or key.lower().replace(":", "_").replace("-", "_")
    names = list(renamed.values())
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise MovebankFormatError(
            f"columns {', '.join(duplicated)} appear in both spellings; keep one"
        )
    return frame.rename(columns=renamed)


def _filled(frame: pd.DataFrame, column: str) -> pd.Series:
    if column not in frame.columns:
        return pd.Series(False, index=frame.index)
    values = frame[column]
    return values.notna() & (values.astype(str).str.strip() != "")


def _times(values: pd.Series, column: str) -> pd.Series:
    text = values.astype(str).str.strip()
    parsed = pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce")
    bad = np.flatnonzero(parsed.isna().to_numpy())
    if bad.size:
        rows = ", ".join(str(i + 2) for i in bad[:5])
        raise MovebankFormatError(
            f"column {column!r}: {text.iloc[int(bad[0])]!r} is not a time (data rows at "
            f"file lines {rows})"
        )
    return parsed.dt.as_unit("ns")


def _numbers(values: pd.Series, column: str) -> np.ndarray:
    numbers = pd.to_numeric(values, errors="coerce")
    bad = np.flatnonzero(numbers.isna().to_numpy())
    if bad.size:
        raise MovebankFormatError(
            f"column {column!r}: {values.iloc[int(bad[0])]!r} is not a number "
            f"(file line {int(bad[0]) + 2})"
        )
    return numbers.to_numpy(dtype=float)


def _tag_slope(tag: str) -> float:
    try:
        return eobs_slope(int(float(tag)))
    except ValueError:
        return eobs_slope(0)


def _eobs_bursts(rows: pd.DataFrame, line: np.ndarray) -> list[dict]:
    starts_col = "eobs_start_timestamp" if "eobs_start_timestamp" in rows.columns else "timestamp"
    if starts_col not in rows.columns:
        raise MovebankFormatError("e-obs bursts need 'eobs_start_timestamp' or 'timestamp'")
    starts = _times(rows[starts_col], starts_col)
    out = []
    for i, (_, row) in enumerate(rows.iterrows()):
        axes = str(row.get("eobs_acceleration_axes", "") or "XYZ").strip().upper() or "XYZ"
        if not set(axes) <= {"X", "Y", "Z"} or len(set(axes)) != len(axes):
            raise MovebankFormatError(
                f"line {line[i]}: eobs_acceleration_axes {axes!r} is not a subset of XYZ"
            )
        try:
            raw = np.array(str(row["eobs_accelerations_raw"]).split(), dtype=float)
        except ValueError as exc:
            raise MovebankFormatError(
                f"line {line[i]}: eobs_accelerations_raw holds a non-number ({exc})"
            ) from exc
        if raw.size % len(axes):
            raise MovebankFormatError(
                f"line {line[i]}: {raw.size} raw values do not divide into {len(axes)} axes"
            )
        frequency = pd.to_numeric(
            row.get("eobs_acceleration_sampling_frequency_per_axis", np.nan), errors="coerce"
        )
        tag = str(row.get("tag_local_identifier", "") or "").strip()
        g = eobs_raw_to_g(raw.reshape(-1, len(axes)), slope=_tag_slope(tag))
        out.append(
            {
                "individual": row["individual_local_identifier"],
                "tag": tag,
                "start": starts.iloc[i],
                "sampling_hz": float(frequency),
                "axes": axes,
                "layout": "eobs",
                "samples": g,
            }
        )
    return out


def _expanded_bursts(rows: pd.DataFrame) -> list[dict]:
    use_tilt = all(c in rows.columns for c in ("tilt_x",)) and _filled(rows, "tilt_x").all()
    prefix = "tilt_" if use_tilt else "acceleration_raw_"
    axes = [a for a in _AXES if prefix + a in rows.columns and _filled(rows, prefix + a).all()]
    if not axes:
        raise MovebankFormatError(f"expanded acceleration rows lack complete {prefix}x/y/z values")
    values = np.column_stack([_numbers(rows[prefix + a], prefix + a) for a in axes])
    if not use_tilt:
        values = values * UVA_BITS_NOMINAL_SLOPE_G_PER_COUNT
    times = _times(rows["timestamp"], "timestamp")
    frame = pd.DataFrame(
        {
            "individual": rows["individual_local_identifier"].to_numpy(),
            "tag": rows.get("tag_local_identifier", pd.Series("", index=rows.index))
            .fillna("")
            .astype(str)
            .to_numpy(),
            "time": times.to_numpy(),
            "row": np.arange(len(rows)),
        }
    )
    if "start_timestamp" in rows.columns and _filled(rows, "start_timestamp").all():
        frame["burst"] = _times(rows["start_timestamp"], "start_timestamp").to_numpy()
    else:
        frame = frame.sort_values(["individual", "time"], kind="stable")
        gap = frame.groupby("individual")["time"].diff().dt.total_seconds()
        frame["burst"] = (gap.isna() | (gap > MAX_SAMPLE_GAP_S)).cumsum()
    out = []
    for (individual, _), group in frame.groupby(["individual", "burst"], sort=True):
        group = group.sort_values("time", kind="stable")
        steps = group["time"].diff().dt.total_seconds().dropna()
        median_step = float(steps.median()) if len(steps) else np.nan
        out.append(
            {
                "individual": individual,
                "tag": group["tag"].iloc[0],
                "start": group["time"].iloc[0],
                "sampling_hz": round(1.0 / median_step, 6) if median_step > 0 else np.nan,
                "axes": "".join(a.upper() for a in axes),
                "layout": "expanded",
                "samples": values[group["row"].to_numpy()],
            }
        )
    return out


def parse_movebank_events(frame: pd.DataFrame) -> Bursts:
    """Group Movebank event rows into accelerometer bursts per individual.

    frame : DataFrame of Movebank event rows in either spelling (strings or typed
        values, e.g. ``pd.read_csv(..., dtype=str, keep_default_na=False)``). GPS and
        other non-acceleration rows are ignored.
    Returns Bursts (acceleration in g, burst start times UTC).
    Raises MovebankFormatError naming the column/line when the individual column is
    missing or empty, there is no acceleration data at all, or a value is malformed.
    """
    events = normalise_movebank_columns(frame).reset_index(drop=True)
    line = np.arange(len(events)) + 2  # file line of each row (header is line 1)
    if "individual_local_identifier" not in events.columns:
        raise MovebankFormatError(
            "column 'individual_local_identifier' (or 'individual-local-identifier') is "
            "missing: bursts are keyed by individual"
        )
    if "visible" in events.columns:
        visible = events["visible"].astype(str).str.strip().str.lower() != "false"
        events, line = events.loc[visible.to_numpy()], line[visible.to_numpy()]
    eobs = _filled(events, "eobs_accelerations_raw")
    expanded = (_filled(events, "acceleration_raw_x") | _filled(events, "tilt_x")) & ~eobs
    acceleration = (eobs | expanded).to_numpy()
    if not acceleration.any():
        raise MovebankFormatError(
            "no acceleration data: none of eobs_accelerations_raw, acceleration_raw_x, "
            "tilt_x (or their hyphenated spellings) has a value"
        )
    individuals = events["individual_local_identifier"].astype(str).str.strip()
    empty = np.flatnonzero((individuals == "").to_numpy() & acceleration)
    if empty.size:
        lines = ", ".join(str(n) for n in line[empty[:5]])
        raise MovebankFormatError(f"individual_local_identifier is empty at lines {lines}")
    events = events.assign(individual_local_identifier=individuals)
    records = _eobs_bursts(events.loc[eobs.to_numpy()], line[eobs.to_numpy()])
    if expanded.any():
        records += _expanded_bursts(events.loc[expanded.to_numpy()])
    table = pd.DataFrame.from_records(
        [{k: v for k, v in r.items() if k != "samples"} for r in records]
    )
    table["n_samples"] = [len(r["samples"]) for r in records]
    table["start"] = pd.to_datetime(table["start"], utc=True).dt.as_unit("ns")
    order = table.sort_values(["individual", "start"], kind="stable").index.to_numpy()
    table = table.loc[order].reset_index(drop=True)
    samples = tuple(records[i]["samples"] for i in order)
    return Bursts(table=table, samples=samples)


def bursts_to_activity(bursts: Bursts) -> pd.DataFrame:
    """ODBA and VeDBA of every burst (``namazu.analytics.activity``), one row per burst.

    Returns DataFrame with columns ``individual`` (str), ``time`` (burst start,
    datetime64[ns, UTC]), ``odba`` [g], ``vedba`` [g] (per-sample means, see
    ``namazu.analytics.activity``), ``n_samples`` (samples per axis), ``sampling_hz`` [Hz];
    sorted by individual then time.
    """
    n = len(bursts)
    odba_g = np.full(n, np.nan)
    vedba_g = np.full(n, np.nan)
    shapes: dict[tuple[int, ...], list[int]] = {}
    for i, samples in enumerate(bursts.samples):
        shapes.setdefault(samples.shape, []).append(i)
    for indices in shapes.values():
        stack = np.stack([bursts.samples[i] for i in indices])
        odba_g[indices] = odba(stack)
        vedba_g[indices] = vedba(stack)
    table = bursts.table
    return pd.DataFrame(
        {
            "individual": table["individual"].astype(str).to_numpy(),
            "time": table["start"].to_numpy(),
            "odba": odba_g,
            "vedba": vedba_g,
            "n_samples": table["n_samples"].to_numpy(dtype=np.int64),
            "sampling_hz": table["sampling_hz"].to_numpy(dtype=float),
        }
    ).assign(time=lambda f: pd.to_datetime(f["time"], utc=True).dt.as_unit("ns"))


#: Movebank attribute names (web-export spelling) of ``activity_to_movebank`` output.
MOVEBANK_EXPORT_COLUMNS: tuple[str, ...] = (
    "study-name",
    "individual-local-identifier",
    "tag-local-identifier",
    "deployment-id",
    "individual-taxon-canonical-name",
    "sensor-type",
    "timestamp",
    "odba",
    "vedba",
)


def activity_to_movebank(
    activity: pd.DataFrame,
    study: str,
    individuals: dict[str, dict[str, str]] | None = None,
) -> pd.DataFrame:
    """Movebank-compatible table of per-burst or per-minute activity.

    activity : DataFrame with ``individual``, ``time`` (UTC), ``odba`` [g] and
        ``vedba`` [g] (e.g. from ``bursts_to_activity``).
    study : str. The Movebank study name (``study-name``).
    individuals : optional mapping individual → {"tag": ..., "deployment": ...,
        "taxon": ...} giving ``tag-local-identifier``, ``deployment-id`` and
        ``individual-taxon-canonical-name``; missing entries are ''.

    Returns a DataFrame with ``MOVEBANK_EXPORT_COLUMNS``: Movebank attribute names in
    the web-export spelling; ``sensor-type`` is ``acceleration``; ``timestamp`` is UTC
    ``YYYY-MM-DD HH:MM:SS.sss`` as in Movebank exports. ``odba`` and ``vedba`` are
    Namazu's derived values (per-sample mean of the burst, [g]); Movebank's attribute
    dictionary has no standard attribute for them, so they import as study-specific
    attributes. Raises MovebankFormatError naming missing columns.
    """
    missing = [c for c in ("individual", "time", "odba", "vedba") if c not in activity.columns]
    if missing:
        raise MovebankFormatError(f"activity lacks column(s) {', '.join(missing)}")
    meta = individuals or {}
    ids = activity["individual"].astype(str)

    def attribute(key: str) -> list[str]:
        return [str(meta.get(i, {}).get(key, "")) for i in ids]

    times = pd.to_datetime(activity["time"], utc=True)
    return pd.DataFrame(
        {
            "study-name": study,
            "individual-local-identifier": ids.to_numpy(),
            "tag-local-identifier": attribute("tag"),
            "deployment-id": attribute("deployment"),
            "individual-taxon-canonical-name": attribute("taxon"),
            "sensor-type": "acceleration",
            "timestamp": times.dt.strftime("%Y-%m-%d %H:%M:%S.%f").str[:-3].to_numpy(),
            "odba": activity["odba"].to_numpy(dtype=float),
            "vedba": activity["vedba"].to_numpy(dtype=float),
        },
        columns=list(MOVEBANK_EXPORT_COLUMNS),
    )
