"""The log-in throttle through the shipped nginx site (Debian nginx-light) on loopback.

Clients connect to nginx from distinct loopback source addresses (127.0.0.x): nginx sees
the real TCP peer and appends it to X-Forwarded-For, and the panel (one trusted proxy
hop) takes the client address from there. An attacker at one address cannot lock out
the user at another, the number of passwords checked per account is bounded whatever
the number of attacking addresses, the user is e-mailed, and an admin can unlock.
"""

from __future__ import annotations

import math
import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from werkzeug.serving import make_server

from namazu.server.alerts.mail import SmtpSender
from namazu.server.alerts.outbox import deliver_outbox
from namazu.server.store.models import LoginFailure, User
from namazu.server.store.state import OutboxMail, init_db, session_scope
from namazu.server.web import users as users_cli
from namazu.server.web.auth import create_user
from tests.conftest import STATE_BACKENDS, fresh_state_store
from tests.deploy.nginx_site import NGINX, Nginx
from tests.server.smtp_fixtures import SmtpServer

PASSWORD = "correct horse battery"
POLICY = {
    "login_free_failures": 3,
    "login_base_delay_s": 0.2,
    "login_max_delay_s": 1.0,
    "login_address_failures": 8,
    "login_notify_after": 5,
}

pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (nginx-light)")


#: Tests that run with the state store on SQLite and on PostgreSQL (where concurrent
#: attempts on one account queue on an advisory lock); the others, which mostly wait
#: out delays, run on SQLite.
ON_BOTH_BACKENDS = (
    "test_a_forged_forwarded_for_header_does_not_hide_the_client",
    "test_guessing_one_account_from_ten_addresses_is_bounded",
)


def pytest_generate_tests(metafunc):
    backends = STATE_BACKENDS if metafunc.function.__name__ in ON_BOTH_BACKENDS else ["sqlite"]
    metafunc.parametrize("behind_nginx", backends, indirect=True, scope="module")


@pytest.fixture(scope="module")
def behind_nginx(tmp_path_factory, request):
    """The panel (werkzeug, threaded) behind the shipped nginx site, its state store on
    each backend; yields a namespace with ``browser(source)``, the state store URL, a
    configuration file naming it and the SMTP server."""
    directory = tmp_path_factory.mktemp("nginx-login")
    with fresh_state_store(request, request.param, directory, migrated=True) as state_url:
        yield from _behind_nginx(directory, state_url)


def _behind_nginx(directory: Path, state_url: str):
    from namazu.server.web import create_app

    config = directory / "namazu.toml"
    config.write_text(f'[state]\nurl = "{state_url}"\n')
    engine = init_db(state_url)
    with session_scope(engine) as db:
        create_user(db, "alice", "viewer", PASSWORD).email = "alice@example.org"
        create_user(db, "bob", "viewer", PASSWORD)
    app = create_app(
        {
            "influx": {"url": "http://127.0.0.1:9", "database": "unused"},
            "state": {"url": state_url},
            "web": {"secret_key": "s" * 48, "trusted_proxy_hops": 1, **POLICY},
        }
    )
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    nginx = Nginx(directory, [server.server_port]).start()
    smtp = SmtpServer().start()
    try:

        class Setup:
            url = state_url
            config_path = config
            mail = smtp
            browser = nginx.browser

        yield Setup
    finally:
        smtp.stop()
        nginx.stop()
        server.shutdown()


def _use_up(browser, account: str) -> list[int]:
    """Wrong passwords, waiting whenever told to, until the address has used all its
    failures; returns the statuses seen."""
    statuses = []
    while statuses.count(401) < POLICY["login_address_failures"]:
        response = browser.login(account, "wrong password!")
        statuses.append(response.status)
        if response.status == 429:
            time.sleep(int(response.headers["Retry-After"]))
    return statuses


def _unlock(setup, *args: str) -> None:
    assert users_cli.main(["--config", str(setup.config_path), "unlock", *args]) == 0


def _charged_addresses(url: str) -> set[str]:
    with session_scope(init_db(url)) as db:
        return set(db.scalars(select(LoginFailure.address)))


def test_attacker_at_one_address_cannot_lock_out_the_user_at_another(behind_nginx):
    _unlock(behind_nginx, "alice")
    user_b = behind_nginx.browser("127.0.0.3")
    assert user_b.login("alice", PASSWORD).status == 302  # B is now a known browser
    attacker = behind_nginx.browser("127.0.0.2")
    statuses = _use_up(attacker, "alice")
    assert statuses[:3] == [401] * 3 and set(statuses) <= {401, 429}
    # the attacker's address has used its failures: refused, even the right password
    response = attacker.login("alice", PASSWORD)
    assert response.status == 429 and int(response.headers["Retry-After"]) > 60
    # the user at B gets in at once
    assert user_b.login("alice", PASSWORD).status == 302
    # a user at C who never logged in before waits at most the longest delay, then gets in
    user_c = behind_nginx.browser("127.0.0.4")
    for _ in range(3):
        response = user_c.login("alice", PASSWORD)
        if response.status != 429:
            break
        retry = int(response.headers["Retry-After"])
        assert retry <= math.ceil(POLICY["login_max_delay_s"])
        time.sleep(retry)
    assert response.status == 302
    # the panel saw the clients' real addresses, not nginx's
    assert _charged_addresses(behind_nginx.url) == {"127.0.0.2"}


def test_a_forged_forwarded_for_header_does_not_hide_the_client(behind_nginx):
    _unlock(behind_nginx, "bob")
    spoofer = behind_nginx.browser("127.0.0.5")
    for k in range(3):
        forged = {"X-Forwarded-For": f"198.51.100.{k}"}
        assert spoofer.login("bob", "wrong password!", headers=forged).status == 401
    assert "127.0.0.5" in _charged_addresses(behind_nginx.url)
    assert not any(a.startswith("198.51.100.") for a in _charged_addresses(behind_nginx.url))


def test_guessing_one_account_from_ten_addresses_is_bounded(behind_nginx):
    _unlock(behind_nginx, "alice")
    _unlock(behind_nginx, "--address", "127.0.0.2")
    checked: list[int] = []
    refused: list[int] = []
    lock = threading.Lock()
    stop = time.monotonic() + 4.0

    def guess(source: str) -> None:
        browser = behind_nginx.browser(source)
        while time.monotonic() < stop:
            status = browser.login("alice", "wrong password!").status
            with lock:
                (checked if status == 401 else refused).append(status)

    started = time.monotonic()
    threads = [threading.Thread(target=guess, args=(f"127.0.0.{20 + k}",)) for k in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    elapsed = time.monotonic() - started
    # free failures, the ramp of doubling delays up to the longest, then one per longest
    # delay; +2 for attempts charged at the same instant by parallel requests
    ramp = math.ceil(math.log2(POLICY["login_max_delay_s"] / POLICY["login_base_delay_s"]))
    bound = POLICY["login_free_failures"] + ramp + elapsed / POLICY["login_max_delay_s"] + 2
    assert set(checked) == {401} and set(refused) == {429}
    assert len(checked) <= bound, (len(checked), bound, len(refused))
    if os.environ.get("NAMAZU_REPORT"):
        print(f"\n{len(checked)} passwords checked, {len(refused)} refused in {elapsed:.1f} s "
              f"from 10 addresses (bound {bound:.1f})")  # fmt: skip
    assert len(refused) > len(checked)  # the attackers tried more than was checked


def test_the_user_is_told_by_mail_once_and_an_admin_unlock_lets_anyone_in(behind_nginx):
    _unlock(behind_nginx, "alice")
    engine = init_db(behind_nginx.url)
    with session_scope(engine) as db:
        db.execute(OutboxMail.__table__.delete())
        for user in db.scalars(select(User)):
            user.guess_notice_at = None
    attacker = behind_nginx.browser("127.0.0.6")
    _use_up(attacker, "alice")  # 8 failures: more than login_notify_after
    sent, failed = deliver_outbox(
        engine, SmtpSender("127.0.0.1", behind_nginx.mail.port, "none"), "namazu@localhost",
        datetime.now(UTC),
    )  # fmt: skip
    assert (sent, failed) == (1, 0)
    [mail] = [m for m in behind_nginx.mail.inbox.messages if "alice@example.org" in m.rcpt_tos]
    assert "failed log-ins on your account alice" in mail.message["Subject"]
    assert attacker.login("alice", PASSWORD).status == 429
    _unlock(behind_nginx, "alice")
    _unlock(behind_nginx, "--address", "127.0.0.6")
    assert attacker.login("alice", PASSWORD).status == 302
