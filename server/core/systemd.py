"""systemd readiness and watchdog: ``sd_notify`` over ``$NOTIFY_SOCKET``, in a few lines.

A unit with ``Type=notify`` waits for ``READY=1`` before it counts the service as
started; with ``WatchdogSec=`` systemd expects ``WATCHDOG=1`` at least every
``$WATCHDOG_USEC`` microseconds and restarts the service when it stops coming. The
protocol is one datagram of ``KEY=value`` lines on the unix socket named by
``$NOTIFY_SOCKET`` (a leading ``@`` names the abstract namespace), see sd_notify(3).
Outside systemd (no ``$NOTIFY_SOCKET``) every call is a no-op.

The watchdog pings only while the process does its work: each worker thread calls
``watchdog.beat(name)`` every time round its loop, and a job that runs now and then wraps
its run in ``with watchdog.busy(name):``. When a worker has not beaten for longer than
the stall limit (default: the watchdog interval), the ping is withheld, one ERROR names
the stalled worker and ``WATCHDOG=trigger`` asks systemd to restart the service at once::

    from namazu.server.core.systemd import watchdog
    watchdog.start_from_environment(status="ingest running")   # READY=1 + pinging
    while running:
        watchdog.beat("ingest-writer")
        ...
    watchdog.stop()                                            # STOPPING=1
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping

log = logging.getLogger(__name__)

__all__ = ["Notifier", "Watchdog", "watchdog", "watchdog_interval_s"]


class Notifier:
    """Sends sd_notify messages to ``address`` (the value of ``$NOTIFY_SOCKET``).

    address : a path, or ``@name`` for the abstract namespace; None disables sending.
    """

    def __init__(self, address: str | None):
        self.address = address or None

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """The notifier systemd asked for (``$NOTIFY_SOCKET``), or a disabled one."""
        env = os.environ if environ is None else environ
        return cls(env.get("NOTIFY_SOCKET"))

    @property
    def enabled(self) -> bool:
        """True when there is a socket to notify."""
        return self.address is not None

    def send(self, *assignments: str) -> bool:
        """Send ``KEY=value`` lines in one datagram; False when disabled or refused."""
        if self.address is None:
            return False
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto("\n".join(assignments).encode(), target)
        except OSError as exc:
            log.warning(
                "cannot notify systemd",
                extra={"notify_socket": self.address, "error": str(exc)},
            )
            return False
        return True


def watchdog_interval_s(environ: Mapping[str, str] | None = None) -> float | None:
    """The watchdog interval systemd asked for [s] (``$WATCHDOG_USEC``), or None.

    None also when ``$WATCHDOG_PID`` names another process (the variable was inherited).
    """
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC")
    pid = env.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 1e6 if value > 0 else None


class Watchdog:
    """Pings systemd's watchdog while every registered worker keeps beating.

    notifier : where READY/WATCHDOG/STOPPING go (a disabled one makes this inert).
    interval_s : systemd's watchdog interval [s]; None: no pinging (readiness only).
    stall_after_s : a worker silent for longer than this is stalled [s]; default
        ``interval_s``.
    clock : monotonic time source [s] (injectable for tests).
    """

    def __init__(
        self,
        notifier: Notifier | None = None,
        interval_s: float | None = None,
        stall_after_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.notifier = notifier or Notifier(None)
        self.interval_s = interval_s
        self.stall_after_s = stall_after_s or interval_s
        self.clock = clock
        self._beats: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._reported: frozenset[str] = frozenset()

    def start_from_environment(
        self, status: str, environ: Mapping[str, str] | None = None
    ) -> Watchdog:
        """Adopt ``$NOTIFY_SOCKET``/``$WATCHDOG_USEC``, send READY=1 and start pinging."""
        self.notifier = Notifier.from_environment(environ)
        self.interval_s = watchdog_interval_s(environ)
        self.stall_after_s = self.interval_s
        return self.start(status)

    def start(self, status: str) -> Watchdog:
        """Send ``READY=1`` and, when an interval is set, ping from a daemon thread."""
        self.notifier.send("READY=1", f"STATUS={status}")
        if self.notifier.enabled and self.interval_s and self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)
            self._thread.start()
        return self

    def stop(self, status: str = "stopping") -> None:
        """Send ``STOPPING=1`` and stop pinging."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.notifier.send("STOPPING=1", f"STATUS={status}")

    def beat(self, name: str) -> None:
        """Worker ``name`` is alive (call it every time round the worker's loop)."""
        now = self.clock()
        with self._lock:
            self._beats[name] = now

    def forget(self, name: str) -> None:
        """Worker ``name`` has ended normally; it is no longer watched."""
        with self._lock:
            self._beats.pop(name, None)

    @contextlib.contextmanager
    def busy(self, name: str) -> Iterator[None]:
        """Watch ``name`` only while the block runs (a job that runs now and then)."""
        self.beat(name)
        try:
            yield
        finally:
            self.forget(name)

    def stalled(self, now: float | None = None) -> dict[str, float]:
        """Workers silent for longer than the stall limit: name -> silence [s]."""
        if not self.stall_after_s:
            return {}
        now = self.clock() if now is None else now
        with self._lock:
            beats = dict(self._beats)
        return {name: now - last for name, last in beats.items() if now - last > self.stall_after_s}

    def check(self, now: float | None = None) -> bool:
        """Ping when no worker is stalled (True); otherwise report and trigger (False)."""
        stalled = self.stalled(now)
        if not stalled:
            self._reported = frozenset()
            return self.notifier.send("WATCHDOG=1")
        names = frozenset(stalled)
        if names != self._reported:
            self._reported = names
            detail = ", ".join(f"{n} for {s:.0f} s" for n, s in sorted(stalled.items()))
            log.error(
                f"worker thread stalled: {detail}; asking systemd to restart the service",
                extra={"stalled": {n: round(s, 1) for n, s in stalled.items()}},
            )
        self.notifier.send("WATCHDOG=trigger", f"STATUS=stalled: {', '.join(sorted(names))}")
        return False

    def _run(self) -> None:
        assert self.interval_s
        while not self._stop.wait(self.interval_s / 2):
            self.check()


#: The process-wide watchdog: inert until ``start_from_environment`` runs.
watchdog = Watchdog()
