"""Exports of the panel: the timeline CSV and the Movebank-compatible activity CSV.
Wiring only: InfluxDB rows in, ``analytics.movebank`` formats.

Exports are streamed: the range is read and sent ``web.export_chunk_days`` at a time,
so the panel's memory is bounded by one chunk, whatever the export's length. No export
reads or writes a file, and download names are derived from validated ids only.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

import pandas as pd

from namazu.analytics.movebank import activity_to_movebank
from namazu.server.core.config import FarmConfig
from namazu.server.store import queries
from namazu.server.web import data

TAXA = {"cow": "Bos taurus", "sheep": "Ovis aries", "dog": "Canis lupus familiaris"}
_DAY_MS = 86_400_000


def chunks(start_ms: int, end_ms: int, chunk_ms: int) -> Iterator[tuple[int, int]]:
    """Consecutive [lo, hi) pieces of [start, end) of at most ``chunk_ms`` [UTC ms]."""
    lo = start_ms
    while lo < end_ms:
        hi = min(lo + chunk_ms, end_ms)
        yield lo, hi
        lo = hi


def chunk_ms(handles: Any) -> int:
    """The configured export chunk [ms]."""
    return max(60_000, int(handles.config.web.export_chunk_days * _DAY_MS))


def primed(pieces: Iterator[str]) -> Iterator[str]:
    """The same text pieces, the first already produced: an error of the first read
    (e.g. InfluxDB down) is raised here, before a response status is sent."""
    first = next(pieces, "")

    def rest() -> Iterator[str]:
        yield first
        yield from pieces

    return rest()


def timeline_csv(
    handles: Any, farm: FarmConfig, series: str, start_ms: int, end_ms: int
) -> Iterator[str]:
    """CSV text pieces (time, series, kind = activity | baseline | threshold, value) of
    every stored sample in [start, end) [UTC ms], never downsampled; per chunk, the
    activity rows, then the baseline rows, then the threshold rows."""
    yield "time,series,kind,value\n"
    is_animal = series != "herd" and not series.startswith("species:")
    influx = handles.influx_for(farm.id)
    for lo, hi in chunks(start_ms, end_ms, chunk_ms(handles)):
        base = influx.query_frame(*queries.baseline_raw(farm.id, series, lo, hi))
        if is_animal:
            act = influx.query_frame(*queries.activity_raw(farm.id, series, lo, hi))
        else:
            act = base
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        for kind, frame, column in (
            ("activity", act, "value"),
            ("baseline", base, "baseline"),
            ("threshold", base, "threshold"),
        ):
            if frame.empty or column not in frame:
                continue
            frame = frame.sort_values("time", kind="stable")
            values = pd.to_numeric(frame[column], errors="coerce")
            times = frame["time"].dt.as_unit("ms").astype("int64")
            for t, v in zip(times.to_numpy(), values.to_numpy(), strict=True):
                if v == v:  # not NaN
                    writer.writerow([data._iso_ms(int(t)), series, kind, float(v)])
        yield out.getvalue()


def movebank_csv(
    handles: Any, farm: FarmConfig, animal: str, start_ms: int, end_ms: int
) -> Iterator[str]:
    """Movebank web-export CSV text pieces of one animal's activity in [start, end)
    [UTC ms]: the header, then the rows of each chunk."""
    header_sent = False
    species = ""
    influx = handles.influx_for(farm.id)
    for lo, hi in chunks(start_ms, end_ms, chunk_ms(handles)):
        frame = influx.query_frame(*queries.activity_for_export(farm.id, animal, lo, hi))
        if frame.empty or "odba" not in frame:
            frame = pd.DataFrame(
                {
                    "time": pd.Series([], dtype="datetime64[ns, UTC]"),
                    "odba": pd.Series([], dtype=float),
                    "vedba": pd.Series([], dtype=float),
                    "species": pd.Series([], dtype=str),
                }
            )
        if not species and "species" in frame and frame["species"].notna().any():
            species = str(frame["species"].dropna().iloc[0])
        activity = pd.DataFrame(
            {
                "individual": animal,
                "time": frame["time"],
                "odba": pd.to_numeric(frame["odba"], errors="coerce"),
                "vedba": pd.to_numeric(frame.get("vedba"), errors="coerce"),
            }
        )
        table = activity_to_movebank(
            activity,
            study=f"Namazu {farm.name or farm.id}",
            individuals={animal: {"tag": animal, "deployment": f"{farm.id}-{animal}",
                                  "taxon": TAXA.get(species, "")}},
        )  # fmt: skip
        if table.empty and header_sent:
            continue
        yield table.to_csv(index=False, header=not header_sent, lineterminator="\n")
        header_sent = True
