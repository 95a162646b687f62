"""Benchmark: a simulated network of farms shared by scheduler replica processes.

Starts a private InfluxDB (``namazu.server.launch.stack``) and PostgreSQL
(``namazu.server.launch.postgres``), writes ``--animals`` animals on ``--farms`` farms at
one sample per animal and minute (``firmware_bridge.simulator.Herd``, with a herd-wide
``UnrestEpisode`` on ``--episode-farms`` of them, starting at staggered minutes so that
their alarms open all through the run) for the minutes the ticks judge and the same
minutes on each of the 7 previous days, then starts ``--replicas`` replica processes.

Each replica is a separate OS process with its own engine, lease identity and alarm log,
built by ``namazu.server.detection.scheduler.build_services`` from a configuration with
``scheduler.replica_id`` set, and runs the scheduler's detection cycle
(``scheduler.detect``: lease balance, fenced tick per owned farm with its ``SliceWindow``,
data health) when the driver sends it a simulated time: the replicas tick in lockstep on
a simulated clock (one tick per simulated minute, the 1-min grid), as fast as the machine
allows, rather than on the wall clock of ``namazu scheduler``. During tick ``--kill-at``
one replica is SIGKILLed while it works through its farms.

After every tick the driver reads the lease table. It checks and prints:

- every farm ticked by exactly one replica at every tick, with the fencing token that
  the lease table holds for it; a token grows by one at each change of holder and only
  then;
- the killed replica's farms owned again within two ticks;
- no alarm stored or opened twice; every injected episode raised its herd alarm exactly
  once; the alarms equal those of a single scheduler (one ``DetectionJob``, no leases)
  over the same data and simulated times (``--reference all``, or only the farms with an
  episode and those of the killed replica: ``affected``);
- each replica's window holds only farms it owns (a farm given away is dropped, one
  taken over is read afresh);
- tick time per replica and tick, per animal, and the share of it spent reading InfluxDB.

    .venv/bin/python -m bench.bench_network [--animals 100000] [--farms 500] [--replicas 3]
        [--ticks 20] [--kill-at 8] [--episode-farms 50] [--reference affected] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import select as fdselect
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from sqlalchemy import select, text

from namazu.firmware_bridge.simulator import Herd, UnrestEpisode
from namazu.server.store.influx import InfluxClient, prefixed_float_lines, series_prefix
from namazu.server.store.state import init_db

#: Simulated time of the first tick [UTC].
T0 = datetime(2024, 5, 8, 12, 0, tzinfo=UTC)
TICK = timedelta(minutes=1)
#: Minutes judged by the first tick of a farm (an episode needs 45 to raise an alarm).
LEAD_MIN = 45
#: Activity multiplier and length of an injected episode [-], [min].
EPISODE_INTENSITY = 4.0
EPISODE_MIN = 90
BASELINE_DAYS = 7
#: Parts of a replica's tick besides the read, as the replica reports them [s].
PARTS = ("compute_s", "write_s", "lease_s", "health_s")
PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class NetworkSpec:
    """The simulated network. animals : total [count]; farms [count]; replicas [count];
    ticks : simulated minutes ticked; kill_at : tick during which one replica is killed
    (None: none); episode_farms : farms with an injected episode [count];
    reference : "all", "affected" or "none"."""

    animals: int = 100_000
    farms: int = 500
    replicas: int = 3
    ticks: int = 20
    kill_at: int | None = 8
    episode_farms: int = 50
    reference: str = "affected"

    @property
    def per_farm(self) -> int:
        return self.animals // self.farms

    def farm_ids(self) -> list[str]:
        return [f"farm-{i:04d}" for i in range(self.farms)]

    def episodes(self) -> dict[str, UnrestEpisode]:
        """Farm -> its episode; starts spread so the herd alarms open from the second
        tick to three ticks before the end."""
        farms = self.farm_ids()
        chosen = farms[:: max(1, self.farms // max(1, self.episode_farms))][: self.episode_farms]
        span = max(1, self.ticks - 3)
        first = T0 - timedelta(minutes=LEAD_MIN - 1)
        return {
            farm: UnrestEpisode(first + k * span // len(chosen) * TICK, EPISODE_MIN,
                                EPISODE_INTENSITY)
            for k, farm in enumerate(chosen)
        }  # fmt: skip


# ---------------------------------------------------------------------------- data


def _herd(spec: NetworkSpec, index: int, farm: str, episode: UnrestEpisode | None) -> Herd:
    n = spec.per_farm
    counts = {"cow": n * 6 // 10, "sheep": n * 3 // 10}
    counts["dog"] = n - counts["cow"] - counts["sheep"]
    return Herd(farm, "gw-1", counts, seed=index, episodes=(episode,) if episode else ())


def _farm_lines(spec: NetworkSpec, index: int, farm: str, episode: UnrestEpisode | None):
    """Line protocol of one farm: the ticked minutes (and, with an episode, the lead
    before them) today and on each of the previous 7 days."""
    herd = _herd(spec, index, farm, episode)
    lead = LEAD_MIN + 1 if episode else 2
    for k in range(BASELINE_DAYS + 1):
        day = T0 - timedelta(days=k)
        frame = herd.activity(day - lead * TICK, day + (spec.ticks + 1) * TICK)
        frame = frame.iloc[np.argsort(frame["animal"].to_numpy(), kind="stable")]
        animals, counts = np.unique(frame["animal"].to_numpy(), return_counts=True)
        species = dict(zip(frame["animal"], frame["species"], strict=False))
        prefixes = [
            series_prefix("activity", (("animal", a), ("farm", farm), ("gateway", "gw-1"),
                                       ("species", species[a])))
            for a in animals
        ]  # fmt: skip
        yield prefixed_float_lines(
            prefixes,
            counts.tolist(),
            {
                "odba": frame["odba"].to_numpy().tolist(),
                "vedba": frame["vedba"].to_numpy().tolist(),
            },
            frame["t_ms"].to_numpy().tolist(),
        )


def write_network(client: InfluxClient, spec: NetworkSpec) -> int:
    """Write every farm's samples; the lines of the next farm are built while InfluxDB
    takes the previous batch. Returns the number of points."""
    episodes = spec.episodes()
    points, batch, pending = 0, [], None
    with ThreadPoolExecutor(max_workers=1) as writer:
        for index, farm in enumerate(spec.farm_ids()):
            for lines in _farm_lines(spec, index, farm, episodes.get(farm)):
                batch += lines
                if len(batch) >= 100_000:
                    if pending is not None:
                        pending.result()
                    pending, batch = writer.submit(client.write_lines, batch), []
                points += len(lines)
        if pending is not None:
            pending.result()
        if batch:
            client.write_lines(batch)
    return points


# ---------------------------------------------------------------------------- replica


def _config(spec: NetworkSpec, influx_url: str, database: str, state_url: str,
            workdir: Path, replica: str | None) -> dict[str, Any]:  # fmt: skip
    return {
        "influx": {"url": influx_url, "database": database, "timeout_s": 300},
        "farms": [{"id": f, "latitude": 43.0, "longitude": 13.0} for f in spec.farm_ids()],
        "state": {"url": state_url},
        "scheduler": {
            "alarm_log_path": str(workdir / "alarm-log.jsonl"),
            "tick_s": TICK.total_seconds(),
            "resolution_s": int(TICK.total_seconds()),
            "replica_id": replica,
        },
    }


def _detection_options() -> dict[str, Any]:
    return {"settle_s": 0, "initial_lookback_s": LEAD_MIN * 60}


def serve_replica(config_path: str) -> int:
    """A replica process: for each line ``{"now": ISO}`` on stdin, run the scheduler's
    detection cycle at that simulated time and answer one JSON line on stdout."""
    from namazu.server.core.config import NamazuConfig
    from namazu.server.detection.scheduler import build_services, detect

    logging.basicConfig(level=logging.ERROR)
    config = NamazuConfig.model_validate(json.loads(Path(config_path).read_text()))
    services = build_services(config, **_detection_options())
    window, leases = services.detection.window, services.leases
    assert leases is not None
    spent = {"lease_s": 0.0, "health_s": 0.0}

    def timed(key: str, body: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return body(*args, **kwargs)
            finally:
                spent[key] += time.perf_counter() - started

        return call

    balance = timed("lease_s", leases.balance)
    used: dict[str, int] = {}

    def balance_and_note_tokens(*args: Any, **kwargs: Any) -> list[str]:
        owned = balance(*args, **kwargs)
        used.clear()
        used.update(leases.tokens)  # those it fences the tick with (excess ones included)
        return owned

    leases.balance = balance_and_note_tokens  # type: ignore[method-assign]
    services.health.run = timed("health_s", services.health.run)  # type: ignore[method-assign]
    print(json.dumps({"ready": leases.holder}), flush=True)
    for line in sys.stdin:
        now = datetime.fromisoformat(json.loads(line)["now"])
        chunks_before = {farm: id(chunk) for farm, chunk in window.chunks.items()}
        spent.update(lease_s=0.0, health_s=0.0)
        started = time.perf_counter()
        cpu_started = time.process_time()
        ticks, _ = detect(services, now)
        elapsed = time.perf_counter() - started
        cpu_s = time.process_time() - cpu_started
        owned = list(services.detection.farms)
        reply = {
            "now": now.isoformat(),
            "owned": owned,
            "handed_over": list(leases.excess),
            "tokens": {f: used.get(f"farm:{f}") for f in owned + leases.excess},
            "ticked": [t.farm for t in ticks],
            "detect_s": elapsed,
            "cpu_s": cpu_s,
            "read_s": sum(t.read_s for t in ticks),
            "compute_s": sum(t.compute_s for t in ticks),
            "write_s": sum(t.write_s for t in ticks),
            **spent,
            "animals": sum(t.animals for t in ticks),
            "samples": sum(t.samples for t in ticks),
            "opened": [i for t in ticks for i in t.opened],
            "window": sorted(window.chunks),
            "window_rebuilt": sorted(
                f for f, c in window.chunks.items() if chunks_before.get(f) != id(c)
            ),
        }
        print(json.dumps(reply), flush=True)
    return 0


@dataclass
class Replica:
    """One replica process; ``replies[k]`` is its answer to tick k (None: dead)."""

    name: str
    proc: subprocess.Popen
    replies: list[dict[str, Any] | None] = field(default_factory=list)

    def send(self, now: datetime) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"now": now.isoformat()}) + "\n")
        self.proc.stdin.flush()

    def receive(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"replica {self.name} exited with {self.proc.wait()}")
        return json.loads(line)


def _start_replicas(spec: NetworkSpec, influx_url: str, database: str, state_url: str,
                    workdir: Path) -> list[Replica]:  # fmt: skip
    replicas = []
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    for i in range(spec.replicas):
        name = f"r{i}"
        path = workdir / f"{name}.json"
        path.write_text(json.dumps(_config(spec, influx_url, database, state_url, workdir, name)))
        command = [sys.executable, "-m", "bench.bench_network", "--serve-replica", str(path)]
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            command, cwd=PROJECT_ROOT, env=env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )  # fmt: skip
        replicas.append(Replica(name, proc))
    for replica in replicas:
        replica.receive()  # {"ready": ...}
    return replicas


def _lease_table(engine) -> dict[str, tuple[str | None, int]]:
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT name, holder, token FROM leases WHERE name LIKE 'farm:%'")
        ).all()
    return {name.partition(":")[2]: (holder, int(token)) for name, holder, token in rows}


# ---------------------------------------------------------------------------- checks


@dataclass
class Outcome:
    """What the run showed; ``failures`` lists every check that did not hold."""

    lines: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)

    def say(self, line: str) -> None:
        self.lines.append(line)
        print(line, flush=True)

    def check(self, ok: bool, what: str) -> None:
        self.say(f"  {'ok  ' if ok else 'FAIL'} {what}")
        if not ok:
            self.failures.append(what)


def _alarm_rows(engine, farms: set[str] | None = None) -> list[tuple]:
    from namazu.server.store.state import Alarm, session_scope

    with session_scope(engine) as db:
        rows = [
            (a.farm, a.kind, a.series, a.start, a.end, a.state, a.close_reason)
            for a in db.scalars(select(Alarm))
        ]
    return sorted(r for r in rows if farms is None or r[0] in farms)


def _reference(spec: NetworkSpec, influx: InfluxClient, farms: list[str], workdir: Path):
    """One DetectionJob without leases over ``farms``, at the same simulated times."""
    from namazu.server.detection.alarmlog import AlarmLog
    from namazu.server.detection.tick import DetectionJob
    from namazu.server.detection.window import SliceWindow

    engine = init_db(f"sqlite:///{workdir}/reference.sqlite")
    job = DetectionJob(influx, engine, AlarmLog(workdir / "reference.jsonl"), farms,
                       resolution_s=60, **_detection_options())  # fmt: skip
    job.window = SliceWindow()
    for k in range(spec.ticks):
        job.tick(T0 + k * TICK)
    return engine


def _log_identities(workdir: Path) -> Counter:
    """(farm, kind, series, start) of every record in every replica's alarm log."""
    seen: Counter = Counter()
    for path in workdir.glob("alarm-log.*.jsonl"):
        for line in path.read_text().splitlines():
            alarm = json.loads(line)["alarm"]
            seen[(alarm["farm"], alarm["kind"], alarm["series"], alarm["start"])] += 1
    return seen


def _cpu_s(pid: int) -> float:
    """CPU time (user + system) of a process and its children so far [s]; 0 when gone."""
    total = 0.0
    with contextlib.suppress(psutil.Error):
        proc = psutil.Process(pid)
        for each in [proc, *proc.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                times = each.cpu_times()
                total += times.user + times.system
    return total


def run_network(
    spec: NetworkSpec,
    influx_url: str,
    state_url: str,
    workdir: Path,
    service_pids: dict[str, int] | None = None,
) -> Outcome:
    """Write the network, tick it with replica processes, check and measure it.

    service_pids : name -> pid of the services whose CPU time each tick is counted
        (InfluxDB, PostgreSQL: the process and its children)."""
    out = Outcome()
    service_pids = service_pids or {}
    service_cpu: list[dict[str, float]] = []
    database = f"network_{os.getpid()}"
    influx = InfluxClient(influx_url, database, timeout_s=300)
    influx.create_database()
    started = time.perf_counter()
    points = write_network(influx, spec)
    write_s = time.perf_counter() - started
    out.say(f"wrote {points:,} points for {spec.farms} farms x {spec.per_farm} animals in "
            f"{write_s:.0f} s ({points / write_s:,.0f} points/s)")  # fmt: skip
    out.figures["points"] = points
    engine = init_db(state_url)  # the tables, before the replicas race to create them
    replicas = _start_replicas(spec, influx_url, database, state_url, workdir)
    episodes = spec.episodes()
    leases_after: list[dict[str, tuple[str | None, int]]] = []
    victim: Replica | None = None
    victim_farms: list[str] = []
    try:
        for k in range(spec.ticks):
            now = T0 + k * TICK
            live = [r for r in replicas if r.proc.poll() is None]
            tick_started = time.perf_counter()
            cpu_before = {name: _cpu_s(pid) for name, pid in service_pids.items()}
            for replica in live:
                replica.send(now)
            if k == spec.kill_at:
                # the replica owning the most farms with an episode still to open
                victim = max(live, key=lambda r: sum(f in episodes for f in r.replies[-1]["owned"]))
                victim_farms = victim.replies[-1]["owned"]
                time.sleep(0.4 * victim.replies[-1]["detect_s"])  # part-way through its farms
                assert victim.proc.stdout is not None
                finished, _, _ = fdselect.select([victim.proc.stdout], [], [], 0)
                victim.proc.send_signal(signal.SIGKILL)
                victim.proc.wait()
                out.say(f"{victim.name} SIGKILLed {'after' if finished else 'during'} its tick")
            for replica in replicas:
                alive = replica in live and replica is not victim
                replica.replies.append(replica.receive() if alive else None)
            wall = time.perf_counter() - tick_started
            service_cpu.append({n: _cpu_s(pid) - cpu_before[n] for n, pid in service_pids.items()})
            leases_after.append(_lease_table(engine))
            parts = []
            for replica in replicas:
                reply = replica.replies[-1]
                if reply is None:
                    parts.append(f"{replica.name} -")
                    continue
                parts.append(
                    f"{replica.name} {len(reply['owned'])} farms {reply['detect_s']:.1f} s "
                    f"(read {reply['read_s']:.1f})"
                )
            out.say(f"tick {k:2d} {now:%H:%M} wall {wall:5.1f} s: " + "; ".join(parts))
    finally:
        for replica in replicas:
            if replica.proc.poll() is None:
                assert replica.proc.stdin is not None
                replica.proc.stdin.close()
                replica.proc.wait(60)
    _judge(spec, out, replicas, leases_after, victim, victim_farms, engine, influx, workdir)
    _cpu_report(spec, out, replicas, service_cpu)
    influx.drop_database()
    return out


def _judge(spec, out, replicas, leases_after, victim, victim_farms, engine, influx, workdir):
    farms, episodes = spec.farm_ids(), spec.episodes()
    out.say("checks:")
    # 1. one owner per farm and tick, with the token the lease table holds
    two_owners, wrong_token, unowned = 0, 0, []
    for k, table in enumerate(leases_after):
        owners: Counter = Counter()
        for replica in replicas:
            reply = replica.replies[k]
            if reply is None:
                continue
            for farm in reply["ticked"]:
                owners[farm] += 1
                holder, token = table[farm]
                given_back = farm in reply["handed_over"]  # ticked once more, then released
                wrong_token += holder != (None if given_back else replica.name)
                wrong_token += token != reply["tokens"][farm]
        two_owners += sum(1 for n in owners.values() if n > 1)
        ticked = set(owners)
        if victim is not None and k == spec.kill_at:
            ticked |= set(victim_farms)  # killed part-way: the farms were its own
        unowned.append(len(set(farms) - ticked))
    out.check(two_owners == 0, f"no farm ticked by two replicas in one tick ({two_owners})")
    out.check(wrong_token == 0, f"every tick fenced with the lease table's token ({wrong_token} "
              "not)")  # fmt: skip
    changes = bad_tokens = 0
    for farm in farms:
        for before, after in zip(leases_after, leases_after[1:], strict=False):
            (h0, t0), (h1, t1) = before[farm], after[farm]
            taken = h1 is not None and h1 != h0  # a release keeps the token
            bad_tokens += t1 != t0 + taken
            changes += taken
    out.check(bad_tokens == 0, f"a fencing token grew by one at each of {changes} takes by a new "
              f"holder and only then ({bad_tokens} not)")  # fmt: skip
    out.say(f"  farms ticked by no replica, per tick: {unowned}")
    handing = range(spec.kill_at + 1, spec.kill_at + 3) if victim is not None else range(0)
    elsewhere = sum(n for k, n in enumerate(unowned) if k not in handing)
    out.check(elsewhere == 0, f"every farm ticked at every tick but the two after the kill "
              f"({elsewhere} farm-ticks missed; start-up and rebalancing included)")  # fmt: skip
    if victim is not None and spec.kill_at is not None:
        after_kill = unowned[spec.kill_at + 1 :]
        healed = next((i + 1 for i, n in enumerate(after_kill) if n == 0), None)
        out.figures["handover_ticks"] = healed if healed is not None else float("inf")
        out.check(healed is not None and healed <= 2,
                  f"the {len(victim_farms)} farms of killed {victim.name} owned again "
                  f"{healed} tick(s) after the kill")  # fmt: skip
    taken = [
        (r.name, f, f in r.replies[k]["window_rebuilt"])
        for k in range(1, spec.ticks)
        for r in replicas
        if r.replies[k] is not None and r.replies[k - 1] is not None
        for f in set(r.replies[k]["ticked"]) - set(r.replies[k - 1]["owned"])
    ]
    fresh = all(rebuilt for *_, rebuilt in taken)
    out.check(fresh, f"each of {len(taken)} farms taken over read afresh into its new owner's "
              "window")  # fmt: skip
    stale = sum(
        len(set(reply["window"]) - set(reply["owned"]))
        for r in replicas for reply in r.replies if reply is not None
    )  # fmt: skip
    out.check(stale == 0, f"every window holds only its replica's farms ({stale} not)")
    # 2. alarms
    stored = _alarm_rows(engine)
    identities = Counter((a[0], a[1], a[2], a[3]) for a in stored)
    twice = sum(1 for n in identities.values() if n > 1)
    opened = Counter(i for r in replicas for reply in r.replies if reply for i in reply["opened"])
    reopened = sum(1 for n in opened.values() if n > 1)
    out.say(f"  {len(stored)} alarms stored ({Counter(a[1] for a in stored)})")
    out.figures["alarms"] = len(stored)
    out.check(twice == 0 and reopened == 0,
              f"no alarm stored twice ({twice}) or opened at two ticks ({reopened})")  # fmt: skip
    herd = Counter(a[0] for a in stored if a[1] == "herd")
    hits = sum(
        1
        for farm, ep in episodes.items()
        if sum(
            1
            for a in stored
            if a[0] == farm
            and a[1] == "herd"
            and ep.start - 2 * TICK <= a[3] < ep.start + EPISODE_MIN * TICK
        )
        == 1  # fmt: skip
    )
    out.check(hits == len(episodes), f"{hits} of {len(episodes)} injected episodes raised their "
              "herd alarm exactly once")  # fmt: skip
    spontaneous = sum(n for f, n in herd.items() if f not in episodes)
    out.say(f"  herd alarms on farms without an episode: {spontaneous}")
    logged = _log_identities(workdir)
    stored_ids = {(a[0], a[1], a[2], a[3].isoformat().replace("+00:00", "Z")) for a in stored}
    orphans = [i for i in logged if i not in stored_ids]
    out.check(sum(1 for n in logged.values() if n > 1) == 0 and not (stored_ids - set(logged)),
              f"each stored alarm in exactly one replica's log ({len(logged)} identities "
              f"logged)")  # fmt: skip
    out.say(f"  logged by the killed replica but never committed: {len(orphans)}")
    out.figures["orphan_log_records"] = len(orphans)
    if spec.reference != "none":
        ref_farms = farms if spec.reference == "all" else sorted(set(episodes) | set(victim_farms))
        started = time.perf_counter()
        ref = _reference(spec, influx, ref_farms, workdir)
        expected = _alarm_rows(ref, set(ref_farms))
        got = _alarm_rows(engine, set(ref_farms))
        ref_s = time.perf_counter() - started
        same = f"alarms of {len(ref_farms)} farms equal a single scheduler's"
        out.check(got == expected, f"{same} ({len(got)} against {len(expected)}; {ref_s:.0f} s)")
    # 3. costs
    steady = _steady_ticks(spec)
    out.say("costs (ticks after the first, apart from the kill and the two after it):")
    per_animal, read_share = [], []
    for r in replicas:
        rs = [r.replies[k] for k in steady if r.replies[k] is not None]
        if not rs:
            continue
        detect_s = [x["detect_s"] for x in rs]
        ms = [1000 * x["detect_s"] / max(1, x["animals"]) for x in rs]
        share = sum(x["read_s"] for x in rs) / sum(detect_s)
        per_animal += ms
        read_share.append(share)
        out.say(f"  {r.name}: {statistics.median(x['animals'] for x in rs):,.0f} animals, tick "
                f"median {statistics.median(detect_s):.2f} s (max {max(detect_s):.2f}, CPU "
                f"{statistics.median(x['cpu_s'] for x in rs):.2f}), "
                f"{statistics.median(ms):.3f} ms per animal, read {100 * share:.0f} %, "
                + ", ".join(f"{key[:-2]} {100 * sum(x[key] for x in rs) / sum(detect_s):.0f} %"
                            for key in PARTS))  # fmt: skip
    first = [r.replies[0]["detect_s"] for r in replicas if r.replies[0] is not None]
    out.say(f"  first tick ({LEAD_MIN} min and the window's first chunk): max {max(first):.1f} s")
    out.figures["ms_per_animal"] = statistics.median(per_animal)
    out.figures["read_share"] = statistics.mean(read_share)
    out.figures["tick_max_s"] = max(
        r.replies[k]["detect_s"] for r in replicas for k in steady if r.replies[k] is not None
    )


def _steady_ticks(spec: NetworkSpec) -> list[int]:
    """The ticks after the first, apart from the kill's and the two after it."""
    return [k for k in range(1, spec.ticks)
            if spec.kill_at is None or not spec.kill_at <= k <= spec.kill_at + 2]  # fmt: skip


def _cpu_report(spec: NetworkSpec, out: Outcome, replicas: list[Replica],
                service_cpu: list[dict[str, float]]) -> None:  # fmt: skip
    """CPU time per tick of the replicas and of each service, and per animal-tick."""
    steady = _steady_ticks(spec)
    if not service_cpu or not steady:
        return
    replica_cpu = [sum(r.replies[k]["cpu_s"] for r in replicas if r.replies[k]) for k in steady]
    animals = [sum(r.replies[k]["animals"] for r in replicas if r.replies[k]) for k in steady]
    services = {name: [service_cpu[k][name] for k in steady] for name in service_cpu[0]}
    total = [c + sum(v[i] for v in services.values()) for i, c in enumerate(replica_cpu)]
    parts = ", ".join(f"{name} {statistics.median(v):.1f} s" for name, v in services.items())
    per_animal = statistics.median(
        1000 * t / max(1, n) for t, n in zip(total, animals, strict=True)
    )
    out.say(f"  CPU per tick (median): replicas {statistics.median(replica_cpu):.1f} s, {parts}; "
            f"{per_animal:.2f} ms of CPU per animal-tick in all = "
            f"{per_animal * 1e6 / 60_000:.1f} cores for 1,000,000 animals")  # fmt: skip
    out.figures["cpu_ms_per_animal"] = per_animal


# ---------------------------------------------------------------------------- entry


QUICK = NetworkSpec(animals=1_000, farms=20, replicas=3, ticks=10, kill_at=4, episode_farms=4,
                    reference="all")  # fmt: skip


def measure(spec: NetworkSpec) -> Outcome:
    """Run ``spec`` on a private InfluxDB and PostgreSQL."""
    from namazu.server.launch.postgres import PostgresServer
    from namazu.server.launch.stack import Stack

    with tempfile.TemporaryDirectory(prefix="namazu-network-") as tmp:
        workdir = Path(tmp)
        stack = Stack(workdir / "stack")
        stack.start_influx()
        server = PostgresServer.temporary().start()
        try:
            server.create_database("network")
            conf = str(stack.influx_dir / "influxdb.conf")
            influxd = next(p.pid for p in psutil.process_iter(["cmdline"])
                           if conf in (p.info["cmdline"] or []))  # fmt: skip
            pids = {"InfluxDB": influxd, "PostgreSQL": server.pid or 0}
            return run_network(spec, stack.influx_url, server.url("network"), workdir, pids)
        finally:
            server.stop(remove=True)
            stack.stop()


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Rows for ``make bench``: the quick network (1,000 animals on 20 farms) in both
    modes; the 100,000-animal run is a command of its own (docs/capacity.md)."""
    from bench.common import result

    spec = QUICK
    outcome = measure(spec)
    label = "8 scheduler replicas"
    size = f"{spec.animals:,} animals on {spec.farms} farms, {spec.replicas} replica processes"
    figures = outcome.figures
    return [
        result(
            label,
            f"{size}: checks that failed",
            len(outcome.failures),
            "checks",
            target="0",
            note="; ".join(outcome.failures),
        ),
        result(
            label,
            "ticks until the killed replica's farms were owned again",
            figures.get("handover_ticks", 0),
            "ticks",
            2,
            "two ticks",
            "ratio >= 1",
            higher_is_better=False,
        ),
        result(
            label,
            "tick time per animal (median over replicas and ticks)",
            figures["ms_per_animal"],
            "ms",
            note=f"read share {100 * figures['read_share']:.0f} %",
        ),
        result(
            label,
            "CPU per animal-tick: replicas, InfluxDB and PostgreSQL together",
            figures.get("cpu_ms_per_animal", 0),
            "ms",
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    """Run the network; exit 1 when a check failed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--serve-replica", metavar="CONFIG", help=argparse.SUPPRESS)
    parser.add_argument("--animals", type=int, default=NetworkSpec.animals)
    parser.add_argument("--farms", type=int, default=NetworkSpec.farms)
    parser.add_argument("--replicas", type=int, default=NetworkSpec.replicas)
    parser.add_argument("--ticks", type=int, default=NetworkSpec.ticks)
    parser.add_argument("--kill-at", type=int, default=NetworkSpec.kill_at)
    parser.add_argument("--episode-farms", type=int, default=NetworkSpec.episode_farms)
    parser.add_argument("--reference", choices=["all", "affected", "none"],
                        default=NetworkSpec.reference)  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="1,000 animals on 20 farms")
    args = parser.parse_args(argv)
    if args.serve_replica:
        return serve_replica(args.serve_replica)
    spec = QUICK if args.quick else NetworkSpec(
        args.animals, args.farms, args.replicas, args.ticks, args.kill_at, args.episode_farms,
        args.reference,
    )  # fmt: skip
    if spec.kill_at is not None and not 1 <= spec.kill_at < spec.ticks - 2:
        parser.error(f"--kill-at {spec.kill_at}: between 1 and ticks - 3")
    outcome = measure(spec)
    print("all checks hold" if not outcome.failures else f"FAILED: {outcome.failures}")
    return 1 if outcome.failures else 0


if __name__ == "__main__":
    sys.exit(main())
