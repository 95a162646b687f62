"""Generate the configuration reference (docs/CONFIG.md) from the models themselves.

``python -m namazu.server.core.config_reference`` rewrites ``docs/CONFIG.md``;
``python -m namazu.server.core.config_reference --check`` exits 1 when the file is stale.
Every key of ``namazu.server.core.config.NamazuConfig`` is listed with its type, default,
allowed range, environment variable and description; the keys of ``[rule]`` and
``[evaluation]`` come from the numpydoc docstrings of ``namazu.analytics.params``. A key
without a description is an error, so an undocumented key cannot ship.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import sys
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from namazu.analytics.params import EvaluationParams, RuleParams
from namazu.server.core.config import ENV_PREFIX, NamazuConfig

DEFAULT_OUTPUT = Path(__file__).resolve().parents[2] / "docs" / "CONFIG.md"

#: Placeholder for the name of an entry of a named-table section (``influx_instances``).
NAMED = "NAME"

# Sections that are dicts validated against a parameter dataclass.
PARAMETER_SECTIONS: dict[str, type] = {"rule": RuleParams, "evaluation": EvaluationParams}


class UndocumentedKeyError(Exception):
    """A configuration key has no description; the message names the key."""


@dataclass(frozen=True)
class ConfigKey:
    """One documented configuration key."""

    key: str  # dotted path, e.g. "mqtt.port"; list sections as "farms[].id"
    type: str
    default: str
    env: str  # environment variable, or "" when the key is TOML-only
    description: str


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Literal:
        return " \\| ".join(f'"{a}"' for a in args)
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type_name(a) for a in args)
    if origin in (list, tuple, set):
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return "table"
    if annotation is type(None):
        return "none"
    if isinstance(annotation, type) and issubclass(annotation, Path):
        return "path"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "table"
    return getattr(annotation, "__name__", str(annotation))


def _toml_value(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, str | Path):
        return f'`"{value}"`'
    if isinstance(value, list):
        return "`[" + ", ".join(_toml_value(v).strip("`") for v in value) + "]`"
    return f"`{value}`"


def _bounds(info: FieldInfo) -> str:
    words = []
    for item in info.metadata:
        if isinstance(item, annotated_types.Ge):
            words.append(f"≥ {item.ge}")
        elif isinstance(item, annotated_types.Gt):
            words.append(f"> {item.gt}")
        elif isinstance(item, annotated_types.Le):
            words.append(f"≤ {item.le}")
        elif isinstance(item, annotated_types.Lt):
            words.append(f"< {item.lt}")
    return f" ({', '.join(words)})" if words else ""


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    if info.default_factory is not None:
        value = info.default_factory()  # type: ignore[call-arg]
        if isinstance(value, list) and value and isinstance(value[0], BaseModel):
            return "one demo farm"
        return _toml_value(value)
    return _toml_value(info.default)


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _env_name(path: list[str]) -> str:
    return ENV_PREFIX + "__".join(part.upper() for part in path)


def model_keys(model: type[BaseModel], path: list[str], env: bool) -> list[ConfigKey]:
    keys = []
    for name, info in model.model_fields.items():
        dotted = ".".join([*path, name])
        if not (info.description or "").strip():
            raise UndocumentedKeyError(f"{dotted}: field has no description")
        keys.append(
            ConfigKey(
                key=dotted,
                type=_type_name(info.annotation),
                default=_default(info),
                env=_env_name([*path, name]) if env else "",
                description=info.description.strip() + _bounds(info),
            )
        )
    return keys


_PARAM_LINE = re.compile(r"^(\w+) : ([^.]+)\. (.*)$")


def parameter_descriptions(params: type) -> dict[str, tuple[str, str]]:
    """``{field: (type, description)}`` parsed from a numpydoc-style class docstring.

    Continuation lines (indented further) are joined to the description.
    """
    found: dict[str, tuple[str, str]] = {}
    current: str | None = None
    for line in inspect.cleandoc(params.__doc__ or "").splitlines():
        match = _PARAM_LINE.match(line)
        if match:
            current = match.group(1)
            found[current] = (match.group(2).strip(), match.group(3).strip())
        elif current and line.startswith("    ") and line.strip():
            kind, text = found[current]
            found[current] = (kind, f"{text} {line.strip()}")
        else:
            current = None
    return found


def parameter_keys(section: str, params: type) -> list[ConfigKey]:
    described = parameter_descriptions(params)
    keys = []
    for item in dataclasses.fields(params):
        dotted = f"{section}.{item.name}"
        if item.name not in described or not described[item.name][1]:
            raise UndocumentedKeyError(
                f"{dotted}: no description in the docstring of {params.__name__}"
            )
        kind, text = described[item.name]
        keys.append(
            ConfigKey(
                key=dotted,
                type=kind.replace("|", "\\|"),
                default=_toml_value(item.default),
                env=_env_name([section, item.name]),
                description=text,
            )
        )
    return keys


def reference_entries() -> dict[str, tuple[str, list[ConfigKey]]]:
    """``{section: (section description, keys)}`` for the whole configuration.

    Raises UndocumentedKeyError naming the first key without a description.
    """
    sections: dict[str, tuple[str, list[ConfigKey]]] = {}
    for name, info in NamazuConfig.model_fields.items():
        annotation = info.annotation
        if name in PARAMETER_SECTIONS:
            params = PARAMETER_SECTIONS[name]
            intro = f"{info.description} (`namazu.analytics.params.{params.__name__}`)."
            sections[name] = (intro, parameter_keys(name, params))
        elif typing.get_origin(annotation) is list:
            (item_model,) = typing.get_args(annotation)
            intro = (
                f"{info.description}: an array of tables, `[[{name}]]` in TOML "
                "(not settable from the environment)."
            )
            sections[name] = (intro, model_keys(item_model, [f"{name}[]"], env=False))
        elif typing.get_origin(annotation) is dict and _is_model(typing.get_args(annotation)[1]):
            item_model = typing.get_args(annotation)[1]
            intro = (
                f"{info.description}: one table `[{name}.NAME]` per instance; in the "
                f"environment `{_env_name([name, 'NAME', 'KEY'])}` with NAME in capitals."
            )
            sections[name] = (intro, model_keys(item_model, [name, NAMED], env=True))
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            intro = (annotation.__doc__ or "").strip()
            if not intro:
                raise UndocumentedKeyError(f"[{name}]: section model has no docstring")
            sections[name] = (intro, model_keys(annotation, [name], env=True))
        else:
            raise UndocumentedKeyError(f"{name}: top-level key is not a section")
    return sections


HEADER = """# Configuration reference

<!-- Generated by `python -m namazu.server.core.config_reference`; do not edit by hand. -->

Namazu reads one TOML file (`--config FILE` or `$NAMAZU_CONFIG`) and then
environment variables `NAMAZU_<SECTION>__<KEY>`, which win over the file. Values in
the environment are parsed as TOML values when they parse (`8883`, `true`,
`["INGV", "USGS"]`) and taken as plain strings otherwise. Secrets (passwords, the
session key) belong in the environment, never in the file.

`namazu check-config [--config FILE]` validates the result and names any bad key and
why. A commented example with every section: `deploy/namazu.example.toml`.
"""


def render_markdown() -> str:
    """The full reference as Markdown text."""
    out = [HEADER]
    for section, (intro, keys) in reference_entries().items():
        is_array = bool(keys) and keys[0].key.startswith(f"{section}[]")
        is_named = bool(keys) and keys[0].key.startswith(f"{section}.{NAMED}.")
        heading = f"[{section}.{NAMED}]" if is_named else f"[{section}]"
        out.append(f"## `[{heading}]`" if is_array else f"## `{heading}`")
        out.append("")
        out.append(intro if intro.endswith(".") else intro + ".")
        out.append("")
        out.append("| key | type | default | environment variable | description |")
        out.append("| --- | --- | --- | --- | --- |")
        for item in keys:
            env = f"`{item.env}`" if item.env else "TOML only"
            out.append(
                f"| `{item.key}` | {item.type} | {item.default} | {env} | {item.description} |"
            )
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Write docs/CONFIG.md, or with ``--check`` exit 1 when it is stale."""
    parser = argparse.ArgumentParser(
        prog="python -m namazu.server.core.config_reference", description=main.__doc__
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="Markdown file")
    parser.add_argument("--check", action="store_true", help="fail when the file is stale")
    args = parser.parse_args(argv)
    try:
        text = render_markdown()
    except UndocumentedKeyError as exc:
        print(f"config reference: undocumented key: {exc}", file=sys.stderr)
        return 1
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != text:
            print(
                f"{args.output} is stale; run: python -m namazu.server.core.config_reference",
                file=sys.stderr,
            )
            return 1
        return 0
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
