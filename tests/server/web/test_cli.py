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


def test_several_workers_without_a_secret_key_are_refused(tmp_path, capsys, monkeypatch):
    """Each worker would sign sessions with a random key of its own: a log-in made in one
    worker would not be valid in the other."""
    monkeypatch.delenv("NAMAZU_WEB__SECRET_KEY", raising=False)
    config = tmp_path / "namazu.toml"
    config.write_text(f'[state]\nurl = "sqlite:///{tmp_path}/state.sqlite"\n', encoding="utf-8")
    assert main(["--config", str(config), "--workers", "2"]) == 2
    err = capsys.readouterr().err
    assert "web.secret_key is not set" in err and "2 workers" in err
    assert len(err.strip().splitlines()) == 1
