"""Fixtures of the panel tests: a seeded real InfluxDB database, a state store in a
temp dir, the app, users of every role with API tokens, and a log-in helper."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

import pytest

from namazu.server.store.influx import InfluxClient
from namazu.server.store.state import init_db, session_scope
from namazu.server.web.auth import create_user, issue_token
from tests.conftest import STATE_BACKENDS, fresh_state_store
from tests.server.web.seed import FARM_LAT, FARM_LON, seed

PASSWORD = "correct horse battery"
ROLES = ("viewer", "reviewer", "admin")


@dataclass
class Panel:
    """The app under test and what was seeded into it."""

    app: object
    farm: object
    tokens: dict
    state_url: str
    database: str


def panel_config(stack, database: str, state_url: str, **web) -> dict:
    """Config overrides pointing the app at the test stores."""
    return {
        "influx": {"url": stack.influx_url, "database": database},
        "state": {"url": state_url},
        "web": {"secret_key": "t" * 48, "secure_cookies": False, **web},
        "farms": [{"id": "demo-farm", "name": "Demo farm", "latitude": FARM_LAT,
                   "longitude": FARM_LON}],
        "evaluation": {"n_shifts": 50},
    }  # fmt: skip


def build_panel(
    stack, tmp_path, sections: dict | None = None, state_url: str | None = None, **web
) -> Panel:
    """A fresh InfluxDB database and state store (``state_url``, by default a new SQLite
    file), seeded, with one user per role (plus a second reviewer) and an API token each;
    ``sections`` adds configuration sections (e.g. ``{"scheduler": {...}}``)."""
    from namazu.server.web import create_app

    database = "panel_" + uuid.uuid4().hex[:8]
    influx = InfluxClient(stack.influx_url, database)
    influx.create_database()
    state_url = state_url or f"sqlite:///{tmp_path}/state.sqlite"
    engine = init_db(state_url)
    farm = seed(influx, engine)
    influx.close()
    app = create_app({**panel_config(stack, database, state_url, **web), **(sections or {})})
    tokens = {}
    with session_scope(engine) as db:
        for name, role in (*((r, r) for r in ROLES), ("reviewer2", "reviewer")):
            tokens[name] = issue_token(db, create_user(db, name, role, PASSWORD))
    return Panel(app, farm, tokens, state_url, database)


def pytest_generate_tests(metafunc):
    """A module that sets ``PANEL_ON_BOTH_BACKENDS = True`` runs each of its panel tests
    once with the state store on SQLite and once on PostgreSQL (ids ``[sqlite]``,
    ``[postgresql]``); other modules' panels use SQLite."""
    both = getattr(metafunc.module, "PANEL_ON_BOTH_BACKENDS", False)
    if both and "panel" in metafunc.fixturenames:
        metafunc.parametrize("panel", STATE_BACKENDS, indirect=True, scope="module")


@pytest.fixture(scope="module")
def panel(stack, tmp_path_factory, request):
    """App + users + seeded farm, shared by a test module (databases dropped after); the
    state store on SQLite unless the module sets ``PANEL_ON_BOTH_BACKENDS``."""
    directory = tmp_path_factory.mktemp("panel")
    backend = getattr(request, "param", "sqlite")
    with fresh_state_store(request, backend, directory, migrated=True) as state_url:
        built = build_panel(stack, directory, state_url=state_url)
        yield built
        built.app.extensions["namazu"].influx.drop_database()
        built.app.extensions["namazu"].influx.close()


def login(client, name: str, password: str = PASSWORD, next_url: str | None = None):
    """Log in through the form (fetching its CSRF token); returns the POST response."""
    page = client.get("/login")
    token = csrf_from(page.get_data(as_text=True))
    form = {"username": name, "password": password, "csrf_token": token}
    if next_url is not None:
        form["next"] = next_url
    return client.post("/login", data=form)


def csrf_from(html: str) -> str:
    """The CSRF token embedded in a rendered form."""
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF token in the page"
    return match.group(1)


@pytest.fixture
def client_for(panel):
    """``client_for(role)`` -> a test client logged in with that role."""

    def make(role: str):
        client = panel.app.test_client()
        response = login(client, role)
        assert response.status_code == 302, response.get_data(as_text=True)[:300]
        return client

    return make
