"""Detection-side jobs on real services: catalogue refresh job (local FDSN server serving
the real INGV file), data health, and the scheduler's failure backoff."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest
from sqlalchemy import select

from namazu.server.catalogue.fdsn import FdsnClient
from namazu.server.catalogue.refresh import CatalogRefreshJob, FarmLocation
from namazu.server.detection.health import HealthJob
from namazu.server.detection.scheduler import GuardedJob
from namazu.server.store.influx import point_line
from namazu.server.store.state import DataHealth, QuakeRevision, init_db, session_scope
from tests.conftest import require_data

pytestmark = pytest.mark.services

NOW = datetime(2012, 5, 30, 6, 0, tzinfo=UTC)


class _Fdsn(BaseHTTPRequestHandler):
    """Serves the real catalogue; then a revised copy; then 204; logs every query."""

    responses: list[tuple[int, str]] = []
    queries: list[dict[str, list[str]]] = []

    def do_GET(self):  # noqa: N802 (http.server API)
        type(self).queries.append(parse_qs(urlparse(self.path).query))
        status, body = type(self).responses.pop(0)
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        if status == 200:
            self.wfile.write(body.encode())

    def log_message(self, *args):
        pass


@pytest.fixture
def fdsn_server():
    text = require_data("catalogs/fdsn_text_ingv_emilia_2012-05-29.txt").read_text()
    lines = text.splitlines()
    revised = "\n".join([lines[0], lines[2].replace("|ML|2.9|", "|ML|3.1|")]) + "\n"
    _Fdsn.responses = [(503, ""), (200, text), (200, revised), (204, "")]
    _Fdsn.queries = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Fdsn)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/fdsnws/event/1", len(lines) - 1
    server.shutdown()
    server.server_close()


def _refresh_job(influx, engine, url: str) -> CatalogRefreshJob:
    """The catalogue refresh of one farm from the FDSN service at ``url`` (M >= 2)."""
    return CatalogRefreshJob(
        influx,
        engine,
        [url],
        [FarmLocation("farm-a", 44.88, 10.98)],
        client_factory=lambda u: FdsnClient(u, backoff_s=0.01, max_wait_s=0.05),
        min_magnitude=2.0,
    )


def test_catalog_refresh_keeps_revisions_goes_incremental_and_annotates(
    state_url, influx, fdsn_server
):
    url, n_events = fdsn_server
    engine = init_db(state_url)
    job = _refresh_job(influx, engine, url)
    [first] = job.run(NOW)  # 503 then the catalogue: retried, all events stored
    assert (first.events, first.new_revisions) == (n_events, n_events)
    assert "updatedafter" not in _Fdsn.queries[1]
    [second] = job.run(NOW + timedelta(hours=1))
    assert second.new_revisions == 1
    sent = _Fdsn.queries[2]["updatedafter"][0]
    assert sent.startswith("2012-05-30T05:50:00")  # previous run minus the overlap
    [third] = job.run(NOW + timedelta(hours=2))  # 204: nothing new, no error
    assert (third.events, third.new_revisions) == (0, 0)
    with session_scope(engine) as session:
        revisions = session.scalars(
            select(QuakeRevision).where(QuakeRevision.event_id == "863291")
        ).all()
        assert sorted((r.revision, r.magnitude) for r in revisions) == [(1, 2.9), (2, 3.1)]
    points = influx.query('SELECT "magnitude", "event_id" FROM "earthquake"')[0]["values"]
    assert len(points) == n_events
    assert [p[1] for p in points if p[2] == "863291"] == [3.1]


def test_a_source_named_by_a_long_url_keeps_its_revisions_and_checkpoint(
    state_url, influx, fdsn_server
):
    """A catalogue source given by its URL is stored under that URL, however long (here
    300 characters, as behind a proxy): every backend keeps it whole."""
    url, n_events = fdsn_server
    url = url.replace("/fdsnws/", "/" + "proxy-" * 44 + "/fdsnws/")
    assert len(url) > 300
    engine = init_db(state_url)
    job = _refresh_job(influx, engine, url)
    [first] = job.run(NOW)
    assert (first.source, first.events, first.new_revisions) == (url, n_events, n_events)
    job.run(NOW + timedelta(hours=1))
    assert "updatedafter" in _Fdsn.queries[2]  # the checkpoint under the URL was found
    with session_scope(engine) as session:
        sources = set(session.scalars(select(QuakeRevision.source)))
    assert sources == {url}


def test_health_flags_silent_animals_and_offline_gateways(state_url, influx):
    engine = init_db(state_url)
    t = int(NOW.timestamp() * 1000)
    lines = [
        point_line("activity", {"farm": "f", "gateway": "gw-1", "animal": "a1", "species": "cow"},
                   {"odba": 0.1}, t - 60_000),
        point_line("activity", {"farm": "f", "gateway": "gw-1", "animal": "a2", "species": "cow"},
                   {"odba": 0.1}, t - 3_600_000),
        point_line("activity", {"farm": "f", "gateway": "gw-2", "animal": "b1", "species": "dog"},
                   {"odba": 0.1}, t - 60_000),
        point_line("gateway_status", {"farm": "f", "gateway": "gw-2"}, {"online": False},
                   t - 30_000),
    ]  # fmt: skip
    influx.write_lines(lines)
    job = HealthJob(influx, engine, ["f"], stale_after_s=600)
    report = job.run(NOW)
    assert sorted(report.flagged) == [
        ("f", "animal", "a2", "silent"),
        ("f", "animal", "b1", "offline"),
        ("f", "gateway", "gw-2", "offline"),
    ]
    assert job.run(NOW).flagged == []  # flagged once, not on every run
    with session_scope(engine) as session:
        status = {r.name: r.status for r in session.scalars(select(DataHealth))}
    assert status == {"a1": "ok", "a2": "silent", "b1": "offline", "gw-2": "offline"}


def test_guarded_job_backs_off_exponentially_and_recovers():
    clock = [0.0]
    outcomes = [RuntimeError("influx down")] * 3 + [None] * 10

    calls = []

    def body():
        calls.append(clock[0])
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome

    job = GuardedJob("detection", body, interval_s=10, max_backoff_s=25, clock=lambda: clock[0])
    ran = []
    for t in range(0, 80, 5):
        clock[0] = float(t)
        ran.append((t, job()))
    assert calls == [0, 10, 30, 55, 60, 65, 70, 75]  # waits 10, 20, then capped at 25
    assert [t for t, ok in ran if ok] == [55, 60, 65, 70, 75]  # recovered, runs each time
    assert job.failures == 0
