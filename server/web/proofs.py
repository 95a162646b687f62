"""What the alarm log proves about each alarm, for the panel.

The panel says an alarm preceded an earthquake only when the alarm's log record is
proven, by an RFC 3161 time-stamp over the chain head, to have existed before the
earthquake's origin time (``namazu.server.detection.alarmlog.verify``). The log is
re-verified (signatures with ``scheduler.alarm_log_keyring``, tokens with
``scheduler.tsa_ca_file``) only when the log or its token directory changed.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from namazu.server.detection import alarmlog, timestamping
from namazu.server.detection.logkeys import Keyring, LogKeyError


@dataclass(frozen=True)
class LogProofs:
    """Outcome of verifying the log: ``ok``; ``reason`` when not ok or not checkable;
    ``result`` the verification (None when it could not run)."""

    ok: bool
    reason: str
    result: alarmlog.VerifyResult | None

    def proven_by(self, index: int | None) -> datetime | None:
        """Earliest proven existence of record ``index`` [UTC], or None."""
        if not self.ok or self.result is None or index is None:
            return None
        return self.result.proven_by(index)


class ProofCache:
    """Verifies the configured log on demand and keeps the result until the log or its
    tokens change. scheduler : the ``SchedulerConfig``."""

    def __init__(self, scheduler: Any):
        self.path = Path(scheduler.alarm_log_path)
        self.keyring_path = scheduler.alarm_log_keyring
        self.tsa_ca = scheduler.tsa_ca_file
        self._lock = threading.Lock()
        self._key: tuple[Any, ...] | None = None
        self._proofs = LogProofs(False, "not verified yet", None)

    def _state(self) -> tuple[Any, ...]:
        def stamp(path: Path) -> tuple[int, int] | None:
            try:
                info = path.stat()
            except OSError:
                return None
            return info.st_size, info.st_mtime_ns

        return (stamp(self.path), stamp(timestamping.token_directory(self.path)))

    def get(self) -> LogProofs:
        """The current proofs (re-verified when the files changed)."""
        with self._lock:
            key = self._state()
            if key != self._key:
                self._proofs = self._verify()
                self._key = key
            return self._proofs

    def _verify(self) -> LogProofs:
        if self.keyring_path is None or self.tsa_ca is None:
            return LogProofs(
                False, "no keyring or TSA CA configured: alarm times are not proven", None
            )
        try:
            keyring = Keyring.from_file(self.keyring_path)
            result = alarmlog.verify(self.path, keyring=keyring, tsa_ca=self.tsa_ca)
        except FileNotFoundError:
            return LogProofs(False, f"alarm log {self.path} not found", None)
        except (LogKeyError, OSError) as exc:
            return LogProofs(False, str(exc), None)
        if not result.ok:
            return LogProofs(
                False, f"alarm log BROKEN at record {result.first_bad_index}: {result.reason}",
                result,
            )  # fmt: skip
        return LogProofs(True, "", result)
