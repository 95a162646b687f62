"""Concurrency limits of the panel's heavy requests (exports, evaluations).

A heavy request holds one slot from the request's start until its response is built,
or, when it is streamed (exports), until the last piece has been sent or the client went
away. At most ``web.heavy_global_limit`` heavy requests run at once on one panel host,
over all its gunicorn worker processes and threads, and at most
``web.heavy_per_user_limit`` per user; one more is answered 429 with ``Retry-After``
(the mean duration of this process's recent heavy requests, rounded up, 1–60 s), so a
viewer cannot push the panel's memory up by opening many at once.

A slot is an exclusive ``flock`` on a lock file in the slot directory
(``web.runtime_dir``): ``global-<k>.lock`` for k < the global limit and
``user-<id>-<k>.lock`` for k < the per-user limit. Every attempt opens its own file
description, so threads of one process exclude each other as processes do, and the
kernel drops the lock when the file is closed or its process dies: a killed worker
leaves no stale slot.
"""

from __future__ import annotations

import fcntl
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from functools import wraps
from pathlib import Path
from typing import Any

from flask import current_app, g, jsonify, render_template, request
from sqlalchemy.engine import make_url
from werkzeug.wrappers import Response

from namazu.server.core.config import ConfigError


class HeavyGate:
    """Slots for heavy requests: ``global_limit`` in all, ``per_user_limit`` per user,
    shared by every process that opens a gate on the same ``slot_dir``.

    ``try_acquire(user)`` returns a held slot (an opaque token) or None;
    ``release(token, held_s)`` gives it back and records how long it was held (for
    ``retry_after_s``).
    """

    def __init__(self, global_limit: int, per_user_limit: int, slot_dir: Path):
        self.global_limit = global_limit
        self.per_user_limit = per_user_limit
        self.slot_dir = Path(slot_dir)
        try:
            self.slot_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"web.runtime_dir {self.slot_dir}: cannot create: {exc}") from exc
        self._lock = threading.Lock()
        self._running = 0
        self._mean_s = 5.0

    def try_acquire(self, user: Any) -> tuple[int, int] | None:
        """A per-user and a global slot (their file descriptors), or None if either is
        taken everywhere on this host."""
        user_fd = self._first_free(f"user-{_file_safe(user)}", self.per_user_limit)
        if user_fd is None:
            return None
        global_fd = self._first_free("global", self.global_limit)
        if global_fd is None:
            os.close(user_fd)
            return None
        with self._lock:
            self._running += 1
        return user_fd, global_fd

    def release(self, token: tuple[int, int], held_s: float) -> None:
        """Free the slots of ``token``; ``held_s``: how long they were held [s]."""
        for fd in token:
            os.close(fd)  # closing the only descriptor drops its flock
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

    def _first_free(self, prefix: str, count: int) -> int | None:
        for k in range(count):
            fd = os.open(self.slot_dir / f"{prefix}-{k}.lock", os.O_RDWR | os.O_CREAT, 0o600)
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


def _file_safe(user: Any) -> str:
    """A user id as a file-name part (ids are integers; anything else is spelled out)."""
    text = "anonymous" if user is None else str(user)
    return "".join(c if c.isalnum() or c in "-_" else f"%{ord(c):02x}" for c in text)


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
