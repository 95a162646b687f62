"""Concurrency limits of the panel's heavy requests (exports, evaluations).

A heavy request holds one slot from the request's start until its response is built,
or, when it is streamed (exports), until the last piece has been sent or the client went
away. At most
``web.heavy_global_limit`` heavy requests run at once in a panel process and at most
``web.heavy_per_user_limit`` per user; one more is answered 429 with ``Retry-After``
(the mean duration of recent heavy requests, rounded up, 1–60 s), so a viewer cannot
push the panel's memory up by opening many at once.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from functools import wraps
from typing import Any

from flask import current_app, g, jsonify, render_template, request
from werkzeug.wrappers import Response


class HeavyGate:
    """Slots for heavy requests: ``global_limit`` in all, ``per_user_limit`` per user.

    ``try_acquire(user)`` takes a slot or returns False; ``release(user)`` gives it back
    and records how long it was held (for ``retry_after_s``).
    """

    def __init__(self, global_limit: int, per_user_limit: int):
        self.global_limit = global_limit
        self.per_user_limit = per_user_limit
        self._lock = threading.Lock()
        self._running = 0
        self._per_user: dict[Any, int] = {}
        self._mean_s = 5.0

    def try_acquire(self, user: Any) -> bool:
        with self._lock:
            if self._running >= self.global_limit:
                return False
            if self._per_user.get(user, 0) >= self.per_user_limit:
                return False
            self._running += 1
            self._per_user[user] = self._per_user.get(user, 0) + 1
            return True

    def release(self, user: Any, held_s: float) -> None:
        with self._lock:
            self._running -= 1
            left = self._per_user.get(user, 1) - 1
            if left:
                self._per_user[user] = left
            else:
                self._per_user.pop(user, None)
            self._mean_s = 0.8 * self._mean_s + 0.2 * held_s

    @property
    def running(self) -> int:
        """Heavy requests in flight [count]."""
        return self._running

    def retry_after_s(self) -> int:
        """Suggested wait before a retry [s]: the recent mean duration, 1–60."""
        return int(min(60, max(1, math.ceil(self._mean_s))))


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
        if not gate.try_acquire(user):
            return _busy(gate.retry_after_s())
        started = time.monotonic()
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                gate.release(user, time.monotonic() - started)

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
