"""Structured logging: one JSON object per line on stderr (or text with every field).

Every service calls ``configure_logging(level)`` once at start-up and then logs with
the standard library; context goes in ``extra``, which becomes top-level JSON keys::

    log = logging.getLogger(__name__)
    log.info("batch written", extra={"points": 5000, "write_ms": 12.3})

    {"ts": "2024-05-01T12:00:00.123Z", "level": "INFO", "logger": "namazu.server.ingest.service",
     "msg": "batch written", "points": 5000, "write_ms": 12.3}

The text format (``--log-format text``, for people) keeps every field, logfmt style::

    2024-05-01T12:00:00.123Z INFO    namazu.server.ingest: batch written points=5000 write_ms=12.3

Under systemd (stderr connected to the journal, ``$JOURNAL_STREAM``) each line starts
with its syslog priority, ``<3>`` for ERROR, ``<4>`` WARNING, ``<6>`` INFO, ``<7>`` DEBUG
(sd-daemon(3)); journald strips the prefix and files the line under that priority, so
``journalctl -p warning`` shows exactly the warnings and errors.
"""

from __future__ import annotations

import json as _json
import logging
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import IO, Any

__all__ = [
    "JsonFormatter",
    "LoggingConfigError",
    "TextFormatter",
    "configure_logging",
    "journal_priority",
    "stream_is_journal",
]

# Attributes every LogRecord has; anything else on a record came from ``extra``.
_RECORD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()
) | {"message", "asctime", "taskName"}


class LoggingConfigError(ValueError):
    """The requested log level is not a known level name or number."""


def _timestamp(record: logging.LogRecord) -> str:
    stamp = datetime.fromtimestamp(record.created, tz=UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {
        key: value
        for key, value in vars(record).items()
        if key not in _RECORD_ATTRIBUTES and not key.startswith("_")
    }


def journal_priority(levelno: int) -> int:
    """The syslog priority of a logging level: 2 CRITICAL, 3 ERROR, 4 WARNING, 6 INFO, 7 DEBUG."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


class _Formatter(logging.Formatter):
    def __init__(self, journal: bool = False):
        super().__init__()
        self.journal = journal

    def _prefix(self, record: logging.LogRecord, line: str) -> str:
        if not self.journal:
            return line
        return f"<{journal_priority(record.levelno)}>{line}"


class JsonFormatter(_Formatter):
    """Format a record as one JSON line: ts (UTC, ms), level, logger, msg, extras, exc.

    journal : start the line with its syslog priority (``<4>``) for journald.
    """

    def format(self, record: logging.LogRecord) -> str:
        """The record as a compact JSON object without a trailing newline."""
        entry: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(_extras(record))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return self._prefix(record, _json.dumps(entry, default=str, ensure_ascii=False))


def _text_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float) or value is None:
        return "null" if value is None else str(value)
    if isinstance(value, Mapping | list | tuple):
        return _json.dumps(value, default=str, ensure_ascii=False, separators=(",", ":"))
    text = str(value)
    if text and not any(c.isspace() or c in '"=' for c in text):
        return text
    return _json.dumps(text, ensure_ascii=False)


class TextFormatter(_Formatter):
    """Human-readable lines that keep every field: ``ts LEVEL logger: msg key=value ...``.

    Values with spaces or quotes are JSON-quoted, mappings and lists JSON-encoded; a
    traceback follows on the next lines. journal : prefix the syslog priority.
    """

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line (plus traceback lines when there is one)."""
        line = f"{_timestamp(record)} {record.levelname:<7} {record.name}: {record.getMessage()}"
        fields = " ".join(f"{key}={_text_value(value)}" for key, value in _extras(record).items())
        if fields:
            line = f"{line} {fields}"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        if record.stack_info:
            line = f"{line}\n{self.formatStack(record.stack_info)}"
        return self._prefix(record, line)


def stream_is_journal(stream: IO[str], environ: Mapping[str, str] | None = None) -> bool:
    """True when ``stream`` is the journal connection systemd gave this process.

    systemd sets ``$JOURNAL_STREAM`` to ``DEVICE:INODE`` of the stdout/stderr socket it
    connected to journald; the stream must be that very file (systemd.exec(5)).
    """
    env = os.environ if environ is None else environ
    expected = env.get("JOURNAL_STREAM", "")
    if not expected:
        return False
    try:
        info = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return False
    return expected == f"{info.st_dev}:{info.st_ino}"


def _level_number(level: int | str) -> int:
    if isinstance(level, int):
        return level
    number = logging.getLevelName(level.strip().upper())
    if not isinstance(number, int):
        valid = "DEBUG, INFO, WARNING, ERROR, CRITICAL"
        raise LoggingConfigError(f"log level {level!r} is unknown; valid levels: {valid}")
    return number


def configure_logging(
    level: int | str = "INFO",
    json: bool = True,
    stream: IO[str] | None = None,
    journal: bool | None = None,
) -> logging.Handler:
    """Route all logging to one stderr handler, JSON lines by default.

    level : threshold of the root logger, a name ("INFO") or a number (20).
    json : True for one JSON object per line, False for text that keeps every field.
    stream : where to write; default ``sys.stderr``.
    journal : prefix each line with its syslog priority; default: when ``stream`` is
        the journal stream systemd connected (``$JOURNAL_STREAM``).
    Calling it again replaces the handler it installed before (idempotent).
    Returns the installed handler. Raises LoggingConfigError for an unknown level.
    """
    number = _level_number(level)
    target = stream or sys.stderr
    if journal is None:
        journal = stream_is_journal(target)
    handler = logging.StreamHandler(target)
    handler.set_name("namazu")
    handler.setFormatter(JsonFormatter(journal) if json else TextFormatter(journal))
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
