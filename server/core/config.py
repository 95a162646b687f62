"""Typed configuration: one TOML file plus ``NAMAZU_*`` environment overrides.

Lookup order (later wins): built-in defaults < TOML file (``--config`` or
``NAMAZU_CONFIG``) < environment variables ``NAMAZU_<SECTION>__<KEY>`` (for example
``NAMAZU_MQTT__PASSWORD``). Secrets belong in the environment, never in the file.
Invalid configuration fails fast with a message naming the key and the reason.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tomllib
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from namazu.analytics.params import EvaluationParams, RuleParams

ENV_PREFIX = "NAMAZU_"

#: Name of the [influx] instance among the InfluxDB instances (reserved).
DEFAULT_INFLUX_INSTANCE = "default"
_INSTANCE_NAME = re.compile(r"[a-z][a-z0-9_]*")


class ConfigError(Exception):
    """The configuration is invalid; the message names the key and the reason."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StackConfig(_Section):
    """Local Mosquitto + InfluxDB started by ``namazu stack``."""

    data_dir: Path = Field(Path("var"), description="directory holding configs, data and logs")
    mqtt_port: int = Field(1883, ge=0, le=65535, description="Mosquitto port (0 = a free port)")
    influx_http_port: int = Field(8086, ge=0, le=65535, description="InfluxDB HTTP port (0 = free)")
    influx_rpc_port: int = Field(8088, ge=0, le=65535, description="InfluxDB backup/RPC port")
    mosquitto_bin: str = Field("/usr/sbin/mosquitto", description="path of the mosquitto binary")
    influxd_bin: str = Field("/usr/bin/influxd", description="path of the influxd binary")


class MqttConfig(_Section):
    """Broker connection used by the bridge, ingest and the scheduler."""

    host: str = Field("127.0.0.1", description="broker host name")
    port: int = Field(1883, ge=1, le=65535, description="broker port")
    username: str | None = Field(None, description="user name (None = anonymous)")
    password: str | None = Field(None, description="password; set via NAMAZU_MQTT__PASSWORD")
    tls: bool = Field(False, description="connect with TLS")
    ca_file: Path | None = Field(None, description="CA certificate for TLS")
    keepalive_s: int = Field(30, ge=5, description="MQTT keepalive [s]")
    client_id: str | None = Field(None, description="stable client id (default derived)")


class InfluxConfig(_Section):
    """InfluxDB HTTP API (/write line protocol, /query InfluxQL)."""

    url: str = Field("http://127.0.0.1:8086", description="base URL of the InfluxDB HTTP API")
    database: str = Field("namazu", description="database name")
    username: str | None = Field(
        None, description="user name (1.x user, or a 2.x v1 authorisation) for HTTP Basic"
    )
    password: str | None = Field(None, description="password; set via NAMAZU_INFLUX__PASSWORD")
    token: str | None = Field(
        None,
        description="API token (2.x, 3.x), sent as 'Authorization: Token ...'; "
        "set via NAMAZU_INFLUX__TOKEN; instead of username/password",
    )
    create_database: bool = Field(
        True,
        description="send CREATE DATABASE at start (1.x); skipped anyway where the server "
        "does not implement it (2.x) or creates databases on write (3.x)",
    )
    timeout_s: float = Field(10.0, gt=0, description="HTTP timeout [s]")
    rollup_retention_policy: str = Field(
        "",
        pattern=r'^[^"\\]*$',
        description="retention policy of the panel's downsampled rollups (one that outlives "
        "the raw data, e.g. forever); empty = the database's default policy",
    )

    @model_validator(mode="after")
    def _one_way_to_authenticate(self) -> InfluxConfig:
        if self.token and self.username:
            raise ValueError("set either token or username/password, not both")
        return self


class IngestConfig(_Section):
    """Ingest service: MQTT -> validation -> batched InfluxDB writes."""

    shared_group: str = Field("namazu-ingest", description="MQTT v5 shared-subscription group")
    client_id: str = Field("namazu-ingest-1", description="stable client id of this worker")
    batch_max_points: int = Field(50_000, ge=1, description="flush when this many points wait")
    batch_max_age_s: float = Field(0.2, gt=0, description="flush at least this often [s]")
    max_pending_messages: int = Field(
        20_000, ge=1, description="unacknowledged messages held in memory before pausing"
    )
    max_future_s: float = Field(300.0, ge=0, description="reject samples further ahead [s]")
    max_age_days: float = Field(400.0, gt=0, description="reject samples older than this [days]")
    metrics_port: int = Field(
        0, ge=0, le=65535, description="Prometheus /metrics port of ingest (0 = disabled)"
    )
    open_enrolment: bool = Field(
        False,
        description="store data of any farm id; false: only farms listed under [[farms]] "
        "are stored, data of any other farm is dead-lettered as unknown_farm",
    )
    heartbeat_s: float = Field(
        2.0,
        gt=0,
        le=60,
        description="period of the presence heartbeat on namazu/v1/_ingest/alive, sent "
        "while subscribed (the first right after each SUBACK) [s]",
    )
    seq_ledger_retention_days: float = Field(
        30.0,
        gt=0,
        description="keep the digest of each activity message's values this long in the "
        "state store (message_digests), so a sequence number re-sent with other values is "
        "a seq_conflict on every worker and after restarts; longer than any gateway spool "
        "holds [days]",
    )


class BridgeConfig(_Section):
    """Gateway side: collar frames -> activity -> spooled MQTT publisher."""

    farm: str = Field("demo-farm", description="farm id (topic segment)")
    gateway: str = Field("gw-1", description="gateway id (topic segment)")
    spool_path: Path = Field(Path("var/spool.sqlite"), description="SQLite spool file")
    batch_samples: int = Field(100, ge=1, description="samples per published message")
    max_inflight: int = Field(1000, ge=1, le=65535, description="unacknowledged QoS1 messages")
    source: str = Field("simulator", description="simulator | udp://HOST:PORT | serial:///dev/X")
    metrics_port: int = Field(
        0, ge=0, le=65535, description="Prometheus /metrics port of the bridge (0 = disabled)"
    )
    wait_for_ingest: bool = Field(
        True,
        description="after every (re)connect, hold the spool until an ingest heartbeat "
        "arrives on namazu/v1/_ingest/alive (false: send at once, e.g. without Namazu ingest)",
    )
    confirm: Literal["receipt", "puback"] = Field(
        "receipt",
        description="when a spooled message is deleted: on the ingest receipt saying it is "
        "stored (receipt), or on the broker's PUBACK (puback: a broker without Namazu "
        "ingest; a broker crash can then lose what it had accepted)",
    )
    receipt_timeout_s: float = Field(
        60.0,
        gt=0,
        description="send unconfirmed messages again when no receipt confirmed anything "
        "for this long (doubling up to 16x while none comes) [s]",
    )
    spool_max_mb: float = Field(
        1000.0,
        ge=0,
        description="disk budget of the spool in MB of payload (0 = unlimited); when it "
        "is reached new data is refused (collars that keep frames resend them later) and "
        "the data already spooled is kept",
    )


class FarmConfig(_Section):
    """One monitored farm."""

    id: str = Field(
        ...,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        description="farm id used in topics and tags: a letter or digit, then up to 63 "
        "letters, digits, '_', '.' or '-' (what a topic segment and the state store take)",
    )
    name: str = Field("", description="human-readable name")
    latitude: float = Field(..., ge=-90, le=90, description="farm latitude [deg N]")
    longitude: float = Field(..., ge=-180, le=180, description="farm longitude [deg E]")
    timezone: str = Field("UTC", description="IANA zone for display and local-time input")
    influx_instance: str | None = Field(
        None,
        description="name of the [influx_instances.NAME] holding this farm's data; "
        f"unset or {DEFAULT_INFLUX_INSTANCE!r} = the default [influx]",
    )


class SchedulerConfig(_Section):
    """Scheduled jobs."""

    tick_s: float = Field(60.0, gt=0, description="detection tick cadence [s]")
    resolution_s: int = Field(
        900, gt=0, description="grid step of the live rule [s]; 15 min (see detection/tick.py)"
    )
    aggregate: Literal["median", "mean"] = Field(
        "median", description="how the raw samples of one grid step make its value"
    )
    stale_after_s: float = Field(600.0, gt=0, description="animal flagged silent after [s]")
    catalog_refresh_s: float = Field(600.0, gt=0, description="catalogue refresh cadence [s]")
    catalog_sources: list[str] = Field(
        default_factory=list, description="FDSN names (INGV, USGS, EMSC) or fdsnws URLs"
    )
    catalog_min_magnitude: float = Field(
        2.5, ge=-2, le=10, description="smallest magnitude the catalogue refresh fetches"
    )
    catalog_radius_km: float = Field(
        1000.0, gt=0, le=20_000, description="radius around each farm the refresh fetches [km]"
    )
    catalog_history_days: float = Field(
        365.0, gt=0, le=36_500, description="depth of the first catalogue fetch [days]"
    )
    alarm_log_path: Path = Field(Path("var/alarm-log.jsonl"), description="hash-chained log")
    alarm_log_signing_key: Path | None = Field(
        None,
        description="Ed25519 private key (PEM) that signs each record, outside the log's "
        "directory; unset: records are unsigned (namazu keys generate)",
    )
    alarm_log_keyring: Path | None = Field(
        None, description="public keys with validity (JSON) that verify-log and the panel trust"
    )
    tsa_url: str | None = Field(
        None, description="RFC 3161 time-stamping authority that stamps the chain head"
    )
    tsa_ca_file: Path | None = Field(None, description="PEM CA file that certifies the TSA")
    tsa_interval_s: float = Field(
        3600.0, gt=0, le=3600, description="the head is stamped at least this often [s]"
    )
    tsa_timeout_s: float = Field(10.0, gt=0, description="HTTP timeout of the TSA [s]")
    verify_log_s: float = Field(
        3600.0,
        gt=0,
        description="how often the alarm log's chain is checked against the state store "
        "(namazu_alarm_log_verified) [s]",
    )
    metrics_port: int = Field(
        0, ge=0, le=65535, description="Prometheus /metrics port of the scheduler (0 = disabled)"
    )
    replica_id: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="this scheduler's name when several share the farms through leases in "
        "the state store (PostgreSQL); its alarm log is alarm_log_path with the name added",
    )
    lease_ttl_s: float | None = Field(
        None,
        gt=0,
        description="how long a replica's farm leases last unrenewed [s]; default 1.25 "
        "tick_s, so the farms of a replica that died move within 2.25 ticks",
    )


class MailConfig(_Section):
    """Alert e-mails over SMTP."""

    enabled: bool = Field(False, description="send alert e-mails")
    host: str = Field("127.0.0.1", description="SMTP host")
    port: int = Field(25, ge=1, le=65535, description="SMTP port")
    security: Literal["none", "starttls", "ssl"] = Field("starttls", description="transport")
    username: str | None = Field(None, description="SMTP user")
    password: str | None = Field(None, description="SMTP password; NAMAZU_MAIL__PASSWORD")
    sender: str = Field("namazu@localhost", description="From address")
    cooldown_min: float = Field(60.0, ge=0, description="per recipient+farm cooldown [min]")
    max_refused_attempts: int = Field(
        3, ge=1, description="5xx refusals after which a mail is marked failed [count]"
    )
    refused_retry_h: float = Field(24.0, gt=0, description="wait after a 5xx refusal [h]")


class WebConfig(_Section):
    """Flask panel and JSON API."""

    host: str = Field("127.0.0.1", description="listen address")
    port: int = Field(8000, ge=0, le=65535, description="listen port")
    secret_key: str | None = Field(
        None,
        description="session key, the same on every replica; required with more than one "
        "worker; NAMAZU_WEB__SECRET_KEY",
    )
    secure_cookies: bool = Field(True, description="mark session cookies Secure")
    lorawan_registry: Path = Field(
        Path("var/lorawan/devices.toml"),
        description="LoRaWAN device registry the admin page edits (the bridge's --registry)",
    )
    trusted_proxy_hops: int = Field(
        0,
        ge=0,
        le=5,
        description="reverse proxies in front that set X-Forwarded-For/-Proto "
        "(1 behind the shipped nginx); 0: the headers are ignored",
    )
    login_free_failures: int = Field(
        5, ge=1, description="failed log-ins per account before delays begin [count]"
    )
    login_base_delay_s: float = Field(1.0, gt=0, description="first log-in delay, doubling [s]")
    login_max_delay_s: float = Field(
        60.0, gt=0, description="longest delay between tries on one account [s]"
    )
    login_window_s: float = Field(3600.0, gt=0, description="failures are forgotten after [s]")
    login_device_failures: int = Field(
        10, ge=1, description="failures from a known browser before its own delays [count]"
    )
    login_address_failures: int = Field(
        20, ge=1, description="failed log-ins per client address over all accounts [count]"
    )
    login_address_window_s: float = Field(
        600.0, gt=0, description="window of the per-address limit [s]"
    )
    login_notify_after: int = Field(
        10, ge=1, description="failures on an account that e-mail its user [count]"
    )
    login_notify_interval_s: float = Field(
        21600.0, gt=0, description="at most one such e-mail per account per [s]"
    )
    heavy_global_limit: int = Field(
        2,
        ge=1,
        description="exports and evaluations running at once over all workers of the panel "
        "host, or of all replicas with a PostgreSQL state store (about one per core)",
    )
    heavy_per_user_limit: int = Field(
        1,
        ge=1,
        description="exports and evaluations running at once per user, over the same workers",
    )
    runtime_dir: Path | None = Field(
        None,
        description="directory of the heavy-request slot lock files, shared by the panel's "
        "workers on one host, with a SQLite state store (PostgreSQL: advisory locks instead) "
        "(None = heavy-slots beside a SQLite state store, else <stack.data_dir>/heavy-slots)",
    )
    evaluation_max_shifts: int = Field(
        500, ge=0, le=2000, description="cap on the evaluation's circular shifts [count]"
    )
    export_chunk_days: float = Field(
        1.0, gt=0, le=31, description="an export reads and sends this much at a time [days]"
    )
    base_url: str = Field(
        "",
        pattern=r"^(https?://[^\s]+)?$",
        description="the panel's address as readers reach it (links in alert e-mails), "
        "e.g. https://namazu.example.org; empty = mails carry no links",
    )
    workers: int = Field(1, ge=1, le=64, description="gunicorn worker processes of namazu web")
    threads: int = Field(8, ge=1, le=256, description="threads per worker process")
    timeout_s: float = Field(
        120.0, ge=10, description="a worker silent this long is replaced (long exports) [s]"
    )


class StateConfig(_Section):
    """State store: users, reviews, farm events, outbox, alarms."""

    url: str = Field("sqlite:///var/state.sqlite", description="SQLAlchemy URL")


class NamazuConfig(_Section):
    """The whole configuration."""

    stack: StackConfig = StackConfig()
    mqtt: MqttConfig = MqttConfig()
    influx: InfluxConfig = InfluxConfig()
    influx_instances: dict[str, InfluxConfig] = Field(
        default_factory=dict,
        description="further InfluxDB instances by name, each with the keys of [influx]; "
        "a farm is stored in one when its influx_instance names it",
    )
    ingest: IngestConfig = IngestConfig()
    bridge: BridgeConfig = BridgeConfig()
    farms: list[FarmConfig] = Field(
        default_factory=lambda: [
            FarmConfig(id="demo-farm", name="Demo farm", latitude=43.0147, longitude=13.0509)
        ],
        description="monitored farms",
    )
    rule: dict[str, Any] = Field(default_factory=dict, description="RuleParams overrides")
    evaluation: dict[str, Any] = Field(
        default_factory=dict, description="EvaluationParams overrides"
    )
    scheduler: SchedulerConfig = SchedulerConfig()
    mail: MailConfig = MailConfig()
    web: WebConfig = WebConfig()
    state: StateConfig = StateConfig()

    @field_validator("influx_instances")
    @classmethod
    def _check_instance_names(cls, value: dict[str, InfluxConfig]) -> dict[str, InfluxConfig]:
        for name in value:
            if name == DEFAULT_INFLUX_INSTANCE or not _INSTANCE_NAME.fullmatch(name):
                raise ValueError(
                    f"instance name {name!r}: use lower-case letters, digits and _ "
                    f"(starting with a letter), other than {DEFAULT_INFLUX_INSTANCE!r}"
                )
        return value

    @model_validator(mode="after")
    def _farms_name_known_instances(self) -> NamazuConfig:
        known_names = self.influx_configs()
        for farm in self.farms:
            if farm.influx_instance is None or farm.influx_instance in known_names:
                continue
            known = ", ".join(known_names)
            raise ValueError(
                f"farms: farm {farm.id!r} names unknown influx_instance "
                f"{farm.influx_instance!r}; known instances: {known}"
            )
        return self

    def influx_instance_of(self, farm_id: str) -> str:
        """Name of the InfluxDB instance holding ``farm_id`` (``"default"`` for [influx],
        also for farms not listed under [[farms]])."""
        for farm in self.farms:
            if farm.id == farm_id:
                return farm.influx_instance or DEFAULT_INFLUX_INSTANCE
        return DEFAULT_INFLUX_INSTANCE

    def influx_configs(self) -> dict[str, InfluxConfig]:
        """Every InfluxDB instance by name: ``"default"`` ([influx]) first, then
        [influx_instances.NAME] in file order."""
        return {DEFAULT_INFLUX_INSTANCE: self.influx, **self.influx_instances}

    @field_validator("rule")
    @classmethod
    def _check_rule(cls, value: dict[str, Any]) -> dict[str, Any]:
        _build(RuleParams, value, "rule")
        return value

    @field_validator("evaluation")
    @classmethod
    def _check_evaluation(cls, value: dict[str, Any]) -> dict[str, Any]:
        _build(EvaluationParams, value, "evaluation")
        return value

    def rule_params(self) -> RuleParams:
        """The anomaly-rule parameters (defaults overridden by ``[rule]``)."""
        return _build(RuleParams, self.rule, "rule")

    def evaluation_params(self) -> EvaluationParams:
        """The evaluation parameters (defaults overridden by ``[evaluation]``)."""
        return _build(EvaluationParams, self.evaluation, "evaluation")

    def farm(self, farm_id: str) -> FarmConfig:
        """The farm with this id; ConfigError naming the known ids otherwise."""
        for farm in self.farms:
            if farm.id == farm_id:
                return farm
        known = ", ".join(f.id for f in self.farms) or "none"
        raise ConfigError(f"farms: unknown farm {farm_id!r}; configured: {known}")


def _type_problem(value: Any, annotation: Any) -> str | None:
    """Why ``value`` does not fit a parameter annotated ``annotation`` (None when it fits)."""
    allowed = typing.get_args(annotation) if typing.get_origin(annotation) else (annotation,)
    if value is None:
        return None if type(None) in allowed else "expected a number, got nothing"
    if isinstance(value, bool) or not isinstance(value, int | float):
        wanted = "an integer" if int in allowed and float not in allowed else "a number"
        return f"expected {wanted}, got {type(value).__name__} {value!r}"
    if isinstance(value, float) and float not in allowed:
        return f"expected an integer, got {value!r}"
    return None


def _build(cls: type, values: dict[str, Any], section: str) -> Any:
    """Build a parameter dataclass, naming the unknown or invalid key of ``section``."""
    known = set(cls.__dataclass_fields__)
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        if key not in known:
            raise ValueError(f"unknown key {key!r}; valid keys: {', '.join(sorted(known))}")
        problem = _type_problem(value, hints[key])
        if problem:
            raise ValueError(f"{key}: {problem}")
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise ValueError(str(exc)) from exc


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    """``NAMAZU_SECTION__KEY=value`` -> {"section": {"key": value}} (values parsed as TOML)."""
    out: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX) :].split("__")]
        try:
            value: Any = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return out


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        key = ".".join(str(p) for p in item["loc"])
        msg = item["msg"].removeprefix("Value error, ")
        if not key:  # a check across sections: the message names its keys
            parts.append(msg)
            continue
        named = re.match(r"([a-z_]+): (.*)", msg, re.DOTALL)
        if named and item["loc"] in (("rule",), ("evaluation",)):
            key, msg = f"{key}.{named[1]}", named[2]
        parts.append(f"{key}: {msg}")
    return "; ".join(parts)


def load_config(
    path: str | Path | None = None, environ: dict[str, str] | None = None
) -> NamazuConfig:
    """Load and validate the configuration.

    path : TOML file; default ``$NAMAZU_CONFIG`` or none (defaults only).
    environ : environment mapping for overrides; default ``os.environ``.
    Raises ConfigError naming the bad key and why.
    """
    env = dict(os.environ if environ is None else environ)
    path = path or env.get("NAMAZU_CONFIG")
    data: dict[str, Any] = {}
    if path:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    data = _merge(data, _env_overrides({k: v for k, v in env.items() if k != "NAMAZU_CONFIG"}))
    try:
        return NamazuConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from exc


def main(argv: list[str]) -> int:
    """``namazu check-config [--config FILE]``: validate and print the effective config."""
    parser = argparse.ArgumentParser(prog="namazu check-config", description=main.__doc__)
    parser.add_argument("--config", help="TOML file (default $NAMAZU_CONFIG)")
    parser.add_argument("--quiet", action="store_true", help="print nothing when valid")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"namazu check-config: invalid configuration: {exc}", file=sys.stderr)
        return 2
    if not args.quiet:
        shown = config.model_dump(mode="json")
        sections = [shown.get(s, {}) for s in ("mqtt", "influx", "mail", "web")]
        sections += shown.get("influx_instances", {}).values()
        for section in sections:
            for key in ("password", "secret_key", "token"):
                if section.get(key):
                    section[key] = "***"
        import json

        print(json.dumps(shown, indent=2))
        print("configuration is valid", file=sys.stderr)
    return 0
