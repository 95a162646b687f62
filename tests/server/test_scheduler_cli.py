"""``namazu scheduler`` on bad input: one line naming the problem, no traceback."""

from __future__ import annotations

import pytest

from namazu.server.cli import main as namazu
from namazu.server.launch.stack import free_port


@pytest.fixture
def unreachable_store(tmp_path, state_url, monkeypatch):
    """A configuration whose InfluxDB port has nothing listening (the state store is
    there, on each backend)."""
    monkeypatch.setenv("NAMAZU_INFLUX__URL", f'"http://127.0.0.1:{free_port()}"')
    monkeypatch.setenv("NAMAZU_STATE__URL", f'"{state_url}"')
    monkeypatch.setenv("NAMAZU_SCHEDULER__ALARM_LOG_PATH", f'"{tmp_path / "log.jsonl"}"')


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["--replay", "2026-01-01", "2026-01-02", "--step", "0"], 2, "--step must be positive"),
        (["--replay", "2026-01-02", "2026-01-01"], 2, "END is before START"),
        (["--replay", "yesterday", "2026-01-01"], 2, "bad --replay/--step"),
        (["--replay", "2026-01-01", "2026-01-01T01:00"], 1, "time-series store unavailable"),
        (["--once"], 1, "time-series store unavailable"),
    ],
)
def test_bad_input_or_a_missing_store_is_one_line(unreachable_store, capsys, argv, code, message):
    assert namazu(["scheduler", "--log-level", "CRITICAL", *argv]) == code
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
