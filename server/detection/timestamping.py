"""RFC 3161 time-stamps of the alarm log's chain head (the one module that talks to a
time-stamping authority).

A time-stamp token binds a SHA-256 digest to the TSA's clock under the TSA's
signature. The digest stamped is the head record's ``hash`` (the SHA-256 of that
record's canonical JSON), so a token for record *i* proves that records 0..*i* existed
at the token's time. Requests and checks use Debian's ``openssl ts`` (the same code
path as any operator's manual check); the HTTP exchange is RFC 3161 §3.4
(``application/timestamp-query`` → ``application/timestamp-reply``).

Tokens are kept beside the log, in ``<log>.tsa/``, one DER ``TimeStampResp`` per file
named ``<index, 8 digits>-<first 16 hex of the head hash>-<UTC time>.tsr``.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests

OPENSSL = "openssl"
QUERY_TYPE = "application/timestamp-query"
REPLY_TYPE = "application/timestamp-reply"
TOKEN_NAME = re.compile(r"^(\d{8})-([0-9a-f]{16})-(\d{8}T\d{6}Z)\.tsr$")
_TIME_LINE = re.compile(r"^Time stamp: (.+)$", re.MULTILINE)
_ACCURACY_LINE = re.compile(r"^Accuracy: (?:0x([0-9A-Fa-f]+)|(unspecified)) seconds", re.MULTILINE)


class TimestampError(Exception):
    """The TSA could not be reached, refused, or answered with an invalid token."""


def token_directory(log_path: str | Path) -> Path:
    """Where the tokens of the log at ``log_path`` are kept: ``<log>.tsa/``."""
    log_path = Path(log_path)
    return log_path.with_name(log_path.name + ".tsa")


def _openssl(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(
            [OPENSSL, "ts", *args], input=stdin, capture_output=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TimestampError(f"openssl ts failed to run: {exc}") from exc


def _parse_openssl_time(text: str) -> datetime:
    """'Nov 30 05:15:57 2026 GMT' or with fractions '... 05:15:57.123 2026 GMT' -> UTC."""
    text = text.strip().removesuffix(" GMT")
    for layout in ("%b %d %H:%M:%S.%f %Y", "%b %d %H:%M:%S %Y"):
        try:
            return datetime.strptime(" ".join(text.split()), layout).replace(tzinfo=UTC)
        except ValueError:
            continue
    raise TimestampError(f"unreadable time in token: {text!r}")


@dataclass(frozen=True)
class TokenCheck:
    """Outcome of checking one stored token.

    path : the token file. index : record index it names. time : the TSA's time
    plus its stated accuracy, i.e. the latest moment at which the stamped digest
    existed [UTC] (None when the token is invalid). reason : "" when valid.
    """

    path: Path
    index: int
    time: datetime | None
    reason: str


def token_time(reply: Path) -> datetime:
    """The TSA's time of a stored reply, plus its stated accuracy [UTC]."""
    result = _openssl("-reply", "-in", str(reply), "-text")
    text = result.stdout.decode("utf-8", "replace")
    if result.returncode != 0 or "Status: Granted" not in text:
        raise TimestampError(f"{reply.name}: not a granted time-stamp reply")
    match = _TIME_LINE.search(text)
    if match is None:
        raise TimestampError(f"{reply.name}: no time in the token")
    moment = _parse_openssl_time(match.group(1))
    accuracy = _ACCURACY_LINE.search(text)
    if accuracy and accuracy.group(1):
        moment += timedelta(seconds=int(accuracy.group(1), 16))
    return moment


_CHECKED: dict[tuple[Any, ...], TokenCheck] = {}
_CHECKED_MAX = 100_000


def check_token(reply: Path, digest_hex: str, ca_file: Path) -> TokenCheck:
    """Check that ``reply`` is a token, signed by a TSA certified by ``ca_file``, over
    the SHA-256 digest ``digest_hex``; return its time (see TokenCheck). Results are
    remembered per (file, size, modification time, digest, CA file) so that a log
    verified again (the panel) runs ``openssl`` only for new tokens."""
    try:
        info, ca_info = reply.stat(), ca_file.stat()
        key = (str(reply), info.st_size, info.st_mtime_ns, digest_hex, str(ca_file),
               ca_info.st_mtime_ns)  # fmt: skip
    except OSError:
        return _check_token(reply, digest_hex, ca_file)
    found = _CHECKED.get(key)
    if found is None:
        found = _check_token(reply, digest_hex, ca_file)
        if len(_CHECKED) >= _CHECKED_MAX:
            _CHECKED.clear()
        _CHECKED[key] = found
    return found


def _check_token(reply: Path, digest_hex: str, ca_file: Path) -> TokenCheck:
    match = TOKEN_NAME.match(reply.name)
    index = int(match.group(1)) if match else -1
    result = _openssl("-verify", "-digest", digest_hex, "-in", str(reply), "-CAfile", str(ca_file))
    if result.returncode != 0 or b"Verification: OK" not in result.stdout:
        detail = result.stderr.decode("utf-8", "replace").strip().splitlines()
        reason = "does not verify"
        if any("message imprint mismatch" in line for line in detail):
            reason = "stamps another hash than the record's (the record was replaced)"
        return TokenCheck(reply, index, None, reason)
    try:
        return TokenCheck(reply, index, token_time(reply), "")
    except TimestampError as exc:
        return TokenCheck(reply, index, None, str(exc))


def stored_tokens(log_path: str | Path) -> list[tuple[int, Path]]:
    """(record index, file) of every token kept beside the log, by index then name;
    files with other names are ignored."""
    directory = token_directory(log_path)
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        match = TOKEN_NAME.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


class TimestampClient:
    """Asks an RFC 3161 TSA for tokens over SHA-256 digests.

    url : the TSA's HTTP(S) endpoint. ca_file : PEM file of the CA(s) that certify
    the TSA (each reply is verified against it, nonce included, before it is kept).
    timeout_s : HTTP timeout [s].
    """

    def __init__(self, url: str, ca_file: str | Path, timeout_s: float = 10.0):
        self.url = url
        self.ca_file = Path(ca_file)
        self.timeout_s = timeout_s

    def stamp(self, digest_hex: str) -> tuple[bytes, datetime]:
        """A verified reply (DER bytes) for ``digest_hex`` and its time [UTC]."""
        with tempfile.TemporaryDirectory(prefix="namazu-tsa-") as scratch:
            query, reply = Path(scratch) / "query.tsq", Path(scratch) / "reply.tsr"
            made = _openssl("-query", "-digest", digest_hex, "-sha256", "-cert", "-out", str(query))
            if made.returncode != 0:
                raise TimestampError(f"cannot build a time-stamp query: {made.stderr!r}")
            try:
                response = requests.post(
                    self.url,
                    data=query.read_bytes(),
                    headers={"Content-Type": QUERY_TYPE},
                    timeout=self.timeout_s,
                )
            except requests.RequestException as exc:
                raise TimestampError(f"TSA {self.url} unreachable: {exc}") from exc
            if response.status_code != 200:
                raise TimestampError(f"TSA {self.url} answered HTTP {response.status_code}")
            reply.write_bytes(response.content)
            checked = _openssl(
                "-verify", "-queryfile", str(query), "-in", str(reply), "-CAfile", str(self.ca_file)
            )
            if checked.returncode != 0 or b"Verification: OK" not in checked.stdout:
                raise TimestampError(
                    f"TSA {self.url}: reply does not verify against {self.ca_file}"
                )
            return response.content, token_time(reply)


def save_token(
    log_path: str | Path, index: int, head_hash: str, reply: bytes, when: datetime
) -> Path:
    """Keep a reply beside the log (written to a temporary name, then renamed)."""
    directory = token_directory(log_path)
    directory.mkdir(parents=True, exist_ok=True)
    name = f"{index:08d}-{head_hash[:16]}-{when.astimezone(UTC):%Y%m%dT%H%M%SZ}.tsr"
    path = directory / name
    temporary = directory / (name + ".part")
    temporary.write_bytes(reply)
    temporary.replace(path)
    return path
