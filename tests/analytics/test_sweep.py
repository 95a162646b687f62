"""The sweep's family-wise correction against a brute-force computation on a small grid."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest
from numpy.testing import assert_allclose

from namazu.analytics.evaluation import evaluate, monitored_intervals, shift_offsets_ns
from namazu.analytics.params import EvaluationParams, RuleParams
from namazu.analytics.rule import detect
from namazu.analytics.sweep import SweepGrid, holm, min_p_adjusted, sweep
from tests.analytics.test_assessment import FARM, catalogue, herd


def brute_hits(cover, targets, monitored, shift) -> int:
    """Hits of the covers moved by ``shift`` along the monitored circle, by plain loops."""
    spans = list(zip(monitored.start.tolist(), monitored.end.tolist(), strict=True))
    total = sum(e - s for s, e in spans)

    def clock(t: int) -> int:
        elapsed = 0
        for s, e in spans:
            if s <= t < e:
                return elapsed + (t - s)
            elapsed += e - s
        raise AssertionError("time outside monitored time")

    moved = []
    for a, b in zip(cover.start.tolist(), cover.end.tolist(), strict=True):
        start, length = (clock(a) + shift) % total, b - a
        moved.append((start, min(start + length, total)))
        if start + length > total:  # wraps past the end of the circle
            moved.append((0, start + length - total))
    return sum(any(lo <= clock(int(t)) < hi for lo, hi in moved) for t in targets)


def brute_force(hits: list[list[int]]) -> tuple[list[float], list[float]]:
    """Marginal and single-step min-p adjusted p-values from the definition."""
    k = len(hits[0])
    count = [[sum(h[j2] >= h[j] for j2 in range(k)) for j in range(k)] for h in hits]
    smallest = [min(c[j] for c in count) for j in range(k)]
    marginal = [c[0] / k for c in count]
    adjusted = [sum(smallest[j] <= c[0] for j in range(k)) / k for c in count]
    return marginal, adjusted


def test_westfall_young_equals_brute_force_on_a_small_grid():
    series = herd()
    noisy = series * (1 + 0.3 * np.sin(np.arange(len(series)) / 7.0))
    columns = {"herd": series, "noisy": noisy.rename("noisy")}
    grid = SweepGrid(
        columns=("herd", "noisy"),
        increase_pct=(140.0, 300.0),
        min_duration_min=(45.0,),
        lead_window_h=(6.0, 20.0),
        min_magnitude=(4.0, 4.4),
    )
    params = EvaluationParams(n_shifts=60, seed=11)
    result = sweep(columns, catalogue(), FARM, "15min", grid, RuleParams(), params)
    assert len(result.table) == 16

    hits = []
    for column, pct, lead, magnitude in itertools.product(
        grid.columns, grid.increase_pct, grid.lead_window_h, grid.min_magnitude
    ):
        rule = RuleParams(increase_pct=pct)
        episodes, components = detect(columns[column], "15min", rule, return_components=True)
        judged = components["value"].notna() & components["baseline"].notna()
        monitored = monitored_intervals(components.index, judged.to_numpy(), "15min")
        quick = replace(params, n_shifts=0, lead_window_h=lead, min_magnitude=magnitude)
        one = evaluate(episodes, catalogue(), FARM, monitored, quick)
        shifts = shift_offsets_ns(monitored.total_ns, params.n_shifts, params.seed)
        row = [brute_hits(one.cover, one.target_ns, monitored, 0)]
        row += [brute_hits(one.cover, one.target_ns, monitored, int(s)) for s in shifts]
        assert row[0] == one.hits
        hits.append(row)
    marginal, adjusted = brute_force(hits)
    table = result.table.sort_values(["column", "increase_pct", "lead_window_h", "min_magnitude"])
    assert_allclose(table["p_shift"], marginal, rtol=0, atol=0)
    assert_allclose(table["p_westfall_young"], adjusted, rtol=0, atol=0)
    assert (table["p_westfall_young"] >= table["p_shift"]).all()
    assert (table["p_holm"] >= table["p_shift"]).all()
    best = result.best()
    assert best["p_shift"] == min(marginal)
    assert "corrected p" in result.statement()


def test_min_p_leaves_out_undefined_combinations():
    hits = np.array([[3, 1, 2, 3], [0, 0, 0, 0], [1, 0, 1, 0]])
    marginal, adjusted = min_p_adjusted(hits, np.array([True, False, True]))
    assert np.isnan(marginal[1]) and np.isnan(adjusted[1])
    assert_allclose(marginal[[0, 2]], [2 / 4, 2 / 4])
    # min over the two valid rows of the counts: j0: min(2, 2)=2, j1: min(4, 4)=4,
    # j2: min(3, 2)=2, j3: min(2, 4)=2 -> three of four <= 2
    assert_allclose(adjusted[[0, 2]], [3 / 4, 3 / 4])


def test_holm_known_answer():
    p = np.array([0.01, 0.04, 0.03, np.nan, 0.005])
    assert_allclose(holm(p)[[4, 0, 2, 1]], [0.02, 0.03, 0.06, 0.06])
    assert np.isnan(holm(p)[3])


def test_a_grid_needs_values():
    with pytest.raises(ValueError, match="lead_window_h needs at least one value"):
        SweepGrid(columns=("a",), lead_window_h=())


def test_a_sweep_of_one_combination_equals_the_evaluation():
    grid = SweepGrid(
        columns=("herd",),
        increase_pct=(140.0,),
        min_duration_min=(45.0,),
        lead_window_h=(20.0,),
        min_magnitude=(4.0,),
    )
    params = EvaluationParams(n_shifts=200)
    result = sweep({"herd": herd()}, catalogue(), FARM, "15min", grid, RuleParams(), params)
    episodes, components = detect(herd(), "15min", return_components=True)
    judged = components["value"].notna() & components["baseline"].notna()
    monitored = monitored_intervals(components.index, judged.to_numpy(), "15min")
    one = evaluate(episodes, catalogue(), FARM, monitored, params)
    row = result.table.iloc[0]
    assert (row["targets"], row["hits"]) == (one.targets, one.hits)
    assert row["p_shift"] == one.p_shift == row["p_westfall_young"] == row["p_holm"]
