"""Signing keys of the alarm log (Ed25519) and ``namazu keys``.

The scheduler signs every alarm-log record with an Ed25519 private key that lives
outside the log's directory (``scheduler.alarm_log_signing_key``, a PEM file readable
only by the scheduler). Verifiers hold the public keys in a keyring, a JSON file that
is part of the deployment (``scheduler.alarm_log_keyring``)::

    {"keys": [{"key_id": "3f9a0c12d4e5b6a7", "public_key": "<base64, 32 bytes>",
               "valid_from": "2026-01-01T00:00:00Z", "valid_until": null}]}

``key_id`` is the first 16 hex digits of the SHA-256 of the raw public key; every
record names the key that signed it. A key signs only records written inside its
validity ``[valid_from, valid_until)`` [UTC]. Rotation: ``namazu keys generate``
writes a new private key, closes the current key's validity at that instant and adds
the new public key; copy the keyring to every verifier and restart the scheduler with
the new private key. Old keys stay in the keyring so old records still verify.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


class LogKeyError(Exception):
    """A key or keyring cannot be read, written or used; the message names the file."""


def _utc_text(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_utc(text: str, what: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (TypeError, ValueError) as exc:
        raise LogKeyError(f"{what}: {text!r} is not an ISO 8601 time") from exc
    if moment.tzinfo is None:
        raise LogKeyError(f"{what}: {text!r} has no time zone")
    return moment.astimezone(UTC)


def key_id_of(public_key: Ed25519PublicKey) -> str:
    """The key id: first 16 hex digits of SHA-256 of the raw 32-byte public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


class Signer:
    """Signs record bytes with one Ed25519 private key.

    private_key : the key. key_id : its id (``key_id_of`` of its public key).
    """

    def __init__(self, private_key: Ed25519PrivateKey):
        self.private_key = private_key
        self.key_id = key_id_of(private_key.public_key())

    @classmethod
    def from_file(cls, path: str | Path) -> Signer:
        """Load a PEM (PKCS#8, unencrypted) Ed25519 private key; LogKeyError names the
        file when it is missing, unreadable or not an Ed25519 key."""
        path = Path(path)
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except OSError as exc:
            raise LogKeyError(f"signing key {path}: cannot read: {exc.strerror}") from exc
        except (ValueError, TypeError) as exc:
            raise LogKeyError(f"signing key {path}: not an unencrypted PEM key") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise LogKeyError(f"signing key {path}: not an Ed25519 key")
        return cls(key)

    def sign(self, message: bytes) -> str:
        """Base64 (standard, padded) Ed25519 signature of ``message``."""
        return base64.b64encode(self.private_key.sign(message)).decode("ascii")


@dataclass(frozen=True)
class PublicKey:
    """One keyring entry: key id, public key and validity [UTC] (until None = open)."""

    key_id: str
    public_key: Ed25519PublicKey
    valid_from: datetime
    valid_until: datetime | None

    def as_dict(self) -> dict[str, str | None]:
        raw = self.public_key.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return {
            "key_id": self.key_id,
            "public_key": base64.b64encode(raw).decode("ascii"),
            "valid_from": _utc_text(self.valid_from),
            "valid_until": None if self.valid_until is None else _utc_text(self.valid_until),
        }


class Keyring:
    """The public keys a verifier accepts, each with its validity."""

    def __init__(self, keys: Sequence[PublicKey] = ()):
        self.keys = {key.key_id: key for key in keys}

    @classmethod
    def from_file(cls, path: str | Path) -> Keyring:
        """Read a keyring JSON file; LogKeyError names the file and the bad entry."""
        path = Path(path)
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise LogKeyError(f"keyring {path}: cannot read: {exc.strerror}") from exc
        except ValueError as exc:
            raise LogKeyError(f"keyring {path}: not JSON: {exc}") from exc
        entries = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(entries, list):
            raise LogKeyError(f"keyring {path}: expected an object with a 'keys' list")
        keys = []
        for number, entry in enumerate(entries):
            where = f"keyring {path}, key {number}"
            try:
                raw = base64.b64decode(entry["public_key"], validate=True)
                public_key = Ed25519PublicKey.from_public_bytes(raw)
                until = entry.get("valid_until")
                key = PublicKey(
                    key_id_of(public_key),
                    public_key,
                    _parse_utc(entry["valid_from"], f"{where}: valid_from"),
                    None if until is None else _parse_utc(until, f"{where}: valid_until"),
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise LogKeyError(f"{where}: invalid entry ({exc})") from exc
            if entry.get("key_id") != key.key_id:
                raise LogKeyError(
                    f"{where}: key_id {entry.get('key_id')!r} does not match its public key "
                    f"({key.key_id})"
                )
            keys.append(key)
        return cls(keys)

    def save(self, path: str | Path) -> None:
        """Write the keyring as JSON (atomically: temporary file, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        document = {"keys": [key.as_dict() for key in self.keys.values()]}
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        os.replace(temporary, path)

    def check(self, key_id: str, message: bytes, signature: str, written: datetime) -> str:
        """ "" when ``signature`` is a valid signature of ``message`` by key ``key_id``
        and ``written`` [UTC] lies in that key's validity; else the reason."""
        key = self.keys.get(key_id)
        if key is None:
            return f"signed with key {key_id!r}, which is not in the keyring"
        try:
            key.public_key.verify(base64.b64decode(signature, validate=True), message)
        except (InvalidSignature, ValueError, TypeError):
            return f"signature does not verify with key {key_id}"
        if written < key.valid_from or (key.valid_until is not None and written >= key.valid_until):
            return f"written at {_utc_text(written)}, outside the validity of key {key_id}"
        return ""


def generate(
    private_path: str | Path, keyring_path: str | Path, now: datetime | None = None
) -> str:
    """Create a new Ed25519 private key at ``private_path`` (mode 0600, never
    overwritten) and add its public key to the keyring at ``keyring_path`` (created if
    missing), valid from ``now`` [UTC]; the validity of every still-open key ends at
    ``now`` (rotation). Returns the new key id."""
    private_path, keyring_path = Path(private_path), Path(keyring_path)
    now = (now or datetime.now(UTC)).astimezone(UTC)
    keyring = Keyring.from_file(keyring_path) if keyring_path.exists() else Keyring()
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    private_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise LogKeyError(f"signing key {private_path} exists; choose a new file") from exc
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    entries = [
        key_entry if key_entry.valid_until is not None else _closed(key_entry, now)
        for key_entry in keyring.keys.values()
    ]
    new = PublicKey(key_id_of(key.public_key()), key.public_key(), now, None)
    Keyring([*entries, new]).save(keyring_path)
    return new.key_id


def _closed(key: PublicKey, now: datetime) -> PublicKey:
    return PublicKey(key.key_id, key.public_key, key.valid_from, now)


def main(argv: list[str]) -> int:
    """``namazu keys generate|list``: the alarm log's signing keys.

    ``generate [--private-key FILE] [--keyring FILE]`` creates a new signing key and adds
    its public key to the keyring (rotating: the previous key's validity ends now);
    defaults are ``scheduler.alarm_log_signing_key`` and ``scheduler.alarm_log_keyring``.
    ``list [--keyring FILE]`` prints the keyring. Exit 0 on success, 2 on bad input.
    """
    parser = argparse.ArgumentParser(prog="namazu keys", description=main.__doc__)
    parser.add_argument("action", choices=["generate", "list"])
    parser.add_argument("--config", help="TOML file (default $NAMAZU_CONFIG)")
    parser.add_argument("--private-key", help="private key file to create (PEM, mode 0600)")
    parser.add_argument("--keyring", help="public keyring JSON file")
    args = parser.parse_args(argv)
    private_key, keyring = args.private_key, args.keyring
    if private_key is None or keyring is None:
        from namazu.server.core.config import ConfigError, load_config

        try:
            sched = load_config(args.config).scheduler
        except ConfigError as exc:
            print(f"namazu keys: invalid configuration: {exc}", file=sys.stderr)
            return 2
        private_key = private_key or sched.alarm_log_signing_key
        keyring = keyring or sched.alarm_log_keyring
    if keyring is None or (args.action == "generate" and private_key is None):
        print(
            "namazu keys: name the files (--private-key, --keyring) or set "
            "scheduler.alarm_log_signing_key and scheduler.alarm_log_keyring",
            file=sys.stderr,
        )
        return 2
    try:
        if args.action == "generate":
            key_id = generate(private_key, keyring)
            print(f"new signing key {key_id}: private {private_key}, public in {keyring}")
            return 0
        for key in Keyring.from_file(keyring).keys.values():
            entry = key.as_dict()
            print(
                f"{entry['key_id']}  valid {entry['valid_from']} .. "
                f"{entry['valid_until'] or 'open'}  {entry['public_key']}"
            )
        return 0
    except LogKeyError as exc:
        print(f"namazu keys: {exc}", file=sys.stderr)
        return 2
