"""docs/CONFIG.md is generated, complete and current; the example config is valid."""

from __future__ import annotations

import dataclasses
import json
import tomllib
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from namazu.server.core import config_reference
from namazu.server.core.config import ConfigError, NamazuConfig, load_config
from namazu.server.core.config_reference import (
    UndocumentedKeyError,
    model_keys,
    parameter_keys,
    reference_entries,
    render_markdown,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "namazu.example.toml"


def _model_field_paths() -> set[str]:
    """Every key of the configuration, walked independently of the generator."""
    paths = set()
    for name, info in NamazuConfig.model_fields.items():
        annotation = info.annotation
        if name in config_reference.PARAMETER_SECTIONS:
            params = config_reference.PARAMETER_SECTIONS[name]
            paths |= {f"{name}.{f.name}" for f in dataclasses.fields(params)}
        elif typing.get_origin(annotation) is list:
            (model,) = typing.get_args(annotation)
            paths |= {f"{name}[].{key}" for key in model.model_fields}
        elif typing.get_origin(annotation) is dict:
            _, model = typing.get_args(annotation)
            paths |= {f"{name}.NAME.{key}" for key in model.model_fields}
        else:
            paths |= {f"{name}.{key}" for key in annotation.model_fields}
    return paths


def test_config_md_is_current():
    current = (ROOT / "docs" / "CONFIG.md").read_text(encoding="utf-8")
    assert current == render_markdown(), (
        "docs/CONFIG.md is stale; run: .venv/bin/python -m namazu.server.core.config_reference"
    )


def test_every_key_is_documented_with_a_description():
    documented = {item.key: item for _, keys in reference_entries().values() for item in keys}
    assert set(documented) == _model_field_paths()
    for key, item in documented.items():
        assert len(item.description) >= 5, f"{key}: description too short"
        text = render_markdown()
        assert f"| `{key}` |" in text


def test_a_field_without_description_is_an_error():
    class Section(BaseModel):
        documented: int = Field(1, description="has one")
        bare: int = 2

    with pytest.raises(UndocumentedKeyError, match=r"^demo\.bare: field has no description"):
        model_keys(Section, ["demo"], env=True)


def test_a_parameter_missing_from_the_docstring_is_an_error():
    @dataclasses.dataclass(frozen=True)
    class Params:
        """Parameters.

        alpha : float. Weight [1].
        """

        alpha: float = 1.0
        beta: float = 2.0

    assert config_reference.parameter_descriptions(Params) == {"alpha": ("float", "Weight [1].")}
    with pytest.raises(UndocumentedKeyError, match=r"^rule\.beta: no description"):
        parameter_keys("rule", Params)


def _other_values(default: object) -> list[object]:
    """Candidate values of the default's type that differ from it."""
    if isinstance(default, bool):
        return [not default]
    if isinstance(default, int):
        return [default + 1, default - 1, default * 2]
    if isinstance(default, float):
        return [default * 2 + 0.5, default / 2, default + 0.25]
    if isinstance(default, str):
        return [default + "x", "other", "/tmp/other"]
    return []


def _key_value(config: NamazuConfig, dotted: str) -> object:
    """The value of a documented key; a named table (``influx_instances.NAME``) is read
    under the name ``north``, which the test's variables use."""
    section, *named, key = dotted.replace(".NAME", ".north").split(".")
    holder = getattr(config, section)
    for name in named:
        if name not in holder:
            return None
        holder = holder[name]
    return holder.get(key) if isinstance(holder, dict) else getattr(holder, key)


def test_every_documented_environment_variable_sets_its_key():
    """Each NAMAZU_* variable set to a valid value other than the default changes
    exactly its key (a variable that is ignored leaves the default and fails)."""
    checked = 0
    defaults = load_config(environ={})
    for _, keys in reference_entries().values():
        for item in keys:
            if not item.env or not item.default.startswith("`"):
                continue
            default = tomllib.loads(f"v = {item.default.strip('`')}")["v"]
            for candidate in _other_values(default):
                literal = json.dumps(candidate)  # a TOML literal for bool, number, str
                try:
                    env = item.env.replace("__NAME__", "__NORTH__")
                    config = load_config(environ={env: literal})
                except ConfigError:
                    continue  # outside the key's allowed range: try the next one
                value, before = (_key_value(c, item.key) for c in (config, defaults))
                assert str(value) == str(candidate), f"{item.env} did not set {item.key}"
                assert str(value) != str(before)
                checked += 1
                break
    assert checked >= 40


def test_check_mode_reports_a_stale_file(tmp_path, capsys):
    stale = tmp_path / "CONFIG.md"
    stale.write_text("# old\n")
    assert config_reference.main(["--check", "--output", str(stale)]) == 1
    assert "is stale" in capsys.readouterr().err
    assert config_reference.main(["--output", str(stale)]) == 0
    assert config_reference.main(["--check", "--output", str(stale)]) == 0


def test_example_config_is_valid_and_has_every_section():
    config = load_config(EXAMPLE, environ={})
    assert config.rule_params().increase_pct == 140.0
    sections = set(tomllib.loads(EXAMPLE.read_text()))
    assert sections == set(NamazuConfig.model_fields)
