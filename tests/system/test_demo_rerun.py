"""``namazu demo`` as a user runs it: started, logged in to, stopped with Ctrl-C and
started again on the same data directory. While it runs, a second demo on that directory
is refused and ``namazu stack status`` sees its stack. Each run's alarms are checked
against the ground truth it printed (recall per animal, no split herd alarm, only the
animals that surged named), and the panel's evaluation has the earthquakes placed in
monitored time."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from namazu.server.store.state import Alarm
from tests.conftest import PROJECT_ROOT, require_data, shared_data_dir

pytestmark = pytest.mark.services

NAMAZU = str(Path(sys.executable).parent / "namazu")
TRUTH = re.compile(
    r"injected unrest episode \(ground truth\): (\S+ \S+) UTC, (\d+) min, activity x(\S+), "
    r"(\d+) animals \(([^;)]+)"
)
SPECIES_OF_ROLE = {"every animal": ("cow", "sheep", "dog"), "cows and sheep": ("cow", "sheep")}


def _start(data_dir: Path) -> tuple[subprocess.Popen, list[str]]:
    """Start a serving demo; return it and its output up to the printed log-in."""
    proc = subprocess.Popen(
        [NAMAZU, "demo", "--data-dir", str(data_dir), "--days", "8", "--port", "0"],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "NAMAZU_DATA_DIR": str(shared_data_dir())},
    )
    lines: list[str] = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if line.startswith("login:"):
            return proc, lines
    proc.kill()
    proc.wait(10)
    raise AssertionError("the demo did not come up:\n" + "\n".join(lines[-40:]))


def _stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    try:
        return proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()


def _value(lines: list[str], prefix: str) -> str:
    return next(line for line in lines if line.startswith(prefix)).split(None, 1)[1]


def _log_in(lines: list[str]) -> requests.Session:
    url = _value(lines, "panel:").strip()
    user, password = (part.strip() for part in _value(lines, "login:").split("/"))
    web = requests.Session()
    page = web.get(f"{url}login", timeout=10).text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    answer = web.post(
        f"{url}login",
        data={"username": user, "password": password, "csrf_token": token},
        timeout=10,
    )
    assert answer.status_code == 200 and "logged in as demo" in answer.text
    web.base = url  # type: ignore[attr-defined]
    return web


def _check_against_truth(data_dir: Path, lines: list[str]) -> list[tuple[float, int]]:
    """(recall per animal, split animals) of every printed episode, with checks."""
    truth = [TRUTH.search(line) for line in lines if "ground truth" in line]
    assert len(truth) == 2, lines
    engine = create_engine(f"sqlite:///{data_dir / 'state.sqlite'}")
    with Session(engine) as db:
        alarms = db.scalars(select(Alarm)).all()
    engine.dispose()
    figures = []
    step = timedelta(minutes=15)
    for match in truth:
        start = datetime.fromisoformat(match.group(1).replace(" ", "T") + "+00:00")
        end = start + timedelta(minutes=int(match.group(2)))
        species = SPECIES_OF_ROLE[match.group(5)]

        def overlaps(a: Alarm, lo=start, hi=end) -> bool:
            return a.start < hi and (a.end or a.last_anomalous) + step > lo

        animals = [a for a in alarms if a.kind == "animal" and overlaps(a)]
        expected = int(match.group(4))
        hit = {a.series for a in animals if a.species in species}
        splits = sum(1 for s in hit if sum(a.series == s for a in animals) > 1)
        [herd] = [a for a in alarms if a.kind == "herd" and overlaps(a)]  # one, not split
        # named only when it surged: an animal of the episode, or one that alarmed itself
        # then (a dog barking by chance); a calm animal never
        named = set(herd.animals_involved)
        assert all(n.split("-")[2] in species for n in named - {a.series for a in animals})
        assert len(herd.animals_involved) >= 0.8 * expected
        assert herd.declared_at == herd.start + timedelta(minutes=45)
        assert herd.resolution_s == 900
        figures.append((len(hit) / expected, splits))
    for recall, splits in figures:
        assert recall >= 0.85, figures
        assert splits <= 2, figures
    return figures


def test_demo_runs_twice_with_a_log_in_between(tmp_path):
    require_data("wikelski2020/catalog_2017-01-17_2017-04-16.csv")  # the quake scenario
    data_dir = tmp_path / "demo"
    first, lines = _start(data_dir)
    try:
        web = _log_in(lines)  # a log-in session row refers to the demo user
        second = subprocess.run(
            [NAMAZU, "demo", "--data-dir", str(data_dir), "--days", "8"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert second.returncode == 1
        assert second.stderr.strip().count("\n") == 0  # one line
        assert "another demo is running" in second.stderr
        status = subprocess.run(
            [NAMAZU, "stack", "status", "--data-dir", str(data_dir)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert status.returncode == 0, status.stdout + status.stderr
        assert json.loads(status.stdout)["running"] is True
        evaluation = web.get(f"{web.base}api/v1/evaluation", timeout=120).json()
        assert evaluation["result"] is not None, evaluation.get("statement")
        assert evaluation["molchan"] and evaluation["lead_vs_distance"]
        mails = [line for line in lines if line.startswith("alert e-mails")]
        assert mails and "caught by the local SMTP server; read the first:" in mails[0]
        first_figures = _check_against_truth(data_dir, lines)
    finally:
        code = _stop(first)
    assert code == 0
    again, lines = _start(data_dir)
    try:
        _log_in(lines)
        second_figures = _check_against_truth(data_dir, lines)
    finally:
        assert _stop(again) == 0
    print(f"\nrecall and split animals per episode: {first_figures} then {second_figures}")
