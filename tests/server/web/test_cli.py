"""``namazu web``: bad configuration is a one-line error with exit code 2."""

from __future__ import annotations

from namazu.server.web import main


def test_invalid_config_is_reported_in_one_line(tmp_path, capsys):
    config = tmp_path / "bad.toml"
    config.write_text("[web]\nport = 99999\n", encoding="utf-8")
    assert main(["--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "web.port" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_missing_config_file(tmp_path, capsys):
    assert main(["--config", str(tmp_path / "absent.toml")]) == 2
    assert "not found" in capsys.readouterr().err
