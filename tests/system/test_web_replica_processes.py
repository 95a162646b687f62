"""Two real ``namazu web`` processes (gunicorn) as replicas on one PostgreSQL state store,
each on its own port with its own runtime directory (no shared files), and the shipped
nginx site in front with both in its upstream (round robin, one trusted proxy hop).

Straight to the replicas: a log-in on A is valid on B, a form's CSRF token from A is
accepted by B, a log-out on B revokes the session on A, failed log-ins made on A and B
are counted together (the refusal comes from the replica that saw fewer of them), and
the heavy-request limits hold across the two (429 with Retry-After from B while A holds
the slots; a SIGKILLed worker of A frees its slots). Through nginx: a whole log-in and
page flow while the requests land on both replicas (nginx's access log names the
replica of each request, and each replica's own request counter grows).

Heavy requests are held open as a slow client does: the export's headers are read,
then nothing more, so the stream blocks on the socket (``export_support.hold``).
"""

from __future__ import annotations

import json
import os
import signal
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from namazu.server.launch.stack import free_port
from namazu.server.store.influx import InfluxClient
from namazu.server.store.models import FarmEvent, LoginFailure
from namazu.server.store.state import dispose_engine, init_db, session_scope
from namazu.server.web.auth import create_user, issue_token
from namazu.server.web.limits import AdvisoryLockSlots
from tests.deploy.nginx_site import NGINX, Browser, Nginx
from tests.server.ingest_support import wait_for
from tests.server.web.conftest import csrf_from
from tests.server.web.export_support import FARM, export_path, get, hold, write_activity
from tests.system.web_process import WebProcess, write_web_config

pytestmark = [
    pytest.mark.services,
    pytest.mark.skipif(NGINX is None, reason="nginx is not installed (nginx-light)"),
]

PASSWORD = "correct horse battery"
WEB = {
    "secret_key": "replicas-share-this-key-" + "r" * 24,
    "trusted_proxy_hops": 1,
    "heavy_global_limit": 2,
    "heavy_per_user_limit": 1,
    "login_free_failures": 3,
    "login_base_delay_s": 30.0,  # far longer than the test: a refusal cannot expire
    "login_max_delay_s": 60.0,
    "login_address_failures": 50,
}


@pytest.fixture(scope="module")
def replicas(stack, postgres, postgres_database, tmp_path_factory):
    """Replicas A and B of the panel and nginx in front; yields a namespace with ``a``,
    ``b`` (WebProcess), ``nginx``, API ``tokens`` of viewers u1-u3, the state ``url``
    and ``slots`` (the global slots as the server counts them)."""
    directory = tmp_path_factory.mktemp("web-replicas")
    state_url = postgres.url(postgres_database)
    database = "replicas_" + os.urandom(4).hex()
    write_activity(stack.influx_url, database)
    with session_scope(init_db(state_url)) as db:
        tokens = {
            name: issue_token(db, create_user(db, name, "viewer", PASSWORD))
            for name in ("u1", "u2", "u3")
        }
        for name in ("alice", "carol"):
            create_user(db, name, "reviewer", PASSWORD)
        for name in ("bob", "dave"):
            create_user(db, name, "viewer", PASSWORD)
    panels = {}
    nginx = None
    try:
        for name in ("a", "b"):
            config = write_web_config(
                directory / name / "namazu.toml", state_url=state_url,
                influx_url=stack.influx_url, database=database, port=free_port(),
                runtime_dir=directory / name / "run", **WEB,
            )  # fmt: skip
            panels[name] = WebProcess(config, directory / name).launch()
        for panel in panels.values():
            panel.wait_ready()
        ports = [panels[name].address[1] for name in ("a", "b")]
        nginx = Nginx(directory / "nginx", ports, access_log=True)
        nginx.start()
        yield SimpleNamespace(
            a=panels["a"], b=panels["b"], ports=dict(zip("ab", ports, strict=True)),
            nginx=nginx, tokens=tokens, url=state_url,
            slots=AdvisoryLockSlots(WEB["heavy_global_limit"], 1, state_url),
        )  # fmt: skip
    finally:
        if nginx is not None:
            nginx.stop()
        for panel in panels.values():  # both stop at once
            if panel.proc is not None and panel.proc.poll() is None:
                panel.proc.terminate()
        for panel in panels.values():
            panel.stop()
        dispose_engine(state_url)
        influx = InfluxClient(stack.influx_url, database)
        influx.drop_database()
        influx.close()


def _direct(replicas, name: str, source: str = "127.0.0.1") -> Browser:
    """A plain-HTTP client straight to replica ``name``."""
    return Browser(replicas.ports[name], source, None)


def _event_form(csrf: str, comment: str) -> str:
    fields = f"farm={FARM}&kind=disturbance&start=2024-01-02T00:00Z&comment={comment}"
    return f"{fields}&csrf_token={csrf}"


def test_a_session_made_on_one_replica_is_valid_revocable_and_csrf_checked_on_the_other(
    replicas,
):
    on_a = _direct(replicas, "a")
    on_b = _direct(replicas, "b")
    on_b.cookies = on_a.cookies  # one browser's cookie jar, used on both replicas
    assert on_b.request("GET", "/api/v1/farms")[0].status == 401
    assert on_a.login("alice", PASSWORD).status == 302
    response, body = on_b.request("GET", "/api/v1/farms")
    assert response.status == 200 and json.loads(body)[0]["id"] == FARM
    response, page = on_b.request("GET", "/")
    assert response.status == 200 and "alice" in page
    # a form rendered by A, posted to B
    token = csrf_from(on_a.request("GET", "/events")[1])
    assert on_b.request("POST", "/events", _event_form("forged", "x"))[0].status == 400
    response, _ = on_b.request("POST", "/events", _event_form(token, "posted+to+B"))
    assert response.status == 302
    with session_scope(init_db(replicas.url)) as db:
        assert db.scalar(select(FarmEvent.user_name).where(FarmEvent.comment == "posted to B"))
    # log-out on B; the cookie as it was before (a copy) no longer works on A
    copied = dict(on_a.cookies)
    assert on_a.request("GET", "/api/v1/farms")[0].status == 200
    assert on_b.request("POST", "/logout", f"csrf_token={token}")[0].status == 302
    stale = _direct(replicas, "a")
    stale.cookies = copied
    assert stale.request("GET", "/api/v1/farms")[0].status == 401


def test_failed_log_ins_on_both_replicas_are_counted_together(replicas):
    """3 free failures per account, then a 30-s delay: each replica alone saw fewer."""
    on_a, on_b = _direct(replicas, "a"), _direct(replicas, "b")
    for browser in (on_a, on_b, on_a):
        assert browser.login("bob", "wrong password!").status == 401
    for browser in (on_b, on_a):  # B saw one failure, A two
        response = browser.login("bob", PASSWORD)
        assert response.status == 429 and 1 <= int(response.headers["Retry-After"]) <= 30
    # all three failures on A: the replica that saw none refuses
    for _ in range(3):
        assert on_a.login("dave", "wrong password!").status == 401
    response = on_b.login("dave", PASSWORD)
    assert response.status == 429 and 1 <= int(response.headers["Retry-After"]) <= 30


def test_the_heavy_request_limits_hold_across_replicas(replicas):
    a, b, tokens, slots = replicas.ports["a"], replicas.ports["b"], replicas.tokens, replicas.slots
    held = []
    try:
        for user in ("u1", "u2"):
            sock, head = hold(a, tokens[user], export_path())
            held.append(sock)
            assert head.startswith("HTTP/1.1 200"), head
        assert slots.global_taken() == 2  # both held by A
        # B runs no heavy request, yet refuses u3: the global limit is the replicas' own
        status, headers, body = get(b, tokens["u3"], export_path(1))
        assert status == 429 and 1 <= int(headers["Retry-After"]) <= 60
        assert "too many heavy requests" in json.loads(body)["error"]
        assert get(b, tokens["u3"], "/api/v1/farms")[0] == 200  # light requests still run
        held.pop().close()  # u2's export on A is abandoned
        wait_for(lambda: slots.global_taken() == 1, 30, "u2's slot freed")
        # a global slot is free, but u1 runs one export on A: refused on B too
        status, headers, _ = get(b, tokens["u1"], export_path(1))
        assert status == 429 and 1 <= int(headers["Retry-After"]) <= 60
        status, _, body = get(b, tokens["u3"], export_path(1))
        assert status == 200 and len(body.decode().splitlines()) == 1 + 1440
        # A's worker, in the middle of u1's export, is SIGKILLed: the server drops its
        # slots with its connection, and B serves u1
        [worker] = replicas.a.worker_pids()
        os.kill(worker, signal.SIGKILL)
        wait_for(lambda: slots.global_taken() == 0, 30, "the killed worker's slots freed")
        status, _, body = get(b, tokens["u1"], export_path(1))
        assert status == 200 and len(body.decode().splitlines()) == 1 + 1440
    finally:
        for sock in held:
            sock.close()
    wait_for(lambda: replicas.a.answers(), 60, "A's new worker answering")


def _requests_counted(replica: WebProcess, token: str) -> float:
    """The replica's own count of the requests it answered (its /metrics), except
    the scrapes themselves."""
    status, _, body = get(replica.address[1], token, "/metrics")
    assert status == 200
    return sum(
        sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
        if sample.name == "namazu_web_requests_total"
        and sample.labels["endpoint"] != "pages.metrics"
    )


def test_through_nginx_a_whole_flow_is_served_by_both_replicas(replicas):
    token = replicas.tokens["u3"]
    before = {n: _requests_counted(getattr(replicas, n), token) for n in ("a", "b")}
    browser = replicas.nginx.browser("127.0.0.7")
    assert browser.login("carol", PASSWORD).status == 302
    for path in ("/", "/alarms", "/events", "/api/v1/farms", "/health", "/"):
        response, _ = browser.request("GET", path)
        assert response.status == 200, path
    csrf = csrf_from(browser.request("GET", "/events")[1])
    assert browser.request("POST", "/events", _event_form(csrf, "through+nginx"))[0].status == 302
    assert browser.request("GET", "/events")[0].status == 200
    assert browser.request("POST", "/logout", f"csrf_token={csrf}")[0].status == 302
    assert browser.request("GET", "/")[0].status == 302  # logged out on both
    # a failed log-in through nginx is charged to the client's address, not nginx's
    assert replicas.nginx.browser("127.0.0.9").login("carol", "wrong password!").status == 401
    with session_scope(init_db(replicas.url)) as db:
        assert "127.0.0.9" in set(db.scalars(select(LoginFailure.address)))
    lines = [line for line in replicas.nginx.access_log() if line[0] == "127.0.0.7"]
    upstream = {f"127.0.0.1:{port}": name for name, port in replicas.ports.items()}
    served = [(line[1], line[2], int(line[3]), upstream[line[4]]) for line in lines]
    assert all(status < 400 for _, _, status, _ in served), served
    logged_in_at = [(method, path) for method, path, _, _ in served].index(("POST", "/login"))
    # the pages after the log-in were answered by both replicas: each accepted the
    # session made on one of them
    pages = {name for method, _, status, name in served[logged_in_at + 1 :]
             if method == "GET" and status == 200}  # fmt: skip
    assert pages == {"a", "b"}, served
    after = {n: _requests_counted(getattr(replicas, n), token) for n in ("a", "b")}
    assert after["a"] > before["a"] and after["b"] > before["b"], (before, after)
