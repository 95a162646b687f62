"""One plain log line when a service this process needs cannot be reached.

Operators read, at the first failure and then again every ``repeat_s`` while it lasts::

    cannot reach broker 127.0.0.1:1883 (connection refused); 50 samples spooled; retrying in 4 s

It is a WARNING for the first ``escalate_after_s`` and an ERROR after that; when the
service answers again one INFO says so and for how long it was away. The line carries
the same facts as fields (``service``, ``address``, ``reason``, ``down_s``, ``retry_s``).
"""

from __future__ import annotations

import logging
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["BrokerReachability", "Reachability", "describe_error"]

_TEXT_REASONS = (
    ("connection refused", "connection refused"),
    ("timed out", "timed out"),
    ("name or service not known", "host name not resolved"),
    ("temporary failure in name resolution", "host name not resolved"),
    ("no route to host", "no route to host"),
    ("network is unreachable", "network unreachable"),
    ("connection reset", "connection reset"),
)


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and everything it wraps (causes, contexts, urllib3 reasons), breadth first."""
    seen: list[BaseException] = []
    queue: list[BaseException] = [exc]
    while queue and len(seen) < 20:
        item = queue.pop(0)
        if any(item is s for s in seen):
            continue
        seen.append(item)
        wrapped = [item.__cause__, item.__context__, getattr(item, "reason", None)]
        wrapped += [a for a in getattr(item, "args", ()) if isinstance(a, BaseException)]
        queue += [w for w in wrapped if isinstance(w, BaseException)]
    return seen


def describe_error(error: BaseException | str) -> str:
    """A short, lower-case reason: "connection refused", "timed out", "HTTP 503", ..."""
    if isinstance(error, str):
        return error
    for item in _causes(error):
        if isinstance(item, ConnectionRefusedError):
            return "connection refused"
        if isinstance(item, socket.gaierror):
            return "host name not resolved"
        if isinstance(item, TimeoutError | socket.timeout):
            return "timed out"
        if isinstance(item, ssl.SSLError):
            return f"TLS failed: {item.reason or item}"
    text = " ".join(str(item) for item in _causes(error)).lower()
    for needle, reason in _TEXT_REASONS:
        if needle in text:
            return reason
    for item in _causes(error):
        if isinstance(item, OSError) and item.strerror:
            return item.strerror.lower()
    return str(error)[:200] or type(error).__name__


class Reachability:
    """Rate-limited reports about one service that cannot be reached.

    logger : where the lines go. service : what it is ("broker", "InfluxDB").
    address : where it is ("HOST:PORT", a URL). repeat_s : seconds between repeated
    lines while it stays away. escalate_after_s : from then on the line is an ERROR.
    clock : monotonic time source [s] (injectable for tests).
    """

    def __init__(
        self,
        logger: logging.Logger,
        service: str,
        address: str,
        repeat_s: float = 60.0,
        escalate_after_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.logger = logger
        self.service = service
        self.address = address
        self.repeat_s = repeat_s
        self.escalate_after_s = escalate_after_s
        self.clock = clock
        self.down_since: float | None = None
        self._last_report: float | None = None
        self._lock = threading.Lock()

    def failed(
        self, error: BaseException | str, retry_in_s: float, backlog: str | None = None
    ) -> bool:
        """An attempt failed; log the line if it is the first or ``repeat_s`` have passed.

        retry_in_s : when the next attempt comes [s]. backlog : what waits meanwhile,
        e.g. "50 samples spooled". Returns True when a line was logged.
        """
        now = self.clock()
        with self._lock:
            if self.down_since is None:
                self.down_since = now
            if self._last_report is not None and now - self._last_report < self.repeat_s:
                return False
            self._last_report = now
            down_s = now - self.down_since
        reason = describe_error(error)
        parts = [f"cannot reach {self.service} {self.address} ({reason})"]
        if backlog:
            parts.append(backlog)
        parts.append(f"retrying in {retry_in_s:.0f} s" if retry_in_s >= 1 else "retrying")
        level = logging.ERROR if down_s >= self.escalate_after_s else logging.WARNING
        self.logger.log(
            level,
            "; ".join(parts),
            extra={
                "service": self.service,
                "address": self.address,
                "reason": reason,
                "down_s": round(down_s, 1),
                "retry_s": round(retry_in_s, 1),
            },
        )
        return True

    def reached(self) -> bool:
        """The service answered; one INFO line if it had been away. True when logged."""
        with self._lock:
            if self.down_since is None:
                return False
            down_s = self.clock() - self.down_since
            self.down_since = None
            self._last_report = None
        self.logger.info(
            f"reached {self.service} {self.address} again after {down_s:.0f} s",
            extra={"service": self.service, "address": self.address, "down_s": round(down_s, 1)},
        )
        return True


class BrokerReachability(Reachability):
    """Reachability of an MQTT broker that paho-mqtt reconnects to with its backoff.

    Wire ``connect_failed`` to the client's ``on_connect_fail`` and ``connected`` to a
    successful ``on_connect``. paho waits ``reconnect_min_s`` after the first failure and
    doubles the wait up to ``reconnect_max_s`` [s] (``reconnect_delay_set``).
    """

    def __init__(
        self,
        logger: logging.Logger,
        host: str,
        port: int,
        reconnect_min_s: float = 1.0,
        reconnect_max_s: float = 30.0,
        **kwargs: Any,
    ):
        super().__init__(logger, "broker", f"{host}:{port}", **kwargs)
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self._attempts = 0

    def connect_failed(self, backlog: str | None = None) -> bool:
        """A connection attempt failed (call it from ``on_connect_fail``, where paho is
        handling the error: the error is read from there). True when a line was logged."""
        delay = min(self.reconnect_min_s * 2**self._attempts, self.reconnect_max_s)
        self._attempts += 1
        return self.failed(sys.exception() or "connection failed", delay, backlog)

    def connected(self) -> bool:
        """The broker accepted the connection; True when it had been away (logged)."""
        self._attempts = 0
        return self.reached()
