"""Shared fixtures: the real data folder and the real local stack.

Data: ``NAMAZU_DATA_DIR`` (default ``../shared/data``). A test that needs a file calls
``require_data("relative/path")``: it skips with a reason when the file is absent, and
fails instead when ``NAMAZU_REQUIRE_DATA=1`` (as in CI).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path:
    """The folder with the real data pack (not part of the repository)."""
    default = PROJECT_ROOT.parent / "shared" / "data"
    return Path(os.environ.get("NAMAZU_DATA_DIR", default)).resolve()


def require_data(relpath: str) -> Path:
    """Path of a data-pack file; skip (or fail under NAMAZU_REQUIRE_DATA=1) when missing."""
    path = shared_data_dir() / relpath
    if not path.exists():
        message = f"data file {relpath} not found under {shared_data_dir()} (set NAMAZU_DATA_DIR)"
        if os.environ.get("NAMAZU_REQUIRE_DATA") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The data-pack folder (may not exist; use ``require_data`` for files)."""
    return shared_data_dir()
