"""A real SMTP server on loopback (aiosmtpd) for the mail, alert and system tests."""

from __future__ import annotations

import email
import ssl
import subprocess
import threading
from dataclasses import dataclass, field
from email.message import Message
from email.policy import SMTP as SMTP_POLICY
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from namazu.server.launch.stack import free_port

SMTP_USER = "alerts"
SMTP_PASSWORD = "s3cret-pass"


@dataclass
class Received:
    """One message accepted by the test server."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def message(self) -> Message:
        return email.message_from_bytes(self.data, policy=SMTP_POLICY)


@dataclass
class Inbox:
    """Messages collected by the handler (thread-safe)."""

    messages: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd API)
        with self.lock:
            self.messages.append(
                Received(envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.content))
            )
        return "250 Message accepted for delivery"


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (openssl CLI): (cert, key)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def _authenticator(server, session, envelope, mechanism, auth_data):
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == SMTP_USER.encode()
        and auth_data.password == SMTP_PASSWORD.encode()
    )
    return AuthResult(success=ok, handled=False)


class SmtpServer:
    """aiosmtpd on 127.0.0.1:<port>; ``mode`` is "none", "starttls" or "ssl".

    The port is fixed at construction so the server can be stopped and started again
    on the same port (outage tests).
    """

    def __init__(self, mode: str = "none", cert_dir: Path | None = None, auth: bool = False):
        self.mode = mode
        self.port = free_port()
        self.inbox = Inbox()
        self.auth = auth
        self._controller: Controller | None = None
        self.client_context: ssl.SSLContext | None = None
        self._server_context: ssl.SSLContext | None = None
        if mode != "none":
            assert cert_dir is not None
            cert, key = make_certificate(cert_dir)
            self._server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self._server_context.load_cert_chain(cert, key)
            self.client_context = ssl.create_default_context(cafile=str(cert))

    def start(self) -> SmtpServer:
        kwargs: dict = {"hostname": "127.0.0.1", "port": self.port, "ready_timeout": 10}
        if self.mode == "starttls":
            kwargs.update(tls_context=self._server_context, require_starttls=True)
        if self.mode == "ssl":
            kwargs.update(ssl_context=self._server_context, server_hostname="127.0.0.1")
        if self.auth:
            kwargs.update(
                authenticator=_authenticator,
                auth_require_tls=self.mode != "none",
            )
        self._controller = Controller(self.inbox, **kwargs)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None
