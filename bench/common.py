"""Shared conventions of the benchmark scripts.

A benchmark module exposes ``run(quick: bool = False) -> list[dict]``; each dict is
built with ``result``: the measured figure, the limit it is compared with (measured
in the same run, on the same machine) and their ratio. ``format_table`` renders the
rows of every module as one Markdown table; ``machine_info`` names the machine.
"""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import threading
import time
from collections.abc import Iterable
from typing import Any

import pandas as pd
import psutil

from namazu.server.store.influx import float_series_lines

COLUMNS = ("benchmark", "figure", "value", "unit", "limit", "ratio", "target")


def activity_frame_lines(
    frame: pd.DataFrame, farm: str, gateway: str = "gw-1", fields: tuple[str, ...] = ("odba",)
) -> list[str]:
    """Line protocol (``activity`` points) of a simulated herd's samples.

    frame : ``Herd.activity`` output (columns animal, species, t_ms [UTC epoch ms] and the
        ``fields``, e.g. odba [g]).
    Returns one line per sample, tagged farm, gateway, animal and species as ingest tags
    them, for writing straight to InfluxDB.
    """
    lines: list[str] = []
    for (animal, species), group in frame.groupby(["animal", "species"]):
        tags = {"farm": farm, "gateway": gateway, "animal": animal, "species": species}
        columns = {name: group[name].to_numpy() for name in fields}
        lines += float_series_lines("activity", tags, columns, group["t_ms"].to_numpy())
    return lines


def result(
    benchmark: str,
    figure: str,
    value: float,
    unit: str,
    limit: float | None = None,
    limit_name: str = "",
    target: str = "",
    higher_is_better: bool = True,
    note: str = "",
) -> dict[str, Any]:
    """One row of the benchmark table.

    value : the measured figure, in ``unit``.
    limit : the reference measured in the same run, in the same unit (None = none).
    limit_name : what the limit is (e.g. "raw /write").
    target : the acceptance criterion in words (e.g. ">= 0.5").
    higher_is_better : ratio = value/limit when True, limit/value otherwise, so that
        a ratio of 1 always means "as good as the limit".
    """
    ratio = None
    if limit is not None and value and limit:
        ratio = value / limit if higher_is_better else limit / value
    return {
        "benchmark": benchmark,
        "figure": figure,
        "value": float(value),
        "unit": unit,
        "limit": None if limit is None else float(limit),
        "limit_name": limit_name,
        "ratio": ratio,
        "target": target,
        "note": note,
    }


def _number(value: float | None) -> str:
    if value is None:
        return "—"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def format_table(rows: Iterable[dict[str, Any]]) -> str:
    """Markdown table of result rows (benchmark, figure, value, limit, ratio, target)."""
    lines = [
        "| benchmark | figure | value | limit (same run) | ratio | target |",
        "| --- | --- | ---: | ---: | ---: | --- |",
    ]
    for row in rows:
        limit = "—"
        if row.get("limit") is not None:
            limit = f"{_number(row['limit'])} {row['unit']}"
            if row.get("limit_name"):
                limit += f" ({row['limit_name']})"
        ratio = "—" if row.get("ratio") is None else f"{row['ratio']:.2f}"
        figure = row["figure"] + (f" — {row['note']}" if row.get("note") else "")
        lines.append(
            f"| {row['benchmark']} | {figure} | {_number(row['value'])} {row['unit']} "
            f"| {limit} | {ratio} | {row.get('target', '')} |"
        )
    return "\n".join(lines)


def machine_info() -> dict[str, Any]:
    """CPU model (``lscpu``), logical cores, RAM [GiB], OS and Python version."""
    model = platform.processor() or "unknown"
    try:
        out = subprocess.run(
            ["lscpu"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count() or 0,
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
    }


class PeakRss:
    """Samples the resident set size of processes in a background thread.

    Use as a context manager or call ``start``/``stop``; ``peak_mib[pid]`` holds the
    largest RSS seen per process [MiB] (children included when ``children``), and
    ``cpu_s[pid]`` the CPU time (user + system) it had used at its last sample [s], which
    stays known after the process has exited.
    """

    def __init__(self, pids: Iterable[int] = (), interval_s: float = 0.1, children: bool = True):
        self.interval_s = interval_s
        self.children = children
        self.peak_mib: dict[int, float] = {int(pid): 0.0 for pid in pids}
        self.cpu_s: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="peak-rss", daemon=True)

    def watch(self, pid: int) -> None:
        """Add a process to the sampled set."""
        self.peak_mib.setdefault(int(pid), 0.0)

    def rss_mib(self, pid: int) -> float:
        """Current RSS of a process (and its children) [MiB]; 0 when it is gone."""
        try:
            proc = psutil.Process(pid)
            total = proc.memory_info().rss
            if self.children:
                for child in proc.children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        total += child.memory_info().rss
            return total / 2**20
        except psutil.Error:
            return 0.0

    def _loop(self) -> None:
        while not self._stop.is_set():
            for pid in list(self.peak_mib):
                self.peak_mib[pid] = max(self.peak_mib[pid], self.rss_mib(pid))
                with contextlib.suppress(psutil.Error):
                    times = psutil.Process(pid).cpu_times()
                    self.cpu_s[pid] = times.user + times.system
            self._stop.wait(self.interval_s)

    def start(self) -> PeakRss:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def __enter__(self) -> PeakRss:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Stopwatch:
    """Wall-clock timer: ``with Stopwatch() as sw: ...; sw.seconds`` [s]."""

    def __enter__(self) -> Stopwatch:
        self._t0 = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._t0
