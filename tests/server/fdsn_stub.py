"""A real local HTTP server standing in for an fdsnws-event service in tests.

It answers ``GET /fdsnws/event/1/query`` from a script of responses (status, headers,
body), one per request in order, and records every request's query parameters.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass
class ScriptedResponse:
    """One scripted answer."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class FdsnStub:
    """Handle of the running stub: its base URL, script and the requests it saw."""

    base_url: str
    script: list[ScriptedResponse]
    requests: list[dict[str, str]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)


@contextmanager
def fdsn_stub(script: list[ScriptedResponse]) -> Iterator[FdsnStub]:
    """Run the stub on a free loopback port for the duration of the block."""
    holder: dict[str, FdsnStub] = {}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server API
            stub = holder["stub"]
            parts = urlsplit(self.path)
            with lock:
                stub.paths.append(parts.path)
                stub.requests.append({k: v[-1] for k, v in parse_qs(parts.query).items()})
                answer = stub.script.pop(0) if stub.script else ScriptedResponse(500, b"empty")
            self.send_response(answer.status)
            for name, value in answer.headers.items():
                self.send_header(name, value)
            if answer.status != 204:
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            if answer.status != 204:
                self.wfile.write(answer.body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    host, port = server.server_address[:2]
    holder["stub"] = FdsnStub(f"http://{host}:{port}/fdsnws/event/1", list(script))
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield holder["stub"]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
