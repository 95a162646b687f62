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
        context = browser.new_context(viewport={"width": 1400, "height": 900})
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


def _open(page, base: str, path: str) -> None:
    """Go to a page, logging in as a viewer first when the session is new."""
    page.goto(f"{base}{path}")
    if "/login" in page.url:
        page.fill("input[name=username]", "viewer")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"{base}{path.split('?')[0]}*")


def _url_range(page) -> tuple[str, str]:
    """(start, end) of the page's address."""
    from urllib.parse import parse_qs, urlsplit

    query = parse_qs(urlsplit(page.url).query)
    return query["start"][0], query["end"][0]


def _plot(page, expression: str):
    return page.evaluate(f"() => {{ const el = document.getElementById('timeline-plot'); "
                         f"return {expression}; }}")  # fmt: skip


def test_timeline_zoom_in_out_url_state_and_back_button(served, page):
    """Stacked series on one axis; every zoom re-queries the server and lands in the URL;
    zooming out widens the range (not only the data already fetched); Back returns."""
    _, base = served
    _open(page, base, f"/timeline?farm={FARM}&start=2024-03-09T00:00:00Z&end=2024-03-11T00:00:00Z")
    page.wait_for_selector("#timeline-plot[data-rendered='1']", timeout=30_000)
    panels = _plot(page, "el.layout.annotations.filter(a => (a.name || '').startsWith('panel-'))"
                         ".map(a => a.name)")  # fmt: skip
    assert panels == ["panel-herd", "panel-species:cow"]  # the default: herd and each species
    assert _url_range(page)[0].startswith("2024-03-09T00:00:00")

    _plot(page, "(el.dataset.rendered = '0', Plotly.relayout(el, {'xaxis.range': "
                "['2024-03-10 08:00:00', '2024-03-10 14:00:00']}))")  # fmt: skip
    page.wait_for_function("() => decodeURIComponent(location.search).includes('2024-03-10T08:00')")
    page.wait_for_selector("#timeline-plot[data-rendered='1']", timeout=30_000)
    zoomed = page.url
    assert page.input_value("input[name=start]").startswith("2024-03-10T08:00")

    page.click("#zoom-out")  # six hours become eighteen around the same centre
    page.wait_for_function(f"() => location.href !== {zoomed!r}")
    page.wait_for_selector("#timeline-plot[data-rendered='1']", timeout=30_000)
    assert page.input_value("input[name=start]").startswith("2024-03-10T02:00")
    assert page.input_value("input[name=end]").startswith("2024-03-10T20:00")
    assert _url_range(page)[0].startswith("2024-03-10T02:00")
    wide = _plot(page, "el.layout.xaxis.range")
    assert wide[0].startswith("2024-03-10 02:00") and wide[1].startswith("2024-03-10 20:00")

    page.go_back()  # the zoomed range again, fetched again
    page.wait_for_function(f"() => location.href === {zoomed!r}")
    page.wait_for_function(
        "() => document.getElementById('timeline-plot').dataset.start.startsWith('2024-03-10T08')"
    )
    page.wait_for_selector("#timeline-plot[data-rendered='1']", timeout=30_000)
    assert _plot(page, "el.layout.xaxis.range")[0].startswith("2024-03-10 08:00")
    page.screenshot(path=str(SHOTS / "timeline-stacked.png"), full_page=True)

    page.goto(zoomed)  # the URL alone restores the view (shareable)
    page.wait_for_selector("#timeline-plot[data-rendered='1']", timeout=30_000)
    assert _plot(page, "el.layout.xaxis.range")[0].startswith("2024-03-10 08:00")

    _open(page, base, f"/timeline?farm={FARM}&series=cow-99")
    page.wait_for_selector("#timeline-plot[data-rendered='1']", timeout=30_000)
    assert "no such animal" in page.text_content("#timeline-status")
    assert page.js_errors == []


def test_alert_email_reads_on_a_phone(page):
    """The alert e-mail's HTML at 390 px: nothing wider than the screen; saved for the
    README."""
    from namazu.server.alerts.mail import AlarmSummary, render_alert

    common = dict(
        farm="farm-a", farm_name="Fattoria Rossi", severity="warning",
        opened_at="2024-05-01T02:44:00Z", animals_reporting=32, animals_total=32,
        timezone="Europe/Rome", panel_url="https://namazu.example.org",
        rule_version="namazu-rule/1",
    )  # fmt: skip
    herd = AlarmSummary(
        series="herd", kind="herd", start="2024-05-01T02:00:00Z", end="2024-05-01T04:00:00Z",
        peak_ratio=3.4, animals_surged=tuple(f"gw-1-cow-{i:03d}" for i in range(1, 27)),
        log_hash="9f" * 32, alarm_id=41, log_index=118, declared_at="2024-05-01T02:45:00Z",
        **common,
    )  # fmt: skip
    members = [
        AlarmSummary(
            series=f"gw-1-cow-{i:03d}",
            kind="animal",
            start="2024-05-01T02:05:00Z",
            end="2024-05-01T03:40:00Z",
            peak_ratio=4.1,
            animals_surged=(),
            log_hash=f"{i:064x}",
            alarm_id=41 + i,
            **common,
        )  # fmt: skip
        for i in range(1, 27)
    ]
    subject, text, html_body = render_alert([herd, *members])
    page.set_viewport_size({"width": 390, "height": 844})
    page.set_content(html_body)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert page.evaluate("document.body.scrollWidth") <= 390
    assert "Fattoria Rossi" in page.text_content("h1")
    page.screenshot(path=str(SHOTS / "alert-email-phone.png"), full_page=True)
    (SHOTS / "alert-email.txt").write_text(f"Subject: {subject}\n\n{text}", encoding="utf-8")
    page.set_viewport_size({"width": 1400, "height": 900})


def test_earthquake_view_from_the_catalogue(served, page):
    """One click from the catalogue table: every series ±48 h, the lead-window band, the
    target line and the event's verdict."""
    panel, base = served
    _open(page, base, f"/catalog?farm={FARM}&start=2024-01-01&end=2024-04-01&max_distance_km=1500")
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
    page.screenshot(path=str(SHOTS / "quake.png"), full_page=True)
    assert page.js_errors == []
