"""``make cluster``: Namazu as separate hosts (network namespaces), hosts killed and cut off.

    python -m tests.cluster.run [--short] [--workdir DIR] [--write docs/reliability.md]
    python -m tests.cluster.run cleanup      # namespaces and links a killed run left

Needs root (``ip netns``). Prints the figures (samples sent / stored / lost /
duplicates, alarms expected / opened / duplicated, hand-over times in ticks) and exits
0 when the run passed, 1 when a check failed, 2 when it could not run. ``--write``
replaces the cluster block of ``docs/reliability.md`` with this run's figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from tests.cluster.harness import SHORT, ClusterError, ClusterPlan, ClusterReport, run_cluster
from tests.cluster.netns import NetnsError, available, cleanup

START, END = "<!-- cluster:latest:start -->", "<!-- cluster:latest:end -->"


def machine() -> str:
    """CPU model, logical cores and memory of this machine, in one phrase."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = " ".join(line.split(":", 1)[1].split()[:2])
                break
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory = f", {pages / 2**30:.1f} GiB RAM"
    except (OSError, ValueError):
        memory = ""
    return f"{model}, {os.cpu_count()} logical cores{memory}"


def markdown(report: ClusterReport, command: str) -> str:
    """The figures block for docs/reliability.md."""
    plan = report.plan
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        START,
        f"Run {stamp} on {machine()}, with `{command}`; verdict "
        f"**{'PASS' if report.passed else 'FAIL'}** in {report.seconds:.0f} s.",
        "",
        "| what | figure |",
        "| --- | --- |",
        f"| farms, animals, data | {plan.farms} farms x {sum(plan.counts.values())} animals, "
        f"{plan.days} days at 1 sample/min, {plan.episodes_per_farm} unrest episodes per farm |",
        "| InfluxDB instances | "
        + "; ".join(f"{k}: {v}" for k, v in sorted(report.instances.items()))
        + " |",
        f"| samples sent / stored | {report.published:,} / {report.stored:,} |",
        f"| samples lost / duplicated / wrong value / in the wrong instance | "
        f"{report.missing} / {report.duplicates} / {report.wrong_value} / "
        f"{report.wrong_instance} |",
        f"| alarms expected (one scheduler, same data) / opened by the replicas | "
        f"{report.alarms_expected} / {report.alarms_opened} |",
        f"| alarms missed / unexpected / duplicated | {report.alarms_missed} / "
        f"{report.alarms_unexpected} / {report.alarms_duplicated} |",
        f"| injected episodes with a herd alarm | {report.episodes_found} / {report.episodes} |",
        f"| alarm-log records in all replica chains / alarms the state store credits to "
        f"exactly one chain / to two | {report.log_records} / {report.log_credited} / "
        f"{report.log_duplicates} |",
        f"| records of a tick whose transaction then failed (a replica cut off or fenced "
        f"out after writing its log; the alarm is credited to the replica that redid the "
        f"tick) | {report.log_uncredited} |",
        "| `namazu verify-log` exit code per scheduler host | "
        + ", ".join(f"{k} {v}" for k, v in sorted(report.verify_log.items()))
        + " |",
        f"| hand-over (ticks of {plan.tick_s:g} s; leases last 1.25 ticks) | "
        + ", ".join(f"{k}: {v:.2f}" for k, v in report.handovers.items())
        + " |",
        f"| farm leases changed hands (given back by a live replica; the rest taken after "
        f"the lease ran out) | {report.changes_of_hands} ({report.given_back}) |",
        "| ticks fenced out of a farm (lease lost) / failed detection jobs, per replica | "
        + ", ".join(
            f"{k} {report.fenced_out.get(k, 0)} / {report.failed_ticks.get(k, 0)}"
            for k in sorted(report.verify_log)
        )
        + " |",
        f"| through nginx (both replicas upstream): log-in, alarm lists, replicas that "
        f"served them, after host web1 was killed | {report.web.get('nginx_login')}, "
        f"{report.web.get('nginx_alarm_lists_ok')} complete, "
        f"{report.web.get('nginx_replicas_serving')}, "
        f"{report.web.get('nginx_after_web1_killed')} |",
        f"| log-in on web1 used on web2 | {report.web.get('login_on_one_used_on_other')} "
        f"(web2 without the cookie: {report.web.get('web2_without_cookie')}; alarms listed "
        f"by web2: {report.web.get('web2_alarms_listed')}; animals read per instance: "
        f"{report.web.get('web2_animals_per_instance')}) |",
        "",
        "Timeline:",
        "",
    ]
    lines += [f"- t = {t:6.1f} s: {what}" for t, what in report.events]
    lines.append(END)
    return "\n".join(lines)


def write_block(path: Path, block: str) -> None:
    text = path.read_text(encoding="utf-8")
    if START in text and END in text:
        head, rest = text.split(START, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", nargs="?", choices=["run", "cleanup"], default="run")
    parser.add_argument("--short", action="store_true", help="the smaller run of make test")
    parser.add_argument("--workdir", type=Path, help="keep configs, data and logs here")
    parser.add_argument("--write", type=Path, help="put the figures into this Markdown file")
    parser.add_argument(
        "--instances", type=int, choices=[1, 2], help="InfluxDB instances (default the plan's)"
    )
    args = parser.parse_args(argv)
    reason = available()
    if reason:
        print(f"cluster: cannot run: {reason}", file=sys.stderr)
        return 2
    if args.action == "cleanup":
        removed = cleanup()
        print(f"removed: {', '.join(removed) if removed else 'nothing'}")
        return 0
    # SIGTERM unwinds like Ctrl-C, so the run's namespaces are removed on the way out
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    plan = SHORT if args.short else ClusterPlan()
    command = "python -m tests.cluster.run" + (" --short" if args.short else "")
    if args.instances:
        plan = dataclasses.replace(plan, instances=args.instances)
        command += f" --instances {args.instances}"
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="namazu-cluster-") as tmp:
        workdir = args.workdir or Path(tmp)
        try:
            report = run_cluster(plan, workdir)
        except (ClusterError, NetnsError) as exc:
            print(f"cluster: run failed after {time.monotonic() - began:.0f} s: {exc}")
            print(f"cluster: logs under {workdir}" if args.workdir else "")
            return 1
    print(report.summary())
    if args.write:
        write_block(args.write, markdown(report, command))
        print(f"figures written to {args.write}")
    return 0 if report.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
