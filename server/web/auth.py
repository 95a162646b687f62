"""Authentication and authorisation of the panel and the API.

- Passwords: argon2id (argon2-cffi), never stored or logged in clear.
- Sessions: the signed Flask cookie holds only a random session id whose SHA-256 digest
  is a ``LoginSession`` row. Log-in clears the old cookie content and creates a new id
  (no session fixation); log-out revokes the row (a copied cookie stops working).
- API: ``Authorization: Bearer <token>`` with per-user tokens (SHA-256 digests stored).
- CSRF: every state-changing request authenticated by the cookie must carry the
  session's CSRF token (form field ``csrf_token`` or header ``X-CSRF-Token``).
  Bearer-token requests carry no ambient credential and need none.
- Log-in throttle (``LoginPolicy``): progressive delays per account for clients the
  account does not know, separate budgets for browsers holding the account's device
  cookie, a limit per client address; refusals answer 429 with ``Retry-After``. The
  client address is the TCP peer, or with ``web.trusted_proxy_hops`` the address the
  trusted proxies forwarded. Repeated failures e-mail the account's user.
- ``next`` after log-in: only same-site relative paths (no open redirect).
- Roles: viewer < reviewer < admin (``role_required("reviewer")``).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import wraps
from html import escape
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
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import delete, func, or_, select, text, update
from sqlalchemy.orm import Session

from namazu.server.store.models import ROLES, ApiToken, LoginFailure, LoginSession, User
from namazu.server.store.state import OutboxMail, session_scope

log = logging.getLogger(__name__)

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


EMAIL_PATTERN = re.compile(r"^[^@\s<>,;\"]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,63}$")


def validate_email(address: str) -> str:
    """The address when it is a plain ``local@domain.tld``; AuthError otherwise."""
    if not EMAIL_PATTERN.match(address or ""):
        raise AuthError(f"e-mail address {address!r} is invalid: expected local@domain.tld")
    return address


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


# ---------------------------------------------------------------- log-in throttle


@dataclass(frozen=True)
class LoginPolicy:
    """How log-in attempts are throttled (``web.login_*`` in the configuration).

    An attempt is *charged* (a ``LoginFailure`` row) before the password is checked and
    refunded when it succeeds, so parallel requests cannot slip past a limit. Three
    budgets, each over the attempts charged in its window:

    - account (clients the account does not know): ``free_failures`` failures, then each
      further attempt waits ``base_delay_s`` · 2^(n − free_failures), at most
      ``max_delay_s``, after the previous one [s] — guessing over any number of addresses
      is bounded by about one try per ``max_delay_s``, and the real user is delayed by at
      most ``max_delay_s``, never locked out;
    - known device (a browser holding the signed device cookie of a successful log-in to
      that account): its own ``device_failures`` and delays, untouched by anybody
      else's failures, so an attacker elsewhere cannot lock its owner out;
    - address: ``address_failures`` failures per client address over all accounts in
      ``address_window_s`` [s]; more are refused until the oldest leaves the window.
      Refused attempts check no password and are not charged.

    ``notify_after`` failures on an account within ``window_s`` e-mail its user (when
    the account has an address), at most once per ``notify_interval_s`` [s].
    """

    free_failures: int = 5
    base_delay_s: float = 1.0
    max_delay_s: float = 60.0
    window_s: float = 3600.0
    device_failures: int = 10
    address_failures: int = 20
    address_window_s: float = 600.0
    notify_after: int = 10
    notify_interval_s: float = 6 * 3600.0

    @classmethod
    def from_config(cls, web: Any) -> LoginPolicy:
        """The policy of a ``WebConfig``."""
        return cls(
            free_failures=web.login_free_failures,
            base_delay_s=web.login_base_delay_s,
            max_delay_s=web.login_max_delay_s,
            window_s=web.login_window_s,
            device_failures=web.login_device_failures,
            address_failures=web.login_address_failures,
            address_window_s=web.login_address_window_s,
            notify_after=web.login_notify_after,
            notify_interval_s=web.login_notify_interval_s,
        )

    def delay_s(self, failures: int, free: int) -> float:
        """Wait after the last of ``failures`` charged attempts, ``free`` of them free [s]."""
        if failures < free:
            return 0.0
        return min(self.base_delay_s * 2.0 ** (failures - free), self.max_delay_s)


def _charged(db: Session, since: datetime, *conditions: Any) -> tuple[int, datetime | None]:
    """(count, latest time) of the charged attempts matching ``conditions`` since ``since``."""
    count, latest = db.execute(
        select(func.count(), func.max(LoginFailure.at)).where(LoginFailure.at >= since, *conditions)
    ).one()
    return int(count), latest


def begin_attempt(
    db: Session,
    policy: LoginPolicy,
    account: str,
    address: str,
    device: str | None,
    now: datetime,
) -> tuple[int | None, float]:
    """Charge one log-in attempt, or refuse it.

    account : the user name tried (any case). address : the client address.
    device : the device id of a valid device cookie for this account, or None.
    Returns (attempt id, 0) when the password may be checked, (None, wait [s]) when the
    client must wait first (nothing is charged then).
    """
    account = account.lower()
    _serialise_account(db, account)
    horizon = now - timedelta(seconds=max(policy.window_s, policy.address_window_s))
    db.execute(delete(LoginFailure).where(LoginFailure.at < horizon))
    since = now - timedelta(seconds=policy.window_s)
    if device is not None:
        count, latest = _charged(
            db, since, LoginFailure.account == account, LoginFailure.device == device
        )
        wait = _wait(latest, policy.delay_s(count, policy.device_failures), now)
    else:
        address_since = now - timedelta(seconds=policy.address_window_s)
        count, _ = _charged(
            db, address_since, LoginFailure.address == address, LoginFailure.device.is_(None)
        )
        wait = 0.0
        if count >= policy.address_failures:
            oldest = db.scalars(
                select(LoginFailure.at)
                .where(
                    LoginFailure.at >= address_since,
                    LoginFailure.address == address,
                    LoginFailure.device.is_(None),
                )
                .order_by(LoginFailure.at.desc())
                .offset(policy.address_failures - 1)
                .limit(1)
            ).first()
            wait = _wait(oldest, policy.address_window_s, now)
        count, latest = _charged(
            db, since, LoginFailure.account == account, LoginFailure.device.is_(None)
        )
        wait = max(wait, _wait(latest, policy.delay_s(count, policy.free_failures), now))
    if wait > 0:
        return None, wait
    attempt = LoginFailure(account=account, address=address, device=device, at=now)
    db.add(attempt)
    db.flush()
    return attempt.id, 0.0


def _serialise_account(db: Session, account: str) -> None:
    """Make concurrent attempts on one account check and charge one after the other.

    SQLite: the transaction's first write (the pruning ``DELETE``) takes the database's
    write lock until commit. PostgreSQL: a transaction-scoped advisory lock per account.
    """
    if db.get_bind().dialect.name == "postgresql":
        key = int.from_bytes(hashlib.sha256(account.encode()).digest()[:8], "big", signed=True)
        db.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def _wait(latest: datetime | None, delay_s: float, now: datetime) -> float:
    if latest is None or delay_s <= 0:
        return 0.0
    return max(0.0, (latest - now).total_seconds() + delay_s)


def attempt_succeeded(
    db: Session, attempt: int, account: str, address: str, device: str | None
) -> None:
    """Refund a successful attempt; failures of this account from this client (its
    address when unknown, its device when known) were the user's own typos and go too."""
    db.execute(delete(LoginFailure).where(LoginFailure.id == attempt))
    same_client = (
        LoginFailure.device == device
        if device is not None
        else (LoginFailure.address == address) & LoginFailure.device.is_(None)
    )
    db.execute(delete(LoginFailure).where(LoginFailure.account == account.lower(), same_client))


def attempt_failed(
    db: Session, policy: LoginPolicy, user: User | None, account: str, now: datetime
) -> bool:
    """After a failed attempt (already charged): queue the e-mail to the account's user
    when ``notify_after`` failures were charged within the window and none was sent
    within ``notify_interval_s``. True when a mail was queued."""
    if user is None or not user.email:
        return False
    count, _ = _charged(
        db,
        now - timedelta(seconds=policy.window_s),
        LoginFailure.account == account.lower(),
    )
    if count < policy.notify_after:
        return False
    # claimed by one conditional update, so parallel failures queue one mail
    quiet_since = now - timedelta(seconds=policy.notify_interval_s)
    claimed = db.execute(
        update(User)
        .where(
            User.id == user.id,
            or_(User.guess_notice_at.is_(None), User.guess_notice_at <= quiet_since),
        )
        .values(guess_notice_at=now)
        .execution_options(synchronize_session=False)
    )
    if claimed.rowcount != 1:
        return False
    db.add(_guess_mail(user, count, policy, now))
    log.warning("log-in guessing on an account; its user is told",
                extra={"user": user.name, "failures": count})  # fmt: skip
    return True


def _guess_mail(user: User, count: int, policy: LoginPolicy, now: datetime) -> OutboxMail:
    hours = policy.window_s / 3600
    text = (
        f"Hello {user.name},\n\n"
        f"{count} log-in attempts to your Namazu account '{user.name}' failed within the "
        f"last {hours:g} h (latest {now:%Y-%m-%d %H:%M} UTC). If that was not you, someone "
        "is guessing your password. They are slowed down, and a browser you logged in "
        "with before is not affected. Choose a long password; an administrator can reset "
        "the attempts with 'namazu users unlock'.\n"
    )
    html = "<p>" + escape(text).replace("\n\n", "</p><p>").replace("\n", "<br>") + "</p>"
    return OutboxMail(
        recipient=user.email,
        farm="",
        subject=f"Namazu: failed log-ins on your account {user.name}",
        text=text,
        html=html,
        message_id=f"<login-guess-{user.id}-{secrets.token_hex(8)}@namazu>",
        next_attempt=now,
        alarm_ids=[],
    )


def unlock(db: Session, account: str | None = None, address: str | None = None) -> int:
    """Admin unlock: forget the charged attempts of an account (all its clients) and/or
    of a client address; returns how many were forgotten."""
    if account is None and address is None:
        raise AuthError("unlock: name an account or an address")
    condition = []
    if account is not None:
        condition.append(LoginFailure.account == account.lower())
    if address is not None:
        condition.append(LoginFailure.address == address)
    result = db.execute(delete(LoginFailure).where(or_(*condition)))
    return int(result.rowcount or 0)


class DeviceCookies:
    """The signed ``namazu_device`` cookie: {account: device id} of the accounts that
    logged in successfully from this browser (at most ``MAX_ACCOUNTS``, valid
    ``MAX_AGE_S``)."""

    NAME = "namazu_device"
    MAX_AGE_S = 90 * 86400
    MAX_ACCOUNTS = 8

    def __init__(self, secret: str):
        self.serializer = URLSafeTimedSerializer(secret, salt="namazu-device-cookie")

    def read(self, cookie: str | None) -> dict[str, str]:
        if not cookie:
            return {}
        try:
            value = self.serializer.loads(cookie, max_age=self.MAX_AGE_S)
        except BadSignature:
            return {}
        return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}

    def device_for(self, cookie: str | None, account: str) -> str | None:
        return self.read(cookie).get(account.lower())

    def issue(self, cookie: str | None, account: str) -> tuple[str, str]:
        """(new cookie value, device id) after a successful log-in to ``account``."""
        known = self.read(cookie)
        device = known.pop(account.lower(), None) or secrets.token_urlsafe(12)
        kept = list(known.items())[-(self.MAX_ACCOUNTS - 1) :]
        return self.serializer.dumps(dict([*kept, (account.lower(), device)])), device


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
    """Log-in form; on success a fresh session, the device cookie of the account and a
    redirect to a safe ``next``. Throttled attempts answer 429 with ``Retry-After``."""
    next_url = safe_next(request.values.get("next"))
    if request.method == "GET":
        return render_template("login.html", next=next_url)
    name = request.form.get("username", "")[:64]
    password = request.form.get("password", "")
    ext = current_app.extensions["namazu"]
    address = request.remote_addr or "?"
    cookie = request.cookies.get(DeviceCookies.NAME)
    device = ext.device_cookies.device_for(cookie, name)
    now = datetime.now(UTC)
    with session_scope(ext.sessions) as db:
        attempt, wait = begin_attempt(db, ext.login_policy, name, address, device, now)
    if attempt is None:
        seconds = max(1, math.ceil(wait))
        response = current_app.make_response(
            (
                render_template(
                    "login.html",
                    next=next_url,
                    error=f"too many failed log-ins; try again in {seconds} s",
                ),
                429,
            )
        )
        response.headers["Retry-After"] = str(seconds)
        return response
    with session_scope(ext.sessions) as db:
        user = db.scalar(select(User).where(User.name == name))
        ok = verify_password(user.password_hash if user else _DUMMY_HASH, password)
        if user is None or not ok or not user.active:
            attempt_failed(db, ext.login_policy, user, name, now)
            return render_template(
                "login.html", next=next_url, error="unknown user or wrong password"
            ), 401
        attempt_succeeded(db, attempt, name, address, device)
        sid = secrets.token_urlsafe(32)
        db.add(LoginSession(digest=_digest(sid), user_id=user.id))
    session.clear()  # drop anything set before log-in (fixation)
    session.permanent = True
    session["sid"] = sid
    session["csrf"] = secrets.token_urlsafe(32)
    flash(f"logged in as {name}")
    response = redirect(next_url)
    value, _ = ext.device_cookies.issue(cookie, name)
    response.set_cookie(
        DeviceCookies.NAME,
        value,
        max_age=DeviceCookies.MAX_AGE_S,
        secure=current_app.config["SESSION_COOKIE_SECURE"],
        httponly=True,
        samesite="Strict",
    )
    return response


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
