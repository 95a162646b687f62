"""A real RFC 3161 time-stamping authority on loopback, built on ``openssl ts -reply``.

``TsaServer(directory)`` makes a throw-away CA and a TSA certificate (EC P-256, extended
key usage timeStamping, critical) with the ``openssl`` command, then answers HTTP POSTs
of ``application/timestamp-query`` with ``application/timestamp-reply`` produced by
``openssl ts -reply``. ``ca_file`` is what a verifier trusts; ``requests`` counts the
queries answered; ``refuse`` makes it answer 503 (a TSA outage).
"""

from __future__ import annotations

import subprocess
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

TSA_CONFIG = """\
[ tsa ]
default_tsa = tsa_config
[ tsa_config ]
dir = {directory}
serial = {directory}/serial
crypto_device = builtin
signer_cert = {directory}/tsa.crt
certs = {directory}/tsa.crt
signer_key = {directory}/tsa.key
signer_digest = sha256
default_policy = 1.2.3.4.1
digests = sha256, sha384, sha512
accuracy = secs:1
clock_precision_digits = 0
ordering = no
tsa_name = yes
ess_cert_id_chain = no
ess_cert_id_alg = sha256
[ tsa_ext ]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = critical, timeStamping
"""


def _openssl(directory: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)


def make_tsa_files(directory: Path) -> None:
    """CA (ca.crt) and TSA certificate/key (tsa.crt, tsa.key) and the TSA config."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tsa.cnf").write_text(TSA_CONFIG.format(directory=directory))
    (directory / "serial").write_text("01\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl(directory, "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt",
             "-days", "2", "-subj", "/CN=Namazu test TSA CA")  # fmt: skip
    _openssl(directory, "req", *ec, "-keyout", "tsa.key", "-out", "tsa.csr",
             "-subj", "/CN=Namazu test TSA")  # fmt: skip
    _openssl(directory, "x509", "-req", "-in", "tsa.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "tsa.crt", "-days", "2",
             "-extfile", "tsa.cnf", "-extensions", "tsa_ext")  # fmt: skip


class TsaServer:
    """The loopback TSA (see the module docstring); use as a context manager."""

    def __init__(self, directory: Path):
        self.directory = directory
        make_tsa_files(directory)
        self.requests = 0
        self.refuse = False
        self._lock = threading.Lock()
        tsa = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length") or 0)
                query = self.rfile.read(length)
                if tsa.refuse:
                    self.send_error(503, "TSA unavailable")
                    return
                if self.headers.get("Content-Type") != "application/timestamp-query":
                    self.send_error(415, "expected application/timestamp-query")
                    return
                reply = tsa.reply(query)
                if reply is None:
                    self.send_error(400, "not a time-stamp query")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/timestamp-reply")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/tsa"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.crt"

    def reply(self, query: bytes) -> bytes | None:
        """``openssl ts -reply`` for one DER query (None when openssl refuses it)."""
        with self._lock, tempfile.TemporaryDirectory() as scratch:
            query_file, reply_file = Path(scratch) / "q.tsq", Path(scratch) / "r.tsr"
            query_file.write_bytes(query)
            done = subprocess.run(
                ["openssl", "ts", "-reply", "-config", str(self.directory / "tsa.cnf"),
                 "-queryfile", str(query_file), "-out", str(reply_file)],
                capture_output=True,
                check=False,
            )  # fmt: skip
            if done.returncode != 0 or not reply_file.exists():
                return None
            self.requests += 1
            return reply_file.read_bytes()

    def __enter__(self) -> TsaServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
