"""Structured JSON logging setup."""

from __future__ import annotations

import io
import json
import logging
import os

import pytest

from namazu.server.core.logging_setup import (
    LoggingConfigError,
    configure_logging,
    stream_is_journal,
)


@pytest.fixture
def restore_root_logger():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def test_json_lines_carry_level_logger_message_and_extras(restore_root_logger):
    stream = io.StringIO()
    configure_logging("INFO", json=True, stream=stream)
    log = logging.getLogger("namazu.test")
    log.debug("hidden below threshold")
    log.info("batch written %d", 7, extra={"points": 5000, "farm": "demo-farm"})
    try:
        raise KeyError("boom")
    except KeyError:
        log.exception("write failed")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["level"] == "INFO"
    assert first["logger"] == "namazu.test"
    assert first["msg"] == "batch written 7"
    assert first["points"] == 5000 and first["farm"] == "demo-farm"
    assert first["ts"].endswith("Z") and len(first["ts"]) == len("2024-01-01T00:00:00.000Z")
    assert second["level"] == "ERROR" and "KeyError: 'boom'" in second["exc"]


def test_configure_twice_keeps_one_handler_and_text_mode_is_plain(restore_root_logger):
    stream = io.StringIO()
    configure_logging("DEBUG", json=True, stream=io.StringIO())
    configure_logging("WARNING", json=False, stream=stream)
    named = [h for h in logging.getLogger().handlers if h.get_name() == "namazu"]
    assert len(named) == 1
    logging.getLogger("namazu.test").warning("plain text")
    assert "WARNING namazu.test: plain text" in stream.getvalue()


def test_unknown_level_names_the_valid_ones():
    with pytest.raises(LoggingConfigError, match="'loud' is unknown; valid levels: DEBUG"):
        configure_logging("loud")


def test_text_format_keeps_every_field(restore_root_logger):
    stream = io.StringIO()
    configure_logging("INFO", json=False, stream=stream)
    logging.getLogger("namazu.test").info(
        "ingest counters",
        extra={"received": 5, "connected": False, "broker": "127.0.0.1:1883",
               "error": 'say "no"', "by_reason": {"schema": 2}},
    )  # fmt: skip
    line = stream.getvalue().strip()
    assert line.endswith(
        "INFO    namazu.test: ingest counters received=5 connected=false "
        'broker=127.0.0.1:1883 error="say \\"no\\"" by_reason={"schema":2}'
    )


def test_lines_carry_journald_priorities_on_the_journal_stream(
    restore_root_logger, tmp_path, monkeypatch
):
    with (tmp_path / "journal").open("w") as stream:
        info = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{info.st_dev}:{info.st_ino}")
        assert stream_is_journal(stream)
        configure_logging("DEBUG", json=True, stream=stream)
        log = logging.getLogger("namazu.test")
        log.debug("d")
        log.info("i")
        log.warning("w")
        log.error("e")
        log.critical("c")
        configure_logging("INFO", json=False, stream=stream)
        log.warning("text too")
    lines = (tmp_path / "journal").read_text().splitlines()
    assert [line[:3] for line in lines] == ["<7>", "<6>", "<4>", "<3>", "<2>", "<4>"]
    assert json.loads(lines[2][3:])["msg"] == "w"
    assert lines[5].endswith("WARNING namazu.test: text too")


def test_no_priority_prefix_on_another_stream(restore_root_logger, monkeypatch):
    monkeypatch.setenv("JOURNAL_STREAM", "1:2")
    stream = io.StringIO()
    configure_logging("INFO", json=True, stream=stream)
    logging.getLogger("namazu.test").warning("plain")
    assert stream.getvalue().startswith("{")
