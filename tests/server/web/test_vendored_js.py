"""The panel's plotly.js is vendored: the file is the one its README records (version,
licence, SHA-256), and the panel serves it without the plotly Python package."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

VENDOR = Path(__file__).resolve().parents[3] / "server" / "web" / "static" / "vendor"


def test_the_vendored_file_matches_its_record():
    readme = (VENDOR / "README.md").read_text(encoding="utf-8")
    row = re.search(
        r"\| `plotly.min.js` \| `plotly.js-dist-min` \| ([\d.]+) \| MIT \(`plotly.js.LICENSE`\) "
        r"\| `([0-9a-f]{64})` \|",
        readme,
    )
    assert row, "the vendor table lost its plotly.min.js row"
    version, digest = row.groups()
    data = (VENDOR / "plotly.min.js").read_bytes()
    assert hashlib.sha256(data).hexdigest() == digest
    assert data[:200].decode().splitlines()[1] == f"* plotly.js v{version}"
    assert "MIT License" in (VENDOR / "plotly.js.LICENSE").read_text(encoding="utf-8")


def test_the_panel_does_not_import_the_plotly_package():
    sources = (Path(__file__).resolve().parents[3] / "server").rglob("*.py")
    offenders = [str(p) for p in sources if re.search(r"^\s*import plotly", p.read_text(), re.M)]
    assert offenders == []
