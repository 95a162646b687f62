"""The panel in a real browser: headless Debian Chromium (Playwright) against the app
served over HTTP, on a real InfluxDB holding a simulated farm with an alarm.

Logs in, opens the timeline around the alarm, waits for the plotly plot, checks that
the alarm span is drawn, and saves screenshots for the documentation."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT
from tests.server.web.conftest import PASSWORD, build_panel
from tests.server.web.seed import FARM

CHROMIUM = "/usr/bin/chromium"
SHOTS = PROJECT_ROOT / "docs" / "screenshots"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="Debian chromium not installed"),
]


@pytest.fixture(scope="module")
def served(stack, tmp_path_factory):
    """The seeded panel served by werkzeug on a free loopback port."""
    from werkzeug.serving import make_server

    panel = build_panel(stack, tmp_path_factory.mktemp("browser"))
    server = make_server("127.0.0.1", 0, panel.app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield panel, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=10)
    server.server_close()
    panel.app.extensions["namazu"].influx.drop_database()


@pytest.fixture(scope="module")
def page(served):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        context = browser.new_context(viewport={"width": 1280, "height": 860})
        tab = context.new_page()
        external: list[str] = []
        base = served[1]
        tab.on(
            "request",
            lambda request: None if request.url.startswith(base) else external.append(request.url),
        )
        errors: list[str] = []
        tab.on("pageerror", lambda exc: errors.append(str(exc)))
        tab.external_requests = external
        tab.js_errors = errors
        yield tab
        context.close()
        browser.close()


def test_login_timeline_alarm_span_and_screenshots(served, page):
    panel, base = served
    page.goto(f"{base}/timeline?farm={FARM}&series=cow-1")
    assert "/login" in page.url  # redirected, next kept
    page.fill("input[name=username]", "reviewer")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/timeline*")

    start, end = "2024-03-08T00:00:00Z", "2024-03-11T00:00:00Z"
    page.goto(f"{base}/timeline?farm={FARM}&series=cow-1&start={start}&end={end}")
    page.wait_for_selector("#timeline-plot[data-rendered='1']", timeout=30_000)
    shapes = page.evaluate(
        "() => document.getElementById('timeline-plot').layout.shapes.map(s => s.name)"
    )
    assert f"alarm-{panel.farm.alarm_id}" in shapes
    span = page.evaluate(
        "() => document.getElementById('timeline-plot').layout.shapes"
        ".filter(s => s.name.startsWith('alarm-'))[0]"
    )
    assert span["x0"].startswith("2024-03-10 10:00")  # farm-local wall clock (UTC farm)
    assert page.locator("#timeline-plot .shapelayer path").count() >= 1
    # activity, baseline, threshold and quakes drawn as SVG (no WebGL needed on farm PCs)
    assert page.locator("#timeline-plot .scatterlayer .trace").count() >= 4
    assert page.locator("#timeline-plot .scatterlayer .trace path.js-line").count() >= 3
    assert "WebGL" not in page.text_content("#timeline-plot")
    assert int(page.get_attribute("#timeline-plot", "data-points")) > 100
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "timeline.png"), full_page=True)

    # zooming in re-queries the server: the six hours around the alarm come back raw
    page.evaluate(
        "() => { const el = document.getElementById('timeline-plot'); el.dataset.rendered = '0';"
        " Plotly.relayout(el, {'xaxis.range': ['2024-03-10 08:00:00', '2024-03-10 14:00:00']}); }"
    )
    page.wait_for_selector("#timeline-plot[data-rendered='1']", timeout=30_000)
    assert int(page.get_attribute("#timeline-plot", "data-points")) == 360
    assert "bucket" not in page.text_content("#timeline-status")

    page.goto(f"{base}/")
    page.wait_for_selector("text=reporting of")
    page.screenshot(path=str(SHOTS / "overview.png"), full_page=True)

    page.goto(f"{base}/alarms/{panel.farm.alarm_id}")
    page.wait_for_selector("#timeline-plot[data-rendered='1']", timeout=30_000)
    page.select_option("select[name=verdict]", "unsure")
    page.fill("textarea[name=comment]", "checked against the storm log")
    page.click("form.stack button[type=submit]")
    page.wait_for_selector("text=checked against the storm log")
    page.wait_for_selector("#timeline-plot[data-rendered='1']", timeout=30_000)
    page.screenshot(path=str(SHOTS / "alarm.png"), full_page=True)

    page.goto(f"{base}/evaluation?run=1&farm={FARM}&start=2024-03-01&end=2024-03-11")
    page.wait_for_selector("#molchan-plot[data-rendered='1']", timeout=30_000)
    statement = page.text_content("#chance-statement")
    assert "target earthquake" in statement
    page.screenshot(path=str(SHOTS / "evaluation.png"), full_page=True)

    page.goto(f"{base}/catalog?farm={FARM}&start=2024-01-01&end=2024-04-01&max_distance_km=1500")
    page.wait_for_selector("#catalog-map[data-rendered='1']", timeout=30_000)

    assert page.external_requests == []
    assert page.js_errors == []
    for name in ("timeline", "overview", "alarm", "evaluation"):
        assert Path(SHOTS / f"{name}.png").stat().st_size > 10_000


def test_earthquake_view_from_the_catalogue(served, page):
    """One click from the catalogue table: every series ±48 h, the lead-window band, the
    target line and the event's verdict."""
    panel, base = served
    page.goto(f"{base}/catalog?farm={FARM}&start=2024-01-01&end=2024-04-01&max_distance_km=1500")
    if "/login" in page.url:
        page.fill("input[name=username]", "viewer")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"{base}/catalog*")
    page.click("tr:has-text('q-near') >> text=did they react?")
    page.wait_for_url(f"{base}/quake*")
    page.wait_for_selector("#timeline-plot[data-rendered='1']", timeout=30_000)
    assert page.text_content("#quake-verdict").startswith("miss")
    names = page.evaluate(
        "() => document.getElementById('timeline-plot').layout.shapes.map(s => s.name)"
    )
    assert "lead-window" in names and "target-q-near" in names
    # herd, the cows, cow-1 and cow-2: one panel each, on one time axis
    panels = page.evaluate(
        "() => document.getElementById('timeline-plot').layout.annotations"
        ".filter(a => (a.name || '').startsWith('panel-')).map(a => a.name)"
    )
    assert panels == ["panel-herd", "panel-species:cow", "panel-cow-1", "panel-cow-2"]
    page.set_viewport_size({"width": 1400, "height": 900})
    page.screenshot(path=str(SHOTS / "quake.png"), full_page=True)
    assert page.js_errors == []
