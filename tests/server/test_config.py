"""Configuration: defaults, TOML, environment overrides and errors that name the key."""

from __future__ import annotations

import pytest

from namazu.server.core.config import ConfigError, load_config
from namazu.server.core.config import main as check_config


def test_defaults_are_the_design_contract():
    config = load_config(environ={})
    rule = config.rule_params()
    assert (rule.baseline_days, rule.min_baseline_days) == (7, 3)
    assert rule.increase_pct == 140.0 and rule.min_duration_min == 45.0
    evaluation = config.evaluation_params()
    assert evaluation.lead_window_h == 20.0 and evaluation.min_magnitude == 4.0
    assert evaluation.reaction_window_min == 60.0


def test_toml_then_environment_override(tmp_path):
    path = tmp_path / "namazu.toml"
    path.write_text("[mqtt]\nport = 1884\n[rule]\nincrease_pct = 200\n")
    config = load_config(path, environ={"NAMAZU_MQTT__PORT": "1885", "NAMAZU_MQTT__PASSWORD": "s"})
    assert config.mqtt.port == 1885
    assert config.mqtt.password == "s"
    assert config.rule_params().increase_pct == 200


@pytest.mark.parametrize(
    ("toml", "named"),
    [
        ("[mqtt]\nport = 70000\n", "mqtt.port"),
        ("[mqtt]\nprot = 1\n", "mqtt.prot"),
        ("[rule]\nmin_baseline_days = 9\n", "rule"),
        ("[mail]\nsecurity = 'rot13'\n", "mail.security"),
        ("[[farms]]\nid = 'x'\nlatitude = 95\nlongitude = 0\n", "farms.0.latitude"),
        ("[[farms]]\nid = 'farm/1'\nlatitude = 1\nlongitude = 0\n", "farms.0.id"),
        (f"[[farms]]\nid = '{'f' * 65}'\nlatitude = 1\nlongitude = 0\n", "farms.0.id"),
    ],
)
def test_bad_keys_are_named(tmp_path, toml, named):
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert str(info.value).startswith(named)


def test_unreadable_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml", environ={})
    broken = tmp_path / "broken.toml"
    broken.write_text("[mqtt\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(broken, environ={})


def test_check_config_command(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("NAMAZU_CONFIG", raising=False)
    good = tmp_path / "good.toml"
    good.write_text("[mqtt]\npassword = 'hunter2-pw'\n")
    assert check_config(["--config", str(good)]) == 0
    assert "hunter2-pw" not in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text("[influx]\ntimeout_s = -1\n")
    assert check_config(["--config", str(bad)]) == 2
    assert "influx.timeout_s" in capsys.readouterr().err
