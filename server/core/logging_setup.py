"""Structured logging: one JSON object per line on stderr (or plain text for humans).

Every service calls ``configure_logging(level)`` once at start-up and then logs with
the standard library; context goes in ``extra``, which becomes top-level JSON keys::

    log = logging.getLogger(__name__)
    log.info("batch written", extra={"points": 5000, "write_ms": 12.3})

    {"ts": "2024-05-01T12:00:00.123Z", "level": "INFO", "logger": "namazu.server.ingest.service",
     "msg": "batch written", "points": 5000, "write_ms": 12.3}

journald, Docker and Loki all take such lines as they are.
"""

from __future__ import annotations

import json as _json
import logging
import sys
from datetime import UTC, datetime
from typing import IO, Any

__all__ = ["JsonFormatter", "LoggingConfigError", "configure_logging"]

# Attributes every LogRecord has; anything else on a record came from ``extra``.
_RECORD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()
) | {"message", "asctime", "taskName"}

_TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class LoggingConfigError(ValueError):
    """The requested log level is not a known level name or number."""


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON line: ts (UTC, ms), level, logger, msg, extras, exc."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a compact JSON object without a trailing newline."""
        stamp = datetime.fromtimestamp(record.created, tz=UTC)
        entry: dict[str, Any] = {
            "ts": stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return _json.dumps(entry, default=str, ensure_ascii=False)


def _level_number(level: int | str) -> int:
    if isinstance(level, int):
        return level
    number = logging.getLevelName(level.strip().upper())
    if not isinstance(number, int):
        valid = "DEBUG, INFO, WARNING, ERROR, CRITICAL"
        raise LoggingConfigError(f"log level {level!r} is unknown; valid levels: {valid}")
    return number


def configure_logging(
    level: int | str = "INFO", json: bool = True, stream: IO[str] | None = None
) -> logging.Handler:
    """Route all logging to one stderr handler, JSON lines by default.

    level : threshold of the root logger, a name ("INFO") or a number (20).
    json : True for one JSON object per line, False for human-readable text.
    stream : where to write; default ``sys.stderr``.
    Calling it again replaces the handler it installed before (idempotent).
    Returns the installed handler. Raises LoggingConfigError for an unknown level.
    """
    number = _level_number(level)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name("namazu")
    if json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(_TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == "namazu":
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(number)
    # Chatty libraries stay at WARNING unless the service itself is in DEBUG.
    for noisy in ("urllib3", "apscheduler.executors.default"):
        logging.getLogger(noisy).setLevel(max(number, logging.WARNING))
    return handler
