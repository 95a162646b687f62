"""Authentication and authorisation of the panel and the API.

- Passwords: argon2id (argon2-cffi), never stored or logged in clear.
- Sessions: the signed Flask cookie holds only a random session id whose SHA-256 digest
  is a ``LoginSession`` row. Log-in clears the old cookie content and creates a new id
  (no session fixation); log-out revokes the row (a copied cookie stops working).
- API: ``Authorization: Bearer <token>`` with per-user tokens (SHA-256 digests stored).
- CSRF: every state-changing request authenticated by the cookie must carry the
  session's CSRF token (form field ``csrf_token`` or header ``X-CSRF-Token``).
  Bearer-token requests carry no ambient credential and need none.
- Log-in rate limit: ``web.login_attempts_per_min`` failed-or-not attempts per
  (user name, client address) per minute; more answer 429.
- ``next`` after log-in: only same-site relative paths (no open redirect).
- Roles: viewer < reviewer < admin (``role_required("reviewer")``).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from functools import wraps
from typing import Any
from urllib.parse import urlsplit

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from sqlalchemy import select
from sqlalchemy.orm import Session

from namazu.server.store.models import ROLES, ApiToken, LoginSession, User
from namazu.server.store.state import session_scope

USER_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
MIN_PASSWORD_LENGTH = 10
TOKEN_PREFIX = "nzt_"  # noqa: S105 - a public prefix, not a secret
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

_HASHER = PasswordHasher()
# a valid hash of a random password, verified when the user does not exist so that
# unknown and known user names take the same time
_DUMMY_HASH = _HASHER.hash(secrets.token_hex(16))

bp = Blueprint("auth", __name__)


class AuthError(ValueError):
    """Invalid user data (bad name, role or password); the message says which."""


# ---------------------------------------------------------------- passwords, users, tokens


def hash_password(password: str) -> str:
    """argon2id hash of a password (salted; parameters encoded in the result)."""
    return _HASHER.hash(password)


def verify_password(stored_hash: str, password: str) -> bool:
    """True when ``password`` matches the argon2 hash."""
    try:
        return _HASHER.verify(stored_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def validate_user_name(name: str) -> str:
    """The name when it is valid; AuthError naming the rule otherwise."""
    if not USER_NAME_PATTERN.match(name or ""):
        raise AuthError(
            f"user name {name!r} is invalid: use 1-64 letters, digits, '_', '.', '@', '-'"
        )
    return name


def validate_role(role: str) -> str:
    """The role when it is known; AuthError naming the valid roles otherwise."""
    if role not in ROLES:
        raise AuthError(f"role {role!r} is unknown; valid roles: {', '.join(ROLES)}")
    return role


def create_user(db: Session, name: str, role: str, password: str) -> User:
    """Add a user (name unique, role in ROLES, password >= 10 characters); flushes.

    Raises AuthError naming what is wrong.
    """
    validate_user_name(name)
    validate_role(role)
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AuthError(f"password too short: at least {MIN_PASSWORD_LENGTH} characters")
    if db.scalar(select(User).where(User.name == name)) is not None:
        raise AuthError(f"user {name!r} already exists")
    user = User(name=name, role=role, password_hash=hash_password(password))
    db.add(user)
    db.flush()
    return user


def issue_token(db: Session, user: User, label: str = "") -> str:
    """Create an API token for ``user``; return it in clear (shown once, stored hashed)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    db.add(ApiToken(user_id=user.id, digest=_digest(token), label=label[:64]))
    db.flush()
    return token


def user_for_token(db: Session, token: str) -> User | None:
    """The active user owning an unrevoked token, or None."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    row = db.scalar(
        select(ApiToken).where(ApiToken.digest == _digest(token), ApiToken.revoked.is_(False))
    )
    if row is None:
        return None
    user = db.get(User, row.user_id)
    return user if user is not None and user.active else None


def role_at_least(role: str, minimum: str) -> bool:
    """True when ``role`` is ``minimum`` or more powerful (viewer < reviewer < admin)."""
    return role in ROLES and ROLES.index(role) >= ROLES.index(minimum)


# ---------------------------------------------------------------- rate limit


class LoginRateLimiter:
    """Sliding windows of log-in attempts: ``attempts_per_min`` per (user name, client
    address), and ``ADDRESS_FACTOR`` times as many per client address over all user
    names, so one address cannot try name after name. Windows that have emptied are
    dropped once more than ``MAX_KEYS`` keys are held (memory stays bounded)."""

    ADDRESS_FACTOR = 4
    MAX_KEYS = 10_000

    def __init__(self, attempts_per_min: int, window_s: float = 60.0):
        self.attempts_per_min = attempts_per_min
        self.window_s = window_s
        self._attempts: dict[tuple[str, str], deque[float]] = defaultdict(deque)
        self._by_address: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def _trimmed(self, window: deque[float], now: float) -> deque[float]:
        while window and now - window[0] >= self.window_s:
            window.popleft()
        return window

    def allow(self, user: str, address: str, now: float | None = None) -> bool:
        """Record one attempt; False when the user and address, or the address alone,
        already used their attempts in the window."""
        now = time.monotonic() if now is None else now
        key = (user.lower(), address)
        with self._lock:
            if len(self._attempts) > self.MAX_KEYS:
                self._drop_idle(now)
            window = self._trimmed(self._attempts[key], now)
            per_address = self._trimmed(self._by_address[address], now)
            if len(window) >= self.attempts_per_min:
                return False
            if len(per_address) >= self.attempts_per_min * self.ADDRESS_FACTOR:
                return False
            window.append(now)
            per_address.append(now)
            return True

    def _drop_idle(self, now: float) -> None:
        for table in (self._attempts, self._by_address):
            for key in [k for k, w in table.items() if not self._trimmed(w, now)]:
                del table[key]

    def reset(self, user: str, address: str) -> None:
        """After a successful log-in: forget the attempts of the key, and take the
        successful attempt off the address's window (only failures count there)."""
        with self._lock:
            self._attempts.pop((user.lower(), address), None)
            per_address = self._by_address.get(address)
            if per_address:
                per_address.pop()


# ---------------------------------------------------------------- redirects, CSRF


def safe_next(target: str | None, default: str = "/") -> str:
    """``target`` when it is a same-site relative path, else ``default``.

    Rejects absolute URLs, scheme-relative ``//host``, backslash tricks (``/\\host``),
    and control characters, so that ``/login?next=...`` cannot send users elsewhere.
    """
    if not target or not isinstance(target, str):
        return default
    if any(ord(ch) < 32 or ch == "\\" for ch in target):
        return default
    if not target.startswith("/") or target.startswith("//"):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return default
    return target


def csrf_token() -> str:
    """The session's CSRF token (created on first use); put it in every form."""
    token = session.get("csrf")
    if not token:
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return token


def _csrf_ok() -> bool:
    expected = session.get("csrf")
    given = request.headers.get(CSRF_HEADER) or request.form.get(CSRF_FIELD, "")
    return bool(expected) and hmac.compare_digest(str(expected), str(given))


# ---------------------------------------------------------------- request hooks


def _wants_json() -> bool:
    return request.path.startswith("/api/")


def load_user() -> Any:
    """``before_request``: set ``g.user`` from a bearer token or the session; check CSRF."""
    g.user = None
    g.auth = None
    factory = current_app.extensions["namazu"].sessions
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        with session_scope(factory) as db:
            user = user_for_token(db, header[len("Bearer ") :].strip())
            if user is None:
                return _deny(401, "invalid or revoked API token")
            db.expunge(user)
        g.user, g.auth = user, "token"
        return None
    sid = session.get("sid")
    if sid:
        with session_scope(factory) as db:
            row = db.scalar(
                select(LoginSession).where(
                    LoginSession.digest == _digest(sid), LoginSession.revoked.is_(False)
                )
            )
            user = db.get(User, row.user_id) if row is not None else None
            if user is not None and user.active:
                db.expunge(user)
                g.user, g.auth = user, "session"
            else:
                session.pop("sid", None)
    # CSRF protects ambient credentials (the cookie) and the log-in form itself; an
    # anonymous request to any other endpoint is refused by the view's role check (401).
    needs_csrf = g.auth == "session" or request.endpoint == "auth.login"
    if request.method not in SAFE_METHODS and needs_csrf and not _csrf_ok():
        return _deny(400, "missing or invalid CSRF token")
    return None


def _deny(status: int, message: str) -> Any:
    if _wants_json():
        return jsonify({"error": message}), status
    if status == 401:
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
    return render_template("error.html", status=status, message=message), status


def login_required(view: Callable) -> Callable:
    """Views for any logged-in user; anonymous: 401 (API) or redirect to log-in."""

    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if g.get("user") is None:
            return _deny(401, "log-in required")
        return view(*args, **kwargs)

    return wrapped


def role_required(minimum: str) -> Callable[[Callable], Callable]:
    """Views for users with at least role ``minimum``; others get 403 (anonymous 401)."""
    validate_role(minimum)

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            user = g.get("user")
            if user is None:
                return _deny(401, "log-in required")
            if not role_at_least(user.role, minimum):
                return _deny(403, f"this needs the {minimum} role")
            return view(*args, **kwargs)

        return wrapped

    return decorator


# ---------------------------------------------------------------- log-in / log-out views


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    """Log-in form; on success a fresh session and a redirect to a safe ``next``."""
    next_url = safe_next(request.values.get("next"))
    if request.method == "GET":
        return render_template("login.html", next=next_url)
    name = request.form.get("username", "")[:64]
    password = request.form.get("password", "")
    ext = current_app.extensions["namazu"]
    address = request.remote_addr or "?"
    if not ext.login_limiter.allow(name, address):
        return render_template(
            "login.html", next=next_url, error="too many log-in attempts; wait a minute"
        ), 429
    with session_scope(ext.sessions) as db:
        user = db.scalar(select(User).where(User.name == name))
        ok = verify_password(user.password_hash if user else _DUMMY_HASH, password)
        if user is None or not ok or not user.active:
            return render_template(
                "login.html", next=next_url, error="unknown user or wrong password"
            ), 401
        sid = secrets.token_urlsafe(32)
        db.add(LoginSession(digest=_digest(sid), user_id=user.id))
    ext.login_limiter.reset(name, address)
    session.clear()  # drop anything set before log-in (fixation)
    session.permanent = True
    session["sid"] = sid
    session["csrf"] = secrets.token_urlsafe(32)
    flash(f"logged in as {name}")
    return redirect(next_url)


@bp.post("/logout")
def logout() -> Any:
    """Revoke the server-side session and clear the cookie (CSRF-checked POST)."""
    sid = session.get("sid")
    if sid:
        with session_scope(current_app.extensions["namazu"].sessions) as db:
            row = db.scalar(select(LoginSession).where(LoginSession.digest == _digest(sid)))
            if row is not None:
                row.revoked = True
    session.clear()
    return redirect(url_for("auth.login"))


def forbid_unless_owner_or_admin(owner_id: int) -> None:
    """Abort 403 unless the current user owns the object or is an admin (IDOR guard)."""
    user = g.get("user")
    if user is None:
        abort(401)
    if user.id != owner_id and user.role != "admin":
        abort(403)
