"""The shipped nginx site (``deploy/nginx/namazu.conf``) run by Debian's nginx on
loopback: ports, certificates and the ``proxy_params`` include moved into a test
directory, the upstream pointed at the panels under test, and an HTTPS client with its
own source address and cookie jar."""

from __future__ import annotations

import http.client
import os
import shutil
import ssl
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from namazu.server.launch.stack import free_port, port_open
from tests.deploy.conftest import make_tls_files
from tests.server.web.conftest import csrf_from

SITE = Path(__file__).resolve().parents[2] / "deploy" / "nginx" / "namazu.conf"
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)

#: Access-log format naming the upstream (panel replica) that answered each request.
UPSTREAM_LOG_FORMAT = "$remote_addr $request_method $uri $status $upstream_addr"


def shipped_site(app_ports: Sequence[int], tls_port: int, plain_port: int, directory: Path) -> str:
    """The shipped site with its upstream on ``app_ports`` (one server line each, round
    robin) and its ports, certificates and include moved to ``directory``."""
    upstream = "\n    ".join(f"server 127.0.0.1:{port};" for port in app_ports)
    site = SITE.read_text()
    replacements = {
        "server 127.0.0.1:8000;": upstream,
        "    listen 80;\n    listen [::]:80;\n": f"    listen 127.0.0.1:{plain_port};\n",
        "    listen 443 ssl http2;\n    listen [::]:443 ssl http2;\n": (
            f"    listen 127.0.0.1:{tls_port} ssl;\n"
        ),
        **local_files(directory),
    }
    return replace_all(site, replacements)


def local_files(directory: Path) -> dict[str, str]:
    """The site's certificate paths and ``proxy_params`` include, as replacements that
    point at ``directory`` (``make_tls_files``) and need no file of the host's nginx."""
    return {
        "/etc/letsencrypt/live/namazu.example.org/fullchain.pem": str(directory / "server.crt"),
        "/etc/letsencrypt/live/namazu.example.org/privkey.pem": str(directory / "server.key"),
        "include /etc/nginx/proxy_params;": "proxy_set_header Host $host;",
    }


def replace_all(site: str, replacements: dict[str, str]) -> str:
    """``site`` with every replacement made; each must apply, so a change to the shipped
    file that the tests no longer understand fails loudly."""
    for old, new in replacements.items():
        assert old in site, f"deploy/nginx/namazu.conf no longer contains {old!r}"
        site = site.replace(old, new)
    return site


def main_config(directory: Path, access_log: bool) -> str:
    """nginx's main configuration: pid, logs and temporary files in ``directory``, the
    site in ``directory/site.conf``; an access log in ``UPSTREAM_LOG_FORMAT`` when
    ``access_log``."""
    log = (
        f"  log_format upstream '{UPSTREAM_LOG_FORMAT}';\n"
        f"  access_log {directory}/access.log upstream;\n"
        if access_log
        else "  access_log off;\n"
    )
    return (
        ("user root;\n" if os.geteuid() == 0 else "")
        + f"pid {directory}/nginx.pid;\nerror_log {directory}/error.log;\n"
        "events {}\nhttp {\n" + log
        + f"  client_body_temp_path {directory}/body;\n  proxy_temp_path {directory}/proxy;\n"
        f"  fastcgi_temp_path {directory}/fcgi;\n  uwsgi_temp_path {directory}/uwsgi;\n"
        f"  scgi_temp_path {directory}/scgi;\n  include {directory}/site.conf;\n}}\n"
    )  # fmt: skip


class Nginx:
    """nginx serving the shipped site in ``directory`` in front of ``app_ports``, with a
    throw-away CA (``directory/ca.crt``); ``access_log`` (``directory/access.log``,
    ``UPSTREAM_LOG_FORMAT``) when asked. ``start()`` waits until TLS answers."""

    def __init__(self, directory: Path, app_ports: Sequence[int], access_log: bool = False):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.tls_port, self.plain_port = free_port(), free_port()
        make_tls_files(directory)
        (directory / "site.conf").write_text(
            shipped_site(app_ports, self.tls_port, self.plain_port, directory)
        )
        (directory / "nginx.conf").write_text(main_config(directory, access_log))
        self.context = ssl.create_default_context(cafile=str(directory / "ca.crt"))
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 10.0) -> Nginx:
        self.proc = subprocess.Popen(
            [NGINX, "-p", str(self.directory), "-c", str(self.directory / "nginx.conf"),
             "-g", "daemon off;"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while not port_open(self.tls_port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"nginx did not start: {self.proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    def browser(self, source: str) -> Browser:
        """An HTTPS client of this nginx from loopback address ``source``."""
        return Browser(self.tls_port, source, self.context)

    def access_log(self) -> list[list[str]]:
        """The access log's lines split into ``UPSTREAM_LOG_FORMAT``'s fields."""
        path = self.directory / "access.log"
        return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


class Browser:
    """An HTTP(S) client bound to one source address with its own cookie jar; ``context``
    None speaks plain HTTP (straight to a panel)."""

    def __init__(self, port: int, source: str, context: ssl.SSLContext | None):
        self.port, self.source, self.context = port, source, context
        self.cookies: dict[str, str] = {}
        self.csrf: str | None = None

    def request(self, method: str, path: str, body: str | None = None, headers=None):
        """Send one request on a new connection; returns (response, body text)."""
        if self.context is None:
            connection = http.client.HTTPConnection(
                "127.0.0.1", self.port, source_address=(self.source, 0), timeout=30
            )
        else:
            connection = http.client.HTTPSConnection(
                "127.0.0.1", self.port, source_address=(self.source, 0), context=self.context,
                timeout=30,
            )  # fmt: skip
        sent = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        if body is not None:
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            connection.request(method, path, body=body, headers={**sent, **(headers or {})})
            response = connection.getresponse()
            text = response.read().decode("utf-8", "replace")
        finally:
            connection.close()
        for header in response.headers.get_all("Set-Cookie") or []:
            name, _, rest = header.partition("=")
            self.cookies[name] = rest.split(";", 1)[0]
        return response, text

    def login(self, name: str, password: str, headers=None):
        """POST the log-in form (the CSRF token of this browser's session is fetched
        once, as a script would)."""
        if self.csrf is None:
            _, page = self.request("GET", "/login")
            self.csrf = csrf_from(page)
        body = f"username={name}&password={password.replace(' ', '+')}&csrf_token={self.csrf}"
        response, _ = self.request("POST", "/login", body, headers)
        if response.status == 302:
            self.csrf = None  # a new session after log-in
        return response
