"""``namazu web`` as a real process for system tests: a configuration file of its own,
gunicorn on its own address, readiness over sd_notify (``READY=1``, as under systemd)
and then a first answered page, a clean stop on SIGTERM.

``prefix`` runs the command inside something else, e.g. ``["ip", "netns", "exec",
"host-a"]`` for a panel in a network namespace (the notify socket is a file, so it is
reached from there too); ``probe=False`` skips the HTTP check when the test cannot
reach the panel's address.

Usage::

    config = write_web_config(tmp / "a.toml", state_url=..., influx_url=..., database=...,
                              port=free_port(), runtime_dir=tmp / "a-run")
    panel = WebProcess(config, tmp / "a").start()
    ...
    panel.stop()
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil
import requests

from tests.conftest import PROJECT_ROOT


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(str(value))


def write_web_config(
    path: Path,
    *,
    state_url: str,
    influx_url: str,
    database: str,
    port: int,
    host: str = "127.0.0.1",
    farms: Sequence[str] = ("demo-farm",),
    **web: Any,
) -> Path:
    """A TOML configuration of one panel: its store, InfluxDB, address, ``farms`` (ids,
    placed at 43.0 N 13.0 E) and any other ``[web]`` setting in ``web``."""
    lines = [
        "[influx]", f"url = {_toml_value(influx_url)}", f"database = {_toml_value(database)}",
        "[state]", f"url = {_toml_value(state_url)}",
        "[web]", f"host = {_toml_value(host)}", f"port = {port}",
        *(f"{key} = {_toml_value(value)}" for key, value in web.items()),
    ]  # fmt: skip
    for farm in farms:
        lines += ["[[farms]]", f"id = {_toml_value(farm)}", "latitude = 43.0", "longitude = 13.0"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


class WebProcess:
    """One ``namazu web`` (gunicorn: ``workers`` processes × ``threads``) run with
    ``config``; its log lines go to ``directory/web.log``."""

    def __init__(
        self,
        config: Path,
        directory: Path,
        workers: int = 1,
        threads: int = 4,
        prefix: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ):
        self.config, self.directory = Path(config), Path(directory)
        self.workers, self.threads, self.prefix = workers, threads, list(prefix)
        self.env = env
        self.proc: subprocess.Popen | None = None
        self._notify: socket.socket | None = None
        self.log_path = self.directory / "web.log"

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) the panel listens on, from its configuration file."""
        web = tomllib.loads(self.config.read_text(encoding="utf-8")).get("web", {})
        return str(web.get("host", "127.0.0.1")), int(web.get("port", 8000))

    @property
    def base_url(self) -> str:
        """``http://host:port`` of the panel."""
        host, port = self.address
        return f"http://{host}:{port}"

    def start(self, timeout_s: float = 60.0, probe: bool = True) -> WebProcess:
        """``launch()`` and ``wait_ready(...)``."""
        return self.launch().wait_ready(timeout_s, probe)

    def launch(self) -> WebProcess:
        """Start the process without waiting (start several, then wait for each)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        notify_path = self.directory / "notify.sock"
        notify_path.unlink(missing_ok=True)
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._notify.bind(str(notify_path))
        self._notify.settimeout(0.2)
        base = {k: v for k, v in os.environ.items() if not k.startswith(("NAMAZU_", "WATCHDOG_"))}
        env = {**base, **(self.env or {}), "NOTIFY_SOCKET": str(notify_path)}
        env["PYTHONPATH"] = str(PROJECT_ROOT)
        command = [*self.prefix, sys.executable, "-m", "namazu.server.cli", "web",
                   "--config", str(self.config), "--workers", str(self.workers),
                   "--threads", str(self.threads)]  # fmt: skip
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(  # noqa: S603 - the test's own command
                command, cwd=self.directory, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        return self

    def wait_ready(self, timeout_s: float = 60.0, probe: bool = True) -> WebProcess:
        """Wait for ``READY=1`` (and, with ``probe``, an answered log-in page); raises
        AssertionError with the log's tail if the process exits or time runs out first."""
        assert self._notify is not None, "launch() first"
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                self._check_alive(deadline)
                try:
                    if self._notify.recv(4096).decode().startswith("READY=1"):
                        break
                except TimeoutError:
                    continue
        finally:
            self._notify.close()
        while probe and not self.answers():
            self._check_alive(deadline)
            time.sleep(0.1)
        return self

    def answers(self) -> bool:
        """Whether the log-in page answers 200 now."""
        try:
            return requests.get(f"{self.base_url}/login", timeout=5).status_code == 200
        except requests.RequestException:
            return False

    def _check_alive(self, deadline: float) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"namazu web exited {self.proc.returncode}: {self.log_tail()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"namazu web did not become ready: {self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the panel's log."""
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def worker_pids(self) -> list[int]:
        """The gunicorn worker processes now (children of the master)."""
        assert self.proc is not None
        return [child.pid for child in psutil.Process(self.proc.pid).children()]

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM and wait (SIGKILL if it does not stop in ``timeout_s``); returns the
        exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode
