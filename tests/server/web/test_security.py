"""Web security: session fixation, CSRF, IDOR on alarm annotations, open redirect after
log-in, log-in rate limiting, cookie flags, path traversal in exports, password storage.
(E-mail header injection is covered with the alert mails in tests/server.)"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from namazu.server.store.models import User
from namazu.server.store.state import make_engine, session_scope
from namazu.server.web.auth import safe_next
from tests.server.web.conftest import PASSWORD, build_panel, csrf_from, login
from tests.server.web.seed import FARM

PANEL_ON_BOTH_BACKENDS = True


def _session_cookie(client) -> str | None:
    cookie = client.get_cookie("namazu_session")
    return None if cookie is None else cookie.value


# ---------------------------------------------------------------- session fixation


def test_login_replaces_the_pre_login_session(panel):
    client = panel.app.test_client()
    client.get("/login")  # the anonymous visit gets a session (CSRF token)
    before = _session_cookie(client)
    assert before
    assert login(client, "viewer").status_code == 302
    after = _session_cookie(client)
    assert after and after != before
    # an attacker holding the pre-login cookie is still anonymous
    attacker = panel.app.test_client()
    attacker.set_cookie("namazu_session", before)
    assert attacker.get("/").status_code == 302
    assert attacker.get("/api/v1/farms").status_code == 401
    # the victim is logged in
    assert client.get("/").status_code == 200


def test_logout_revokes_the_session_server_side(panel):
    client = panel.app.test_client()
    login(client, "viewer")
    stolen = _session_cookie(client)
    page = client.get("/").get_data(as_text=True)
    assert client.post("/logout", data={"csrf_token": csrf_from(page)}).status_code == 302
    replay = panel.app.test_client()
    replay.set_cookie("namazu_session", stolen)
    assert replay.get("/api/v1/farms").status_code == 401


# ---------------------------------------------------------------- CSRF


def test_forms_without_a_valid_csrf_token_are_rejected(panel, client_for):
    client = client_for("reviewer")
    url = f"/alarms/{panel.farm.alarm_id}/reviews"
    for extra in ({}, {"csrf_token": "forged"}, {"csrf_token": ""}):
        response = client.post(url, data={"verdict": "true", "comment": "csrf", **extra})
        assert response.status_code == 400
        assert "CSRF" in response.get_data(as_text=True)
    reviews = client.get(f"/api/v1/alarms/{panel.farm.alarm_id}/reviews").json
    assert not [r for r in reviews if r["comment"] == "csrf"]


def test_a_token_from_another_session_does_not_work(panel, client_for):
    victim = client_for("reviewer")
    attacker = client_for("reviewer2")
    attacker_token = csrf_from(attacker.get("/events").get_data(as_text=True))
    response = victim.post(
        "/events",
        data={"farm": FARM, "kind": "storm", "start": "2024-03-02", "csrf_token": attacker_token},
    )
    assert response.status_code == 400


def test_cookie_authenticated_api_writes_need_the_csrf_header(panel, client_for):
    client = client_for("reviewer")
    url = f"/api/v1/alarms/{panel.farm.alarm_id}/reviews"
    assert client.post(url, json={"verdict": "true"}).status_code == 400
    token = csrf_from(client.get("/events").get_data(as_text=True))
    ok = client.post(url, json={"verdict": "true"}, headers={"X-CSRF-Token": token})
    assert ok.status_code == 201


def test_login_form_itself_needs_a_csrf_token(panel):
    client = panel.app.test_client()
    response = client.post("/login", data={"username": "viewer", "password": PASSWORD})
    assert response.status_code == 400
    assert client.get("/").status_code == 302


# ---------------------------------------------------------------- IDOR on annotations


def test_reviewers_cannot_change_or_delete_others_reviews(panel):
    client = panel.app.test_client()
    owner = {"Authorization": f"Bearer {panel.tokens['reviewer']}"}
    other = {"Authorization": f"Bearer {panel.tokens['reviewer2']}"}
    admin = {"Authorization": f"Bearer {panel.tokens['admin']}"}
    created = client.post(
        f"/api/v1/alarms/{panel.farm.alarm_id}/reviews",
        json={"verdict": "true", "comment": "mine", "user": "admin", "user_id": 3},
        headers=owner,
    )
    assert created.status_code == 201
    review = created.json
    assert review["user"] == "reviewer"  # author comes from the credentials, not the body
    url = f"/api/v1/reviews/{review['id']}"
    assert client.patch(url, json={"verdict": "false"}, headers=other).status_code == 403
    assert client.delete(url, headers=other).status_code == 403
    assert client.patch(url, json={"comment": "edited"}, headers=owner).json["comment"] == "edited"
    assert client.delete(url, headers=admin).status_code == 204
    assert client.delete(url, headers=owner).status_code == 404


def test_the_delete_form_is_guarded_too(panel, client_for):
    owner = panel.app.test_client()
    created = owner.post(
        f"/api/v1/alarms/{panel.farm.alarm_id}/reviews",
        json={"verdict": "unsure", "comment": "keep"},
        headers={"Authorization": f"Bearer {panel.tokens['reviewer']}"},
    ).json
    other = client_for("reviewer2")
    token = csrf_from(other.get("/events").get_data(as_text=True))
    response = other.post(f"/reviews/{created['id']}/delete", data={"csrf_token": token})
    assert response.status_code == 403
    reviews = other.get(f"/api/v1/alarms/{panel.farm.alarm_id}/reviews").json
    assert created["id"] in [r["id"] for r in reviews]


# ---------------------------------------------------------------- open redirect


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/",
        "//evil.example/path",
        "/\\evil.example",
        "\\\\evil.example",
        "javascript:alert(1)",
        "http:evil.example",
        "/%0d%0aLocation:%20http://evil.example".replace("%0d%0a", "\r\n"),
        "evil.example",
    ],
)
def test_next_after_login_never_leaves_the_site(panel, target):
    client = panel.app.test_client()
    response = login(client, "viewer", next_url=target)
    assert response.status_code == 302
    assert response.headers["Location"] == "/"


def test_next_after_login_keeps_a_local_path(panel):
    client = panel.app.test_client()
    response = login(client, "viewer", next_url="/alarms?state=open")
    assert response.headers["Location"] == "/alarms?state=open"
    assert safe_next("/timeline?series=cow-1") == "/timeline?series=cow-1"
    assert safe_next(None) == "/"


# ---------------------------------------------------------------- rate limit, cookies


@pytest.fixture
def slow_panel(stack, tmp_path, state_url):
    """A panel whose first log-in delay (60 s) outlasts any test's round trips."""
    built = build_panel(stack, tmp_path, state_url=state_url, login_base_delay_s=60.0,
                        login_max_delay_s=600.0)  # fmt: skip
    yield built
    built.app.extensions["namazu"].influx.drop_database()


def test_failed_logins_are_delayed_per_account_but_a_known_browser_gets_in(slow_panel):
    panel = slow_panel
    owner = panel.app.test_client()
    assert login(owner, "admin").status_code == 302  # this browser now knows the account
    attacker = panel.app.test_client()
    statuses = [login(attacker, "admin", password="wrong password!") for _ in range(6)]
    assert [r.status_code for r in statuses[:5]] == [401] * 5
    assert statuses[5].status_code == 429
    assert 1 <= int(statuses[5].headers["Retry-After"]) <= 60  # base delay after 5 failures
    # even the right password is refused to an unknown client during the delay ...
    assert login(attacker, "admin").status_code == 429
    # ... but not to the browser that logged in to this account before,
    assert login(owner, "admin").status_code == 302
    # nor to another user from the same address
    assert login(panel.app.test_client(), "viewer").status_code == 302
    # an admin unlocks the account on the users page: the attacker's client may try again
    page = owner.get("/admin/users").get_data(as_text=True)
    response = owner.post(
        "/admin/users", data={"action": "unlock", "name": "admin", "csrf_token": csrf_from(page)}
    )
    assert response.status_code == 200
    assert "failed log-in(s) of admin forgotten" in response.get_data(as_text=True)
    assert login(attacker, "admin").status_code == 302


def test_session_cookie_flags(stack, tmp_path):
    secure = build_panel(stack, tmp_path, secure_cookies=True)
    try:
        client = secure.app.test_client()
        page = client.get("/login", base_url="https://localhost")
        token = csrf_from(page.get_data(as_text=True))
        response = client.post(
            "/login",
            data={"username": "viewer", "password": PASSWORD, "csrf_token": token},
            base_url="https://localhost",
        )
        cookie = response.headers["Set-Cookie"]
        assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert response.headers["X-Frame-Options"] == "DENY"
    finally:
        secure.app.extensions["namazu"].influx.drop_database()


def test_a_nul_in_a_form_is_an_ordinary_answer_not_a_server_error(panel, client_for):
    """PostgreSQL text cannot hold NUL: the store keeps U+FFFD in its place, so a NUL in
    a user name is an unknown user and one in a comment is kept, on every backend."""
    assert login(panel.app.test_client(), "ad\x00min").status_code == 401
    client = client_for("reviewer")
    page = client.get(f"/alarms/{panel.farm.alarm_id}").get_data(as_text=True)
    form = {"verdict": "unsure", "comment": "nul \x00 here", "csrf_token": csrf_from(page)}
    assert client.post(f"/alarms/{panel.farm.alarm_id}/reviews", data=form).status_code == 302
    reviews = client.get(f"/api/v1/alarms/{panel.farm.alarm_id}/reviews").json
    assert "nul \ufffd here" in [r["comment"] for r in reviews]


def test_passwords_are_stored_as_argon2id(panel):
    engine = make_engine(panel.state_url)
    with session_scope(engine) as db:
        hashes = [u.password_hash for u in db.scalars(select(User))]
    assert hashes and all(h.startswith("$argon2id$") for h in hashes)
    assert all(PASSWORD not in h for h in hashes)


# ---------------------------------------------------------------- path traversal


@pytest.mark.parametrize(
    "query",
    [
        "series=../../etc/passwd",
        "series=..%2F..%2Fetc%2Fpasswd",
        "series=/etc/passwd",
        "series=cow-1%00.csv",
        "farm=../demo-farm&series=herd",
    ],
)
def test_timeline_export_rejects_path_like_series(panel, client_for, query):
    client = client_for("viewer")
    response = client.get(f"/api/v1/export/timeline.csv?{query}")
    assert response.status_code in (400, 404)
    assert "root:" not in response.get_data(as_text=True)


def test_movebank_export_rejects_path_like_animals(panel, client_for):
    client = client_for("viewer")
    for animal in ("../../etc/passwd", "..", "a/b", "cow-1\\..\\x"):
        response = client.get(
            "/api/v1/export/movebank.csv", query_string={"farm": FARM, "animal": animal}
        )
        assert response.status_code == 400, animal


def test_static_route_serves_fixed_names_only(panel, client_for):
    client = client_for("viewer")
    for url in (
        "/static/../../../etc/passwd",
        "/static/..%2F..%2Fetc%2Fpasswd",
        "/static/openapi.json",
        "/static/models.py",
    ):
        response = client.get(url)
        assert response.status_code == 404, url
        assert b"root:" not in response.data
