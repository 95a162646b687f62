"""Self-contained HTML page of ``namazu reproduce wikelski2020`` (inline SVG, no URL).

The original's figures (t-statistic heat maps, warning time against distance with the
median regression) beside the honest tests (null distributions of the slope under
circular shifts, the grid's multiple comparisons, the exceedances scored as alarms),
the quirks of the original, the plain verdict and the provenance.
"""

from __future__ import annotations

import html
import json
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from namazu.analytics.wikelski2020 import GROUPS, GroupResult, PeriodResult, StudyResult  # noqa: E402
from namazu.server.research.report import STYLE, html_value, scores_table, svg_markup  # noqa: E402


def heatmap_figure(period: PeriodResult) -> str:
    """SVG: the t-statistic of the slope over (th_eq, th_animal), one panel per group."""
    figure, axes = plt.subplots(
        2, 2, figsize=(9, 7.6), sharex=True, sharey=True, layout="constrained"
    )
    image = None
    for axis, group in zip(axes.ravel(), GROUPS, strict=True):
        grid = period.groups[group].t_grid
        low, high = float(grid.columns[0]), float(grid.columns[-1])
        image = axis.imshow(
            grid.to_numpy(),
            origin="lower",
            cmap="coolwarm",
            vmin=-4,
            vmax=4,
            extent=(low, high, float(grid.index[0]), float(grid.index[-1])),
            aspect="auto",
        )
        axis.set_title(group)
    for axis in axes[1]:
        axis.set_xlabel("animal threshold [sd]")
    for axis in axes[:, 0]:
        axis.set_ylabel("PGA threshold [sd]")
    if image is not None:
        figure.colorbar(image, ax=axes, label="t-statistic of the slope (OLS)", shrink=0.8)
    figure.suptitle(f"{period.label}: t-statistic grid (the original's heat map)")
    return svg_markup(figure)


def distance_warning_figure(outcome: GroupResult, title: str) -> str:
    """SVG: warning time against hypocentral distance of the pairs, median regressions."""
    pairs = outcome.pairs
    figure, axis = plt.subplots(figsize=(5.4, 4.2))
    cut = ~pairs["window_complete"].to_numpy(bool)
    axis.scatter(
        pairs["distance_km"][~cut],
        pairs["warning_time_h"][~cut],
        s=12,
        alpha=0.35,
        color="#1f77b4",
        label="pair",
    )
    axis.scatter(
        pairs["distance_km"][cut],
        pairs["warning_time_h"][cut],
        s=12,
        alpha=0.6,
        color="#d62728",
        marker="x",
        label="pair with a cut look-back",
    )
    right = float(pairs["distance_km"].max()) * 1.05 if len(pairs) else 1.0
    for fit, style, name in (
        (outcome.regression, "-", "median regression (original)"),
        (outcome.complete_windows, "--", "complete windows only"),
    ):
        if fit.get("slope") is not None:
            axis.plot(
                [0, right],
                [fit["intercept"], fit["intercept"] + fit["slope"] * right],
                style,
                color="black",
                label=f"{name}: {fit['slope']:+.3f} h/km",
            )
    axis.set_xlim(0, right)
    axis.set_ylim(0, 20.5)
    axis.set_xlabel("hypocentral distance [km]")
    axis.set_ylabel("warning time [h]")
    axis.set_title(title)
    axis.legend(fontsize=7, loc="upper right")
    return svg_markup(figure)


def null_figure(period: PeriodResult) -> str:
    """SVG: each group's slope among the slopes of the circularly shifted series."""
    figure, axes = plt.subplots(1, 4, figsize=(12, 3.0), layout="constrained")
    for axis, group in zip(axes, GROUPS, strict=True):
        outcome = period.groups[group]
        null = outcome.null_slopes[np.isfinite(outcome.null_slopes)]
        if null.size:
            axis.hist(null, bins=30, color="#bbbbbb")
        slope = outcome.regression.get("slope")
        if slope is not None:
            axis.axvline(slope, color="#d62728", lw=2, label="observed")
        axis.set_title(group)
        axis.set_xlabel("slope [h/km]")
    axes[0].set_ylabel("shifts")
    axes[0].legend(fontsize=7)
    figure.suptitle(f"{period.label}: median-regression slope under {period.shifts.size} shifts")
    return svg_markup(figure)


def alarm_molchan_figure(summary: dict[str, Any]) -> str:
    """SVG: Molchan points of the exceedance alarms per period (thresholds 1-3 sd)."""
    figure, axis = plt.subplots(figsize=(4.8, 4.8))
    axis.plot([0, 1], [1, 0], ":", color="grey", label="random guess")
    for label, period in summary["periods"].items():
        points = [p for p in period["alarms"]["molchan"] if p["nu"] is not None]
        if points:
            axis.plot(
                [p["tau"] for p in points], [p["nu"] for p in points], "o-", ms=4, label=label
            )
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1.02)
    axis.set_xlabel("alarm fraction τ")
    axis.set_ylabel("miss rate ν")
    axis.set_title("Exceedance alarms, thresholds 1-3 sd")
    axis.legend(fontsize=7)
    return svg_markup(figure)


def _rows(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    cells = ("".join(f"<td>{html_value(v)}</td>" for v in row) for row in rows)
    body = "".join(f"<tr>{c}</tr>" for c in cells)
    return f"<table><tr>{head}</tr>{body}</table>"


def _regression_tables(period: dict[str, Any]) -> str:
    original = [
        "group", "pairs", "triggers", "intercept [h]", "± SE", "slope [h/km]", "± SE", "t",
        "p naive",
    ]  # fmt: skip
    honest = [
        "group", "p shift (slope)", "shifted slopes: median", "2.5 %", "97.5 %",
        "pairs with a cut look-back", "complete windows: pairs", "slope [h/km]", "p naive",
        "p shift",
    ]  # fmt: skip
    first, second = [], []
    for group, outcome in period["groups"].items():
        fit, test = outcome["regression"], outcome["shift_test"]
        cut = outcome["complete_windows"]
        cut_test = outcome["shift_test_complete_windows"]
        null = test["null_slope"]
        first.append(
            [
                group, outcome["pairs"], outcome["triggers_with_pairs"], fit["intercept"],
                fit["intercept_se"], fit["slope"], fit["slope_se"], fit["slope_t"],
                test["p_naive_two_sided"],
            ]
        )  # fmt: skip
        second.append(
            [
                group, test["p_shift"]["two_sided"], null["median"], null["q025"], null["q975"],
                outcome["pairs_window_cut"], cut["n_pairs"], cut["slope"],
                cut_test["p_naive_two_sided"], cut_test["p_shift"]["two_sided"],
            ]
        )  # fmt: skip
    return _rows(original, first) + _rows(honest, second)


def _grid_table(period: dict[str, Any]) -> str:
    header = [
        "group", "t min", "at (th_eq, th_animal)", "t max", "cells with |t| > 1.96",
        "null median", "null 95 %", "p (count)", "family-wise p (min t)",
    ]  # fmt: skip
    rows = []
    for group, outcome in period["groups"].items():
        extremes, test = outcome["t_grid"], outcome["grid_test"]
        at = extremes.get("min_at")
        rows.append(
            [
                group, extremes.get("min"),
                "n/a" if at is None else f"({at[0]:.2f}, {at[1]:.2f})", extremes.get("max"),
                f"{test['significant_cells']} of {test['cells_with_value']}",
                test["null_significant_cells"]["median"], test["null_significant_cells"]["q95"],
                test["p_significant_cells"], test["p_min_t_familywise"],
            ]
        )  # fmt: skip
    return _rows(header, rows)


def _period_section(
    summary: dict[str, Any], period: PeriodResult, scatter: dict[tuple[str, str], str]
) -> list[str]:
    data = summary["periods"][period.label]
    choice = data["fourier_choice"]
    bic_row = [[g, choice[g]["bic"], choice[g]["aic"]] for g in choice]
    lags = data["var_criteria"]
    residuals = data["residuals"]
    alarms = data["alarms"]
    scored = alarms["results"]
    figures = "".join(
        scatter.get((period.label, g))
        or distance_warning_figure(period.groups[g], f"{period.label}, {g}")
        for g in GROUPS
    )
    return [
        f"<h2>{html.escape(period.label)}: {data['first_sample']} to {data['last_sample']}</h2>",
        f"<p>{data['samples']} samples, {data['pga_cells']} cells with PGA; "
        f"{data['events']} catalogue events (PGA mean {data['pga_mean_g']:.3g} g, sd "
        f"{data['pga_sd_g']:.3g} g), {data['triggers']} triggers above the PGA threshold, "
        f"{data['triggers_window_cut']} of them with a look-back cut off by the ends of the "
        f"series and {data['triggers_outside_activity']} outside the activity data.</p>",
        "<h3>Daily pattern: harmonics chosen by BIC (then fixed at "
        f"{data['frequencies_used']})</h3>",
        _rows(["group", "BIC choice", "AIC choice"], bic_row),
        "<details><summary>BIC by number of daily harmonics</summary>"
        + _rows(
            ["harmonics", *period.fourier["bic"].columns],
            [
                [k, *(f"{v:.8g}" for v in row)]
                for k, row in zip(
                    period.fourier["bic"].index, period.fourier["bic"].to_numpy(), strict=True
                )
            ],
        )
        + "</details>",
        f"<h3>VAR: information criteria by lag (VAR({data['var_lags_used']}) used)</h3>",
        _rows(
            ["lags", "AIC", "BIC"],
            [[k, f"{v['aic']:.6g}", f"{v['bic']:.6g}"] for k, v in lags.items()],
        ),
        "<details><summary>VAR summary (statsmodels)</summary><pre>"
        + html.escape(period.var_summary)
        + "</pre></details>",
        _rows(
            ["residual", "sd", "first", "last"],
            [
                [c, residuals["sd"][c], residuals["first"][c], residuals["last"][c]]
                for c in residuals["sd"]
            ],
        ),
        f"<p>Residuals from {residuals['first_time']} to {residuals['last_time']} "
        f"({residuals['samples']} samples).</p>",
        "<h3>The original's result: median regression at the configured thresholds, "
        "and its honest tests</h3>",
        _regression_tables(data),
        "<p>p naive: statsmodels' two-sided p of the slope, which treats every pair as "
        "independent. p shift: two-sided empirical p of the same slope among the slopes "
        f"obtained with the residual series shifted circularly ({data['shifts']} shifts of at "
        "least a day) against the catalogue. Complete: only triggers whose 20 h look-back "
        "lies inside the residual series.</p>",
        "<figure>" + figures + "<figcaption>Warning time against hypocentral distance; red "
        "crosses are pairs whose trigger's look-back is cut off.</figcaption></figure>",
        "<figure>" + null_figure(period) + "</figure>",
        "<h3>The threshold grid and its multiple comparisons</h3>",
        "<figure>" + heatmap_figure(period) + "</figure>",
        _grid_table(data),
        "<h3>The exceedances as alarms, scored like the a-priori rule</h3>",
        f"<p>{alarms['alarms']} alarms ({alarms['alarm_samples']} samples of the "
        f"{alarms['group']} residual above {alarms['threshold']:g} sd), each covering the "
        f"next 20 h; {alarms['monitored_h']:.1f} h monitored.</p>",
        scores_table(
            [
                (f"{name}: {who}", scored[key][who])
                for key, name in (("all_events", "all events"), ("declustered", "declustered"))
                for who in ("animals", "reference")
            ]
        ),
        "<p>reference: the seismicity-only forecast (an alarm after every local event), "
        "scored the same way.</p><ul>"
        + "".join(
            f"<li><strong>{html.escape(key.replace('_', ' '))}, {html.escape(kind)}:</strong> "
            f"{html.escape(text)}</li>"
            for key in ("all_events", "declustered")
            for kind, text in scored[key]["statements"].items()
        )
        + "</ul>",
    ]


def render_report(
    summary: dict[str, Any],
    result: StudyResult,
    scatter: dict[tuple[str, str], str] | None = None,
) -> str:
    """The whole page as one HTML string (inline CSS and SVG only).

    scatter : already drawn ``distance_warning_figure`` SVGs by (period, group).
    """
    inputs = summary["inputs"]
    quirks = "".join(
        f"<li><code>{html.escape(key)}</code>: {html.escape(text)}</li>"
        for key, text in summary["quirks"].items()
    )
    trim = summary["activity_trim"]
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<title>Namazu: the Wikelski et al. (2020) analysis, reproduced and tested</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>The Wikelski et al. (2020) analysis, reproduced and tested</h1>",
        f"<p>Activity <code>{html.escape(inputs['activity'])}</code> "
        f"({inputs['samples_read']} samples read; {trim['dropped_first']} dropped at the start "
        f"and {trim['dropped_last']} at the end: {html.escape(trim['rule'])}), catalogue "
        f"<code>{html.escape(inputs['catalog'])}</code> ({inputs['events_read']} events), "
        f"periods split at {html.escape(summary['split'])}.</p>",
        "<h2>Verdict</h2>",
        f"<p class='statement'>{html.escape(summary['verdict'])}</p>",
        "<h2>Quirks of the original, copied here</h2>",
        f"<ul>{quirks}</ul>",
    ]
    for period in result.periods.values():
        parts += _period_section(summary, period, scatter or {})
    provenance = summary["provenance"]
    files = "".join(
        f"<tr><td>{html.escape(name)}</td><td><code>{html.escape(item['path'])}</code></td>"
        f"<td>{item['bytes']}</td><td><code>{html.escape(item['sha256'])}</code></td></tr>"
        for name, item in provenance["inputs"].items()
    )
    software = ", ".join(
        f"{html.escape(k)} {html.escape(v)}" for k, v in provenance["software"].items()
    )
    parts += [
        "<h2>Alarms: Molchan diagram</h2>",
        "<figure>" + alarm_molchan_figure(summary) + "</figure>",
        "<h2>Parameters</h2>",
        f"<pre>{html.escape(json.dumps(summary['parameters'], indent=2))}</pre>",
        "<h2 id='provenance'>Provenance</h2>",
        f"<table><tr><th>input</th><th>path</th><th>bytes</th><th>SHA-256</th></tr>{files}</table>",
        f"<p>Software: {software}. Run at {html.escape(provenance['run_utc'])} (UTC).</p>",
        f"<pre>{html.escape(provenance['rerun_command'])}</pre>",
        "</body></html>",
    ]
    return "\n".join(parts)
