"""Namazu as a cluster of hosts on one machine, with hosts killed and cut off.

Every tier runs on hosts of its own (``tests/cluster/netns.py``: Linux network
namespaces on a private switch): Mosquitto, two InfluxDB instances (farms split
between them), PostgreSQL (the shared state store), two ``namazu ingest`` workers on
one MQTT v5 shared subscription, three ``namazu scheduler`` replicas sharing the farms
through leases, two ``namazu web`` replicas behind nginx (the shipped site), and a
gateway host publishing every farm's simulated herd (with injected unrest episodes)
through the project's spool and publisher. ``run_cluster(plan)`` then:

1. **ingest phase**: the gateways publish ``days`` of activity per farm, paced over
   ``publish_s``; meanwhile one ingest host is killed (every process SIGKILLed) and
   comes back, and one InfluxDB host is cut off the network and plugged back in.
   Every published sample is then looked up in its farm's instance: 0 missing, 0
   duplicates, 0 wrong values, none in the other instance.
2. **detection phase**: checkpoints a day ahead hold detection back until the three
   schedulers share the farms, then move to day ``detect_after_days`` (6 h of data
   per tick from there), while one scheduler host is killed, a second is cut off the
   network until its farms are taken over and a few ticks more, an InfluxDB host is
   cut off for a few ticks, and the killed host comes back. The hand-overs are timed
   from the lease table (in ticks). The alarms in the state store must equal those of
   a reference run of one scheduler over the same data (none twice, none missed), each
   alarm must be credited to exactly one replica's signed chain, and ``namazu
   verify-log --replica`` must pass on every scheduler host.
3. **web**: a log-in on one panel replica is used on the other, which lists the
   alarms and reads both InfluxDB instances; through nginx, a session is served by
   both replicas and goes on when one panel host is killed.

Needs root (namespaces); ``python -m tests.cluster.run cleanup`` removes what a killed
run left (while no other run is going: it takes every name with ``netns.PREFIX``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from tests.cluster.gateways import FarmPlan, plan_to_json
from tests.cluster.netns import Network

PROJECT_ROOT = Path(__file__).resolve().parents[2]
MQTT_PORT = 1883
INFLUX_PORT = 8086
INFLUX_RPC_PORT = 8088
POSTGRES_PORT = 5432
WEB_PORT = 8000
DATABASE = "namazu"
MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
#: New time a scheduler processes per tick when behind (``DetectionJob.max_catchup_s``).
CATCHUP_MS = 6 * HOUR_MS
#: The schedulers' InfluxDB time-out [ticks] (the default 10 s is 1/6 of the 60-s tick).
SCHEDULER_INFLUX_TIMEOUT_TICKS = 0.5
WEB_USER, WEB_PASSWORD = "cluster-viewer", "cluster viewer password"


class ClusterError(RuntimeError):
    """A cluster run could not be carried out (a process did not start or finish)."""


@dataclass
class ClusterPlan:
    """What a cluster run does.

    farms : farms, split evenly over the InfluxDB instances.
    instances : InfluxDB instances (hosts), 1 or 2.
    counts : species -> animals per farm (one sample per animal and minute).
    days : days of activity per farm, ending an hour before the run starts.
    detect_after_days : the schedulers start this far into the data (the baseline
        needs 3 earlier days).
    episodes_per_farm : injected unrest episodes (2 h, activity x 4) per farm, all in
        the detection window.
    publish_s : the gateways spread their messages over this long [s].
    per_message : samples per MQTT message.
    tick_s : the schedulers' tick [s] (leases last 1.25 ticks).
    ingest_kill_at, influx_cut_at : when the ingest host is killed and the InfluxDB
        host cut off, as fractions of ``publish_s``.
    ingest_down_s, influx_cut_s : how long they stay down [s].
    scheduler_cut_ticks, influx_cut_ticks : how long a scheduler host and an InfluxDB
        host are cut off during detection [ticks].
    """

    farms: int = 12
    instances: int = 2
    counts: dict[str, int] = field(default_factory=lambda: {"cow": 4, "sheep": 3})
    days: int = 9
    detect_after_days: int = 3
    episodes_per_farm: int = 3
    publish_s: float = 90.0
    per_message: int = 1000
    tick_s: float = 2.0
    ingest_kill_at: float = 0.3
    ingest_down_s: float = 5.0
    influx_cut_at: float = 0.5
    influx_cut_s: float = 20.0
    scheduler_cut_ticks: float = 6.0
    influx_cut_ticks: float = 4.0
    timeout_s: float = 900.0

    @property
    def samples_per_farm(self) -> int:
        return sum(self.counts.values()) * self.days * 24 * 60


#: The version inside ``make test``.
SHORT = ClusterPlan(
    farms=6,
    days=6,
    episodes_per_farm=2,
    publish_s=25.0,
    ingest_down_s=3.0,
    influx_cut_s=8.0,
    scheduler_cut_ticks=5.0,
    influx_cut_ticks=3.0,
    timeout_s=400.0,
)


@dataclass
class ClusterReport:
    """Figures of one cluster run."""

    plan: ClusterPlan
    instances: dict[str, str] = field(default_factory=dict)
    published: int = 0
    stored: int = 0
    missing: int = 0
    duplicates: int = 0
    extra: int = 0
    wrong_value: int = 0
    wrong_instance: int = 0
    episodes: int = 0
    episodes_found: int = 0
    alarms_expected: int = 0
    alarms_opened: int = 0
    alarms_missed: int = 0
    alarms_unexpected: int = 0
    alarms_duplicated: int = 0
    log_records: int = 0
    log_credited: int = 0
    log_uncredited: int = 0
    log_duplicates: int = 0
    verify_log: dict[str, int | str] = field(default_factory=dict)
    handovers: dict[str, float] = field(default_factory=dict)
    changes_of_hands: int = 0
    given_back: int = 0
    fenced_out: dict[str, int] = field(default_factory=dict)
    failed_ticks: dict[str, int] = field(default_factory=dict)
    ticks: int = 0
    web: dict[str, Any] = field(default_factory=dict)
    events: list[tuple[float, str]] = field(default_factory=list)
    seconds: float = 0.0
    per_farm: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return (
            self.published > 0
            and self.stored == self.published
            and self.missing == self.duplicates == self.extra == self.wrong_value == 0
            and self.wrong_instance == 0
            and self.alarms_expected > 0
            and self.alarms_opened == self.alarms_expected
            and self.alarms_missed == self.alarms_unexpected == self.alarms_duplicated == 0
            and self.log_credited == self.alarms_expected
            and self.log_records == self.log_credited + self.log_duplicates + self.log_uncredited
            and self.log_duplicates == 0
            and self.episodes_found == self.episodes
            and bool(self.verify_log)
            and all(code in (0, "no chain, 0 alarms credited") for code in self.verify_log.values())
            and 0 in self.verify_log.values()
            and self.web.get("login_on_one_used_on_other") is True
            and self.web.get("nginx_session_survives_web1_kill") is True
        )

    def summary(self) -> str:
        """Human-readable figures."""
        plan = self.plan
        lines = [
            f"farms {plan.farms} x {sum(plan.counts.values())} animals, {plan.days} days at "
            f"1 sample/min; InfluxDB instances: "
            + ", ".join(f"{k} {v}" for k, v in sorted(self.instances.items())),
            f"samples sent {self.published:,}, stored {self.stored:,}: lost {self.missing}, "
            f"duplicates {self.duplicates}, extra {self.extra}, wrong values "
            f"{self.wrong_value}, in the wrong instance {self.wrong_instance}",
            f"alarms expected {self.alarms_expected} (one scheduler over the same data), "
            f"opened {self.alarms_opened}: missed {self.alarms_missed}, unexpected "
            f"{self.alarms_unexpected}, duplicated {self.alarms_duplicated}; injected "
            f"episodes with a herd alarm {self.episodes_found} / {self.episodes}",
            f"alarm-log records {self.log_records} over {len(self.verify_log)} replica "
            f"chains: alarms credited to exactly one chain {self.log_credited}, to two "
            f"{self.log_duplicates}; records of ticks that then failed (not credited) "
            f"{self.log_uncredited}; verify-log exit codes "
            + ", ".join(f"{k} {v}" for k, v in sorted(self.verify_log.items())),
            "hand-over [ticks of "
            f"{plan.tick_s:g} s]: "
            + ", ".join(f"{k} {v:.2f}" for k, v in self.handovers.items())
            + f"; farm leases changed hands {self.changes_of_hands} times ({self.given_back} "
            "given back by a live replica, the rest taken after the lease ran out); ticks "
            "fenced out "
            f"of a farm (lease lost) {self.fenced_out}; failed detection jobs "
            f"{self.failed_ticks}",
            "web: " + ", ".join(f"{k} {v}" for k, v in self.web.items()),
            f"run time {self.seconds:.0f} s",
        ]
        lines += [f"  t={t:6.1f} s  {what}" for t, what in self.events]
        lines.append(f"verdict: {'PASS' if self.passed else 'FAIL'}")
        return "\n".join(lines)


# ----------------------------------------------------------------- configuration


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


def to_toml(sections: dict[str, dict[str, Any]], farms: list[dict[str, Any]]) -> str:
    """A small TOML writer: ``[section]`` tables of scalars, then ``[[farms]]``."""
    lines: list[str] = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in values.items() if v is not None]
    for farm in farms:
        lines.append("[[farms]]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in farm.items() if v is not None]
    return "\n".join(lines) + "\n"


def instances_supported() -> bool:
    """Whether the configuration knows several InfluxDB instances
    (``[influx_instances.NAME]``, ``[[farms]] influx_instance``)."""
    from namazu.server.core.config import FarmConfig, NamazuConfig

    return "influx_instances" in NamazuConfig.model_fields and (
        "influx_instance" in FarmConfig.model_fields
    )


def _python_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NAMAZU_")}
    env["PYTHONPATH"] = str(PROJECT_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def farm_plans(plan: ClusterPlan, detect_ms: int, end_ms: int, two: bool) -> list[FarmPlan]:
    """The farms: ids, instances (alternating when ``two``), seeds and episodes spread
    over the detection window [detect_ms, end_ms) (each 2 h, x4, in its own part of
    the window, at a farm-specific offset)."""
    farms = []
    segment = (end_ms - detect_ms - 3 * HOUR_MS) // plan.episodes_per_farm
    for i in range(plan.farms):
        episodes = []
        for k in range(plan.episodes_per_farm):
            room = max(1, (segment - 3 * HOUR_MS) // MINUTE_MS)
            offset = HOUR_MS + ((i * 173 + k * 89) % room) * MINUTE_MS
            episodes.append((detect_ms + k * segment + offset, 120.0, 4.0))
        farms.append(
            FarmPlan(
                farm=f"farm-{i + 1:02d}",
                gateway="gw-1",
                instance=("flux2" if two and i % 2 else None),
                seed=100 + i,
                counts=dict(plan.counts),
                episodes=tuple(episodes),
            )
        )
    return farms


# ----------------------------------------------------------------- the cluster


class Cluster:
    """The hosts and services of one run (see the module docstring)."""

    def __init__(
        self,
        plan: ClusterPlan,
        workdir: Path,
        log: Callable[[str], None] = print,
        run_id: str | None = None,
    ):
        self.plan = plan
        self.workdir = workdir
        self.say = log
        self.net = Network(run_id) if run_id else Network()
        self.t0 = time.monotonic()
        self.events: list[tuple[float, str]] = []
        if plan.instances not in (1, 2):
            raise ClusterError(f"instances={plan.instances}: 1 or 2")
        if plan.instances == 2 and not instances_supported():
            raise ClusterError("two InfluxDB instances need [influx_instances.NAME] support")
        self.two = plan.instances == 2
        self.pg_dir = Path(tempfile.mkdtemp(prefix="namazu-cluster-pg-"))
        self.postgres = None
        self.procs: dict[str, subprocess.Popen] = {}

    # -- bookkeeping

    def event(self, what: str) -> None:
        self.events.append((time.monotonic() - self.t0, what))
        self.say(f"  t={self.events[-1][0]:6.1f} s  {what}")

    def address(self, tag: str) -> str:
        return self.net.hosts[tag].address

    def influx_url(self, tag: str) -> str:
        return f"http://{self.address(tag)}:{INFLUX_PORT}"

    @property
    def state_url(self) -> str:
        return f"postgresql+psycopg://postgres@{self.address('pg')}:{POSTGRES_PORT}/{DATABASE}"

    def influx_tags(self) -> list[str]:
        return ["flux1", "flux2"] if self.two else ["flux1"]

    def instance_host(self, farm: FarmPlan) -> str:
        return "flux2" if farm.instance == "flux2" else "flux1"

    # -- hosts and services

    def build(self, farms: list[FarmPlan]) -> None:
        """Create every host and start the services (broker, InfluxDB, PostgreSQL)."""
        self.farms = farms
        tags = ["mqtt", *self.influx_tags(), "pg", "ing1", "ing2", "sch1", "sch2", "sch3"]
        for tag in [*tags, "web1", "web2", "px", "gw"]:
            self.net.add_host(tag)
        self.event(f"{len(self.net.hosts)} hosts on {self.net.subnet} (switch {self.net.switch})")
        from namazu.server.launch.postgres import PostgresServer
        from namazu.server.launch.stack import influx_ready, influxdb_config, mosquitto_config

        mqtt_dir = self.workdir / "mqtt"
        mqtt_dir.mkdir(parents=True, exist_ok=True)
        conf = mqtt_dir / "mosquitto.conf"
        conf.write_text(mosquitto_config(mqtt_dir, MQTT_PORT, host=self.address("mqtt")))
        self.procs["mqtt"] = self.net.run(
            "mqtt", ["/usr/sbin/mosquitto", "-c", str(conf)], mqtt_dir / "stdout.log"
        )
        for tag in self.influx_tags():
            directory = self.workdir / tag
            directory.mkdir(parents=True, exist_ok=True)
            conf = directory / "influxdb.conf"
            conf.write_text(
                influxdb_config(directory, INFLUX_PORT, INFLUX_RPC_PORT, host=self.address(tag))
            )
            self.procs[tag] = self.net.run(
                tag, ["/usr/bin/influxd", "-config", str(conf)], directory / "influxd.log"
            )
        self.postgres = PostgresServer(
            self.pg_dir,
            port=POSTGRES_PORT,
            durable=False,
            host=self.address("pg"),
            trusted_network=str(self.net.subnet),
            wrapper=("ip", "netns", "exec", self.net.hosts["pg"].netns),
        ).start()
        self.postgres.ensure_database(DATABASE)
        _wait(lambda: _port_open(self.address("mqtt"), MQTT_PORT), 30, "mosquitto")
        for tag in self.influx_tags():
            _wait(lambda t=tag: influx_ready(self.influx_url(t)), 60, f"influxd on {tag}")
        from namazu.server.store.influx import InfluxClient
        from namazu.server.store.state import init_db, session_scope
        from namazu.server.web.auth import create_user

        for tag in self.influx_tags():
            client = InfluxClient(self.influx_url(tag), DATABASE)
            client.create_database()
            client.close()
        engine = init_db(self.state_url)
        with session_scope(engine) as db:
            create_user(db, WEB_USER, "viewer", WEB_PASSWORD)
        engine.dispose()
        self.event("broker, InfluxDB, PostgreSQL up (each on its own host)")

    def config(self, tag: str) -> Path:
        """The TOML configuration of host ``tag`` (written once)."""
        path = self.workdir / tag / "namazu.toml"
        if path.exists():
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        sections: dict[str, dict[str, Any]] = {
            "mqtt": {"host": self.address("mqtt"), "port": MQTT_PORT, "keepalive_s": 5},
            "influx": {"url": self.influx_url("flux1"), "database": DATABASE, "timeout_s": 5.0},
            "state": {"url": self.state_url},
        }
        if self.two:
            sections["influx_instances.flux2"] = {
                "url": self.influx_url("flux2"),
                "database": DATABASE,
                "timeout_s": 5.0,
            }
        if tag.startswith("ing"):
            sections["ingest"] = {"client_id": f"ingest-{tag}", "max_pending_messages": 500}
        if tag.startswith("sch"):
            # a read of an unreachable instance must give up well within the lease time
            # (1.25 ticks), or the replica waiting on it loses every farm it holds
            for name in ("influx", "influx_instances.flux2"):
                if name in sections:
                    sections[name]["timeout_s"] = SCHEDULER_INFLUX_TIMEOUT_TICKS * self.plan.tick_s
        if tag.startswith("sch") or tag == "reference":
            directory, keys = self.workdir / tag, self.workdir / "keys" / tag
            keys.mkdir(parents=True, exist_ok=True)
            sections["scheduler"] = {
                "tick_s": self.plan.tick_s,
                "replica_id": None if tag == "reference" else tag,
                "alarm_log_path": str(directory / "alarm-log.jsonl"),
                "alarm_log_signing_key": str(keys / "signing-key.pem"),
                "alarm_log_keyring": str(keys / "keyring.json"),
                "verify_log_s": 30.0,
            }
            subprocess.run(
                [sys.executable, "-m", "namazu.server.cli", "keys", "generate",
                 "--private-key", str(keys / "signing-key.pem"),
                 "--keyring", str(keys / "keyring.json")],
                check=True, capture_output=True, env=_python_env(), cwd=PROJECT_ROOT,
            )  # fmt: skip
        if tag.startswith("web"):
            sections["web"] = {
                "host": self.address(tag),
                "port": WEB_PORT,
                "secret_key": "cluster-" + "k" * 40,
                "secure_cookies": False,
                "workers": 1,
                "threads": 4,
                "runtime_dir": str(self.workdir / tag / "run"),
                "trusted_proxy_hops": 1,  # nginx on host px
            }
        farms = [
            {"id": f.farm, "latitude": 43.0, "longitude": 13.0}
            | ({"influx_instance": f.instance} if f.instance else {})
            for f in self.farms
        ]
        path.write_text(to_toml(sections, farms), encoding="utf-8")
        return path

    def start_nginx(self) -> str:
        """nginx with the shipped site on host ``px``, both panel replicas in its
        upstream; returns its HTTPS base URL (CA in ``px/ca.crt``)."""
        from tests.deploy.conftest import make_tls_files
        from tests.deploy.nginx_site import NGINX, SITE, local_files, main_config, replace_all

        if NGINX is None:
            raise ClusterError("nginx is not installed (nginx-light)")
        directory, address = self.workdir / "px", self.address("px")
        directory.mkdir(parents=True, exist_ok=True)
        make_tls_files(directory, address)
        upstream = "\n    ".join(
            f"server {self.address(t)}:{WEB_PORT} max_fails=1 fail_timeout=60s;"
            for t in ("web1", "web2")
        )
        site = replace_all(
            SITE.read_text(),
            {
                "server 127.0.0.1:8000;": upstream,
                "    listen 80;\n    listen [::]:80;\n": f"    listen {address}:80;\n",
                "    listen 443 ssl http2;\n    listen [::]:443 ssl http2;\n": (
                    f"    listen {address}:443 ssl;\n"
                ),
                **local_files(directory),
            },
        )
        (directory / "site.conf").write_text(site)
        (directory / "nginx.conf").write_text(main_config(directory, access_log=True))
        self.procs["px"] = self.net.run(
            "px",
            [NGINX, "-p", str(directory), "-c", str(directory / "nginx.conf"), "-g",
             "daemon off;"],
            directory / "stdout.log",
        )  # fmt: skip
        _wait(lambda: _port_open(address, 443), 30, "nginx on px")
        return f"https://{address}"

    def start(self, tag: str, command: str, *extra: str) -> subprocess.Popen:
        """Start ``namazu COMMAND --config <host's config>`` on host ``tag``."""
        argv = [sys.executable, "-m", "namazu.server.cli", command, "--config",
                str(self.config(tag)), "--log-level", "INFO", *extra]  # fmt: skip
        proc = self.net.run(tag, argv, self.workdir / tag / f"{command}.log", _python_env(),
                            PROJECT_ROOT)  # fmt: skip
        self.procs[tag] = proc
        return proc

    def log_text(self, tag: str, command: str) -> str:
        path = self.workdir / tag / f"{command}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_log(self, tag: str, command: str, marker: str, count: int, timeout_s: float) -> None:
        def seen() -> bool:
            if self.procs[tag].poll() is not None:
                tail = self.log_text(tag, command)[-2000:]
                raise ClusterError(f"{command} on {tag} exited: {tail}")
            return self.log_text(tag, command).count(marker) >= count

        _wait(seen, timeout_s, f"{command} on {tag}: {marker!r}")

    def close(self) -> None:
        for tag in list(self.net.hosts):
            with contextlib.suppress(Exception):
                self.net.heal(tag)
        with contextlib.suppress(Exception):
            if self.postgres is not None:
                self.postgres.stop()
        self.net.close()
        shutil.rmtree(self.pg_dir, ignore_errors=True)


def _port_open(host: str, port: int) -> bool:
    from namazu.server.launch.stack import port_open

    return port_open(port, host)


def _wait(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise ClusterError(f"{what}: not ready within {timeout_s:.0f} s")


# ----------------------------------------------------------------- checks


def verify_samples(cluster: Cluster, start_ms: int, end_ms: int, report: ClusterReport) -> None:
    """Every farm's samples against its instance; none of them in the other one."""
    import pandas as pd

    from namazu.server.store.influx import InfluxClient
    from tests.chaos.harness import compare_stored

    clients = {t: InfluxClient(cluster.influx_url(t), DATABASE, timeout_s=60) for t in
               cluster.influx_tags()}  # fmt: skip
    try:
        for farm in cluster.farms:
            frame = farm.activity(start_ms, end_ms)
            expected = pd.DataFrame(
                {
                    "animal": frame["animal"].astype(str),
                    "time": frame["t_ms"].astype("int64"),
                    "odba": frame["odba"],
                    "vedba": frame["vedba"],
                }
            )
            home = cluster.instance_host(farm)
            counts = compare_stored(clients[home], farm.gateway, expected, farm=farm.farm)
            counts["wrong_instance"] = sum(
                client.count("activity", "odba", f"farm = '{farm.farm}'")
                for tag, client in clients.items()
                if tag != home
            )
            report.per_farm[farm.farm] = counts
            report.published += counts["expected"]
            report.stored += counts["stored"]
            for key in ("missing", "duplicates", "extra", "wrong_value", "wrong_instance"):
                setattr(report, key, getattr(report, key) + counts[key])
    finally:
        for client in clients.values():
            client.close()


def _alarm_rows(engine) -> list[tuple]:
    from sqlalchemy import select

    from namazu.server.store.state import Alarm, session_scope

    with session_scope(engine) as db:
        return sorted(
            (a.farm, a.kind, a.series, a.start, a.declared_at, a.end, a.state, a.close_reason)
            for a in db.scalars(select(Alarm))
        )


def seed_checkpoints(engine, farms: list[FarmPlan], at_ms: int) -> None:
    """Start detection of every farm at ``at_ms`` (UTC epoch [ms])."""
    from namazu.server.store.state import Checkpoint, session_scope

    at = datetime.fromtimestamp(at_ms / 1000, UTC)
    with session_scope(engine) as db:
        for farm in farms:
            db.merge(Checkpoint(name=f"detection:{farm.farm}", time=at, value={}))


def checkpoints(engine) -> dict[str, datetime | None]:
    from sqlalchemy import select

    from namazu.server.store.state import Checkpoint, session_scope

    with session_scope(engine) as db:
        return {
            c.name.partition(":")[2]: c.time
            for c in db.scalars(select(Checkpoint).where(Checkpoint.name.like("detection:%")))
        }


def reference_alarms(cluster: Cluster, detect_ms: int, done_ms: int) -> list[tuple]:
    """The alarms of one scheduler (no replicas, SQLite) over the same data and window."""
    from namazu.server.core.config import load_config
    from namazu.server.detection.scheduler import build_services, detect
    from namazu.server.store.state import init_db

    path = cluster.config("reference")
    text = path.read_text().replace(cluster.state_url, f"sqlite:///{path.parent}/state.sqlite")
    path.write_text(text)
    logging.getLogger("namazu").setLevel(logging.ERROR)  # its data-health warnings
    services = build_services(load_config(path))
    engine = init_db(services.config.state.url)
    seed_checkpoints(engine, cluster.farms, detect_ms)
    target = datetime.fromtimestamp(done_ms / 1000, UTC)
    for _ in range(10_000):
        detect(services, datetime.now(UTC))
        if all(t is not None and t >= target for t in checkpoints(engine).values()):
            break
    rows = _alarm_rows(engine)
    services.influx.close()
    return rows


class LeaseWatch:
    """Samples the farm leases every 0.1 s: holder and token per farm over time."""

    def __init__(self, engine, farms: list[str]):
        self.engine = engine
        self.farms = farms
        self.samples: list[tuple[float, dict[str, tuple[str | None, int, bool]]]] = []
        #: (time [s, monotonic], farm, previous holder, new holder, given back): given
        #: back when the previous lease had not run out when the change was seen (a live
        #: lease changes hands only when its holder releases it)
        self.changes: list[tuple[float, str, str | None, str | None, bool]] = []
        self._expiry: dict[str, datetime] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        from sqlalchemy import select

        from namazu.server.store.leases import Lease

        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                now = datetime.now(UTC)
                with self.engine.connect() as connection:
                    rows = connection.execute(
                        select(Lease.name, Lease.holder, Lease.token, Lease.expires_at).where(
                            Lease.name.like("farm:%")
                        )
                    ).all()
                state = {n[5:]: (h, int(t), e > now) for n, h, t, e in rows}
                if self.samples:
                    before = self.samples[-1][1]
                    for farm, (holder, token, _) in state.items():
                        old = before.get(farm)
                        if old is not None and token > old[1] and old[1] > 0:
                            released = old[0] is None or self._expiry[farm] > now
                            self.changes.append((time.monotonic(), farm, old[0], holder, released))
                self._expiry = {n[5:]: e for n, _, _, e in rows}
                self.samples.append((time.monotonic(), state))
            self._stop.wait(0.1)

    def holders(self) -> dict[str, str | None]:
        """Latest holder of each farm whose lease is live (None: free or expired)."""
        if not self.samples:
            return {}
        return {f: (h if live else None) for f, (h, _, live) in self.samples[-1][1].items()}

    def wait_taken_over(self, farms: list[str], victim: str, since: float, timeout_s: float):
        """Seconds from ``since`` until each of ``farms`` is held (live) by a replica other
        than ``victim``; the largest, or None on timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for stamp, state in self.samples:
                if stamp < since:
                    continue
                if all(state.get(f, (None, 0, False))[0] not in (None, victim)
                       and state[f][2] for f in farms):  # fmt: skip
                    return stamp - since
            time.sleep(0.1)
        return None

    def changes_of_hands(self) -> int:
        """How often a farm lease changed holder after its first owner took it (the
        fencing token starts at 0 and grows by one at every change of holder)."""
        last = self.samples[-1][1] if self.samples else {}
        return sum(max(0, token - 1) for _, token, _ in last.values())

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


# ----------------------------------------------------------------- the run


def run_cluster(
    plan: ClusterPlan,
    workdir: Path,
    log: Callable[[str], None] = print,
    run_id: str | None = None,
) -> ClusterReport:
    """Build the cluster, run both phases with their faults, verify; always tear down.
    run_id : the namespaces' and links' name part after ``netns.PREFIX`` (4 hex digits;
    random by default)."""
    report = ClusterReport(plan)
    workdir.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(plan, workdir, log, run_id)
    try:
        _run(cluster, plan, workdir, report)
    finally:
        report.events = cluster.events
        report.seconds = time.monotonic() - cluster.t0
        cluster.close()
    return report


def _run(cluster: Cluster, plan: ClusterPlan, workdir: Path, report: ClusterReport) -> None:
    now_ms = int(time.time() * 1000)
    end_ms = now_ms // (15 * MINUTE_MS) * (15 * MINUTE_MS) - HOUR_MS
    start_ms = end_ms - plan.days * DAY_MS
    detect_ms = start_ms + plan.detect_after_days * DAY_MS
    farms = farm_plans(plan, detect_ms, end_ms, plan.instances == 2)
    report.episodes = sum(len(f.episodes) for f in farms)
    cluster.build(farms)
    report.instances = {
        tag: ", ".join(f.farm for f in farms if cluster.instance_host(f) == tag)
        for tag in cluster.influx_tags()
    }
    event = cluster.event

    # ---- ingest phase
    for tag in ("ing1", "ing2"):
        cluster.start(tag, "ingest")
    for tag in ("ing1", "ing2"):
        cluster.wait_log(tag, "ingest", "MQTT connected", 1, 60)
    for tag in ("web1", "web2"):
        cluster.start(tag, "web")
    plan_file = workdir / "gw" / "plan.json"
    plan_file.parent.mkdir(parents=True, exist_ok=True)
    plan_file.write_text(
        plan_to_json(farms, cluster.address("mqtt"), MQTT_PORT, start_ms, end_ms,
                     plan.publish_s, plan.per_message, workdir / "gw" / "spool"),
        encoding="utf-8",
    )  # fmt: skip
    gateways = cluster.net.run(
        "gw",
        [sys.executable, "-m", "tests.cluster.gateways", str(plan_file)],
        workdir / "gw" / "gateways.log",
        _python_env(),
        PROJECT_ROOT,
    )
    began = time.monotonic()
    event(
        f"gateways publishing {plan.farms * plan.samples_per_farm:,} samples of {plan.farms} "
        f"farms over {plan.publish_s:.0f} s to 2 ingest workers"
    )
    victim_influx = cluster.influx_tags()[-1]
    schedule = sorted(
        [
            (plan.ingest_kill_at, "kill ing2"),
            (plan.ingest_kill_at + plan.ingest_down_s / plan.publish_s, "restart ing2"),
            (plan.influx_cut_at, "cut influx"),
            (plan.influx_cut_at + plan.influx_cut_s / plan.publish_s, "heal influx"),
        ]
    )
    for at, what in schedule:
        time.sleep(max(0.0, began + at * plan.publish_s - time.monotonic()))
        if what == "kill ing2":
            killed = cluster.net.kill("ing2")
            event(f"ingest host ing2 killed (SIGKILL to every process in it: {killed})")
        elif what == "restart ing2":
            cluster.start("ing2", "ingest")
            event("ingest host ing2 back: namazu ingest started again (same client id)")
        elif what == "cut influx":
            cluster.net.partition(victim_influx)
            event(f"InfluxDB host {victim_influx} cut off the network")
        else:
            cluster.net.heal(victim_influx)
            event(f"InfluxDB host {victim_influx} plugged back in")
    try:
        code = gateways.wait(timeout=plan.timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise ClusterError(f"gateways did not drain in {plan.timeout_s:.0f} s") from exc
    gw_log = (workdir / "gw" / "gateways.log").read_text(errors="replace")
    if code != 0:
        raise ClusterError(f"gateways exited {code}: {gw_log[-2000:]}")
    event("every message confirmed stored by ingest (gateway spools empty)")
    verify_samples(cluster, start_ms, end_ms, report)
    event(
        f"samples checked: {report.stored:,} stored of {report.published:,}, "
        f"{report.missing} missing, {report.duplicates} duplicates"
    )

    # ---- detection phase
    from namazu.server.store.state import init_db

    engine = init_db(cluster.state_url)
    # checkpoints a day ahead hold detection back until the three replicas share the farms
    seed_checkpoints(engine, farms, now_ms + DAY_MS)
    done_ms = end_ms + 30 * MINUTE_MS  # one step past the data: open runs end
    watch = LeaseWatch(engine, [f.farm for f in farms])
    tick = plan.tick_s
    try:
        for tag in ("sch1", "sch2", "sch3"):
            cluster.start(tag, "scheduler")
        event(
            f"3 schedulers started; detection from day {plan.detect_after_days} "
            f"({(end_ms - detect_ms) / DAY_MS:.0f} days, 6 h per tick of {tick:g} s)"
        )
        _wait(lambda: set(watch.holders().values()) == {"sch1", "sch2", "sch3"}, 120,
              "every replica holding farms")  # fmt: skip
        seed_checkpoints(engine, farms, detect_ms)
        event("farms shared: " + _owners(watch) + "; detection window opened")

        def progress() -> str:
            times = [t for t in checkpoints(engine).values() if t is not None]
            done = [(t.timestamp() * 1000 - detect_ms) / HOUR_MS for t in times]
            return (
                f"(detection at {min(done):.0f}-{max(done):.0f} h of {window_h:.0f} h; "
                f"{watch.changes_of_hands()} changes of hands so far)"
            )

        window_h = (end_ms - detect_ms) / HOUR_MS
        _wait(lambda: min(t for t in checkpoints(engine).values()) > datetime.fromtimestamp(
            detect_ms / 1000, UTC), 30 * tick, "a first tick of every farm")  # fmt: skip

        victim = "sch1"
        _wait(lambda: victim in watch.holders().values(), 30 * tick, f"{victim} holding farms")
        owned = [f for f, h in watch.holders().items() if h == victim]
        killed_at = time.monotonic()
        cluster.net.kill(victim)
        event(f"scheduler host {victim} killed, holding {', '.join(owned)} {progress()}")
        took = watch.wait_taken_over(owned, victim, killed_at, 30 * tick)
        if took is None:
            raise ClusterError(f"the farms of killed {victim} were not taken over")
        report.handovers["kill sch1"] = took / tick
        event(f"{victim}'s farms taken over after {took:.1f} s ({took / tick:.2f} ticks)")

        cut = "sch2"
        _wait(lambda: cut in watch.holders().values(), 30 * tick, f"{cut} holding farms")
        owned = [f for f, h in watch.holders().items() if h == cut]
        cut_at = time.monotonic()
        cluster.net.partition(cut)
        event(f"scheduler host {cut} cut off the network, holding {', '.join(owned)} {progress()}")
        took = watch.wait_taken_over(owned, cut, cut_at, 30 * tick)
        if took is None:
            raise ClusterError(
                f"the farms of cut-off {cut} were not taken over; PostgreSQL sessions: "
                + cluster.postgres.psql(
                    "SELECT application_name, client_addr, state, wait_event_type, "
                    "left(query, 80) FROM pg_stat_activity WHERE datname = 'namazu'",
                    DATABASE,
                )
            )
        report.handovers["cut sch2"] = took / tick
        event(f"{cut}'s farms taken over after {took:.1f} s ({took / tick:.2f} ticks)")
        time.sleep(max(0.0, cut_at + plan.scheduler_cut_ticks * tick - time.monotonic()))
        cluster.net.heal(cut)
        event(f"scheduler host {cut} plugged back in {progress()}")

        cluster.net.partition(victim_influx)
        event(f"InfluxDB host {victim_influx} cut off the network {progress()}")
        time.sleep(plan.influx_cut_ticks * tick)
        cluster.net.heal(victim_influx)
        event(f"InfluxDB host {victim_influx} plugged back in")

        cluster.start(victim, "scheduler")
        event(f"scheduler host {victim} back: namazu scheduler started again {progress()}")
        target = datetime.fromtimestamp(done_ms / 1000, UTC)

        def finished() -> bool:
            times = checkpoints(engine)
            return len(times) == len(farms) and all(
                t is not None and t >= target for t in times.values()
            )

        _wait(finished, plan.timeout_s, "detection over the whole window")
        event("every farm's detection checkpoint past the end of the data")
        _wait(lambda: set(watch.holders().values()) == {"sch1", "sch2", "sch3"}, 30 * tick,
              "the three replicas sharing the farms again")  # fmt: skip
        event("farms shared again: " + _owners(watch))
    finally:
        watch.stop()
    report.changes_of_hands = watch.changes_of_hands()
    report.given_back = sum(change[4] for change in watch.changes)
    (workdir / "lease-changes.txt").write_text(
        "".join(f"{t - cluster.t0:7.1f} {farm} {old} -> {new} "
                f"{'given back' if back else 'ran out'}\n"
                for t, farm, old, new, back in watch.changes)
    )  # fmt: skip
    report.ticks = int((time.monotonic() - began) / tick)
    for tag in ("sch1", "sch2", "sch3"):
        proc = cluster.procs[tag]
        if proc.poll() is None:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
    event("schedulers stopped (SIGTERM)")

    # ---- alarms
    cluster_rows = _alarm_rows(engine)
    expected = reference_alarms(cluster, detect_ms, done_ms)
    event(f"reference run of one scheduler: {len(expected)} alarms")
    identities = [row[:4] for row in cluster_rows]
    report.alarms_expected = len(expected)
    report.alarms_opened = len(cluster_rows)
    report.alarms_duplicated = len(identities) - len(set(identities))
    report.alarms_missed = len(set(expected) - set(cluster_rows))
    report.alarms_unexpected = len(set(cluster_rows) - set(expected))
    for farm in farms:
        for start, length, _ in farm.episodes:
            lo = datetime.fromtimestamp((start - HOUR_MS) / 1000, UTC)
            hi = datetime.fromtimestamp((start + length * MINUTE_MS) / 1000, UTC)
            report.episodes_found += any(
                row[0] == farm.farm and row[1] == "herd" and lo <= row[3] <= hi
                for row in cluster_rows
            )
    from namazu.server.detection.alarmlog import alarm_identity, iter_records, state_records

    credited_in: dict[tuple, int] = {}  # alarm identity -> chains crediting it
    for tag in ("sch1", "sch2", "sch3"):
        text = cluster.log_text(tag, "scheduler")
        report.fenced_out[tag] = text.count("lost the lease of farm")
        report.failed_ticks[tag] = sum(
            '"job failed' in line and '"job": "detection"' in line for line in text.splitlines()
        )
        path = workdir / tag / f"alarm-log.{tag}.jsonl"
        credited = {(r.index, r.hash) for r in state_records(cluster.state_url, log_id=tag)}
        if not path.exists():  # a replica that opened no alarm has no chain
            report.verify_log[tag] = f"no chain, {len(credited)} alarms credited"
            continue
        for record in iter_records(path):
            report.log_records += 1
            if (record["index"], record["hash"]) in credited:
                key = alarm_identity(record["alarm"])
                credited_in[key] = credited_in.get(key, 0) + 1
            else:  # logged by a tick whose transaction then failed (fenced out, cut off)
                report.log_uncredited += 1
        done = subprocess.run(
            ["ip", "netns", "exec", cluster.net.hosts[tag].netns, sys.executable, "-m",
             "namazu.server.cli", "verify-log", "--config", str(cluster.config(tag)),
             "--replica", tag],
            capture_output=True, text=True, env=_python_env(), cwd=PROJECT_ROOT,
        )  # fmt: skip
        report.verify_log[tag] = done.returncode
        (workdir / tag / "verify-log.txt").write_text(done.stdout + done.stderr)
    report.log_credited = len(credited_in)
    report.log_duplicates = sum(n - 1 for n in credited_in.values())
    event(
        f"alarms: {report.alarms_opened} in the state store, {report.log_records} log "
        f"records; verify-log exit codes {report.verify_log}"
    )

    # ---- web replicas
    report.web = check_web(cluster, farms, report.alarms_opened)
    event("web: " + json.dumps(report.web))
    report.web.update(check_web_behind_nginx(cluster, report.alarms_opened))
    event("web behind nginx: " + json.dumps({k: v for k, v in report.web.items() if
                                             k.startswith("nginx")}))  # fmt: skip
    engine.dispose()


def _owners(watch: LeaseWatch) -> str:
    by: dict[str, list[str]] = {}
    for farm, holder in sorted(watch.holders().items()):
        by.setdefault(str(holder), []).append(farm)
    return "; ".join(f"{h}: {len(fs)}" for h, fs in sorted(by.items()))


def _log_in(
    session: requests.Session, base: str, where: str, page_timeout_s: float
) -> requests.Response:
    """Log the run's web user in at ``base`` with the CSRF token of its log-in page;
    ClusterError naming ``where`` when the page carries no token."""
    page = session.get(f"{base}/login", timeout=page_timeout_s)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    if token is None:
        raise ClusterError(f"no CSRF token on {where}")
    return session.post(
        f"{base}/login",
        data={"username": WEB_USER, "password": WEB_PASSWORD, "csrf_token": token.group(1)},
        allow_redirects=False,
        timeout=30,
    )


def check_web(cluster: Cluster, farms: list[FarmPlan], alarms: int) -> dict[str, Any]:
    """Log in on web1, use the session on web2: the alarm list and one farm of each
    InfluxDB instance."""
    one = f"http://{cluster.address('web1')}:{WEB_PORT}"
    two = f"http://{cluster.address('web2')}:{WEB_PORT}"
    for base in (one, two):
        _wait(lambda b=base: _answers(f"{b}/login"), 60, f"panel {base}")
    session = requests.Session()
    done = _log_in(session, one, "the log-in page", page_timeout_s=10)
    out: dict[str, Any] = {"login_on_web1": done.status_code}
    other = requests.Session()  # the same cookie, sent to the other replica's address
    for cookie in session.cookies:
        other.cookies.set(cookie.name, cookie.value)
    before = requests.get(f"{two}/api/v1/alarms?limit=5000", timeout=30).status_code
    listed = other.get(f"{two}/api/v1/alarms?limit=5000", timeout=60)
    out["web2_without_cookie"] = before
    out["web2_alarms"] = listed.status_code
    out["web2_alarms_listed"] = len(listed.json()) if listed.ok else None
    reads = {}
    for tag in cluster.influx_tags():
        farm = next(f for f in farms if cluster.instance_host(f) == tag)
        animals = other.get(f"{two}/api/v1/animals", params={"farm": farm.farm}, timeout=60)
        reads[tag] = len(animals.json()) if animals.ok else animals.status_code
    out["web2_animals_per_instance"] = reads
    out["login_on_one_used_on_other"] = (
        done.status_code == 302
        and before == 401
        and listed.ok
        and out["web2_alarms_listed"] == alarms
        and all(isinstance(v, int) and v > 0 and v == sum(cluster.plan.counts.values())
                for v in reads.values())
    )  # fmt: skip
    return out


def check_web_behind_nginx(cluster: Cluster, alarms: int) -> dict[str, Any]:
    """Through nginx (host px, both replicas upstream): log in, list the alarms a few
    times (nginx's access log names the replica of each request), then kill host web1
    and list them again."""
    base = cluster.start_nginx()
    browser = requests.Session()
    browser.trust_env = False  # REQUESTS_CA_BUNDLE would replace the run's own CA
    browser.verify = str(cluster.workdir / "px" / "ca.crt")
    done = _log_in(browser, base, "the log-in page behind nginx", page_timeout_s=30)
    listed = [browser.get(f"{base}/api/v1/alarms?limit=5000", timeout=60) for _ in range(6)]
    served = sorted(
        {line.split()[-1] for line in _access_log(cluster) if " /api/v1/alarms " in line}
    )
    killed = cluster.net.kill("web1")
    after = [browser.get(f"{base}/api/v1/alarms?limit=5000", timeout=60) for _ in range(4)]
    ok = [r.status_code == 200 and len(r.json()) == alarms for r in listed + after]
    return {
        "nginx_login": done.status_code,
        "nginx_alarm_lists_ok": f"{sum(ok)}/{len(ok)}",
        "nginx_replicas_serving": [_host_of(cluster, a) for a in served],
        "nginx_after_web1_killed": [r.status_code for r in after],
        "nginx_session_survives_web1_kill": done.status_code == 302 and all(ok)
        and killed > 0 and len(served) == 2,
    }  # fmt: skip


def _access_log(cluster: Cluster) -> list[str]:
    path = cluster.workdir / "px" / "access.log"
    return path.read_text().splitlines() if path.exists() else []


def _host_of(cluster: Cluster, upstream: str) -> str:
    address = upstream.rpartition(":")[0]
    return next((t for t, h in cluster.net.hosts.items() if h.address == address), upstream)


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


__all__ = ["SHORT", "ClusterError", "ClusterPlan", "ClusterReport", "run_cluster"]
