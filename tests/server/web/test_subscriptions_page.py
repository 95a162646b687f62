"""The admin page for alert e-mail subscriptions and the outbox, and the data-health page,
for every role."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from namazu.server.store.state import DataHealth, OutboxMail, Subscription, init_db, session_scope
from tests.server.web.conftest import csrf_from
from tests.server.web.seed import FARM

PANEL_ON_BOTH_BACKENDS = True

URL = "/admin/subscriptions"


def _rows(html: str, table: str) -> list[list[str]]:
    body = re.search(rf'<table id="{table}">.*?<tbody>(.*?)</tbody>', html, re.S).group(1)
    return [
        [re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<td[^>]*>(.*?)</td>", row)]
        for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)
    ]


def _subscriptions(panel) -> list[tuple[str, str, str, str]]:
    with session_scope(init_db(panel.state_url)) as db:
        return sorted(
            (s.recipient, s.farm, s.species, s.min_severity) for s in db.query(Subscription).all()
        )


@pytest.mark.parametrize("role", ["viewer", "reviewer"])
def test_viewers_and_reviewers_get_403_for_reading_and_writing(panel, client_for, role):
    client = client_for(role)
    assert client.get(URL).status_code == 403
    token = csrf_from(client.get("/events").get_data(as_text=True))
    before = _subscriptions(panel)
    response = client.post(
        URL,
        data={"action": "add", "recipient": "x@example.org", "farm": "*", "csrf_token": token},
    )
    assert response.status_code == 403
    assert _subscriptions(panel) == before
    assert "Subscriptions</a>" not in client.get("/").get_data(as_text=True)
    bearer = {"Authorization": f"Bearer {panel.tokens[role]}"}
    assert panel.app.test_client().get(URL, headers=bearer).status_code == 403


def test_anonymous_is_sent_to_log_in(panel):
    response = panel.app.test_client().get(URL)
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")


def test_admin_adds_lists_and_removes_subscriptions(panel, client_for):
    client = client_for("admin")
    page = client.get(URL)
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "Subscriptions</a>" in client.get("/").get_data(as_text=True)
    token = csrf_from(html)
    form = {"action": "add", "recipient": "vet@example.org", "farm": FARM, "species": "cow",
            "min_severity": "warning", "csrf_token": token}  # fmt: skip
    added = client.post(URL, data=form)
    assert added.status_code == 302 and added.headers["Location"] == URL
    listed = _rows(client.get(URL).get_data(as_text=True), "subscriptions")
    [row] = [r for r in listed if r[1] == "vet@example.org"]
    assert row[2:5] == [FARM, "cow", "warning"]
    # the same again, and bad values: 400 with the reason, nothing stored
    for change, message in [
        ({}, "already subscribes"),
        ({"recipient": "not-an-address"}, "not a plain e-mail address"),
        ({"farm": "elsewhere"}, "farm &#39;elsewhere&#39; is not configured"),
        ({"species": "horse"}, "species &#39;horse&#39;"),
        ({"min_severity": "urgent"}, "minimum severity &#39;urgent&#39;"),
    ]:
        response = client.post(URL, data={**form, **change})
        assert response.status_code == 400, change
        assert message in response.get_data(as_text=True), change
    assert [s for s in _subscriptions(panel) if s[0] == "vet@example.org"] == [
        ("vet@example.org", FARM, "cow", "warning")
    ]
    removed = client.post(URL, data={"action": "remove", "id": row[0], "csrf_token": token})
    assert removed.status_code == 302
    assert all(s[0] != "vet@example.org" for s in _subscriptions(panel))
    missing = client.post(URL, data={"action": "remove", "id": "9999", "csrf_token": token})
    assert missing.status_code == 400 and "no subscription with id 9999" in missing.get_data(
        as_text=True
    )


def test_admin_forms_need_the_csrf_token(panel, client_for):
    client = client_for("admin")
    form = {"action": "add", "recipient": "csrf@example.org", "farm": "*"}
    assert client.post(URL, data=form).status_code == 400
    assert client.post(URL, data={**form, "csrf_token": "forged"}).status_code == 400
    assert all(s[0] != "csrf@example.org" for s in _subscriptions(panel))


def test_outbox_shows_failed_mails_with_the_reason(panel, client_for):
    when = datetime(2026, 3, 1, tzinfo=UTC)
    with session_scope(init_db(panel.state_url)) as db:
        db.add(
            OutboxMail(
                recipient="gone@example.org", farm=FARM, subject="alarm", text="t", html="h",
                message_id="<page-failed@namazu>", attempts=3, failed_at=when,
                last_error="recipient refused: 550 <b>no such user</b>",
            )
        )  # fmt: skip
        db.add(
            OutboxMail(
                recipient="ok@example.org", farm=FARM, subject="alarm", text="t", html="h",
                message_id="<page-sent@namazu>", attempts=1, sent_at=when,
            )
        )  # fmt: skip
    client = client_for("admin")
    html = client.get(f"{URL}?outbox=failed").get_data(as_text=True)
    rows = _rows(html, "outbox")
    assert [(r[1], r[2], r[6]) for r in rows] == [("failed", "gone@example.org", "3")]
    assert "550 &lt;b&gt;no such user&lt;/b&gt;" in html  # escaped, never markup
    every = [r[1] for r in _rows(client.get(URL).get_data(as_text=True), "outbox")]
    assert "sent" in every and "failed" in every


@pytest.mark.parametrize("role", ["viewer", "reviewer", "admin"])
def test_data_health_page_lists_problems_first_for_every_role(panel, client_for, role):
    when = datetime(2026, 3, 1, 4, 0, tzinfo=UTC)
    with session_scope(init_db(panel.state_url)) as db:
        if not db.query(DataHealth).filter(DataHealth.farm == "health-farm").count():
            db.add_all(
                [
                    DataHealth(farm="health-farm", kind="animal", name="cow-ok", status="ok",
                               since=when, last_seen=when, species="cow", gateway="gw-1"),
                    DataHealth(farm="health-farm", kind="gateway", name="gw-2",
                               status="offline", since=when, last_seen=when),
                    DataHealth(farm="health-farm", kind="animal", name="cow-quiet",
                               status="silent", since=when, species="cow", gateway="gw-1"),
                ]
            )  # fmt: skip
    page = client_for(role).get("/health")
    assert page.status_code == 200
    rows = [r for r in _rows(page.get_data(as_text=True), "health") if r[0] == "health-farm"]
    assert [(r[2], r[5]) for r in rows] == [("gw-2", "offline"), ("cow-quiet", "silent"),
                                            ("cow-ok", "ok")]  # fmt: skip
    assert rows[1][6] == "2026-03-01T04:00:00Z" and rows[1][7] == ""
    assert panel.app.test_client().get("/health").status_code == 302  # anonymous: log in
