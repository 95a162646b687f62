"""Structured JSON logging setup."""

from __future__ import annotations

import io
import json
import logging

import pytest

from namazu.server.core.logging_setup import LoggingConfigError, configure_logging


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
