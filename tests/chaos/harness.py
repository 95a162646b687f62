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
import hashlib
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
        "NAMAZU_INGEST__OPEN_ENROLMENT": "true",  # the chaos farms are not configured
    }
    for key, value in ingest.items():
        env[f"NAMAZU_INGEST__{key.upper()}"] = str(value)
    return env


def _process_state(pid: int) -> str:
    """The state letter of ``pid`` in /proc (``T`` stopped); "" when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[0]


class IngestWorker:
    """One ``namazu ingest`` worker process with a stable MQTT client id.

    influx_credentials : (user, password) for an InfluxDB with authentication on.
    """

    def __init__(
        self,
        stack: Stack,
        database: str,
        client_id: str,
        log: Path,
        influx_credentials: tuple[str, str] | None = None,
        **ingest: Any,
    ):
        self.stack = stack
        self.client_id = client_id
        self.log = log
        self.env = ingest_env(stack, database, client_id, **ingest)
        # the run's own state store (sequence ledger, dead letters), shared by the run's
        # workers: never the project's var/state.sqlite, which outlives the run
        self.env["NAMAZU_STATE__URL"] = f"sqlite:///{log.parent / 'ingest-state.sqlite'}"
        if influx_credentials:
            self.env["NAMAZU_INFLUX__USERNAME"], self.env["NAMAZU_INFLUX__PASSWORD"] = (
                influx_credentials
            )
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

    def pause(self, paused: bool, timeout_s: float = 30.0) -> None:
        """SIGSTOP (``paused``) or SIGCONT: a worker that lags, taking nothing. A pause
        returns once the kernel shows the process stopped, so nothing it does can come
        after the call."""
        if not self.alive():
            return
        self.proc.send_signal(signal.SIGSTOP if paused else signal.SIGCONT)
        deadline = time.monotonic() + timeout_s
        while paused and _process_state(self.pid) not in ("T", "t"):
            if time.monotonic() > deadline or not self.alive():
                raise ChaosError(f"ingest worker {self.client_id} did not stop on SIGSTOP")
            time.sleep(0.01)

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
        confirm: str = "receipt",
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
            f"--confirm={confirm}",
        ]
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else 0

    def start(self) -> GatewayProcess:
        self.proc = spawn_module(self.args, {}, self.log)
        return self

    def kill(self) -> None:
        """SIGKILL: the spool on disk is all that is left."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

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


def compare_stored(
    influx: InfluxClient, gateway: str, expected: pd.DataFrame, farm: str = FARM
) -> dict[str, int]:
    """Counts of stored vs expected points of one gateway of ``farm``: expected, stored,
    missing, duplicates, extra, wrong_value (see ``verify_gateway``)."""
    rows = []
    for series in influx.query(
        "SELECT odba, vedba FROM activity WHERE farm = $f AND gateway = $g GROUP BY *",
        epoch="ms",
        params={"f": farm, "g": gateway},
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
    return compare_stored(influx, gateway_name(index), expected)


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
    confirm : how the gateways free their spool: "receipt" (stored by ingest) or
        "puback" (accepted by the broker).
    poison_at : when both poison payloads (``poison_payloads``) are published on a
        gateway topic of their own, between the valid traffic.
    gateway_kill_at : when gateway 0 gets SIGKILL (restarted ``gateway_restart_s`` later
        on the same spool).
    broker_kill : (when, lag [s]): every ingest worker is paused (SIGSTOP) so that
        messages queue in the broker, Mosquitto gets SIGKILL ``lag`` seconds later and is
        started again 1 s after that, then the workers continue (SIGCONT).
    influx_revoke : (when, how long [s]) the ingest account's InfluxDB password is
        changed (InfluxDB then answers 401), then set back.
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
    confirm: str = "receipt"
    poison_at: float | None = None
    gateway_kill_at: float | None = None
    gateway_restart_s: float = 1.0
    broker_kill: tuple[float, float] | None = None
    influx_revoke: tuple[float, float] | None = None

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
    dead_letters: dict[str, int] = field(default_factory=dict)

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


#: The poison gateway's id: its topic carries only the poison payloads.
POISON_GATEWAY = "gw-poison"
#: InfluxDB accounts of a run with authentication on: (user, password).
INFLUX_ADMIN = ("chaos-admin", "chaos-admin-secret")
INFLUX_WRITER = ("chaos-ingest", "chaos-ingest-secret")


def poison_payloads(farm: str = FARM, gateway: str = POISON_GATEWAY) -> dict[str, bytes]:
    """The two payloads that stopped storage: a ``schema`` that is a 1,020-deep nested
    array (about 2 kB), and a 3.6 MB document (under the broker's 4 MiB packet limit, but
    its base64 dead letter is not)."""
    head = f'"farm": "{farm}", "gateway": "{gateway}", "seq": 1, "sent_ms": 0, "animals": []'
    deep = b'{"schema": ' + b"[" * 1020 + b"]" * 1020 + b", " + head.encode() + b"}"
    big = (
        b'{"schema": "namazu.activity/1", '
        + head.encode()
        + b', "pad": "'
        + b"x" * 3_600_000
        + b'"}'
    )
    return {"deep_nesting": deep, "oversized_3.6MB": big}


class GatewayWatch:
    """The chaos gateways as the broker routes them: a clean session subscribed to their
    status and activity topics, so a run arranges what a fault needs (a gateway
    connected, a message sent after a moment) instead of hoping it happened in time.

    ``online_since(ms)``: the gateways whose latest online status was stamped at or
    after ``ms`` (UTC epoch [ms], the same clock: one machine); ``sent_since(ms)``: the
    gateways with an activity message spooled at or after ``ms`` that the broker routed.
    """

    def __init__(self, port: int, names: set[str], farm: str = FARM):
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self._online_ms: dict[str, int] = {}
        self._sent_ms: dict[str, int] = {}
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        # the gateways' own topics only (a poison payload on another is no JSON to read)
        topics = [
            (f"namazu/v1/{farm}/{name}/{kind}", 1)
            for name in sorted(names)
            for kind in ("status", "activity")
        ]
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="chaos-gateway-watch", clean_session=True
        )
        self.client.on_connect = lambda c, u, f, r, p: c.subscribe(topics)
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 1)
        self.client.connect_async("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise ChaosError("gateway watch could not subscribe")

    def _on_message(self, client, userdata, message) -> None:
        try:
            doc = json.loads(message.payload)
            gateway, sent_ms = str(doc["gateway"]), int(doc["sent_ms"])
        except (ValueError, KeyError, TypeError, RecursionError):
            return
        if message.topic.endswith("/status"):
            if doc.get("online") is not True:
                return
            seen = self._online_ms
        else:
            seen = self._sent_ms
        with self._lock:
            seen[gateway] = max(seen.get(gateway, sent_ms), sent_ms)

    def online_since(self, ms: int) -> set[str]:
        with self._lock:
            return {g for g, t in self._online_ms.items() if t >= ms}

    def sent_since(self, ms: int) -> set[str]:
        with self._lock:
            return {g for g, t in self._sent_ms.items() if t >= ms}

    def wait(self, what: Callable[[int], set[str]], ms: int, names: set[str], why: str) -> None:
        """Wait until ``what(ms)`` covers ``names``; ChaosError naming ``why`` after 120 s
        (the fault could not be arranged: the run would prove nothing)."""
        deadline = time.monotonic() + 120.0
        while not names <= what(ms):
            if time.monotonic() > deadline:
                raise ChaosError(f"{why}: still waiting for {sorted(names - what(ms))}")
            time.sleep(0.05)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def now_ms() -> int:
    """UTC epoch [ms], the clock the gateways stamp their messages with."""
    return int(time.time() * 1000)


class DeadLetterWatch:
    """Records the dead letters of the poison gateway (a persistent session from the
    start of the run, so none is missed across a broker restart): ``count`` messages,
    ``digests`` the distinct ``payload_sha256`` they name (a dead letter may come twice
    when a broker restart interrupts its acknowledgement)."""

    def __init__(self, port: int, farm: str = FARM, gateway: str = POISON_GATEWAY):
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.count = 0
        self.digests: set[str] = set()
        self.topic = f"namazu/v1/deadletter/{farm}/{gateway}"
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="chaos-deadletter-watch", clean_session=False
        )
        self.client.on_connect = lambda c, u, f, r, p: c.subscribe(self.topic, qos=1)
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 2)
        self.client.connect_async("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise ChaosError("dead-letter watch could not subscribe")

    def _on_message(self, client, userdata, message) -> None:
        self.count += 1
        with contextlib.suppress(ValueError, KeyError, TypeError):
            self.digests.add(json.loads(message.payload)["payload_sha256"])

    def caught(self, payloads: list[bytes]) -> int:
        """How many of ``payloads`` were dead-lettered (at least once)."""
        return sum(hashlib.sha256(p).hexdigest() in self.digests for p in payloads)

    def publish(self, topic: str, payload: bytes) -> None:
        """Publish one message QoS 1 and wait for the broker's PUBACK."""
        self.client.publish(topic, payload, qos=1).wait_for_publish(30)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def influx_with_accounts(stack: Stack, database: str) -> InfluxClient:
    """On an InfluxDB with authentication on: create the admin, the database and the
    ingest account (all privileges on ``database`` only); returns an admin client."""
    bootstrap = InfluxClient(stack.influx_url, database, timeout_s=60)
    user, password = INFLUX_ADMIN
    bootstrap.query(f"CREATE USER \"{user}\" WITH PASSWORD '{password}' WITH ALL PRIVILEGES")
    bootstrap.close()
    admin = InfluxClient(stack.influx_url, database, user, password, timeout_s=60)
    admin.create_database()
    writer, secret = INFLUX_WRITER
    admin.query(f"CREATE USER \"{writer}\" WITH PASSWORD '{secret}'")
    admin.query(f'GRANT ALL ON "{database}" TO "{writer}"')
    return admin


def set_writer_password(admin: InfluxClient, password: str) -> None:
    """Change the ingest account's password (a wrong one is a revoked credential)."""
    admin.query(f"SET PASSWORD FOR \"{INFLUX_WRITER[0]}\" = '{password}'")


def run_chaos(plan: ChaosPlan, workdir: Path, log: Callable[[str], None] = print) -> ChaosReport:
    """Run the plan on a private stack under ``workdir``; returns the verified figures."""
    workdir.mkdir(parents=True, exist_ok=True)
    report = ChaosReport(plan)
    stack = Stack(workdir / "stack", influx_auth=plan.influx_revoke is not None).start()
    watch: DeadLetterWatch | None = None
    gateway_watch: GatewayWatch | None = None
    proxies: list[TcpProxy] = []
    workers: list[IngestWorker] = []
    gateways: list[GatewayProcess] = []
    t0 = time.monotonic()

    def event(what: str) -> None:
        stamp = time.monotonic() - t0
        report.events.append((stamp, what))
        log(f"  t={stamp:6.1f} s  {what}")

    try:
        if plan.influx_revoke:
            influx = influx_with_accounts(stack, "chaos")
        else:
            influx = InfluxClient(stack.influx_url, "chaos", timeout_s=60)
            influx.create_database()
        if plan.poison_at is not None:
            watch = DeadLetterWatch(stack.mqtt_port)
        names = {gateway_name(i) for i in range(plan.gateways)}
        gateway_watch = GatewayWatch(stack.mqtt_port, names)
        for i in range(plan.workers):
            worker = IngestWorker(
                stack,
                influx.database,
                f"chaos-ingest-{i + 1}",
                workdir / f"ingest-{i + 1}.log",
                influx_credentials=INFLUX_WRITER if plan.influx_revoke else None,
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
                confirm=plan.confirm,
            )
            gateways.append(gateway.start())
        rss = PeakRss([w.pid for w in workers] + [g.pid for g in gateways]).start()
        # The faults are timed from here: every gateway connected, so each fault meets
        # gateways that hold a connection (a slow start must not let one miss it).
        gateway_watch.wait(gateway_watch.online_since, 0, names, "gateways not connected")
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
        if plan.poison_at is not None and watch is not None:
            poison_watch = watch

            def poison() -> None:
                topic = f"namazu/v1/{FARM}/{POISON_GATEWAY}/activity"
                for payload in poison_payloads().values():
                    poison_watch.publish(topic, payload)

            schedule.append((plan.poison_at, "poison: deep nesting + 3.6 MB payload", poison))
        if plan.gateway_kill_at is not None:
            target = gateways[0]

            def kill_gateway() -> None:
                target.kill()
                time.sleep(plan.gateway_restart_s)
                target.start()
                rss.watch(target.pid)

            schedule.append(
                (plan.gateway_kill_at, f"SIGKILL {gateway_name(0)}, restarted", kill_gateway)
            )
        if plan.broker_kill:
            at, lag = plan.broker_kill

            paused_ms = 0

            def pause_ingest() -> None:
                nonlocal paused_ms
                # every gateway sending (a restarted one has passed its ingest gate)
                gateway_watch.wait(gateway_watch.sent_since, now_ms(), names, "gateways idle")
                for worker in workers:
                    worker.pause(True)  # returns once the worker is stopped
                paused_ms = now_ms() + 1  # strictly after the stop

            def kill_broker() -> None:
                # Each gateway has sent a message spooled after ingest stopped: no
                # receipt can have confirmed it, so the kill leaves it unconfirmed.
                gateway_watch.wait(
                    gateway_watch.sent_since, paused_ms, names, "nothing sent while paused"
                )
                stack.stop_mosquitto(kill=True)
                time.sleep(1.0)
                restarted_ms = now_ms()
                stack.start_mosquitto()
                # Ingest resumes only once every gateway is connected again: the
                # receipts come after the reconnect that finds the messages unconfirmed.
                gateway_watch.wait(
                    gateway_watch.online_since, restarted_ms, names, "gateways not reconnected"
                )
                for worker in workers:
                    worker.pause(False)

            schedule.append(
                (at, "ingest paused (SIGSTOP): messages queue in the broker", pause_ingest)
            )
            schedule.append(
                (
                    at + lag / plan.duration_s,
                    "Mosquitto SIGKILL, restarted; ingest resumed",
                    kill_broker,
                )
            )
        if plan.influx_revoke:
            at, length = plan.influx_revoke
            schedule.append(
                (at, "InfluxDB credentials revoked", lambda: set_writer_password(influx, "revoked"))
            )
            schedule.append(
                (
                    at + length / plan.duration_s,
                    "InfluxDB credentials restored",
                    lambda: set_writer_password(influx, INFLUX_WRITER[1]),
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
        event("every gateway drained (every message confirmed by an ingest receipt)")
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
        if watch is not None:
            poison = list(poison_payloads().values())
            deadline = time.monotonic() + 30
            while watch.caught(poison) < len(poison) and time.monotonic() < deadline:
                time.sleep(0.1)
            report.dead_letters[POISON_GATEWAY] = watch.caught(poison)
            report.dead_letters[f"{POISON_GATEWAY} messages"] = watch.count
        influx.close()
        for worker in workers:
            worker.stop()
            runs = worker.log_stats()
            if runs:  # the counters of the run that lived to the end
                report.ingest_stats[f"ingest {worker.client_id}"] = runs[-1]
    finally:
        if watch is not None:
            watch.close()
        if gateway_watch is not None:
            gateway_watch.close()
        for gateway in gateways:
            gateway.stop()
        for worker in workers:
            worker.pause(False)
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


# ----------------------------------------------------------------- collars -> bridge kill


@dataclass
class BridgeKillPlan:
    """Simulated collars (``namazu simulate --frames-to``, a process that keeps every
    frame until acknowledged) -> ``namazu bridge`` (UDP source) -> Mosquitto -> ingest
    -> InfluxDB, the bridge SIGKILLed ``kills`` times while frames flow.

    cows, minutes : the herd and the simulated span (one frame per cow and minute).
    frame_rate_hz : frames per second the collars send [1/s].
    kill_at : when the bridge gets SIGKILL, as fractions of the sending time; it is
        started again on the same spool and port ``restart_s`` later.
    confirm : how the bridge frees its spool ("receipt" or "puback").
    """

    cows: int = 20
    minutes: int = 1500
    frame_rate_hz: float = 500.0
    kill_at: tuple[float, ...] = (0.3, 0.6)
    restart_s: float = 1.0
    confirm: str = "receipt"
    seed: int = 14
    timeout_s: float = 600.0

    @property
    def frames(self) -> int:
        return self.cows * self.minutes


BRIDGE_GATEWAY = "gw-bridge"


def expected_bridge_activity(plan: BridgeKillPlan, start_ms: int) -> pd.DataFrame:
    """What the bridge publishes for the plan's herd: animal, time [ms], odba and vedba
    [g] rounded as the payload encoder rounds them (6 decimals)."""
    from namazu.firmware_bridge.frame import decode_frame
    from namazu.firmware_bridge.processing import activity_from_frames
    from namazu.firmware_bridge.simulator import Herd

    herd = Herd(FARM, BRIDGE_GATEWAY, {"cow": plan.cows}, seed=plan.seed)
    end_ms = start_ms + plan.minutes * 60_000
    frames = [decode_frame(f) for f in herd.frames(start_ms, end_ms)]
    df = activity_from_frames(frames, BRIDGE_GATEWAY)
    return pd.DataFrame(
        {
            "animal": df["animal"],
            "time": df["t_ms"].astype("int64"),
            "odba": np.round(df["odba"].to_numpy(), 6),
            "vedba": np.round(df["vedba"].to_numpy(), 6),
        }
    )


def _wait_udp_bound(port: int, proc: subprocess.Popen, timeout_s: float = 30.0) -> None:
    """Wait until ``proc`` has bound UDP ``port`` (our own bind attempt then fails)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ChaosError(f"bridge exited with code {proc.returncode} before listening")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return
        time.sleep(0.05)
    raise ChaosError(f"bridge did not bind UDP {port} within {timeout_s:.0f} s")


def run_bridge_kill(
    plan: BridgeKillPlan, workdir: Path, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Run the plan on a private stack; returns the counts of ``compare_stored`` plus
    ``kills``, the collars' counters (``collars``: sent, resent, acked) and ``events``."""
    workdir.mkdir(parents=True, exist_ok=True)
    stack = Stack(workdir / "stack").start()
    events: list[tuple[float, str]] = []
    t0 = time.monotonic()

    def event(what: str) -> None:
        events.append((time.monotonic() - t0, what))
        log(f"  t={events[-1][0]:6.1f} s  {what}")

    start_ms = (int(time.time() * 1000) - (plan.minutes + 120) * 60_000) // 60_000 * 60_000
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        udp_port = probe.getsockname()[1]
    spool = workdir / "bridge-spool.sqlite"
    bridge_args = [
        "namazu.server.cli",
        "bridge",
        f"--source=udp://127.0.0.1:{udp_port}",
        f"--farm={FARM}",
        f"--gateway={BRIDGE_GATEWAY}",
        f"--mqtt-port={stack.mqtt_port}",
        f"--spool={spool}",
        f"--confirm={plan.confirm}",
        "--drain-timeout-s=120",
    ]
    start_iso = pd.Timestamp(start_ms, unit="ms", tz="UTC").isoformat()
    collar_args = [
        "namazu.server.cli",
        "simulate",
        f"--frames-to=udp://127.0.0.1:{udp_port}",
        f"--farm={FARM}",
        f"--gateway={BRIDGE_GATEWAY}",
        f"--cows={plan.cows}",
        f"--seed={plan.seed}",
        f"--start={start_iso}",
        f"--duration={plan.minutes}m",
        f"--frame-rate={plan.frame_rate_hz}",
    ]
    worker = IngestWorker(stack, "chaos", "chaos-bridge-ingest", workdir / "ingest.log")
    influx = InfluxClient(stack.influx_url, "chaos", timeout_s=60)
    bridge = collars = None
    kills = 0
    try:
        influx.create_database()
        worker.start().wait_subscribed()
        bridge = spawn_module(bridge_args, {}, workdir / "bridge.log")
        _wait_udp_bound(udp_port, bridge)
        collars = spawn_module(collar_args, {}, workdir / "collars.log")
        sending = time.monotonic()
        event(f"collars sending {plan.frames:,} frames at {plan.frame_rate_hz:.0f}/s")
        sending_s = plan.frames / plan.frame_rate_hz
        for at in plan.kill_at:
            delay = sending + at * sending_s - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            bridge.send_signal(signal.SIGKILL)
            bridge.wait(timeout=10)
            kills += 1
            event("bridge SIGKILL")
            time.sleep(plan.restart_s)
            bridge = spawn_module(bridge_args, {}, workdir / "bridge.log")
            _wait_udp_bound(udp_port, bridge)
            event("bridge restarted on the same spool, listening again")
        if collars.wait(timeout=plan.timeout_s) != 0:
            raise ChaosError(f"collars did not finish: {(workdir / 'collars.log').read_text()}")
        event("every frame acknowledged to the collars")
        bridge.send_signal(signal.SIGTERM)
        if bridge.wait(timeout=180) != 0:
            raise ChaosError(f"bridge failed: {(workdir / 'bridge.log').read_text()[-2000:]}")
        event("bridge stopped (SIGTERM)")
        expected = expected_bridge_activity(plan, start_ms)
        wait_for_count(influx, len(expected), 120, farm=FARM, settle_s=2.0)
        event("ingest caught up")
        counts = compare_stored(influx, BRIDGE_GATEWAY, expected)
        collar_lines = (workdir / "collars.log").read_text().splitlines()
        bridge_lines = (workdir / "bridge.log").read_text().splitlines()
        summaries = [json.loads(line) for line in bridge_lines if line.startswith("{")]
    finally:
        for proc in (collars, bridge):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        worker.stop()
        influx.close()
        stack.stop()
    return counts | {
        "kills": kills,
        "collars": json.loads(next(x for x in reversed(collar_lines) if x.startswith("{"))),
        "bridge_last_run": summaries[-1] if summaries else {},
        "events": events,
    }
