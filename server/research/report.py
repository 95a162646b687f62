"""Self-contained HTML report of an offline analysis (inline SVG, no external URL).

Plots are drawn with matplotlib's Agg backend and embedded as SVG text:
activity with baseline, threshold, alarm spans and target earthquakes; the Molchan
error diagram with the random-guess diagonal, the binomial curve and the trajectories of
the rule and of the seismicity reference; lead time against distance for hits. The page
gives the scores with their intervals, the seismicity reference beside the animals, the
power of the data, the sweep's family-wise corrected result, states in plain words
whether the scores are distinguishable from chance, and ends with the provenance of the
run (input checksums, software versions, the command to rerun it).
"""

from __future__ import annotations

import html
import io
import re
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f2f2f2; } td:first-child, th:first-child { text-align: left; }
figure { margin: 1.5em 0; } figcaption { font-size: 0.9em; color: #555; }
svg { max-width: 100%; height: auto; }
"""


def _svg(figure: plt.Figure) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(figure)
    text = buffer.getvalue()
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.DOTALL)  # RDF licence block
    return text[text.index("<svg") :]


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3g}"
    return html.escape(str(value))


def activity_figure(
    components: pd.DataFrame,
    episodes: list,
    reactions: np.ndarray,
    targets: list[dict[str, Any]],
    title: str,
) -> str:
    """SVG: activity, baseline, threshold, alarm spans (reactions grey), target quakes."""
    figure, axis = plt.subplots(figsize=(12, 4.2))
    index = components.index.tz_convert("UTC").tz_localize(None)
    axis.plot(index, components["value"], lw=0.5, color="#1f77b4", label="activity")
    axis.plot(index, components["baseline"], lw=0.8, color="#2ca02c", label="baseline")
    axis.plot(index, components["threshold"], lw=0.8, color="#d62728", ls="--", label="threshold")
    for episode, reaction in zip(episodes, reactions, strict=True):
        axis.axvspan(
            episode.start.tz_localize(None),
            episode.end.tz_localize(None),
            color="#999999" if reaction else "#ff7f0e",
            alpha=0.5,
            lw=0,
        )
    for target in targets:
        when = pd.Timestamp(target["time"]).tz_convert("UTC").tz_localize(None)
        axis.axvline(when, color="black" if target["hit"] else "#9467bd", lw=1.0)
    axis.plot([], [], color="#ff7f0e", lw=6, alpha=0.5, label="alarm episode")
    axis.plot([], [], color="#999999", lw=6, alpha=0.5, label="reaction (masked)")
    axis.plot([], [], color="#9467bd", lw=1, label="target quake (missed)")
    axis.plot([], [], color="black", lw=1, label="target quake (hit)")
    axis.set_title(title)
    axis.set_ylabel("activity")
    axis.set_xlabel("time (UTC)")
    axis.legend(loc="upper left", fontsize=7, ncol=4)
    return _svg(figure)


def molchan_figure(
    molchan: pd.DataFrame,
    point: dict[str, Any],
    confidence: pd.DataFrame | None,
    reference: list[dict[str, Any]] | None = None,
    level_pct: float = 95.0,
) -> str:
    """SVG: Molchan diagram (τ, ν) with the diagonal, the binomial curve at the chosen
    level and the trajectories of the rule and of the seismicity reference."""
    figure, axis = plt.subplots(figsize=(5.2, 5.2))
    axis.plot([0, 1], [1, 0], color="grey", ls=":", label="random guess")
    if confidence is not None:
        axis.step(
            confidence["tau"],
            confidence["nu"],
            where="post",
            color="#d62728",
            label=f"{level_pct:g} % binomial limit",
        )
    if reference:
        rows = [r for r in reference if r.get("tau") is not None and r.get("nu") is not None]
        axis.plot(
            [r["tau"] for r in rows],
            [r["nu"] for r in rows],
            marker="s",
            ms=3,
            color="#2a9d8f",
            lw=0.8,
            ls="--",
            label="seismicity reference, window 1-500 h",
        )
    valid = molchan.dropna()
    axis.plot(
        valid["tau"],
        valid["nu"],
        marker=".",
        color="#1f77b4",
        lw=0.8,
        label="rule, increase 0-500 %",
    )
    if point.get("miss_rate") is not None:
        axis.plot(
            [point["alarm_fraction"]],
            [point["miss_rate"]],
            "o",
            color="#ff7f0e",
            ms=9,
            label="configured rule",
        )
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1.02)
    axis.set_xlabel("alarm fraction τ")
    axis.set_ylabel("miss rate ν")
    axis.set_title("Molchan error diagram")
    axis.legend(fontsize=7, loc="upper right")
    return _svg(figure)


def lead_figure(hits: list[dict[str, Any]]) -> str:
    """SVG: lead time (alarm start to quake) against epicentral distance for hits."""
    figure, axis = plt.subplots(figsize=(5.2, 4))
    if hits:
        sizes = [20 * (h["magnitude"] - 3) ** 2 for h in hits]
        axis.scatter(
            [h["distance_km"] for h in hits],
            [h["lead_time_h"] for h in hits],
            s=sizes,
            color="#ff7f0e",
            edgecolor="black",
        )
    else:
        axis.text(0.5, 0.5, "no hits", ha="center", va="center", transform=axis.transAxes)
    axis.set_xlabel("epicentral distance [km]")
    axis.set_ylabel("lead time [h]")
    axis.set_title("Lead time vs distance (hits)")
    return _svg(figure)


def _interval(pair: list[Any] | None) -> str:
    if not pair or pair[0] is None:
        return "n/a"
    return f"{_fmt(pair[0])}–{_fmt(pair[1])}"


def _p(result: dict[str, Any], key: str) -> str:
    """A p-value, or "undefined" with its reason as a tooltip."""
    if result.get(key) is not None:
        return _fmt(result[key])
    reason = result.get(f"{key}_reason") or ""
    return f"<span title='{html.escape(reason)}'>undefined</span>"


def _table(rows: list[tuple[str, dict[str, Any]]]) -> str:
    keys = [
        ("targets", "targets N"),
        ("hits", "hits h"),
        ("false_alarms", "false alarms"),
        ("alarms", "alarms"),
        ("reactions", "reactions"),
        ("alarm_fraction", "τ"),
        ("miss_rate", "ν"),
        ("probability_gain", "gain"),
    ]
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label in keys)
    head += "<th>h/N interval</th><th>gain interval</th><th>p binomial</th><th>p shift</th>"
    body = "".join(
        f"<tr><td>{html.escape(name)}</td>"
        + "".join(f"<td>{_fmt(r[k])}</td>" for k, _ in keys)
        + f"<td>{_interval(r.get('hit_rate_interval'))}</td>"
        + f"<td>{_interval(r.get('gain_interval'))}</td>"
        + f"<td>{_p(r, 'p_binomial')}</td><td>{_p(r, 'p_shift')}</td>"
        + "</tr>"
        for name, r in rows
    )
    return f"<table><tr><th>set</th>{head}</tr>{body}</table>"


def _sweep(sweep: dict[str, Any] | None) -> str:
    """HTML: the sweep's grid, its family-wise corrected best result and the sentence."""
    if not sweep:
        return ""
    grid = ", ".join(
        f"{html.escape(k)} {html.escape(', '.join(str(v) for v in values))}"
        for k, values in sweep["grid"].items()
    )
    return (
        "<h2>Sweep</h2>"
        f"<p>{sweep['combinations']} combinations ({grid}), {sweep['n_shifts']} circular "
        "shifts shared by all; every row is in <code>sweep.csv</code>.</p>"
        f"<p class='statement'>{html.escape(sweep['statement'])}</p>"
    )


def render_report(
    *,
    summary: dict[str, Any],
    components: pd.DataFrame,
    episodes: list,
    reactions: np.ndarray,
    results: dict[str, Any],
    molchan: pd.DataFrame,
    confidence: pd.DataFrame | None,
    catalog: pd.DataFrame,
) -> str:
    """The whole report as one HTML string (inline CSS and SVG only)."""
    del catalog  # targets come from the evaluation; kept for future maps
    evaluation = summary["evaluation"]
    reference = summary.get("reference") or {}
    rows = [("all events", evaluation["all_events"]), ("declustered", evaluation["declustered"])]
    rows += [(f"seismicity reference, {k.replace('_', ' ')}", r) for k, r in reference.items()]
    for label, pair in summary["periods"].items():
        rows += [
            (f"{label}: all events", pair["all_events"]),
            (f"{label}: declustered", pair["declustered"]),
        ]
    inputs = summary["inputs"]
    title = f"activity column '{inputs['column']}' at {inputs['resolution']}"
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<title>Namazu analysis report</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>Namazu analysis report</h1>",
        f"<p>Activity <code>{html.escape(inputs['activity'])}</code>, catalogue "
        f"<code>{html.escape(inputs['catalog'])}</code>, farm "
        f"{inputs['farm']['latitude']:.4f} N {inputs['farm']['longitude']:.4f} E; "
        f"{inputs['samples']} samples from {html.escape(inputs['first_sample'])} to "
        f"{html.escape(inputs['last_sample'])}; {summary['monitored']['hours']:.1f} h monitored. "
        f"Rule {html.escape(summary['rule_version'])}.</p>",
        "<h2>Scores</h2>",
        _table(rows),
        "<p>τ: fraction of monitored time covered by alarms (from the declaration, when "
        "the surge had lasted the minimum duration, to the last anomalous sample + lead "
        "window); gain = (h/N)/τ; intervals: exact (Clopper–Pearson) for h/N, divided by τ "
        "for the gain; p binomial = P(H ≥ h | N, τ); p shift: share of circular time "
        "shifts of the alarms with at least as many hits; undefined when there is no "
        "target or no alarm time (the reason shows on hover). Alarms with local shaking "
        "up to their declaration are reactions and are not counted. The seismicity "
        "reference alarms after every local event of the chosen size and is scored "
        "the same way.</p>",
        _statements(summary.get("statement")),
        _statements(summary.get("power"), "Power"),
        _statements(summary.get("reference_statement"), "Against seismic clustering"),
        "<figure>",
        activity_figure(components, episodes, reactions, results["all_events"].target_list, title),
        "<figcaption>Activity with baseline and threshold; orange spans are alarm episodes, "
        "grey spans reactions; vertical lines are target earthquakes.</figcaption></figure>",
        "<figure>",
        molchan_figure(
            molchan,
            evaluation["all_events"],
            confidence,
            summary.get("reference_molchan"),
            100.0 * evaluation["all_events"].get("confidence_level", 0.95),
        ),
        lead_figure(results["all_events"].hit_list),
        "<figcaption>Left: Molchan diagram; a rule with skill lies below the red binomial "
        "curve; the dashed line is the seismicity reference. Right: lead time (from the "
        "declaration) against distance of hit targets.</figcaption></figure>",
        _sweep(summary.get("sweep")),
        "<h2>Parameters</h2>",
        f"<pre>{html.escape(_pretty(summary['parameters']))}</pre>",
        _provenance(summary.get("provenance")),
        "</body></html>",
    ]
    return "\n".join(parts)


def _pretty(value: Any) -> str:
    import json

    return json.dumps(value, indent=2)


def _statements(statements: dict[str, str] | None, title: str | None = None) -> str:
    """HTML: plain statements per set (all events, declustered, conditional tests)."""
    if not statements:
        return ""
    labels = {
        "all_events": "All events",
        "declustered": "Declustered",
        "all_events_conditional": "All events, conditional",
        "declustered_conditional": "Declustered, conditional",
    }
    items = "".join(
        f"<li><strong>{html.escape(labels.get(k, k))}:</strong> {html.escape(text)}</li>"
        for k, text in statements.items()
    )
    head = f"<h3>{html.escape(title)}</h3>" if title else ""
    return f"{head}<ul class='statement'>{items}</ul>"


def _provenance(provenance: dict[str, Any] | None) -> str:
    """HTML: input files with size and SHA-256, software versions, command, run time."""
    if not provenance:
        return ""
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td><code>{html.escape(item['path'])}</code></td>"
        f"<td>{item['bytes']}</td><td><code>{html.escape(item['sha256'])}</code></td></tr>"
        for name, item in provenance["inputs"].items()
    )
    software = ", ".join(
        f"{html.escape(name)} {html.escape(version)}"
        for name, version in provenance["software"].items()
    )
    return "\n".join(
        [
            "<h2 id='provenance'>Provenance</h2>",
            "<table><tr><th>input</th><th>path</th><th>bytes</th><th>SHA-256</th></tr>"
            f"{rows}</table>",
            f"<p>Software: {software}. Run at {html.escape(provenance['run_utc'])} (UTC).</p>",
            "<p>To rerun with every parameter explicit:</p>",
            f"<pre>{html.escape(provenance['rerun_command'])}</pre>",
            "<p>To check that the inputs are unchanged and the figures reproduce: "
            "<code>namazu analyze --verify summary.json</code>.</p>",
        ]
    )
