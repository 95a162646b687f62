"""Concurrency limits of the panel's heavy requests (exports, evaluations).

A heavy request holds one slot from the request's start until its response is built,
or, when it is streamed (exports), until the last piece has been sent or the client went
away. At most ``web.heavy_global_limit`` heavy requests run at once over every panel
process that shares the slots, and at most ``web.heavy_per_user_limit`` per user; one
more is answered 429 with ``Retry-After`` (the mean duration of this process's recent
heavy requests, rounded up, 1–60 s), so a viewer cannot push the panel's memory up by
opening many at once.

Where the slots live follows ``state.url`` (``open_heavy_gate``):

- PostgreSQL state store (``AdvisoryLockSlots``): a slot is a session-level advisory
  lock, ``pg_try_advisory_lock(namespace, key)``, held on a connection of its own that
  stays open for the request. Every panel process on every host that uses the same
  database and schema shares the slots, so the limits hold across replicas. The server
  drops the locks when that connection closes: a request that ends, a worker that is
  killed, a host whose TCP connection the server's keepalive finds dead
  (``tcp_keepalives_*`` set on the connection: about 60 s).
- SQLite or any other store (``FileSlots``): a slot is an exclusive ``flock`` on a lock
  file in the slot directory (``web.runtime_dir``), shared by the processes of one host.
  Every attempt opens its own file description, so threads of one process exclude each
  other as processes do, and the kernel drops the lock when the file is closed or its
  process dies.

Slot names: ``global-<k>`` for k < the global limit and ``user-<id>-<k>`` for k < the
per-user limit (lock files of those names; advisory keys hashed from them). A request
takes its user's slot first, then a global one, and gives the first back if the second
is taken.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from functools import wraps
from pathlib import Path
from typing import Any

from flask import current_app, g, jsonify, render_template, request
from sqlalchemy import Connection, create_engine
from sqlalchemy import text as sql_text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool
from werkzeug.wrappers import Response

from namazu.server.core.config import ConfigError

log = logging.getLogger(__name__)


class FileSlots:
    """Slots as ``flock``-ed lock files in ``directory``: shared by the processes of one
    host. ``global_limit`` slots in all, ``per_user_limit`` per user [count]."""

    def __init__(self, global_limit: int, per_user_limit: int, directory: Path):
        self.global_limit = global_limit
        self.per_user_limit = per_user_limit
        self.directory = Path(directory)
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"web.runtime_dir {self.directory}: cannot create: {exc}") from exc

    def take(self, user: Any) -> tuple[int, int] | None:
        """A per-user and a global slot (their file descriptors), or None if either is
        taken everywhere on this host."""
        user_fd = self._first_free(f"user-{_name_safe(user)}", self.per_user_limit)
        if user_fd is None:
            return None
        global_fd = self._first_free("global", self.global_limit)
        if global_fd is None:
            os.close(user_fd)
            return None
        return user_fd, global_fd

    def give_back(self, token: tuple[int, int]) -> None:
        """Free the slots of ``token``."""
        for fd in token:
            os.close(fd)  # closing the only descriptor drops its flock

    def _first_free(self, prefix: str, count: int) -> int | None:
        for k in range(count):
            fd = os.open(self.directory / f"{prefix}-{k}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            except BaseException:
                os.close(fd)
                raise
            return fd
        return None


#: Server-side TCP keepalive of a slot's connection (idle [s], interval [s], probes
#: [count]): a panel host that vanished without closing it (power loss, a cut cable)
#: loses its slots after about 30 + 10 × 3 = 60 s. (Ignored on Unix-domain sockets,
#: where the server sees the close itself.)
SLOT_KEEPALIVE = (30, 10, 3)


class AdvisoryLockSlots:
    """Slots as PostgreSQL session-level advisory locks, each request's on a connection
    of its own: shared by every process on every host using ``url``'s database and
    schema. ``global_limit`` slots in all, ``per_user_limit`` per user [count];
    ``keepalive``: the server's TCP keepalive on each slot's connection (idle [s],
    interval [s], probes [count]), which bounds how long a vanished host keeps its slots.

    Keys are the two-integer form ``(namespace, key)``: the namespace is hashed from the
    schema (two deployments in one database do not share slots) and kept apart from the
    one-integer keys the store uses elsewhere; the key is hashed from the slot's name.
    """

    def __init__(
        self,
        global_limit: int,
        per_user_limit: int,
        url: str,
        keepalive: tuple[int, int, int] = SLOT_KEEPALIVE,
    ):
        self.global_limit = global_limit
        self.per_user_limit = per_user_limit
        idle, interval, count = (int(value) for value in keepalive)
        self._keepalive = {
            "idle": str(idle),
            "interval": str(interval),
            "count": str(count),
            # keepalive probes only go out on a silent connection: while the server
            # still waits for the host to acknowledge data it sent, the user timeout
            # [ms] is what ends the connection
            "user_timeout": str((idle + interval * count) * 1000),
        }
        # No pool: closing a slot's connection really closes it, which is what frees
        # the locks, and the store's own pool is not drained by long exports.
        self.engine = create_engine(url, poolclass=NullPool)
        with self.engine.connect() as connection:
            schema = connection.scalar(sql_text("SELECT current_schema()"))
        self.namespace = _key32("namazu.heavy", str(schema))

    def take(self, user: Any) -> Connection | None:
        """The connection holding a per-user and a global slot, or None if either is
        taken by any process sharing the store."""
        connection = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            connection.execute(
                sql_text(
                    "SELECT set_config('tcp_keepalives_idle', :idle, false), "
                    "set_config('tcp_keepalives_interval', :interval, false), "
                    "set_config('tcp_keepalives_count', :count, false), "
                    "set_config('tcp_user_timeout', :user_timeout, false)"
                ),
                self._keepalive,
            )
            user_slot = f"user-{_name_safe(user)}"
            if self._first_free(connection, user_slot, self.per_user_limit) and self._first_free(
                connection, "global", self.global_limit
            ):
                return connection
        except BaseException:
            connection.close()
            raise
        self.give_back(connection)  # the user slot taken, if any
        return None

    def give_back(self, token: Connection) -> None:
        """Free the slots of ``token`` and close its connection. The locks are released
        before this returns (closing alone would free them a moment later, when the
        server has seen the close); if the connection is broken, the server frees them
        when it notices."""
        try:
            token.execute(sql_text("SELECT pg_advisory_unlock_all()"))
        except Exception as exc:  # noqa: BLE001 - a broken connection: closing is all that is left
            log.warning("heavy-request slot: could not unlock before closing: %s", exc)
        finally:
            token.close()

    def global_taken(self) -> int:
        """Global slots held now by any process sharing the store [count]."""
        keys = [_key32(f"global-{k}") for k in range(self.global_limit)]
        with self.engine.connect() as connection:
            return int(
                connection.scalar(
                    sql_text(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                        "AND objsubid = 2 AND classid::int4 = :namespace "
                        "AND objid::int4 = ANY(:keys) AND database = "
                        "(SELECT oid FROM pg_database WHERE datname = current_database())"
                    ),
                    {"namespace": self.namespace, "keys": keys},
                )
            )

    def _first_free(self, connection: Connection, prefix: str, count: int) -> bool:
        for k in range(count):
            taken = connection.scalar(
                sql_text("SELECT pg_try_advisory_lock(:namespace, :key)"),
                {"namespace": self.namespace, "key": _key32(f"{prefix}-{k}")},
            )
            if taken:
                return True
        return False


def _key32(*parts: str) -> int:
    """A signed 32-bit key hashed from ``parts`` (PostgreSQL's int4)."""
    digest = hashlib.sha256("\0".join(parts).encode()).digest()
    return int.from_bytes(digest[:4], "big", signed=True)


class HeavyGate:
    """Slots for heavy requests, held in ``slots`` (``FileSlots`` or
    ``AdvisoryLockSlots``).

    ``try_acquire(user)`` returns a held slot (an opaque token) or None;
    ``release(token, held_s)`` gives it back and records how long it was held (for
    ``retry_after_s``).
    """

    def __init__(self, slots: FileSlots | AdvisoryLockSlots):
        self.slots = slots
        self._lock = threading.Lock()
        self._running = 0
        self._mean_s = 5.0

    def try_acquire(self, user: Any) -> Any:
        """A per-user and a global slot, or None if either is taken."""
        token = self.slots.take(user)
        if token is not None:
            with self._lock:
                self._running += 1
        return token

    def release(self, token: Any, held_s: float) -> None:
        """Free the slots of ``token``; ``held_s``: how long they were held [s]."""
        self.slots.give_back(token)
        with self._lock:
            self._running -= 1
            self._mean_s = 0.8 * self._mean_s + 0.2 * held_s

    @property
    def running(self) -> int:
        """Heavy requests in flight in this process [count]."""
        return self._running

    def retry_after_s(self) -> int:
        """Suggested wait before a retry [s]: the recent mean duration, 1–60."""
        return int(min(60, max(1, math.ceil(self._mean_s))))


def _name_safe(user: Any) -> str:
    """A user id as a slot-name part (ids are integers; anything else is spelled out)."""
    text = "anonymous" if user is None else str(user)
    return "".join(c if c.isalnum() or c in "-_" else f"%{ord(c):02x}" for c in text)


def open_heavy_gate(web: Any, state_url: str, data_dir: Path) -> HeavyGate:
    """The panel's gate for ``web`` (the ``[web]`` settings): advisory locks when
    ``state_url`` is PostgreSQL (shared by every host), else lock files in
    ``slot_dir(...)`` (shared by the processes of this host)."""
    if make_url(state_url).get_backend_name() == "postgresql":
        slots: FileSlots | AdvisoryLockSlots = AdvisoryLockSlots(
            web.heavy_global_limit, web.heavy_per_user_limit, state_url
        )
    else:
        slots = FileSlots(
            web.heavy_global_limit,
            web.heavy_per_user_limit,
            slot_dir(web.runtime_dir, state_url, data_dir),
        )
    return HeavyGate(slots)


def slot_dir(runtime_dir: Path | None, state_url: str, data_dir: Path) -> Path:
    """Where the panel's slot lock files live: ``web.runtime_dir`` if set, else
    ``heavy-slots`` beside a SQLite state store, else ``<stack.data_dir>/heavy-slots``."""
    if runtime_dir is not None:
        return Path(runtime_dir)
    url = make_url(state_url)
    database = url.database or ""
    in_memory = database in ("", ":memory:") or database.startswith("file:")
    if url.get_backend_name() == "sqlite" and not in_memory:
        return Path(database).resolve().parent / "heavy-slots"
    return Path(data_dir).resolve() / "heavy-slots"


def heavy(view: Callable) -> Callable:
    """Decorate a view (after its role check) so it runs only with a free slot."""
    return heavy_when(lambda: True)(view)


def heavy_when(condition: Callable[[], Any]) -> Callable[[Callable], Callable]:
    """Like ``heavy``, for the requests where ``condition()`` is true (e.g. a page whose
    empty form is light and whose submitted form runs an evaluation)."""
    return lambda view: _gated(view, condition)


def _gated(view: Callable, condition: Callable[[], Any]) -> Callable:
    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if not condition():
            return view(*args, **kwargs)
        gate: HeavyGate = current_app.extensions["namazu"].heavy_gate
        user = getattr(g.get("user"), "id", None)
        token = gate.try_acquire(user)
        if token is None:
            return _busy(gate.retry_after_s())
        started = time.monotonic()
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                gate.release(token, time.monotonic() - started)

        try:
            response = current_app.make_response(view(*args, **kwargs))
        except BaseException:
            release()
            raise
        if response.is_streamed:  # the slot is held until the last piece has gone
            response.response = _releasing(response.response, release)
            response.call_on_close(release)
        else:
            release()
        return response

    return wrapped


def _releasing(pieces: Iterable[Any], release: Callable[[], None]) -> Iterator[Any]:
    """The pieces of a streamed body; ``release`` once they are sent or abandoned."""
    try:
        yield from pieces
    finally:
        release()


def _busy(retry_after: int) -> Response:
    message = f"too many heavy requests (exports, evaluations) at once; retry in {retry_after} s"
    if request.path.startswith("/api/"):
        response = jsonify({"error": message})
    else:
        response = current_app.make_response(
            render_template("error.html", status=429, message=message)
        )
    response.status_code = 429
    response.headers["Retry-After"] = str(retry_after)
    return response
