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
import json
import re
import shlex
from pathlib import PurePath
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1100px; color: #222;
       padding: 0 1em; overflow-wrap: anywhere; }
table { border-collapse: collapse; margin: 1em 0; display: block; max-width: 100%;
        overflow-x: auto; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f2f2f2; } td:first-child, th:first-child { text-align: left; }
table.params td, table.params th { text-align: left; }
figure { margin: 1.5em 0; } figcaption { font-size: 0.9em; color: #555; }
svg { max-width: 100%; height: auto; }
pre, code { white-space: pre-wrap; overflow-wrap: anywhere; word-break: break-word; }
.zooms { display: grid; grid-template-columns: repeat(auto-fit, minmax(min(100%, 480px), 1fr));
         gap: 1em; }
"""


def svg_markup(figure: plt.Figure) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(figure)
    text = buffer.getvalue()
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.DOTALL)  # RDF licence block
    return text[text.index("<svg") :]


def html_value(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3g}"
    return html.escape(str(value))


#: Days of activity per row of the overview figure (a long record is split into rows).
OVERVIEW_ROW_DAYS = 31
#: Shortest drawn width of an alarm span in the overview, as a share of a row [-].
MIN_SPAN_SHARE = 0.004

_TARGET_COLOURS = {"hit": "black", "miss": "#7b2cbf", "reaction cover": "#999999"}


def _naive(value: Any) -> pd.Timestamp:
    return pd.Timestamp(value).tz_convert("UTC").tz_localize(None)


def _positive(values: pd.Series) -> pd.Series:
    """Values for a logarithmic axis: zero and negative become gaps."""
    return values.where(values > 0)


def activity_figure(
    components: pd.DataFrame,
    episodes: list,
    reactions: np.ndarray,
    targets: list[dict[str, Any]],
    title: str,
    periods: dict[str, Any] | None = None,
    unit: str = "file units",
) -> str:
    """SVG: the overview, one row per ``OVERVIEW_ROW_DAYS`` days on a shared logarithmic
    (ratio) scale: activity above baseline and threshold, alarm spans as bands at least
    ``MIN_SPAN_SHARE`` of a row wide (reactions grey), period boundaries (dashed, named)
    and each target earthquake as a labelled line (hit black, miss purple).

    periods : label -> ``Intervals`` [ns] (``namazu.analytics.evaluation``), or None.
    unit : unit of the activity column, for the axis label.
    """
    index = components.index.tz_convert("UTC").tz_localize(None)
    first, last = index[0].normalize(), index[-1]
    n_rows = max(1, int(np.ceil((last - first) / pd.Timedelta(days=OVERVIEW_ROW_DAYS))))
    figure, axes = plt.subplots(
        n_rows, 1, figsize=(12, 2.6 * n_rows + 0.8), sharey=True, squeeze=False
    )
    value = _positive(components["value"])
    finite = value.dropna()
    low = float(finite.quantile(0.001)) if not finite.empty else 0.1
    high = float(
        max(finite.max() if not finite.empty else 1, _positive(components["threshold"]).max())
    )
    boundaries = []
    for label, spans in (periods or {}).items():
        for start, end in zip(spans.start, spans.end, strict=True):
            boundaries += [(pd.Timestamp(int(start)), f"{label} from"), (pd.Timestamp(end), "")]
    for row, axis in enumerate(axes[:, 0]):
        lo = first + pd.Timedelta(days=OVERVIEW_ROW_DAYS * row)
        hi = lo + pd.Timedelta(days=OVERVIEW_ROW_DAYS)
        keep = (index >= lo) & (index < hi)
        axis.plot(index[keep], components["threshold"][keep].where(lambda v: v > 0), lw=0.7,
                  color="#d62728", ls=(0, (4, 3)), alpha=0.8, zorder=2)  # fmt: skip
        axis.plot(index[keep], _positive(components["baseline"])[keep], lw=0.8,
                  color="#2ca02c", alpha=0.9, zorder=2)  # fmt: skip
        axis.plot(index[keep], value[keep], lw=0.6, color="#1f4e79", zorder=3)
        min_width = (hi - lo) * MIN_SPAN_SHARE
        for episode, reaction in zip(episodes, reactions, strict=True):
            start, end = _naive(episode.start), _naive(episode.end)
            if end < lo or start >= hi:
                continue
            mid = start + (end - start) / 2
            half = max(end - start, min_width) / 2
            axis.axvspan(mid - half, mid + half, color="#999999" if reaction else "#ff7f0e",
                         alpha=0.45, lw=0, zorder=1)  # fmt: skip
        for when, label in boundaries:
            when = when.tz_localize(None) if when.tzinfo else when
            if lo <= when < hi:
                axis.axvline(when, color="#444", ls="--", lw=1.2, zorder=4)
                if label:
                    axis.annotate(
                        label,
                        (when, 1),
                        xycoords=("data", "axes fraction"),
                        xytext=(3, -10),
                        textcoords="offset points",
                        fontsize=8,
                    )
        shown = 0
        for target in targets:
            when = _naive(target["time"])
            if not lo <= when < hi:
                continue
            status = target.get("status") or ("hit" if target.get("hit") else "miss")
            colour = _TARGET_COLOURS.get(status, "#7b2cbf")
            axis.axvline(when, color=colour, lw=1.2, zorder=5)
            axis.annotate(
                f"M {target['magnitude']:.1f}, {target['distance_km']:.0f} km, {status}",
                (when, 0.97 - 0.13 * (shown % 4)), xycoords=("data", "axes fraction"),
                xytext=(3, 0), textcoords="offset points", fontsize=8, color=colour,
                va="top", bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none",
                                "alpha": 0.8}, zorder=6,
            )  # fmt: skip
            shown += 1
        axis.set_xlim(lo, hi)
        axis.set_yscale("log")
        axis.set_ylim(low * 0.8, high * 1.5)
        axis.grid(True, which="major", axis="both", lw=0.3, color="#ccc")
        axis.set_ylabel(f"activity [{unit}]\nlog scale", fontsize=8)
    axes[0, 0].set_title(title)
    axes[-1, 0].set_xlabel("time (UTC)")
    handles = [
        plt.Line2D([], [], color="#1f4e79", lw=1, label="activity"),
        plt.Line2D([], [], color="#2ca02c", lw=1, label="baseline"),
        plt.Line2D([], [], color="#d62728", lw=1, ls="--", label="threshold"),
        plt.Rectangle((0, 0), 1, 1, color="#ff7f0e", alpha=0.45, label="alarm episode"),
        plt.Rectangle((0, 0), 1, 1, color="#999999", alpha=0.45, label="reaction (masked)"),
        plt.Line2D([], [], color="black", lw=1.2, label="target quake, hit"),
        plt.Line2D([], [], color="#7b2cbf", lw=1.2, label="target quake, miss"),
        plt.Line2D([], [], color="#444", lw=1.2, ls="--", label="period boundary"),
    ]
    figure.legend(handles=handles, loc="lower center", ncol=4, fontsize=8, frameon=False)
    figure.tight_layout(rect=(0, 0.9 / (2.6 * n_rows + 0.8), 1, 1))
    return svg_markup(figure)


def target_zoom_figure(
    components: pd.DataFrame,
    episodes: list,
    reactions: np.ndarray,
    target: dict[str, Any],
    lead_window_h: float,
    number: int,
    hours: float = 48.0,
) -> str:
    """SVG: ±``hours`` around one target: activity, baseline, threshold, the alarm
    episodes (from start to end, with their declaration), the lead-window band
    [t - ``lead_window_h``, t] and the target, titled with its status."""
    when = _naive(target["time"])
    lo, hi = when - pd.Timedelta(hours=hours), when + pd.Timedelta(hours=hours)
    index = components.index.tz_convert("UTC").tz_localize(None)
    keep = (index >= lo) & (index <= hi)
    figure, axis = plt.subplots(figsize=(6.4, 3.0))
    axis.axvspan(when - pd.Timedelta(hours=lead_window_h), when, color="#2563eb", alpha=0.08,
                 lw=0, label=f"lead window {lead_window_h:g} h")  # fmt: skip
    for episode, reaction in zip(episodes, reactions, strict=True):
        start, end = _naive(episode.start), _naive(episode.end)
        if end < lo or start > hi:
            continue
        axis.axvspan(start, end, color="#999999" if reaction else "#ff7f0e", alpha=0.45, lw=0)
        axis.axvline(_naive(episode.declared_at), color="#c2410c", lw=0.8, ls=":")
    axis.plot(index[keep], components["threshold"][keep], lw=0.7, color="#d62728", ls="--",
              label="threshold")  # fmt: skip
    axis.plot(index[keep], components["baseline"][keep], lw=0.8, color="#2ca02c",
              label="baseline")  # fmt: skip
    axis.plot(index[keep], components["value"][keep], lw=0.8, color="#1f4e79", label="activity")
    status = target.get("status") or ("hit" if target.get("hit") else "miss")
    axis.axvline(when, color=_TARGET_COLOURS.get(status, "#7b2cbf"), lw=1.5)
    axis.set_xlim(lo, hi)
    axis.set_ylim(bottom=0)
    axis.set_title(
        f"Target {number}: M {target['magnitude']:.1f}, {target['distance_km']:.0f} km, "
        f"{when:%Y-%m-%d %H:%M} UTC: {status}",
        fontsize=9,
    )
    axis.set_ylabel("activity", fontsize=8)
    axis.tick_params(labelsize=7)
    axis.legend(fontsize=6, loc="upper left", ncol=2)
    figure.autofmt_xdate()
    return svg_markup(figure)


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
    return svg_markup(figure)


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
    return svg_markup(figure)


def _interval(pair: list[Any] | None) -> str:
    if not pair or pair[0] is None:
        return "n/a"
    return f"{html_value(pair[0])}–{html_value(pair[1])}"


def _p(result: dict[str, Any], key: str) -> str:
    """A p-value, or "undefined" with its reason as a tooltip."""
    if result.get(key) is not None:
        return html_value(result[key])
    reason = result.get(f"{key}_reason") or ""
    return f"<span title='{html.escape(reason)}'>undefined</span>"


def scores_table(rows: list[tuple[str, dict[str, Any]]]) -> str:
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
        + "".join(f"<td>{html_value(r[k])}</td>" for k, _ in keys)
        + f"<td>{_interval(r.get('hit_rate_interval'))}</td>"
        + f"<td>{_interval(r.get('gain_interval'))}</td>"
        + f"<td>{_p(r, 'p_binomial')}</td><td>{_p(r, 'p_shift')}</td>"
        + "</tr>"
        for name, r in rows
    )
    return f"<table><tr><th>set</th>{head}</tr>{body}</table>"


def _catalogue(summary: dict[str, Any]) -> str:
    """HTML: what happened to the catalogue before scoring, and how it was declustered."""
    catalog = summary["catalog"]
    evaluation = summary["parameters"]["evaluation"]
    dropped = catalog.get("non_earthquakes_by_type") or {}
    kinds = ", ".join(f"{n} {html.escape(k)}" for k, n in dropped.items())
    history = summary["inputs"].get("decluster_catalog")
    text = (
        f"<p>Catalogue: {catalog['events_read'] + catalog.get('non_earthquakes_dropped', 0)} "
        f"events read, {catalog.get('non_earthquakes_dropped', 0)} dropped as not earthquakes"
        + (f" ({kinds})" if kinds else "")
        + f", {catalog['near_duplicates_merged']} near-duplicates merged; declustering with "
        f"the {html.escape(str(evaluation.get('decluster_window', 'gardner-knopoff')))} windows"
        f", foreshock fraction {evaluation.get('foreshock_fraction', 0)}"
    )
    if history:
        text += (
            f", with {catalog.get('history_events', 0)} events of the history catalogue "
            f"<code>{html.escape(_file_name(history))}</code>"
        )
    return text + f": {catalog['mainshocks']} mainshocks.</p>"


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
    periods: dict[str, Any] | None = None,
) -> str:
    """The whole report as one HTML string (inline CSS and SVG only), no wider than the
    window (long commands and hashes wrap), naming input files without their folders.

    periods : label -> ``Intervals`` [ns] of the periods file, drawn as boundaries.
    """
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
    targets = results["all_events"].target_list
    lead_window_h = float(summary["parameters"]["evaluation"]["lead_window_h"])
    title = f"activity column '{inputs['column']}' at {inputs['resolution']}"
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<title>Namazu analysis report</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>Namazu analysis report</h1>",
        f"<p>Activity <code>{html.escape(_file_name(inputs['activity']))}</code>, catalogue "
        f"<code>{html.escape(_file_name(inputs['catalog']))}</code>, farm "
        f"{inputs['farm']['latitude']:.4f} N {inputs['farm']['longitude']:.4f} E; "
        f"{inputs['samples']} samples from {html.escape(inputs['first_sample'])} to "
        f"{html.escape(inputs['last_sample'])}; {summary['monitored']['hours']:.1f} h monitored. "
        f"Rule {html.escape(summary['rule_version'])}, evaluation "
        f"{html.escape(summary.get('evaluation_version', ''))}.</p>",
        _catalogue(summary),
        "<h2>Scores</h2>",
        scores_table(rows),
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
        activity_figure(components, episodes, reactions, targets, title, periods, _unit(inputs)),
        "<figcaption>Activity on a logarithmic (ratio) scale, one row per month, with its "
        "baseline and threshold (threshold = baseline × (1 + increase), a constant distance "
        "above the baseline on this scale); orange bands are alarm episodes (drawn at least "
        "a few hours wide), grey bands reactions; dashed lines are period boundaries; "
        "labelled lines are target earthquakes (black hit, purple miss).</figcaption>"
        "</figure>",
        _zooms(components, episodes, reactions, targets, lead_window_h),
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
        _parameters(summary["parameters"]),
        _provenance(summary.get("provenance")),
        "</body></html>",
    ]
    return "\n".join(parts)


def _file_name(path: Any) -> str:
    """A file's name without its folders (no machine paths in the report)."""
    return PurePath(str(path)).name if path else ""


def _unit(inputs: dict[str, Any]) -> str:
    """Unit of the activity column: g for Movebank ODBA/VeDBA, else the file's own."""
    if inputs.get("activity_format") == "movebank":
        return "g, summed over animals"
    return f"column '{inputs.get('column', '')}'"


def _zooms(
    components: pd.DataFrame,
    episodes: list,
    reactions: np.ndarray,
    targets: list[dict[str, Any]],
    lead_window_h: float,
) -> str:
    """HTML: one ±48 h figure per target earthquake."""
    if not targets:
        return "<h2>Target earthquakes</h2><p>No target earthquake fell in monitored time.</p>"
    figures = "".join(
        "<figure>"
        + target_zoom_figure(components, episodes, reactions, target, lead_window_h, k)
        + "</figure>"
        for k, target in enumerate(targets, 1)
    )
    return (
        "<h2>Target earthquakes, ±48 h</h2>"
        "<p>Each target with the activity around it; the blue band is the lead window "
        "before it (an alarm declared there covers it), dotted lines mark declarations.</p>"
        f"<div class='zooms'>{figures}</div>"
    )


def _parameters(parameters: dict[str, Any]) -> str:
    """HTML: every parameter as a row (section, name, value)."""
    rows = []
    for section, values in parameters.items():
        for name, value in (values or {}).items():
            shown = json.dumps(value) if isinstance(value, dict | list) else _fmt_plain(value)
            rows.append(
                f"<tr><td>{html.escape(section)}</td><td><code>{html.escape(name)}</code></td>"
                f"<td>{html.escape(shown)}</td></tr>"
            )
    return (
        "<table class='params'><tr><th>set</th><th>parameter</th><th>value</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _fmt_plain(value: Any) -> str:
    return "none" if value is None else str(value)


def _short_command(argv: list[str] | None, command: str) -> str:
    """The rerun command with every absolute path shortened to its file name."""
    if not argv:
        return command
    return shlex.join(_file_name(a) if PurePath(a).is_absolute() else a for a in argv)


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
        f"<tr><td>{html.escape(name)}</td><td><code>{html.escape(_file_name(item['path']))}</code></td>"
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
            "<table><tr><th>input</th><th>file</th><th>bytes</th><th>SHA-256</th></tr>"
            f"{rows}</table>",
            f"<p>Software: {software}. Run at {html.escape(provenance['run_utc'])} (UTC).</p>",
            "<p>To rerun with every parameter explicit (from the folder holding the input "
            "files; <code>summary.json</code> records their full paths):</p>",
            "<pre>"
            + html.escape(_short_command(provenance.get("rerun"), provenance["rerun_command"]))
            + "</pre>",
            "<p>To check that the inputs are unchanged and the figures reproduce: "
            "<code>namazu analyze --verify summary.json</code>.</p>",
        ]
    )
