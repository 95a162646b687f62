"""Benchmark of the detector (baseline + rule + episodes): 1,000 animals x 30 days at 1 minute.

The timed detector is the whole path from activity to alarms for every animal: the
baseline and the rule (``namazu.analytics.rule.detect_matrix``), the ratio to the baseline and the
extraction of the >= 45 min alarm episodes from the flags
(``namazu.analytics.rule.episodes_from_flags``, one call per animal, as
``namazu.analytics.rule.detect`` does). Prints samples per second on one core, the time
for the whole herd against the 10 s
limit, and the ratio against a plain numpy reference measured in the same run
(``np.median`` over the 7 lagged copies of an array of the same shape, which ignores
missing values and the 3-of-7 condition, so it does less work than the rule).

Run: ``.venv/bin/python -m bench.bench_detector [--animals N] [--days D]``.
Data are generated in chunks of animals so memory stays bounded.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from namazu.analytics.params import RuleParams
from namazu.analytics.rule import Episode, _ratio, detect_matrix, episodes_from_flags

TARGET_SAMPLES_PER_S = 5_000_000
LIMIT_S = 10.0


def _chunk(rng: np.random.Generator, animals: int, samples: int) -> np.ndarray:
    x = rng.lognormal(mean=-2.0, sigma=0.7, size=(animals, samples))
    x[rng.random(x.shape) < 0.01] = np.nan  # 1 % missing samples
    return x


def detect_herd(
    x: np.ndarray, index: pd.DatetimeIndex, per_day: int, params: RuleParams
) -> tuple[int, list[Episode]]:
    """The whole detector on a block of animals.

    x : activity, shape (animals, samples) on the regular grid ``index`` [any unit].
    per_day : samples per day [-]. params : RuleParams.
    Returns (anomalous samples [-], alarm episodes of every animal).
    """
    flags, base = detect_matrix(x, per_day, params)
    ratio = _ratio(x, base)
    episodes: list[Episode] = []
    for row in range(x.shape[0]):
        episodes += episodes_from_flags(
            flags[row], index, "1min", params, ratio[row], series=f"animal-{row}"
        )
    return int(flags.sum()), episodes


def _reference_median(x: np.ndarray, per_day: int, days: int) -> np.ndarray:
    n = x.shape[1]
    lagged = np.full((days, *x.shape), np.nan)
    for k in range(1, days + 1):
        lagged[k - 1, :, k * per_day :] = x[:, : n - k * per_day]
    return np.median(lagged, axis=0)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit 1 when below the samples/s target."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--animals", type=int, default=1000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--chunk", type=int, default=50, help="animals generated at a time")
    args = parser.parse_args(argv)
    per_day = 1440
    samples = args.days * per_day
    params = RuleParams()
    rng = np.random.default_rng(2017)
    detector_s = 0.0
    reference_s = 0.0
    flagged = alarms = 0
    index = pd.date_range("2017-01-01", periods=samples, freq="1min", tz="UTC", unit="ns")
    for first in range(0, args.animals, args.chunk):
        count = min(args.chunk, args.animals - first)
        x = _chunk(rng, count, samples)
        start = time.perf_counter()
        anomalous, episodes = detect_herd(x, index, per_day, params)
        detector_s += time.perf_counter() - start
        flagged += anomalous
        alarms += len(episodes)
        if first == 0:  # reference on the first chunk only, scaled to the whole herd
            start = time.perf_counter()
            _reference_median(x, per_day, params.baseline_days)
            reference_s = (time.perf_counter() - start) * args.animals / count
    total = args.animals * samples
    rate = total / detector_s
    print(f"detector: {args.animals} animals x {args.days} days x 1 min = {total:,} samples")
    print(f"detector time {detector_s:.2f} s (limit {LIMIT_S:.0f} s): {rate / 1e6:.2f} M samples/s")
    ratio = rate / TARGET_SAMPLES_PER_S
    print(f"target {TARGET_SAMPLES_PER_S / 1e6:.0f} M samples/s: ratio {ratio:.2f}")
    print(
        f"numpy reference (np.median of 7 lagged copies) {reference_s:.2f} s: "
        f"detector is {reference_s / detector_s:.2f}x the reference speed"
    )
    print(f"anomalous samples flagged: {flagged:,}; alarm episodes (>= 45 min): {alarms:,}")
    return 0 if rate >= TARGET_SAMPLES_PER_S else 1


if __name__ == "__main__":
    raise SystemExit(main())
