"""``namazu import movebank|csv``: activity files → the normalised activity CSV.

movebank : a Movebank event file (API or web-export spelling, ``.csv`` or ``.csv.gz``)
           with e-obs bursts or expanded UvA-BiTS rows → one row per burst with ODBA
           and VeDBA [g] (``namazu.analytics.movebank``; raw-count conversions documented
           there: e-obs slope by tag generation, uncalibrated UvA-BiTS counts at the
           nominal 1/2048 g/count, ``tilt_*`` columns used as g when present).
csv      : a table with a time column and one activity column (``--column``), e.g. the
           2017 farm series; times in UTC unless ``--timezone`` names the local zone
           (``namazu.analytics.tabular`` rejects ambiguous/missing local times, naming rows).

Output (``--out FILE`` or stdout): ``time,individual,odba,vedba`` with time ISO 8601 UTC
(``Z``), activity in the input's unit (g for Movebank). ``read_movebank`` is the shell
``namazu analyze`` reuses. Errors are one line on stderr: exit 2 for bad arguments,
1 for unreadable or malformed files.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from namazu.analytics.movebank import MovebankFormatError, bursts_to_activity, parse_movebank_events
from namazu.analytics.tabular import TabularError, parse_activity_csv

ACTIVITY_CSV_COLUMNS: tuple[str, ...] = ("time", "individual", "odba", "vedba")


class ImportFileError(Exception):
    """An input file cannot be read or understood; the message names the path."""


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Turn the ways reading ``path`` can fail into one ImportFileError naming it."""
    try:
        yield
    except FileNotFoundError as exc:
        raise ImportFileError(f"{path}: no such file") from exc
    except (OSError, EOFError) as exc:
        raise ImportFileError(f"{path}: cannot read: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ImportFileError(f"{path}: not UTF-8 text ({exc.reason})") from exc
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ImportFileError(f"{path}: not a readable CSV: {exc}") from exc


def _read_table(path: Path) -> pd.DataFrame:
    with _reading(path):
        return pd.read_csv(path, dtype=str, keep_default_na=False, compression="infer")


def read_movebank(path: str | Path) -> pd.DataFrame:
    """Per-burst activity of a Movebank event file (``.csv`` or ``.csv.gz``).

    Returns DataFrame ``individual, time (burst start, UTC), odba [g], vedba [g],
    n_samples, sampling_hz [Hz]`` (``namazu.analytics.movebank.bursts_to_activity``).
    Raises ImportFileError naming the path and what is wrong.
    """
    path = Path(path)
    events = _read_table(path)
    try:
        return bursts_to_activity(parse_movebank_events(events))
    except MovebankFormatError as exc:
        raise ImportFileError(f"{path}: {exc}") from exc


def _read_text(path: Path) -> str:
    with _reading(path):
        raw = path.read_bytes()
        if path.suffix == ".gz" or raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        return raw.decode("utf-8-sig")


def read_activity_column(
    path: str | Path, column: str, *, time_column: str = "time", timezone: str | None = None
) -> pd.DataFrame:
    """One activity column of a CSV as ``time, individual (= column name), odba, vedba``.

    column : the activity column; its values go to ``odba`` [unit of the file] and
        ``vedba`` is NaN (a single activity figure per sample). Empty cells are dropped.
    time_column : the time column. timezone : IANA zone of zone-less times, None = UTC
        (``namazu.analytics.tabular.parse_activity_csv`` rules: ambiguous or nonexistent local
        times, unsorted or duplicated times are errors naming the lines).
    Raises ImportFileError naming the path and what is wrong.
    """
    path = Path(path)
    text = _read_text(path)
    try:
        table = parse_activity_csv(
            text, time_column=time_column, columns=[column], timezone=timezone
        )
    except TabularError as exc:
        raise ImportFileError(f"{path}: {exc}") from exc
    values = table[column].dropna()
    return pd.DataFrame(
        {
            "time": values.index,
            "individual": column,
            "odba": values.to_numpy(dtype=float),
            "vedba": np.nan,
        }
    )


def activity_csv_text(activity: pd.DataFrame) -> str:
    """The normalised activity CSV (``ACTIVITY_CSV_COLUMNS``; time ISO 8601 UTC, ms, Z)."""
    out = activity.loc[:, list(ACTIVITY_CSV_COLUMNS)].copy()
    times = pd.to_datetime(out["time"], utc=True)
    out["time"] = times.dt.strftime("%Y-%m-%dT%H:%M:%S.%f").str[:-3] + "Z"
    return out.to_csv(index=False, lineterminator="\n")


def _write(text: str, out: str | None) -> None:
    if out is None:
        sys.stdout.write(text)
        return
    path = Path(out)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        raise ImportFileError(f"{path}: cannot write: {exc.strerror or exc}") from exc


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="namazu import", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="kind", required=True)
    movebank = sub.add_parser("movebank", help="Movebank event file (.csv/.csv.gz)")
    movebank.add_argument("file")
    movebank.add_argument("--out", help="output CSV (default: stdout)")
    table = sub.add_parser("csv", help="CSV with a time column and an activity column")
    table.add_argument("file")
    table.add_argument("--column", required=True, help="activity column to import")
    table.add_argument("--time-column", default="time", help="time column (default: time)")
    table.add_argument("--timezone", help="IANA zone of zone-less times (default: UTC)")
    table.add_argument("--out", help="output CSV (default: stdout)")
    return parser


def main(argv: list[str]) -> int:
    """``namazu import movebank|csv FILE ...``; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.kind == "movebank":
            activity = read_movebank(args.file)
        else:
            activity = read_activity_column(
                args.file, args.column, time_column=args.time_column, timezone=args.timezone
            )
        _write(activity_csv_text(activity), args.out)
    except ImportFileError as exc:
        print(f"namazu import {args.kind}: {exc}", file=sys.stderr)
        return 1
    if args.out is not None:
        individuals = activity["individual"].nunique()
        print(f"{len(activity)} rows of {individuals} individual(s) written to {args.out}")
    return 0
