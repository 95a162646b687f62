"""How much real and simulated animals stray from their rule baseline (15-min grid).

The detection-quality benchmark scores the live rule on simulated herds. Whether its
misses and false alarms come from the simulator or from the rule depends on how the
simulated activity varies around the rule's baseline compared with real animals. This
script measures the same figures (``namazu.analytics.variability``) on

- the 2017 study data (``wikelski2020/activity_…csv`` of the data pack: per species the
  ODBA summed over the tagged animals and averaged over each 15-min window), and
- the simulator: one 12-animal herd per species over 35 days, as the live tick sees it
  (each animal's 15-min median) and as the study's columns are built (the herd's sum
  of 15-min means).

A sum over several animals varies less than its animals (their own moods partly
cancel), so a simulated *single animal* that varies less than a real *species sum* is
a simulator that is calmer than the farm, not noisier.

Run: ``.venv/bin/python -m bench.bench_variability [--activity PATH]``.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from namazu.analytics.tabular import parse_activity_csv
from namazu.analytics.variability import Variability, ratio_variability
from namazu.firmware_bridge.simulator import Herd

DEFAULT_ACTIVITY = (
    Path(__file__).resolve().parents[2]
    / "shared/data/wikelski2020/activity_2017-01-17_2017-04-14.csv"
)
SPECIES = ("cow", "sheep", "dog")
T0 = datetime(2024, 3, 4, tzinfo=UTC)
SIM_DAYS = 35
SIM_ANIMALS = 12


def real_rows(path: Path) -> list[tuple[str, Variability]]:
    """Figures of every species column of the 2017 study file."""
    table = parse_activity_csv(path.read_text(encoding="utf-8"), columns=list(SPECIES))
    return [(f"2017 data, {s} (sum of the tagged animals)", ratio_variability(
        table[s], "15min")) for s in SPECIES]  # fmt: skip


def simulated_rows(seed: int = 7) -> list[tuple[str, Variability]]:
    """Figures of simulated animals (pooled per species: the median animal) and sums."""
    rows = []
    for k, species in enumerate(SPECIES):
        herd = Herd(f"{species}-var", "gw-1", {species: SIM_ANIMALS}, seed=seed + k,
                    dropout_rate=0.01)  # fmt: skip
        raw = herd.activity(T0, T0 + timedelta(days=SIM_DAYS))
        raw["time"] = pd.to_datetime(raw["t_ms"], unit="ms", utc=True).dt.floor("15min")
        medians = raw.groupby(["time", "animal"])["odba"].median().unstack("animal")
        animals = sorted(
            (ratio_variability(medians[a], "15min") for a in medians.columns),
            key=lambda v: v.log_ratio_sigma,
        )
        rows.append((f"simulator, one {species} (15-min median; the median animal)",
                     animals[len(animals) // 2]))  # fmt: skip
        sums = raw.groupby(["time", "animal"])["odba"].mean().unstack("animal").sum(axis=1)
        rows.append((f"simulator, {species} herd sum of {SIM_ANIMALS} (15-min means)",
                     ratio_variability(sums, "15min")))  # fmt: skip
    return rows


def print_rows(rows: list[tuple[str, Variability]]) -> None:
    """One line a series: σ of ln(x/b), lag correlations, share of steps a ×3/×4/×5 surge
    would stay under the threshold, rule episodes per week."""
    print("series | σ ln(x/b) | r(15 min), r(1 h) | ×3 / ×4 / ×5 unseen | episodes/week")
    for label, v in rows:
        unseen = " / ".join(f"{v.surge_unseen[m]:.3f}" for m in (3.0, 4.0, 5.0))
        r1, rh = v.lag_correlation
        print(f"{label} | {v.log_ratio_sigma:.3f} | {r1:.2f}, {rh:.2f} | {unseen} | "
              f"{v.episodes_per_week:.2f} ({v.episodes} in {v.weeks:.1f})")  # fmt: skip


def measure(activity: Path | None) -> list[tuple[str, Variability]]:
    """Real rows (when the file exists) followed by simulated rows."""
    rows = real_rows(activity) if activity is not None and activity.exists() else []
    return rows + simulated_rows()


def main(argv: list[str] | None = None) -> int:
    """Print the table; exit 2 when the given study file does not exist."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--activity", type=Path, default=DEFAULT_ACTIVITY,
                        help="the 2017 study's activity CSV (data pack)")  # fmt: skip
    args = parser.parse_args(argv)
    if not args.activity.exists():
        print(f"bench_variability: activity file {args.activity} does not exist")
        return 2
    print_rows(measure(args.activity))
    return 0


def figures(rows: list[tuple[str, Variability]]) -> dict[str, Any]:
    """JSON-ready figures of every row."""
    return {label: v.as_dict() for label, v in rows}


if __name__ == "__main__":
    raise SystemExit(main())
