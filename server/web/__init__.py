"""The Flask panel and the JSON API (``namazu web``).

``create_app(config)`` builds the application: ``config`` is a ``NamazuConfig`` or a
dict of overrides on top of the defaults (tests pass ``{"influx": {...}, "state":
{...}, "web": {...}}``). The handles to external systems are created once and kept in
``app.extensions["namazu"]`` (a ``PanelHandles``): the InfluxDB client, the state-store
engine and session factory, the log-in policy and device cookies, the gate of heavy
requests and the cache of what the alarm log proves. With ``web.trusted_proxy_hops`` the
client address and scheme come from that many proxies' ``X-Forwarded-*`` headers
(werkzeug's ProxyFix); without it those headers are ignored.

Blueprints: ``auth`` (log-in/out), ``pages`` (server-rendered pages), ``api``
(``/api/v1``, described by ``/api/v1/openapi.json``).
"""

from __future__ import annotations

import argparse
import logging
import secrets
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from flask import Flask, g, request
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.middleware.proxy_fix import ProxyFix

from namazu.server.core.config import ConfigError, NamazuConfig, load_config
from namazu.server.store.influx import InfluxClient
from namazu.server.store.influx_router import InfluxRouter
from namazu.server.store.state import init_db

log = logging.getLogger(__name__)

#: Content-Security-Policy of every response: nothing is loaded from other hosts.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'self'; form-action 'self'; object-src 'none'"
)


@dataclass
class PanelHandles:
    """Handles the views share (``app.extensions["namazu"]``).

    influx : the default InfluxDB instance (data of no farm: the earthquake catalogue);
    a farm's data is read through ``influx_for(farm)`` (``influx_router``).
    """

    config: NamazuConfig
    influx: InfluxClient
    engine: Engine
    sessions: sessionmaker[Session]
    login_policy: Any
    device_cookies: Any
    heavy_gate: Any
    proofs: Any
    influx_router: InfluxRouter | None = None

    def __post_init__(self) -> None:
        if self.influx_router is None:
            self.influx_router = InfluxRouter.single(self.influx)

    def influx_for(self, farm_id: str) -> InfluxClient:
        """The client of the InfluxDB instance holding ``farm_id``'s data."""
        assert self.influx_router is not None
        return self.influx_router.for_farm(farm_id)

    def influx_instances(self) -> list[InfluxClient]:
        """Every InfluxDB instance (reads over all farms ask each)."""
        assert self.influx_router is not None
        return list(self.influx_router.instances().values())

    def rollup_policy(self, farm_id: str) -> str:
        """The rollup retention policy of ``farm_id``'s instance ("" = the default one)."""
        assert self.influx_router is not None
        name = self.influx_router.instance_of(farm_id)
        return self.config.influx_instances.get(name, self.config.influx).rollup_retention_policy


def _resolve_config(config: NamazuConfig | dict[str, Any] | None) -> NamazuConfig:
    if isinstance(config, NamazuConfig):
        return config
    if config is None:
        return load_config()
    try:
        return NamazuConfig.model_validate(config)
    except ValueError as exc:
        raise ConfigError(f"web app configuration: {exc}") from exc


def create_app(config: NamazuConfig | dict[str, Any] | None = None) -> Flask:
    """Build the panel application.

    config : NamazuConfig, a dict of overrides on the defaults, or None (load the
        configuration from ``$NAMAZU_CONFIG`` and the environment).
    Returns the Flask app with its handles in ``app.extensions["namazu"]``.
    """
    from namazu.server.web import api, auth, lorawan, pages
    from namazu.server.web.limits import open_heavy_gate
    from namazu.server.web.proofs import ProofCache

    cfg = _resolve_config(config)
    # The instance path is named so that Flask does not search for it through the
    # ``namazu`` namespace package (which an editable install maps onto several folders).
    app = Flask(__name__, instance_path=str(Path(__file__).resolve().parent / "instance"))
    secret = cfg.web.secret_key
    if not secret:
        log.warning(
            "web.secret_key is not set: sessions will not survive a restart "
            "and are not valid on another worker or replica"
        )
        secret = secrets.token_urlsafe(48)
    app.config.update(
        SECRET_KEY=secret,
        SESSION_COOKIE_NAME="namazu_session",
        SESSION_COOKIE_SECURE=cfg.web.secure_cookies,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=12),
        MAX_CONTENT_LENGTH=1 << 20,
        JSON_SORT_KEYS=False,
    )
    from namazu.server.core.metrics import export_families

    export_families("web")
    engine = init_db(cfg.state.url)
    router = InfluxRouter.from_config(cfg)
    app.extensions["namazu"] = PanelHandles(
        config=cfg,
        influx=router.default,
        influx_router=router,
        engine=engine,
        sessions=sessionmaker(bind=engine, expire_on_commit=False),
        login_policy=auth.LoginPolicy.from_config(cfg.web),
        device_cookies=auth.DeviceCookies(secret),
        heavy_gate=open_heavy_gate(cfg.web, cfg.state.url, cfg.stack.data_dir),
        proofs=ProofCache(cfg.scheduler),
    )
    if cfg.web.trusted_proxy_hops:
        # Only behind that many proxies are X-Forwarded-For/-Proto believed: each proxy
        # appends the address it saw, so the hops-th value from the right is the client.
        hops = cfg.web.trusted_proxy_hops
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]
    app.before_request(_start_timer)
    app.before_request(auth.load_user)
    app.after_request(_security_headers)
    app.jinja_env.globals["csrf_token"] = auth.csrf_token
    app.jinja_env.globals["farms"] = lambda: cfg.farms
    app.register_blueprint(auth.bp)
    app.register_blueprint(pages.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(lorawan.bp)
    pages.register_error_handlers(app)
    return app


def _start_timer() -> None:
    g.started = time.perf_counter()


def _security_headers(response: Any) -> Any:
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if request.path.startswith("/api/") or g.get("user") is not None:
        response.headers.setdefault("Cache-Control", "no-store")
    try:
        from namazu.server.core.metrics import WEB_REQUEST_SECONDS, WEB_REQUESTS

        endpoint = request.endpoint or "unknown"
        WEB_REQUESTS.labels(endpoint=endpoint, status=str(response.status_code)).inc()
        if "started" in g:
            WEB_REQUEST_SECONDS.labels(endpoint=endpoint).observe(time.perf_counter() - g.started)
    except ImportError:  # metrics are optional in a stripped-down install
        pass
    return response


def main(argv: list[str]) -> int:
    """``namazu web [--config FILE] [--host H] [--port P] [--workers N] [--threads N]``:
    serve the panel on gunicorn (see ``namazu.server.web.serve``); nginx in front for TLS."""
    from namazu.server.core.cliargs import number_in_range

    parser = argparse.ArgumentParser(prog="namazu web", description="Serve the panel and API.")
    parser.add_argument("--config", help="TOML file (default $NAMAZU_CONFIG)")
    parser.add_argument("--host", help="listen address (default web.host)")
    parser.add_argument(
        "--port", type=number_in_range(int, 0, 65535), help="listen port (default web.port)"
    )
    parser.add_argument(
        "--workers", type=number_in_range(int, 1, 64), help="processes (default web.workers)"
    )
    parser.add_argument(
        "--threads",
        type=number_in_range(int, 1, 256),
        help="threads per process (default web.threads)",
    )
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"namazu web: invalid configuration: {exc}", file=sys.stderr)
        return 2
    from namazu.server.web.serve import serve, share_metrics_between_workers

    workers = args.workers or cfg.web.workers
    if workers > 1 and not cfg.web.secret_key:
        print(
            f"namazu web: web.secret_key is not set: {workers} workers would each sign "
            "sessions with a random key of their own and log-ins would fail at random; "
            "set it (NAMAZU_WEB__SECRET_KEY), the same on every replica",
            file=sys.stderr,
        )
        return 2
    if workers > 1:
        share_metrics_between_workers()
    try:
        create_app(cfg).extensions["namazu"].engine.dispose()  # fail here, in one line
    except Exception as exc:  # noqa: BLE001 - report any start-up failure in one line
        print(f"namazu web: cannot start: {exc}", file=sys.stderr)
        return 1
    return serve(
        cfg,
        host=args.host or cfg.web.host,
        port=cfg.web.port if args.port is None else args.port,
        workers=workers,
        threads=args.threads or cfg.web.threads,
        timeout_s=cfg.web.timeout_s,
    )


__all__ = ["PanelHandles", "create_app", "main"]
