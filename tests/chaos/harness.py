"""Fault-injection harness: real services, real processes, exact accounting.

Pieces shared by ``make chaos`` (``tests/chaos/run.py``), the smoke tests in
``tests/system`` and the ingest benchmark:

- ``IngestWorker``: one ``namazu ingest`` process (SIGTERM, SIGKILL, restart with the
  same client id so its persistent session resumes).
- ``GatewayProcess``: one chaos gateway (``tests/chaos/gateway.py``) spooling and
  publishing a deterministic sample set.
- ``TcpProxy``: a loopback TCP relay in front of the broker whose ``cut`` takes one
  gateway off the network (connections dropped, new ones refused) until ``restore``.
- ``run_chaos(plan)``: gateways + workers + scheduled faults, then ``verify``: the
  stored points against the published ones for every (animal, timestamp).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.common import PeakRss
from namazu.server.launch.stack import Stack
from namazu.server.store.influx import InfluxClient, InfluxError
from tests.chaos.gateway import FARM, animal_names, expected_samples, gateway_name

PROJECT_ROOT = Path(__file__).resolve().parents[2]


class ChaosError(RuntimeError):
    """A chaos run could not be carried out (a process failed to start or finish)."""


def _python_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NAMAZU_")}
    env["PYTHONPATH"] = str(PROJECT_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def spawn_module(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """Start ``python -m <args>`` with stdout and stderr appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=_python_env(env),
            cwd=PROJECT_ROOT,
        )


def ingest_env(stack: Stack, database: str, client_id: str, **ingest: Any) -> dict[str, str]:
    """``NAMAZU_*`` environment for an ingest worker on ``stack`` writing to ``database``.

    ingest : extra ``[ingest]`` keys, e.g. ``max_pending_messages=500``.
    """
    env = {
        "NAMAZU_MQTT__HOST": "127.0.0.1",
        "NAMAZU_MQTT__PORT": str(stack.mqtt_port),
        "NAMAZU_INFLUX__URL": stack.influx_url,
        "NAMAZU_INFLUX__DATABASE": database,
        "NAMAZU_INGEST__CLIENT_ID": client_id,
    }
    for key, value in ingest.items():
        env[f"NAMAZU_INGEST__{key.upper()}"] = str(value)
    return env


class IngestWorker:
    """One ``namazu ingest`` worker process with a stable MQTT client id."""

    def __init__(self, stack: Stack, database: str, client_id: str, log: Path, **ingest: Any):
        self.stack = stack
        self.client_id = client_id
        self.log = log
        self.env = ingest_env(stack, database, client_id, **ingest)
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else 0

    def start(self) -> IngestWorker:
        """Start (or restart) the worker."""
        self.proc = spawn_module(
            ["namazu.server.cli", "ingest", "--log-level=INFO", "--stats-every=3600"],
            self.env,
            self.log,
        )
        self.starts += 1
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_subscribed(self, timeout_s: float = 30.0) -> None:
        """Wait until the worker's log says it connected (it subscribes in the same
        callback), plus a short margin for the SUBACK; fail with its log tail."""
        deadline = time.monotonic() + timeout_s
        marker = "MQTT connected"
        while time.monotonic() < deadline:
            text = self.log.read_text(errors="replace") if self.log.exists() else ""
            if text.count(marker) >= self.starts:
                time.sleep(0.5)
                return
            if not self.alive():
                raise ChaosError(f"ingest worker {self.client_id} exited: {text[-2000:]}")
            time.sleep(0.05)
        raise ChaosError(f"ingest worker {self.client_id} did not subscribe in {timeout_s} s")

    def log_stats(self) -> list[dict[str, Any]]:
        """The counters each run of this worker logged when it stopped (SIGTERM)."""
        out = []
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        for line in text.splitlines():
            if '"ingest stopped"' in line:
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line))
        return out

    def kill(self) -> None:
        """SIGKILL: no goodbye, no flush."""
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM and wait; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode


class GatewayProcess:
    """One chaos gateway process (see ``tests/chaos/gateway.py``)."""

    def __init__(
        self,
        index: int,
        port: int,
        workdir: Path,
        animals: int,
        samples: int,
        start_ms: int,
        duration_s: float,
        per_message: int = 100,
    ):
        self.index = index
        self.log = workdir / f"gateway-{index:02d}.log"
        self.args = [
            "tests.chaos.gateway",
            f"--index={index}",
            f"--port={port}",
            f"--spool={workdir / f'spool-{index:02d}.sqlite'}",
            f"--animals={animals}",
            f"--samples={samples}",
            f"--per-message={per_message}",
            f"--start-ms={start_ms}",
            f"--duration-s={duration_s}",
        ]
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else 0

    def start(self) -> GatewayProcess:
        self.proc = spawn_module(self.args, {}, self.log)
        return self

    def wait(self, timeout_s: float) -> dict[str, Any]:
        """Wait for the gateway to finish; returns its printed stats."""
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            self.proc.kill()
            raise ChaosError(f"gateway {self.index} did not drain in {timeout_s:.0f} s") from exc
        text = self.log.read_text(errors="replace")
        if code != 0:
            raise ChaosError(f"gateway {self.index} exited {code}: {text[-2000:]}")
        last = [line for line in text.splitlines() if line.startswith("{")]
        return json.loads(last[-1]) if last else {}

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


class TcpProxy:
    """Loopback TCP relay ``127.0.0.1:port -> 127.0.0.1:target``; ``cut`` = network down."""

    def __init__(self, target_port: int, port: int = 0):
        self.target_port = target_port
        self._server = socket.create_server(("127.0.0.1", port))
        self.port = self._server.getsockname()[1]
        self._up = threading.Event()
        self._up.set()
        self._closing = False
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def _accept_loop(self) -> None:
        while not self._closing:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if not self._up.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets.update({client, upstream})
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
                with self._lock:
                    self._sockets.discard(sock)

    def cut(self) -> None:
        """Drop every relayed connection and refuse new ones."""
        self._up.clear()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def restore(self) -> None:
        """Accept and relay connections again."""
        self._up.set()

    def close(self) -> None:
        self._closing = True
        self.cut()
        self._server.close()


# ----------------------------------------------------------------- accounting


def stored_count(influx: InfluxClient, farm: str = FARM) -> int:
    """Points of ``activity`` stored for ``farm`` (0 while InfluxDB is unreachable)."""
    try:
        return influx.count("activity", "odba", f"farm = '{farm}'")
    except InfluxError:
        return 0


def wait_for_count(
    influx: InfluxClient,
    expected: int,
    timeout_s: float,
    farm: str | None = None,
    settle_s: float = 0.0,
) -> int:
    """Poll until ``expected`` points are stored (or the timeout); returns the last count."""
    deadline = time.monotonic() + timeout_s
    count = 0
    while time.monotonic() < deadline:
        count = stored_count(influx, farm) if farm else _total(influx)
        if count >= expected:
            if settle_s:
                time.sleep(settle_s)
                count = stored_count(influx, farm) if farm else _total(influx)
            return count
        time.sleep(0.25)
    return count


def points_written(influx: InfluxClient) -> int:
    """Points InfluxDB has accepted into the client's database since it started, from
    its own counters (``SHOW STATS``: no data is scanned, unlike a count query); a point
    written twice counts twice. 0 while InfluxDB is unreachable."""
    try:
        series = influx.query("SHOW STATS FOR 'shard'")
    except InfluxError:
        return 0
    total = 0
    for shard in series:
        if (shard.get("tags") or {}).get("database") != influx.database:
            continue
        row = dict(zip(shard["columns"], shard["values"][0], strict=True))
        total += int(row.get("writePointsOk", 0))
    return total


def wait_for_points_written(influx: InfluxClient, expected: int, timeout_s: float) -> int:
    """Poll InfluxDB's write counters every 50 ms until ``expected`` points were accepted
    (or the timeout); returns the last figure. Cheap enough not to slow the writes it
    waits for."""
    deadline = time.monotonic() + timeout_s
    written = 0
    while time.monotonic() < deadline:
        written = points_written(influx)
        if written >= expected:
            break
        time.sleep(0.05)
    return written


def _total(influx: InfluxClient) -> int:
    try:
        return influx.count("activity", "odba")
    except InfluxError:
        return 0


def verify_gateway(
    influx: InfluxClient, index: int, animals: int, samples: int, start_ms: int
) -> dict[str, int]:
    """Compare the stored points of one chaos gateway with what it published.

    Returns counts: expected, stored, missing (published, not stored), duplicates
    (stored more than once for the same animal and time, in any series), extra
    (stored, never published) and wrong_value (odba or vedba differ).
    """
    names = animal_names(index, animals)
    want = expected_samples(index, animals, samples, start_ms)
    expected = pd.DataFrame(
        {
            "animal": np.asarray(names)[want["animal"]],
            "time": want["t_ms"],
            "odba": want["odba"],
            "vedba": want["vedba"],
        }
    )
    rows = []
    for series in influx.query(
        "SELECT odba, vedba FROM activity WHERE farm = $f AND gateway = $g GROUP BY *",
        epoch="ms",
        params={"f": FARM, "g": gateway_name(index)},
    ):
        frame = pd.DataFrame(series.get("values", []), columns=series["columns"])
        frame["animal"] = (series.get("tags") or {}).get("animal", "")
        rows.append(frame)
    stored = (
        pd.concat(rows, ignore_index=True)
        if rows
        else pd.DataFrame(columns=["time", "odba", "vedba", "animal"])
    )
    stored["time"] = stored["time"].astype("int64")
    duplicates = int(stored.duplicated(["animal", "time"]).sum())
    merged = expected.merge(
        stored.drop_duplicates(["animal", "time"]),
        on=["animal", "time"],
        how="outer",
        suffixes=("", "_stored"),
        indicator=True,
    )
    both = merged[merged["_merge"] == "both"]
    wrong = int(
        (
            (both["odba"].astype(float) != both["odba_stored"].astype(float))
            | (both["vedba"].astype(float) != both["vedba_stored"].astype(float))
        ).sum()
    )
    return {
        "expected": len(expected),
        "stored": len(stored),
        "missing": int((merged["_merge"] == "left_only").sum()),
        "duplicates": duplicates,
        "extra": int((merged["_merge"] == "right_only").sum()),
        "wrong_value": wrong,
    }


def measure_ingest(
    stack: Stack,
    workdir: Path,
    messages: list[tuple[str, bytes]],
    n_samples: int,
    farm: str,
    workers: int = 1,
    kill_one: bool = False,
    timeout_s: float = 900.0,
) -> dict[str, Any]:
    """End-to-end rate through ``workers`` ingest processes on one shared subscription.

    messages : (topic, payload) of ``farm`` holding ``n_samples`` distinct samples.
    kill_one : SIGKILL the last worker once half the messages are acknowledged by the
        broker, and restart it a second later.
    Returns ``samples_per_s`` [1/s], ``stored``, ``seconds`` [s], ``peak_rss_mib`` per
    worker, ``workers_cpu_s`` (CPU time of all worker processes, start-up included [s])
    and ``received`` (messages each worker took, from its final counters).
    """
    from bench.bench_ingest import publish_all

    database = f"ingest_{workers}w_{int(time.time() * 1000) % 10**9}"
    influx = InfluxClient(stack.influx_url, database, timeout_s=120)
    influx.create_database()
    group = f"measure-{database}"
    procs = [
        IngestWorker(
            stack, database, f"{group}-{i}", workdir / f"{group}-{i}.log", shared_group=group
        )
        for i in range(1, workers + 1)
    ]
    for worker in procs:
        worker.start()
    rss = PeakRss([w.pid for w in procs]).start()
    try:
        for worker in procs:
            worker.wait_subscribed()
        t0 = time.perf_counter()
        if kill_one:
            half = len(messages) // 2
            publish_all(stack.mqtt_port, messages[:half], client_id=f"{group}-gw")
            procs[-1].kill()
            publish_all(stack.mqtt_port, messages[half:], client_id=f"{group}-gw")
            time.sleep(1.0)
            procs[-1].start()
            rss.watch(procs[-1].pid)
        else:
            publish_all(stack.mqtt_port, messages, client_id=f"{group}-gw")
        # The clock stops when InfluxDB has accepted every point (its own counters, as
        # the raw limit stops when its last /write returns); the stored distinct points
        # are then counted. A redelivered message counts twice in the write counters,
        # so when the count is short the clock runs on until it is complete.
        wait_for_points_written(influx, n_samples, timeout_s)
        seconds = time.perf_counter() - t0
        stored = stored_count(influx, farm)
        if stored < n_samples:
            stored = wait_for_count(influx, n_samples, timeout_s, farm=farm)
            seconds = time.perf_counter() - t0
    finally:
        rss.stop()
        for worker in procs:
            worker.stop()
        influx.close()
    return {
        "samples_per_s": n_samples / seconds,
        "stored": stored,
        "seconds": seconds,
        "peak_rss_mib": {w.client_id: rss.peak_mib.get(w.pid, 0.0) for w in procs},
        "peak_rss_all_mib": max(rss.peak_mib.values()),
        "workers_cpu_s": sum(rss.cpu_s.values()),
        "received": [sum(run["received"] for run in w.log_stats()) for w in procs],
    }


# ----------------------------------------------------------------- the run


@dataclass
class ChaosPlan:
    """What a chaos run does. Times are fractions of the spooling period ``duration_s``.

    gateways, animals_per_gateway, samples_per_gateway : the published data.
    duration_s : time over which every gateway spools its samples [s].
    workers : ingest workers on the shared subscription.
    broker_restarts : when Mosquitto is stopped (SIGTERM) and started again.
    broker_down_s : how long Mosquitto stays down at each restart [s].
    influx_outage : (when, how long [s]) InfluxDB is stopped.
    kill_worker_at : when worker 1 gets SIGKILL (restarted ``worker_restart_s`` later).
    offline_gateway : (from, to) the last gateway is cut off the network.
    ingest_max_pending : in-memory budget of unacknowledged messages per worker.
    """

    gateways: int = 10
    animals_per_gateway: int = 20
    samples_per_gateway: int = 100_000
    duration_s: float = 240.0
    workers: int = 2
    broker_restarts: tuple[float, ...] = (0.15, 0.70)
    broker_down_s: float = 2.0
    influx_outage: tuple[float, float] | None = (0.30, 30.0)
    kill_worker_at: float | None = 0.50
    worker_restart_s: float = 5.0
    offline_gateway: tuple[float, float] | None = (1 / 3, 2 / 3)
    ingest_max_pending: int = 500
    drain_timeout_s: float = 900.0

    @property
    def total_samples(self) -> int:
        return self.gateways * self.samples_per_gateway


@dataclass
class ChaosReport:
    """Figures of one chaos run."""

    plan: ChaosPlan
    published: int = 0
    stored: int = 0
    missing: int = 0
    duplicates: int = 0
    extra: int = 0
    wrong_value: int = 0
    seconds: float = 0.0
    events: list[tuple[float, str]] = field(default_factory=list)
    per_gateway: dict[str, dict[str, int]] = field(default_factory=dict)
    gateway_stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    peak_rss_mib: dict[str, float] = field(default_factory=dict)
    outage_rss_mib: dict[str, float] = field(default_factory=dict)
    ingest_stats: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def lossless(self) -> bool:
        return (
            self.missing == 0
            and self.duplicates == 0
            and self.extra == 0
            and self.wrong_value == 0
            and self.stored == self.published
        )

    def summary(self) -> str:
        """Human-readable figures."""
        plan = self.plan
        lines = [
            f"published {self.published:,} samples from {plan.gateways} gateways "
            f"({plan.animals_per_gateway} animals each), {plan.workers} ingest workers",
            f"stored {self.stored:,}; missing {self.missing}, duplicates {self.duplicates}, "
            f"extra {self.extra}, wrong values {self.wrong_value}",
            f"run time {self.seconds:.0f} s, {self.published / max(self.seconds, 1e-9):,.0f} "
            "samples/s on average including outages",
        ]
        lines += [f"  t={t:6.1f} s  {what}" for t, what in self.events]
        if self.peak_rss_mib:
            lines.append(
                "peak RSS [MiB]: "
                + ", ".join(f"{k} {v:.0f}" for k, v in sorted(self.peak_rss_mib.items()))
            )
        if self.outage_rss_mib:
            lines.append(
                "peak RSS during the InfluxDB outage [MiB]: "
                + ", ".join(f"{k} {v:.0f}" for k, v in sorted(self.outage_rss_mib.items()))
            )
        connects = sum(s.get("connects", 0) for s in self.gateway_stats.values())
        lines.append(f"gateway (re)connections {connects}")
        for name, stats in sorted(self.ingest_stats.items()):
            keys = (
                "received",
                "written_messages",
                "acked",
                "ack_skipped",
                "seq_replays",
                "write_retries",
                "rejected",
            )
            lines.append(f"{name}: " + ", ".join(f"{k} {stats.get(k, 0)}" for k in keys))
        return "\n".join(lines)


def run_chaos(plan: ChaosPlan, workdir: Path, log: Callable[[str], None] = print) -> ChaosReport:
    """Run the plan on a private stack under ``workdir``; returns the verified figures."""
    workdir.mkdir(parents=True, exist_ok=True)
    report = ChaosReport(plan)
    stack = Stack(workdir / "stack").start()
    proxies: list[TcpProxy] = []
    workers: list[IngestWorker] = []
    gateways: list[GatewayProcess] = []
    t0 = time.monotonic()

    def event(what: str) -> None:
        stamp = time.monotonic() - t0
        report.events.append((stamp, what))
        log(f"  t={stamp:6.1f} s  {what}")

    try:
        influx = InfluxClient(stack.influx_url, "chaos", timeout_s=60)
        influx.create_database()
        for i in range(plan.workers):
            worker = IngestWorker(
                stack,
                influx.database,
                f"chaos-ingest-{i + 1}",
                workdir / f"ingest-{i + 1}.log",
                max_pending_messages=plan.ingest_max_pending,
            )
            workers.append(worker.start())
        for worker in workers:
            worker.wait_subscribed()
        start_ms = (
            (
                int(time.time() * 1000)
                - (plan.samples_per_gateway // plan.animals_per_gateway + 120) * 60_000
            )
            // 60_000
            * 60_000
        )
        for i in range(plan.gateways):
            proxy = TcpProxy(stack.mqtt_port)
            proxies.append(proxy)
            gateway = GatewayProcess(
                i,
                proxy.port,
                workdir,
                plan.animals_per_gateway,
                plan.samples_per_gateway,
                start_ms,
                plan.duration_s,
            )
            gateways.append(gateway.start())
        rss = PeakRss([w.pid for w in workers] + [g.pid for g in gateways]).start()
        t0 = time.monotonic()
        event(f"{plan.gateways} gateways and {plan.workers} ingest workers running")

        schedule: list[tuple[float, str, Callable[[], None]]] = []
        for at in plan.broker_restarts:

            def restart_broker() -> None:
                stack.stop_mosquitto()
                time.sleep(plan.broker_down_s)
                stack.start_mosquitto()

            schedule.append(
                (at, f"broker restart ({plan.broker_down_s:.0f} s down)", restart_broker)
            )
        outage_rss: PeakRss | None = None
        if plan.influx_outage:
            at, length = plan.influx_outage

            def influx_down() -> None:
                nonlocal outage_rss
                stack.stop_influx()
                outage_rss = PeakRss(
                    [w.pid for w in workers if w.alive()] + [g.pid for g in gateways]
                ).start()

            def influx_up() -> None:
                stack.start_influx()
                if outage_rss is not None:
                    outage_rss.stop()

            schedule.append((at, "InfluxDB stopped", influx_down))
            schedule.append((at + length / plan.duration_s, "InfluxDB started", influx_up))
        if plan.kill_worker_at is not None:
            victim = workers[-1]
            schedule.append((plan.kill_worker_at, f"SIGKILL {victim.client_id}", victim.kill))

            def revive() -> None:
                victim.start()
                rss.watch(victim.pid)

            schedule.append(
                (
                    plan.kill_worker_at + plan.worker_restart_s / plan.duration_s,
                    f"restart {victim.client_id}",
                    revive,
                )
            )
        if plan.offline_gateway:
            lo, hi = plan.offline_gateway
            proxy = proxies[-1]
            name = gateway_name(plan.gateways - 1)
            schedule.append((lo, f"{name} offline (network cut)", proxy.cut))
            schedule.append((hi, f"{name} back online", proxy.restore))
        schedule.sort(key=lambda item: item[0])
        for at, what, action in schedule:
            delay = t0 + at * plan.duration_s - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            action()
            event(what)

        for gateway in gateways:
            stats = gateway.wait(plan.drain_timeout_s)
            report.gateway_stats[gateway_name(gateway.index)] = stats
        event("every gateway drained (all messages acknowledged by the broker)")
        report.published = plan.total_samples
        wait_for_count(influx, report.published, plan.drain_timeout_s, farm=FARM, settle_s=2.0)
        event("ingest caught up")
        report.seconds = time.monotonic() - t0
        rss.stop()
        for pid, peak in rss.peak_mib.items():
            report.peak_rss_mib[_role(pid, workers, gateways)] = peak
        if outage_rss is not None:
            for pid, peak in outage_rss.peak_mib.items():
                report.outage_rss_mib[_role(pid, workers, gateways)] = peak
        for i in range(plan.gateways):
            counts = verify_gateway(
                influx, i, plan.animals_per_gateway, plan.samples_per_gateway, start_ms
            )
            report.per_gateway[gateway_name(i)] = counts
            report.stored += counts["stored"]
            report.missing += counts["missing"]
            report.duplicates += counts["duplicates"]
            report.extra += counts["extra"]
            report.wrong_value += counts["wrong_value"]
        influx.close()
        for worker in workers:
            worker.stop()
            runs = worker.log_stats()
            if runs:  # the counters of the run that lived to the end
                report.ingest_stats[f"ingest {worker.client_id}"] = runs[-1]
    finally:
        for gateway in gateways:
            gateway.stop()
        for worker in workers:
            worker.stop()
        for proxy in proxies:
            proxy.close()
        stack.stop()
    return report


def _role(pid: int, workers: list[IngestWorker], gateways: list[GatewayProcess]) -> str:
    for worker in workers:
        if worker.pid == pid:
            return f"ingest {worker.client_id}"
    for gateway in gateways:
        if gateway.pid == pid:
            return f"gateway {gateway_name(gateway.index)}"
    for worker in workers:
        if worker.starts > 1:
            return f"ingest {worker.client_id} before SIGKILL"
    return f"pid {pid}"
