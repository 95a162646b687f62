"""analytics/ is pure: numpy, pandas, scipy, statsmodels and the standard library only."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ANALYTICS = Path(__file__).resolve().parents[2] / "analytics"
ALLOWED_THIRD_PARTY = {"numpy", "pandas", "scipy", "statsmodels"}
FORBIDDEN_STDLIB = {"socket", "urllib", "http", "subprocess", "sqlite3", "ftplib", "smtplib"}
FORBIDDEN_CALLS = {"open", "exec", "eval"}


def _modules() -> list[Path]:
    return sorted(ANALYTICS.glob("*.py"))


def _allowed(module: str) -> bool:
    if module == "namazu.analytics" or module.startswith("namazu.analytics."):
        return True
    top = module.split(".")[0]
    if top in FORBIDDEN_STDLIB:
        return False
    return top in sys.stdlib_module_names or top in ALLOWED_THIRD_PARTY


def _problems(source: str) -> list[str]:
    problems = []
    for node in ast.walk(ast.parse(source)):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        problems += [f"imports {name}" for name in names if not _allowed(name)]
        call = isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        if call and node.func.id in FORBIDDEN_CALLS:
            problems.append(f"calls {node.func.id}() on line {node.lineno}")
        if isinstance(node, ast.Attribute) and node.attr in {"read_text", "write_text", "urlopen"}:
            problems.append(f"uses .{node.attr} on line {node.lineno}")
    return problems


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.name)
def test_module_imports_only_numeric_stack(path):
    problems = _problems(path.read_text(encoding="utf-8"))
    assert problems == [], f"{path.name}: {'; '.join(problems)}"


def test_scan_finds_the_modules():
    names = {p.name for p in _modules()}
    assert {"rule.py", "evaluation.py", "activity.py", "tabular.py"} <= names


def test_scan_catches_forbidden_imports_and_io():
    source = (
        "import requests\nfrom paho.mqtt import client\nimport socket\nimport numpy\nopen('x')\n"
    )
    assert _problems(source) == [
        "imports requests",
        "imports paho.mqtt",
        "imports socket",
        "calls open() on line 5",
    ]
