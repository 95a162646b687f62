"""Two panel replicas on one shared state store (SQLite and PostgreSQL): a log-in on one
is valid on the other, a form's CSRF token from one is accepted by the other, and a
log-out on one ends the session on both (sessions live in the store, not the process)."""

from __future__ import annotations

from namazu.server.store.state import init_db, session_scope
from namazu.server.web.auth import create_user
from tests.server.web.conftest import PASSWORD, csrf_from, login, panel_config


def test_a_log_in_on_one_replica_is_valid_on_the_other(stack, influx, state_url):
    from namazu.server.web import create_app

    with session_scope(init_db(state_url)) as db:
        create_user(db, "viewer", "viewer", PASSWORD)
    config = panel_config(stack, influx.database, state_url)
    one, two = create_app(config), create_app(config)
    cookie = one.config["SESSION_COOKIE_NAME"]
    first, second = one.test_client(), two.test_client()
    assert second.get("/api/v1/farms").status_code == 401  # nobody logged in there
    assert login(first, "viewer").status_code == 302
    second.set_cookie(cookie, first.get_cookie(cookie).value)
    assert second.get("/api/v1/farms").status_code == 200
    token = csrf_from(first.get("/subscriptions").get_data(as_text=True))
    assert second.post("/logout", data={"csrf_token": "forged"}).status_code == 400
    assert second.post("/logout", data={"csrf_token": token}).status_code == 302
    assert first.get("/api/v1/farms").status_code == 401  # revoked in the shared store
