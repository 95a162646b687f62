"""Hosts as Linux network namespaces on one machine: a private switch, one veth pair per
host, kill and partition by host.

``Network`` creates, as root, a bridge in the root namespace (``<prefix>-sw``, address
``10.77.X.254/24`` with X picked among the /24s not in use, so concurrent runs do not
clash) and for each host a namespace ``<prefix>-<host>`` holding ``lo`` and ``eth0``
(``10.77.X.n``), the other end of whose veth pair (``<prefix>-<host>``) is a port of the
bridge. Traffic stays between the namespaces and the root namespace's bridge address,
from which the harness watches every host; nothing is routed further.

- ``run(host, argv)``: a process inside the host's namespace (``ip netns exec``);
- ``kill(host)``: SIGKILL every process of the namespace (a host losing power);
- ``partition(host)`` / ``heal(host)``: its switch port down / up (a cable pulled: the
  host keeps running, packets are dropped both ways, open TCP connections time out
  or resume when the cable is back);
- ``close()``: every process killed, every namespace and link removed, also after a
  failure; ``cleanup(PREFIX)`` removes what a killed run left behind.

Names carry ``PREFIX`` and a per-run id (interface names are limited to 15 bytes).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import secrets
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

#: Every namespace and link of a cluster run starts with this.
PREFIX = "nzc"
#: The /16 the per-run /24 is picked from.
SUPERNET = ipaddress.ip_network("10.77.0.0/16")
#: Longest host tag: ``PREFIX`` + 4 hex + "-" + tag must fit in 15 bytes.
MAX_TAG = 6


class NetnsError(RuntimeError):
    """A namespace or link could not be created, or a command in it failed."""


def ip(*args: str, check: bool = True) -> str:
    """Run ``ip ARGS``; its stdout. NetnsError naming the command when it fails."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and done.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def available() -> str | None:
    """Why namespaces cannot be used here (None when they can): root and ``ip`` needed."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    try:
        ip("netns", "list")
    except (OSError, NetnsError) as exc:
        return f"ip netns does not work: {exc}"
    return None


def _subnets_in_use() -> set[ipaddress.IPv4Network]:
    used = set()
    for line in ip("-4", "-o", "addr").splitlines() + ip("-4", "route").splitlines():
        for token in re.findall(r"\d+\.\d+\.\d+\.\d+(?:/\d+)?", line):
            with contextlib.suppress(ValueError):
                used.add(ipaddress.ip_network(token, strict=False).supernet(new_prefix=24))
    return used


def pick_subnet() -> ipaddress.IPv4Network:
    """A random /24 of ``SUPERNET`` that no address or route of this machine touches."""
    used = _subnets_in_use()
    free = [net for net in SUPERNET.subnets(new_prefix=24) if net not in used]
    if not free:
        raise NetnsError(f"every /24 of {SUPERNET} is in use")
    return free[secrets.randbelow(len(free))]


@dataclass
class Host:
    """One host: its namespace, address, switch port and the processes started in it."""

    tag: str
    netns: str
    port: str
    address: str
    procs: list[subprocess.Popen] = field(default_factory=list)
    partitioned: bool = False


@dataclass
class Network:
    """A switch and hosts (see the module docstring). Use as a context manager."""

    run_id: str = field(default_factory=lambda: secrets.token_hex(2))
    hosts: dict[str, Host] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.prefix = f"{PREFIX}{self.run_id}"
        self.switch = f"{self.prefix}-sw"
        self.subnet = pick_subnet()
        self._addresses = iter(self.subnet.hosts())
        self.operator_address = str(self.subnet.network_address + 254)
        ip("link", "add", self.switch, "type", "bridge")
        try:
            ip("addr", "add", f"{self.operator_address}/24", "dev", self.switch)
            ip("link", "set", self.switch, "up")
        except NetnsError:
            ip("link", "del", self.switch, check=False)
            raise

    def __enter__(self) -> Network:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add_host(self, tag: str) -> Host:
        """Create host ``tag`` (letters/digits, at most ``MAX_TAG``): namespace, veth
        pair on the switch, ``lo`` and ``eth0`` up. Returns it."""
        if not re.fullmatch(f"[a-z0-9]{{1,{MAX_TAG}}}", tag) or tag in self.hosts:
            raise NetnsError(f"host tag {tag!r}: 1-{MAX_TAG} lower-case letters/digits, unique")
        host = Host(tag, f"{self.prefix}-{tag}", f"{self.prefix}-{tag}", str(next(self._addresses)))
        self.hosts[tag] = host
        ip("netns", "add", host.netns)
        ip("link", "add", host.port, "type", "veth", "peer", "name", "eth0", "netns", host.netns)
        ip("link", "set", host.port, "master", self.switch)
        ip("link", "set", host.port, "up")
        ip("-n", host.netns, "addr", "add", f"{host.address}/24", "dev", "eth0")
        ip("-n", host.netns, "link", "set", "eth0", "up")
        ip("-n", host.netns, "link", "set", "lo", "up")
        return host

    def run(
        self,
        tag: str,
        argv: list[str],
        log: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen:
        """Start ``argv`` inside host ``tag``, stdout and stderr appended to ``log``."""
        host = self.hosts[tag]
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", host.netns, *argv],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=cwd,
            )
        host.procs.append(proc)
        return proc

    def pids(self, tag: str) -> list[int]:
        """Every process living in host ``tag``'s namespace."""
        out = ip("netns", "pids", self.hosts[tag].netns, check=False)
        return [int(p) for p in out.split()]

    def kill(self, tag: str, timeout_s: float = 10.0) -> int:
        """SIGKILL every process of host ``tag`` (children of children too); returns how
        many were killed."""
        killed = _kill_namespace(self.hosts[tag].netns, timeout_s)
        for proc in self.hosts[tag].procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=timeout_s)
        self.hosts[tag].procs = [p for p in self.hosts[tag].procs if p.poll() is None]
        return killed

    def partition(self, tag: str) -> None:
        """Cut host ``tag`` off the switch (both directions)."""
        ip("link", "set", self.hosts[tag].port, "down")
        self.hosts[tag].partitioned = True

    def heal(self, tag: str) -> None:
        """Plug host ``tag`` back in."""
        ip("link", "set", self.hosts[tag].port, "up")
        self.hosts[tag].partitioned = False

    def close(self) -> None:
        """Kill every process, remove every namespace and the switch (best effort, all of
        them even when one fails)."""
        for tag, host in list(self.hosts.items()):
            with contextlib.suppress(Exception):
                self.kill(tag)
            ip("netns", "del", host.netns, check=False)
            ip("link", "del", host.port, check=False)
        ip("link", "del", self.switch, check=False)


def _kill_namespace(netns: str, timeout_s: float) -> int:
    killed: set[int] = set()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pids = [int(p) for p in ip("netns", "pids", netns, check=False).split()]
        alive = [p for p in pids if _alive(p)]
        if not alive:
            break
        for pid in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
        time.sleep(0.05)
    return len(killed)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def leftovers(prefix: str = PREFIX) -> tuple[list[str], list[str]]:
    """Namespaces and links whose names start with ``prefix``."""
    namespaces = [line.split()[0] for line in ip("netns", "list").splitlines() if line.strip()]
    links = [
        m.group(1) for m in re.finditer(r"^\d+: ([^:@\s]+)", ip("-o", "link"), flags=re.MULTILINE)
    ]
    return (
        [n for n in namespaces if n.startswith(prefix)],
        [n for n in links if n.startswith(prefix)],
    )


def cleanup(prefix: str = PREFIX) -> list[str]:
    """Kill the processes of and remove every namespace and link named ``prefix...``
    (what a killed run left behind); returns the names removed."""
    namespaces, links = leftovers(prefix)
    for netns in namespaces:
        _kill_namespace(netns, 10.0)
        ip("netns", "del", netns, check=False)
    for link in links:
        ip("link", "del", link, check=False)
    return namespaces + [link for link in links if link not in namespaces]
