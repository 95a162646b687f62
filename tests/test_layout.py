"""The package layout shows the architecture: every import points downwards.

``server/`` is grouped by concern; a module may import its own folder and the folders
below it, never a folder above (so the store never imports the web layer, the shared
base imports nothing of the server, and only the launchers and the CLI sit on top).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Lower numbers sit lower; folders on one level may import each other's modules.
LEVELS = {
    "core": 0,
    "store": 1,
    "ingest": 2,
    "catalogue": 2,
    "alerts": 2,
    # Offline research reads the alarm log that detection writes (``analyze --alarm-log``).
    "research": 3,
    "detection": 3,
    "web": 4,
    "launch": 5,
}


def _server_modules() -> list[Path]:
    return sorted(p for p in (ROOT / "server").rglob("*.py") if len(p.relative_to(ROOT).parts) > 2)


def _imported(source: str) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def test_every_server_module_sits_in_a_known_folder():
    folders = {p.relative_to(ROOT / "server").parts[0] for p in _server_modules()}
    assert folders <= set(LEVELS), f"folders without a level: {sorted(folders - set(LEVELS))}"


@pytest.mark.parametrize("path", _server_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_downwards(path):
    own = LEVELS[path.relative_to(ROOT / "server").parts[0]]
    upward = sorted(
        {
            name
            for name in _imported(path.read_text(encoding="utf-8"))
            if name.startswith("namazu.server.")
            and name.split(".")[2] in LEVELS
            and LEVELS[name.split(".")[2]] > own
        }
    )
    assert upward == [], f"{path.relative_to(ROOT)} imports upwards: {upward}"


@pytest.mark.parametrize("top", ["server", "analytics", "firmware_bridge"])
def test_no_module_uses_the_old_top_level_names(top):
    offenders = []
    for path in [*ROOT.glob("*/**/*.py")]:
        if ".venv" in path.parts or "build" in path.parts:
            continue
        for name in _imported(path.read_text(encoding="utf-8")):
            if name == top or name.startswith(top + "."):
                offenders.append(f"{path.relative_to(ROOT)}: {name}")
    assert offenders == [], offenders
