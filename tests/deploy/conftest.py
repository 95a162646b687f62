"""Fixtures for the deployment tests: the shipped Mosquitto config on a real broker."""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from namazu.server.launch.stack import free_port, port_open

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
MOSQUITTO = "/usr/sbin/mosquitto"

PASSWORDS = {
    "farmA/gw1": "gateway-a-secret",
    "farmB/gw1": "gateway-b-secret",
    "namazu-ingest": "ingest-secret",
    "namazu-server": "server-secret",
    "namazu-monitor": "monitor-secret",
    "namazu-replay": "replay-secret",
}


def make_tls_files(directory: Path, address: str = "127.0.0.1") -> None:
    """A self-signed CA and a server certificate for ``address``/localhost (EC P-256)."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=Namazu test CA")  # fmt: skip
    run("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    (directory / "san.ext").write_text(f"subjectAltName=IP:{address},DNS:localhost\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "san.ext")  # fmt: skip


def adapt_config(text: str, directory: Path, plain_port: int, tls_port: int) -> str:
    """The shipped broker config with paths, ports and logging moved into ``directory``.

    Every substitution must apply, so a change to the shipped file that this test no
    longer understands fails loudly instead of testing something else.
    """
    replacements = {
        "/etc/mosquitto/namazu/": f"{directory}/",
        "/var/lib/mosquitto/": f"{directory}/data/",
        "listener 1883 127.0.0.1": f"listener {plain_port} 127.0.0.1",
        "listener 8883\n": f"listener {tls_port} 127.0.0.1\n",
        "log_dest syslog": f"log_dest file {directory}/mosquitto.log",
    }
    for old, new in replacements.items():
        assert old in text, f"deploy/mosquitto/namazu.conf no longer contains {old!r}"
        text = text.replace(old, new)
    if os.geteuid() == 0:
        text += "\nuser root\n"
    return text


@dataclass
class SecureBroker:
    """The shipped secure Mosquitto configuration running on loopback."""

    directory: Path
    plain_port: int
    tls_port: int

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.crt"

    def log_text(self) -> str:
        path = self.directory / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory):
    """Mosquitto with deploy/mosquitto/{namazu.conf,acl}, gateway accounts made by
    deploy/mosquitto/add-gateway.sh and a TLS listener with a throw-away CA."""
    directory = tmp_path_factory.mktemp("mosquitto-secure")
    (directory / "data").mkdir()
    make_tls_files(directory)
    (directory / "acl").write_text((DEPLOY / "mosquitto" / "acl").read_text())
    passwd = directory / "passwd"
    for user, password in PASSWORDS.items():
        if "/" in user:
            farm, gateway = user.split("/")
            env = {**os.environ, "NAMAZU_GATEWAY_PASSWORD": password}
            subprocess.run(
                ["sh", str(DEPLOY / "mosquitto" / "add-gateway.sh"), farm, gateway, str(passwd)],
                check=True,
                capture_output=True,
                env=env,
            )
        else:
            subprocess.run(
                ["mosquitto_passwd", "-b", str(passwd), user, password],
                check=True,
                capture_output=True,
            )
    broker = SecureBroker(directory, free_port(), free_port())
    conf = directory / "mosquitto.conf"
    conf.write_text(
        adapt_config(
            (DEPLOY / "mosquitto" / "namazu.conf").read_text(),
            directory,
            broker.plain_port,
            broker.tls_port,
        )
    )
    proc = subprocess.Popen(
        [MOSQUITTO, "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not (port_open(broker.plain_port) and port_open(broker.tls_port)):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"secure mosquitto did not start; log:\n{broker.log_text()[-2000:]}")
            time.sleep(0.05)
        yield broker
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@dataclass
class Client:
    """A paho client that records CONNACK, received messages and PUBACK reason codes."""

    client: mqtt.Client
    connack: threading.Event = field(default_factory=threading.Event)
    reason_code: int | None = None
    subscribed: threading.Event = field(default_factory=threading.Event)
    granted: list[int] = field(default_factory=list)
    messages: list[tuple[str, bytes]] = field(default_factory=list)
    puback: dict[int, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def topics(self) -> list[str]:
        with self.lock:
            return [topic for topic, _ in self.messages]

    def wait_for_topic(self, topic: str, timeout_s: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if topic in self.topics():
                return True
            time.sleep(0.02)
        return False

    def subscribe(self, topic: str, timeout_s: float = 5.0) -> list[int]:
        self.subscribed.clear()
        self.client.subscribe(topic, qos=1)
        assert self.subscribed.wait(timeout_s), f"no SUBACK for {topic}"
        return list(self.granted)

    def publish(self, topic: str, payload: bytes = b"{}", timeout_s: float = 5.0) -> int | None:
        """Publish QoS 1 and wait for the PUBACK; returns its reason code (MQTT v5)."""
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(timeout_s)
        deadline = time.monotonic() + timeout_s
        while info.mid not in self.puback and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.puback.get(info.mid)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def connect(
    port: int,
    username: str | None = None,
    password: str | None = None,
    ca_file: Path | None = None,
    tls: bool = False,
    protocol: mqtt.MQTTProtocolVersion = mqtt.MQTTProtocolVersion.MQTTv5,
    client_id: str = "",
    timeout_s: float = 5.0,
) -> Client:
    """Connect and wait for the CONNACK (or a TLS failure); inspect ``reason_code``."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
    wrapper = Client(client)

    def on_connect(_c, _u, _flags, reason_code, _props):
        wrapper.reason_code = reason_code.value
        wrapper.connack.set()

    def on_connect_fail(_c, _u):
        wrapper.connack.set()

    def on_subscribe(_c, _u, _mid, reason_codes, _props):
        wrapper.granted = [code.value for code in reason_codes]
        wrapper.subscribed.set()

    def on_message(_c, _u, message):
        with wrapper.lock:
            wrapper.messages.append((message.topic, message.payload))

    def on_publish(_c, _u, mid, reason_code, _props):
        wrapper.puback[mid] = reason_code.value

    client.on_connect = on_connect
    client.on_connect_fail = on_connect_fail
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.on_publish = on_publish
    if username is not None:
        client.username_pw_set(username, password)
    if tls:
        client.tls_set(ca_certs=str(ca_file) if ca_file else None)
    try:
        client.connect("127.0.0.1", port, keepalive=10)
    except OSError:  # includes ssl.SSLError: handshake refused
        wrapper.reason_code = None
        return wrapper
    client.loop_start()
    wrapper.connack.wait(timeout_s)
    if wrapper.reason_code != 0:
        client.loop_stop()
    return wrapper


RETENTION = DEPLOY / "influxdb" / "retention.iql"


def retention_statements(database: str) -> list[str]:
    """The InfluxQL statements of deploy/influxdb/retention.iql, for ``database``."""
    text = RETENTION.read_text().replace('"namazu"', f'"{database}"')
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def cq_select(database: str) -> str:
    """The SELECT ... INTO inside the continuous query of retention.iql."""
    for statement in retention_statements(database):
        match = re.search(r"^CREATE CONTINUOUS QUERY .*? BEGIN (SELECT .*) END$", statement)
        if match:
            return match.group(1)
    raise AssertionError("retention.iql has no CREATE CONTINUOUS QUERY ... BEGIN SELECT ... END")
