"""``make chaos``: the fault-injection suite against real Mosquitto, InfluxDB and processes.

1. Chaos run: 1,000,000 samples from 10 gateways while the broker restarts twice,
   InfluxDB stops for 30 s, an ingest worker gets SIGKILL and one gateway is cut off
   the network for a third of the run; then stored == published for every
   (animal, timestamp).
2. Backpressure: the ingest budget (``max_pending_messages``) is set far below what
   piles up during the InfluxDB stop; peak RSS of ingest and of the gateways is
   measured during the outage.
3. Scale-out: throughput with 1, 2 and 3 ingest workers on one shared subscription,
   and a SIGKILL of one of two workers mid-stream.
4. Bad input: 10,000 generated payloads through the decoder and through the live
   ingest service, plus collar frames, catalogue and activity-file readers.
5. Faults one at a time, each on a fresh stack with its own figures: both poison
   payloads mid-run, a gateway SIGKILL (a spooling gateway, and ``namazu bridge`` fed
   by collars that keep unacknowledged frames), a Mosquitto SIGKILL while ingest lags,
   and the InfluxDB credentials revoked for 30 s.

Prints the figures; ``--write docs/reliability.md`` also stores them in that file.

    python -m tests.chaos.run [--quick] [--only chaos,faults,scaleout,fuzz] [--write PATH]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.common import machine_info
from tests.chaos import fuzz
from tests.chaos.harness import (
    BridgeKillPlan,
    ChaosPlan,
    measure_ingest,
    poison_payloads,
    run_bridge_kill,
    run_chaos,
)
from tests.conftest import shared_data_dir

PARTS = ("chaos", "scaleout", "fuzz", "faults")
#: Largest resident memory an ingest worker may reach while InfluxDB is down [MiB]: its
#: in-memory budget of unacknowledged messages is small, so it must not grow with the
#: outage (about 90 MiB are the interpreter and libraries).
INGEST_RSS_BOUND_MIB = 200


def chaos_part(quick: bool, workdir: Path) -> tuple[list[str], bool]:
    """The chaos run and backpressure: the chaos run with a small ingest budget."""
    plan = ChaosPlan()
    if quick:
        plan = ChaosPlan(samples_per_gateway=20_000, duration_s=90.0, influx_outage=(0.3, 15.0))
    report = run_chaos(plan, workdir / "chaos")
    lines = [
        "### 1-2. Chaos run and backpressure",
        "",
        f"- published **{report.published:,}** samples from {plan.gateways} gateways "
        f"({plan.animals_per_gateway} animals each, 100 samples per message) to "
        f"{plan.workers} ingest workers over {plan.duration_s:.0f} s of spooling",
        f"- stored **{report.stored:,}**: missing **{report.missing}**, duplicates "
        f"**{report.duplicates}**, extra {report.extra}, wrong values {report.wrong_value}"
        f" -> {'LOSSLESS' if report.lossless else 'NOT LOSSLESS'}",
        f"- total time {report.seconds:.0f} s, of which the faults:",
    ]
    lines += [f"  - t = {t:5.1f} s: {what}" for t, what in report.events]
    budget = plan.ingest_max_pending
    lines.append(
        f"- ingest in-memory budget {budget} unacknowledged messages per worker "
        f"(= {budget * 100:,} samples, {budget * 100 * plan.workers:,} for all workers); "
        f"the gateways published about "
        f"{plan.total_samples / plan.duration_s * plan.influx_outage[1]:,.0f} samples "
        "during the InfluxDB stop (rate x outage, from the plan), so the rest had to wait "
        "in the broker and the gateway spools"
        if plan.influx_outage
        else ""
    )
    outage_ingest = [v for k, v in report.outage_rss_mib.items() if k.startswith("ingest")]
    bounded = bool(outage_ingest) and max(outage_ingest) <= INGEST_RSS_BOUND_MIB
    if plan.influx_outage:
        lines.append(
            f"- memory bound: every ingest worker stayed at or below {INGEST_RSS_BOUND_MIB} MiB "
            f"during the InfluxDB stop: {'yes' if bounded else 'NO'}"
        )
    for label, figures in (
        ("during the InfluxDB stop", report.outage_rss_mib),
        ("over the whole run", report.peak_rss_mib),
    ):
        if figures:
            lines.append(f"- peak RSS {label}: {_rss_summary(figures)}")
    for name, stats in sorted(report.ingest_stats.items()):
        keys = ("received", "written_messages", "ack_skipped", "seq_replays", "write_retries")
        lines.append(f"- {name} (last run): " + ", ".join(f"{k} {stats.get(k, 0)}" for k in keys))
    connects = {k: v.get("connects", 0) for k, v in sorted(report.gateway_stats.items())}
    lines.append(f"- gateway connections (1 = never lost): {connects}")
    return lines, report.lossless and (bounded or not plan.influx_outage)


def _rss_summary(figures: dict[str, float]) -> str:
    """Ingest workers one by one, gateways as their largest value [MiB]."""
    ingest = [f"{k} {v:.0f} MiB" for k, v in sorted(figures.items()) if k.startswith("ingest")]
    gateways = [v for k, v in figures.items() if k.startswith("gateway")]
    parts = ingest
    if gateways:
        parts.append(f"gateways at most {max(gateways):.0f} MiB each ({len(gateways)} processes)")
    return "; ".join(parts)


def scaleout_part(quick: bool, workdir: Path) -> tuple[list[str], bool]:
    """Scale-out: 1, 2, 3 workers, and a SIGKILL of one of two."""
    from bench.bench_ingest import FARM, payloads, synthetic_points
    from namazu.server.launch.stack import Stack

    n = 100_000 if quick else 300_000
    messages = payloads(synthetic_points(n))
    lines = ["### 3. Scale-out (one MQTT v5 shared subscription)", ""]
    lines += [
        "| workers | samples/s | stored / published | messages per worker | peak RSS per worker |",
        "| ---: | ---: | ---: | --- | --- |",
    ]
    ok = True
    stack = Stack(workdir / "scaleout-stack").start()
    try:
        for workers, kill in ((1, False), (2, False), (3, False), (2, True)):
            got = measure_ingest(stack, workdir, messages, n, FARM, workers=workers, kill_one=kill)
            ok &= got["stored"] == n
            label = f"{workers}" + (" (one SIGKILLed mid-stream, restarted)" if kill else "")
            rss = "/".join(f"{v:.0f} MiB" for v in got["peak_rss_mib"].values())
            lines.append(
                f"| {label} | {got['samples_per_s']:,.0f} | {got['stored']:,} / {n:,} "
                f"| {'/'.join(str(r) for r in got['received'])} | {rss} |"
            )
    finally:
        stack.stop()
    lines.append(
        "- messages per worker are each worker's last run (a SIGKILLed run leaves no "
        "counters); on 2 cores the workers share CPU with InfluxDB, Mosquitto and the "
        "publisher, so more workers mainly show the sharing (little extra speed)"
    )
    return lines, ok


def fuzz_part(quick: bool, workdir: Path) -> tuple[list[str], bool]:
    """Bad input: decoders and the live service against generated bad input."""
    from namazu.server.launch.stack import Stack
    from namazu.server.store.influx import InfluxClient

    n = 2_000 if quick else 10_000
    data = shared_data_dir()
    reports = [fuzz.fuzz_payload_decoder(n), fuzz.fuzz_frame_decoder(n)]
    catalogs = sorted((data / "catalogs").glob("*.*")) + sorted(
        (data / "wikelski2020").glob("catalog_*.csv")
    )
    texts = {
        p.name: "\n".join(p.read_text(encoding="utf-8").splitlines()[:80])
        for p in catalogs
        if p.suffix in {".csv", ".txt", ".geojson", ".xml"}
    }
    missing = []
    if texts:
        reports.append(fuzz.fuzz_catalog_reader(texts, n // 5))
    else:
        missing.append("catalogue files")
    activity = data / "wikelski2020" / "activity_2017-01-17_2017-04-14.csv"
    if activity.exists():
        lines = activity.read_text(encoding="utf-8").splitlines()
        reports.append(fuzz.fuzz_activity_reader("\n".join(lines[:1] + lines[6400:6600]), n // 10))
    else:
        missing.append(activity.name)
    gulls = data / "movebank" / "gulls_study985143423_events.csv"
    if gulls.exists():
        text = "\n".join(gulls.read_text(encoding="utf-8").splitlines()[:150])
        reports.append(fuzz.fuzz_movebank_reader(text, n // 20))
    else:
        missing.append(gulls.name)
    stack = Stack(workdir / "fuzz-stack").start()
    try:
        influx = InfluxClient(stack.influx_url, "fuzz")
        influx.create_database()
        live = fuzz.fuzz_live_ingest(stack, "fuzz", n)
    finally:
        stack.stop()
    ok = all(not r.crashes for r in reports) and live["mismatched"] == 0 and not missing
    ok &= live["dead_letters"] == live["expected_rejects"]
    ok &= live["valid_stored"] == live["valid_expected"] and bool(live["connected"])
    out = ["### 4. Bad input", ""]
    out += [f"- {r.line()}" for r in reports]
    out += [f"- NOT RUN (data not found under {data}): {name}" for name in missing]
    out.append(
        f"- live ingest: {live['cases']:,} generated payloads published, "
        f"{live['expected_rejects']:,} invalid -> {live['dead_letters']:,} dead letters "
        f"({live['mismatched']} with a wrong reason or payload); interleaved valid traffic "
        f"stored {live['valid_stored']:,} / {live['valid_expected']:,} samples; service "
        f"{'still connected' if live['connected'] else 'DISCONNECTED'}"
    )
    for r in reports:
        for case, error in r.crashes[:3]:
            out.append(f"  - crash in {r.target}: {error} on {case[:120]}")
    return out, ok


def fault_plans(quick: bool) -> dict[str, ChaosPlan]:
    """One plan per fault: spooling gateways and two ingest workers, no other fault."""
    base = {
        "gateways": 3,
        "animals_per_gateway": 20,
        "samples_per_gateway": 10_000 if quick else 40_000,
        "duration_s": 30.0 if quick else 90.0,
        "workers": 2,
        "broker_restarts": (),
        "influx_outage": None,
        "kill_worker_at": None,
        "offline_gateway": None,
        "drain_timeout_s": 300.0,
    }
    lag_s, revoked_s = (5.0, 10.0) if quick else (10.0, 30.0)
    return {
        "poison payloads mid-run (1,020-deep `schema`, 3.6 MB)": ChaosPlan(**base, poison_at=0.4),
        "gateway SIGKILL (spooling gateway, restarted 1 s later)": ChaosPlan(
            **base, gateway_kill_at=0.5
        ),
        f"Mosquitto SIGKILL while ingest lags ({lag_s:.0f} s paused)": ChaosPlan(
            **base, broker_kill=(0.4, lag_s)
        ),
        f"InfluxDB credentials revoked for {revoked_s:.0f} s": ChaosPlan(
            **base, influx_revoke=(0.3, revoked_s)
        ),
    }


def faults_part(quick: bool, workdir: Path) -> tuple[list[str], bool]:
    """Each fault alone, on a fresh stack, with sent/stored/missing/duplicates/wrong."""
    lines = [
        "### 5. Faults one at a time",
        "",
        "| fault | sent | stored | missing | duplicates | wrong values | also |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    notes: list[str] = []
    ok = True
    for i, (name, plan) in enumerate(fault_plans(quick).items()):
        print(f"-- {name}", flush=True)
        report = run_chaos(plan, workdir / f"fault-{i}")
        also = ""
        if plan.poison_at is not None:
            sent = len(poison_payloads())
            got = report.dead_letters.get("gw-poison", 0)
            letters = report.dead_letters.get("gw-poison messages", 0)
            also = f"{got} of {sent} poison payloads dead-lettered ({letters} dead letters)"
            ok &= got == sent
        if plan.gateway_kill_at is not None:
            restarted = report.gateway_stats.get("gw-00", {})
            also = (
                f"gw-00 restarted with {restarted.get('unconfirmed_at_start', 0)} "
                "unconfirmed messages in its spool, sent again"
            )
        stats = report.gateway_stats.values()
        again = sum(s.get("unconfirmed_at_reconnect", 0) for s in stats)
        timed_out = sum(s.get("resent", 0) for s in stats)
        resends = f"sent again: {again} after reconnects, {timed_out} after receipt time-outs"
        also = "; ".join(x for x in (also, resends) if x)
        ok &= report.lossless
        lines.append(
            f"| {name} | {report.published:,} | {report.stored:,} | {report.missing} "
            f"| {report.duplicates} | {report.wrong_value} | {also} |"
        )
        notes += [f"  - {name}: " + "; ".join(f"t = {t:.1f} s {w}" for t, w in report.events)]
    bridge_plan = (
        BridgeKillPlan(cows=10, minutes=600, frame_rate_hz=300.0) if quick else BridgeKillPlan()
    )
    print("-- namazu bridge SIGKILL", flush=True)
    got = run_bridge_kill(bridge_plan, workdir / "fault-bridge")
    collars = got["collars"]
    ok &= (
        got["missing"] == got["duplicates"] == got["extra"] == got["wrong_value"] == 0
        and got["stored"] == got["expected"]
        and got["kills"] == len(bridge_plan.kill_at)
    )
    lines.append(
        f"| `namazu bridge` SIGKILL x{got['kills']} (UDP collars that keep frames) "
        f"| {got['expected']:,} | {got['stored']:,} | {got['missing']} | {got['duplicates']} "
        f"| {got['wrong_value']} | collars resent {collars['resent']:,} frames |"
    )
    notes.append(
        "  - namazu bridge SIGKILL: " + "; ".join(f"t = {t:.1f} s {w}" for t, w in got["events"])
    )
    lines += [
        "",
        "- sent = samples the gateways spooled (for the bridge: one per collar frame); stored "
        "= points in InfluxDB; missing, duplicates (same animal and time stored twice) and "
        "wrong values (odba or vedba differ from what was sent) per (animal, timestamp); "
        "gateways free their spool only on ingest receipts",
        "- timelines:",
        *notes,
    ]
    return lines, ok


def write_doc(path: Path, text: str) -> None:
    """Replace the latest-figures block of ``path`` (created when missing)."""
    start, end = "<!-- chaos:latest:start -->", "<!-- chaos:latest:end -->"
    block = f"{start}\n{text}\n{end}"
    doc = path.read_text(encoding="utf-8") if path.exists() else "# Reliability\n"
    if start in doc and end in doc:
        doc = doc[: doc.index(start)] + block + doc[doc.index(end) + len(end) :]
    else:
        doc = doc.rstrip() + "\n\n## Latest figures\n\n" + block + "\n"
    path.write_text(doc, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """Run the suite; exit 1 when any part lost data, crashed or mis-reported."""
    parser = argparse.ArgumentParser(prog="tests.chaos.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a few minutes)")
    parser.add_argument("--only", help="comma-separated subset of " + ",".join(PARTS))
    parser.add_argument("--write", type=Path, help="store the figures in this Markdown file")
    args = parser.parse_args(argv)
    parts = args.only.split(",") if args.only else list(PARTS)
    if not set(parts) <= set(PARTS):
        print(f"tests.chaos.run: unknown part in --only {args.only!r}", file=sys.stderr)
        return 2
    machine = machine_info()
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    sections = [
        f"Run {when}{' (quick sizes)' if args.quick else ''} on {machine['cpu']}, "
        f"{machine['cores']} logical cores, {machine['ram_gib']} GiB RAM.",
        "",
    ]
    verdicts = {}
    runners = {
        "chaos": chaos_part,
        "faults": faults_part,
        "scaleout": scaleout_part,
        "fuzz": fuzz_part,
    }
    with tempfile.TemporaryDirectory(prefix="namazu-chaos-") as tmp:
        for part in parts:
            print(f"== {part}", flush=True)
            started = time.monotonic()
            lines, ok = runners[part](args.quick, Path(tmp))
            verdicts[part] = ok
            lines.append(
                f"- took {time.monotonic() - started:.0f} s; verdict: {'PASS' if ok else 'FAIL'}"
            )
            print("\n".join(lines), flush=True)
            sections += lines + [""]
    text = "\n".join(sections).rstrip()
    if args.write:
        write_doc(args.write, text)
    print("\n" + ", ".join(f"{k}: {'PASS' if v else 'FAIL'}" for k, v in verdicts.items()))
    return 0 if all(verdicts.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
