"""The one module that speaks to InfluxDB.

It uses the HTTP API every InfluxDB generation serves: line protocol to ``/write`` and
InfluxQL on ``/query`` (1.x natively; 2.x and 3.x through their v1-compatibility
endpoints). Authentication is a token (``Authorization: Token …``, 2.x and 3.x) or a
user name and password (HTTP Basic: 1.x users, 2.x v1 authorisations). Reads go by GET
(3.x reads its query from the URL), statements that change state by POST (1.x wants
that). ``server_info`` and ``prepare`` tell at start-up which generation answers and
what it supports; ``CREATE DATABASE`` is skipped where the server does not implement
it (2.x answers "not implemented: CREATE DATABASE"; 3.x creates a database on its first
write). Only InfluxDB 1.6.7 is exercised live by the tests; 2.x and 3.x are tested
against the responses their documentation gives (docs/deployment.md says which).
Line-protocol serialisation lives here too, so the escaping rules are in one place.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
import requests


class InfluxError(Exception):
    """Base class of InfluxDB failures."""


class InfluxUnavailable(InfluxError):
    """InfluxDB could not be reached (connection refused, timeout): retry later."""


class InfluxServerError(InfluxUnavailable):
    """InfluxDB answered a write with HTTP 5xx (overloaded, shutting down): retry later."""

    def __init__(self, status: int, body: str):
        super().__init__(f"InfluxDB write HTTP {status}: {body[:500]}")
        self.status = status
        self.body = body


class InfluxWriteError(InfluxError):
    """InfluxDB refused a write (HTTP 4xx/5xx); ``status`` and ``body`` say why.

    ``point_level`` tells the two kinds apart: True when InfluxDB refused some points
    themselves (HTTP 400 "partial write": a field type conflict, points beyond the
    retention policy; or a line it cannot parse) and stored the rest; False when it
    refused the write as a whole (credentials, permissions, a missing database), which
    says nothing about the data and must be retried once the cause is fixed.
    """

    def __init__(self, status: int, body: str):
        super().__init__(f"InfluxDB write failed with HTTP {status}: {body[:500]}")
        self.status = status
        self.body = body

    @property
    def point_level(self) -> bool:
        return self.status == 400 and (
            "partial write" in self.body or "unable to parse" in self.body
        )

    @property
    def dropped(self) -> int | None:
        """Points InfluxDB reports dropped (``dropped=N`` of a partial write), or None."""
        found = _DROPPED.search(self.body)
        return int(found.group(1)) if found else None


_DROPPED = re.compile(r"dropped=(\d+)")


class InfluxAuthError(InfluxUnavailable):
    """InfluxDB refused the credentials (HTTP 401/403): fix the token or password; the
    data waits meanwhile (it is an outage of the store for this client, not bad data).
    ``status`` is the HTTP status (401 or 403) when known."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class InfluxQueryError(InfluxError):
    """An InfluxQL statement failed; the message names the statement and the error."""


#: Longest InfluxQL statement sent by GET (longer ones go by POST) [characters].
_GET_LIMIT = 6000


@dataclass(frozen=True)
class ServerInfo:
    """What ``/ping`` says about the server.

    generation : 1, 2 or 3 (None when the server does not say). version : as reported,
    e.g. "1.6.7~rc0", "v2.7.10", "3.8.0". build : "OSS", "Core", "Enterprise" or "".
    """

    generation: int | None
    version: str
    build: str

    @property
    def name(self) -> str:
        """E.g. "InfluxDB 2.7.10 (OSS)"."""
        version = self.version.removeprefix("v") or "of unknown version"
        return f"InfluxDB {version}" + (f" ({self.build})" if self.build else "")


def _generation(version: str) -> int | None:
    head = version.strip().removeprefix("v").split(".", 1)[0]
    return int(head) if head.isdigit() else None


_MEASUREMENT_ESCAPES = str.maketrans({",": r"\,", " ": r"\ "})
_TAG_ESCAPES = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})


def escape_measurement(name: str) -> str:
    """Escape a measurement name for line protocol."""
    return name.translate(_MEASUREMENT_ESCAPES)


def escape_tag(value: str) -> str:
    """Escape a tag key or value for line protocol."""
    return str(value).translate(_TAG_ESCAPES)


def _field_value(value: Any) -> str:
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, int | np.integer):
        return f"{int(value)}i"
    if isinstance(value, float | np.floating):
        if not np.isfinite(value):
            raise ValueError(f"field value {value!r} is not finite")
        return repr(float(value))
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def series_key(measurement: str, tags: Mapping[str, str]) -> str:
    """``measurement,tag=value,...`` with tags sorted by key (InfluxDB's preferred order)."""
    parts = [escape_measurement(measurement)]
    parts += [f"{escape_tag(k)}={escape_tag(v)}" for k, v in sorted(tags.items()) if v != ""]
    return ",".join(parts)


def point_line(
    measurement: str, tags: Mapping[str, str], fields: Mapping[str, Any], time_ms: int
) -> str:
    """One line-protocol point; ``time_ms`` is UTC epoch milliseconds."""
    if not fields:
        raise ValueError("a point needs at least one field")
    body = ",".join(f"{escape_tag(k)}={_field_value(v)}" for k, v in fields.items())
    return f"{series_key(measurement, tags)} {body} {int(time_ms)}"


def float_series_lines(
    measurement: str,
    tags: Mapping[str, str],
    columns: Mapping[str, Sequence[float] | np.ndarray],
    time_ms: Sequence[int] | np.ndarray,
) -> list[str]:
    """Line-protocol points of one series with float fields, vectorised over samples.

    columns : field name -> values (finite floats, one per timestamp).
    time_ms : UTC epoch milliseconds, one per sample.
    """
    prefix = series_key(measurement, tags) + " "
    names = [escape_tag(name) + "=" for name in columns]
    arrays = [np.asarray(values, dtype=float).tolist() for values in columns.values()]
    times = np.asarray(time_ms, dtype=np.int64).tolist()
    if len(names) == 2:
        (n1, n2), (a1, a2) = names, arrays
        return [f"{prefix}{n1}{x!r},{n2}{y!r} {t}" for x, y, t in zip(a1, a2, times, strict=True)]
    lines = []
    for i, t in enumerate(times):
        body = ",".join(f"{name}{arr[i]!r}" for name, arr in zip(names, arrays, strict=True))
        lines.append(f"{prefix}{body} {t}")
    return lines


@lru_cache(maxsize=65_536)
def _series_prefix(measurement: str, tags: tuple[tuple[str, str], ...]) -> str:
    return series_key(measurement, dict(tags)) + " "


def series_prefix(measurement: str, sorted_tags: tuple[tuple[str, str], ...]) -> str:
    """The escaped series key of a point followed by a space, from a cache.

    sorted_tags : (key, value) pairs sorted by key (the order InfluxDB stores).
    """
    return _series_prefix(measurement, sorted_tags)


def prefixed_float_lines(
    prefixes: Sequence[str],
    counts: Sequence[int],
    columns: Mapping[str, Sequence[float]],
    time_ms: Sequence[int],
) -> list[str]:
    """Line-protocol points of consecutive series given by their cached prefixes.

    prefixes : :func:`series_prefix` of each series; counts : its number of samples.
    columns : exactly two field names -> floats [any unit], all series one after the other.
    time_ms : UTC epoch milliseconds (ints), aligned with the columns.
    Equals the concatenation of ``float_series_lines`` per series (the float values are
    written by ``repr``, as there), in one pass without per-series setup.
    """
    (n1, x1), (n2, x2) = ((escape_tag(k) + "=", v) for k, v in columns.items())
    series_heads = [p + n1 for p in prefixes]
    heads = [h for h, n in zip(series_heads, counts, strict=True) for _ in range(n)]
    tail = "," + n2
    return [f"{h}{x!r}{tail}{y!r} {t}" for h, x, y, t in zip(heads, x1, x2, time_ms, strict=True)]


def multi_series_lines(
    measurement: str,
    series_tags: Sequence[Mapping[str, str]],
    columns: Mapping[str, Sequence[np.ndarray]],
    time_ms: Sequence[np.ndarray],
) -> list[str]:
    """Line-protocol points of many series with float fields, in one vectorised pass.

    series_tags : the tags of each series.
    columns : field name -> one array of finite floats per series.
    time_ms : one array of UTC epoch milliseconds per series.
    The result equals the concatenation of ``float_series_lines`` for each series, but
    costs one pass over all samples instead of one setup per series (a message of 100
    animals with one sample each), and series keys come from a cache.
    """
    if len(columns) != 2 or not series_tags:
        lines: list[str] = []
        for k, tags in enumerate(series_tags):
            lines += float_series_lines(
                measurement, tags, {name: values[k] for name, values in columns.items()}, time_ms[k]
            )
        return lines
    prefixes = [_series_prefix(measurement, tuple(sorted(tags.items()))) for tags in series_tags]
    counts = [len(t) for t in time_ms]
    repeated = [p for p, n in zip(prefixes, counts, strict=True) for _ in range(n)]
    (n1, a1), (n2, a2) = ((escape_tag(k) + "=", v) for k, v in columns.items())
    x1 = np.concatenate(a1).astype(float, copy=False).tolist()
    x2 = np.concatenate(a2).astype(float, copy=False).tolist()
    times = np.concatenate(time_ms).astype(np.int64, copy=False).tolist()
    return [
        f"{p}{n1}{x!r},{n2}{y!r} {t}" for p, x, y, t in zip(repeated, x1, x2, times, strict=True)
    ]


class InfluxClient:
    """Client of one InfluxDB database over the HTTP API.

    url : base URL, e.g. ``http://127.0.0.1:8086``.
    database : database name.
    timeout_s : HTTP timeout [s].
    """

    def __init__(
        self,
        url: str,
        database: str,
        username: str | None = None,
        password: str | None = None,
        timeout_s: float = 10.0,
        session: requests.Session | None = None,
        gzip_writes: bool = False,
        token: str | None = None,
        create_databases: bool = True,
    ):
        self.url = url.rstrip("/")
        self.database = database
        self.timeout_s = timeout_s
        self.gzip_writes = gzip_writes
        self.create_databases = create_databases
        self.create_not_implemented = False
        self.create_refused = ""
        self._session = session or requests.Session()
        self.username = username
        self._auth = (username, password or "") if username and not token else None
        self._headers = {"Authorization": f"Token {token}"} if token else {}
        self.auth_scheme = "token" if token else "user/password" if username else "none"

    @classmethod
    def from_config(cls, cfg: Any) -> InfluxClient:
        """Build from a ``namazu.server.core.config.InfluxConfig``."""
        return cls(
            cfg.url,
            cfg.database,
            cfg.username,
            cfg.password,
            cfg.timeout_s,
            token=cfg.token,
            create_databases=cfg.create_database,
        )

    def close(self) -> None:
        self._session.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {**self._headers, **kwargs.pop("headers", {})}
        try:
            response = self._session.request(
                method,
                f"{self.url}{path}",
                timeout=self.timeout_s,
                auth=self._auth,
                headers=headers,
                **kwargs,
            )
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise InfluxUnavailable(f"InfluxDB at {self.url} unreachable: {exc}") from exc
        if response.status_code in (401, 403):
            raise InfluxAuthError(
                f"InfluxDB at {self.url} refused the credentials ({self.auth_scheme}) "
                f"with HTTP {response.status_code}: {_error_text(response)}",
                response.status_code,
            )
        return response

    def explain_write_failure(self, exc: InfluxError) -> tuple[str, str]:
        """A write failure that is not the data's fault as (cause, one-line sentence).

        cause : ``credentials`` (HTTP 401), ``permission`` (403), ``no_database`` (404),
        ``server_error`` (5xx), ``unreachable`` (connection refused, time-out), or
        ``http_NNN`` for another status.
        """
        user = f"user {self.username!r}" if self.username else "an anonymous client"
        if self.auth_scheme == "token":
            user = "the configured token"
        db = repr(self.database)
        if isinstance(exc, InfluxWriteError | InfluxAuthError):
            status = exc.status or 401
            if status == 401:
                return (
                    "credentials",
                    f"InfluxDB refused the credentials of {user} for database {db}",
                )
            if status == 403:
                return "permission", f"InfluxDB does not let {user} write to database {db}"
            if status == 404:
                return (
                    "no_database",
                    f"InfluxDB has no database {db} and user {user} cannot create it",
                )
            return (
                f"http_{status}",
                f"InfluxDB at {self.url} refused the write with HTTP {status}: {exc.body[:200]}",
            )
        if isinstance(exc, InfluxServerError):
            return (
                "server_error",
                f"InfluxDB at {self.url} answered HTTP {exc.status}: {exc.body[:200]}",
            )
        return "unreachable", str(exc)[:300]

    def ping(self) -> bool:
        """True when the server answers /ping (HTTP 204 from 1.x/2.x, 200 from 3.x)."""
        try:
            return self._request("GET", "/ping").status_code in (200, 204)
        except InfluxUnavailable:
            return False

    def server_info(self) -> ServerInfo:
        """Generation, version and build from ``/ping`` (headers; 3.x also a JSON body).

        Raises InfluxUnavailable (InfluxAuthError for refused credentials).
        """
        response = self._request("GET", "/ping")
        if response.status_code not in (200, 204):
            raise InfluxUnavailable(
                f"InfluxDB at {self.url} answered /ping with HTTP {response.status_code}"
            )
        version = response.headers.get("X-Influxdb-Version", "")
        build = response.headers.get("X-Influxdb-Build", "")
        if not version and response.content:
            try:
                body = response.json()
            except ValueError:
                body = {}
            version = str(body.get("version", "")) if isinstance(body, dict) else ""
        return ServerInfo(_generation(version), version, build)

    def prepare(self) -> str:
        """Start-up check: who answers, how we authenticate, whether the database exists
        or was created. Returns one plain sentence (log it at INFO).

        Raises InfluxUnavailable when the server cannot be reached or refuses the
        credentials; other findings (a database that cannot be read) are in the sentence.
        """
        info = self.server_info()
        created = self.create_database(info)
        if created:
            database = f"database {self.database!r} created or already there"
        elif info.generation == 3:
            database = f"database {self.database!r} is created by the first write (InfluxDB 3)"
        elif self.create_refused:
            database = (
                f"CREATE DATABASE was refused (the user is no admin): {self.database!r} must "
                "exist; set influx.create_database = false to stop asking"
            )
        elif info.generation != 2 and not self.create_not_implemented:
            database = f"database {self.database!r} not created (influx.create_database = false)"
        else:
            database = (
                f"CREATE DATABASE is not implemented: the bucket for {self.database!r} and its "
                "DBRP mapping must exist (docs/deployment.md, InfluxDB 2.x)"
            )
        # 1.x answers SHOW MEASUREMENTS on a missing database with an empty result.
        probe = "SHOW RETENTION POLICIES" if info.generation in (1, 2) else "SHOW MEASUREMENTS"
        try:
            self.query(probe)
            reads = "InfluxQL reads work"
        except InfluxQueryError as exc:
            reads = f"InfluxQL reads fail: {exc}"
        auth = "without authentication"
        if self.auth_scheme != "none":
            auth = f"with {self.auth_scheme} authentication"
        return f"{info.name} at {self.url}: v1 /write and /query {auth}; {database}; {reads}"

    def write_lines(
        self,
        lines: Iterable[str] | str | bytes,
        precision: str = "ms",
        retention_policy: str | None = None,
    ) -> None:
        """Write line-protocol points (idempotent per series + timestamp).

        Raises InfluxUnavailable when the server cannot be reached or times out (retry
        later) and InfluxWriteError for any other answer than 204 (see its
        ``point_level``: only then is the data at fault).
        """
        if isinstance(lines, bytes):
            body = lines
        elif isinstance(lines, str):
            body = lines.encode()
        else:
            body = "\n".join(lines).encode()
        if not body:
            return
        params = {"db": self.database, "precision": precision}
        if retention_policy:
            params["rp"] = retention_policy
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if self.gzip_writes:
            body = gzip.compress(body, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
        from namazu.server.core.metrics import INFLUX_WRITE_FAILURES

        try:
            response = self._request("POST", "/write", params=params, data=body, headers=headers)
        except InfluxAuthError:
            INFLUX_WRITE_FAILURES.labels(kind="unauthorized").inc()
            raise
        except InfluxUnavailable:
            INFLUX_WRITE_FAILURES.labels(kind="unavailable").inc()
            raise
        if response.status_code >= 500:
            INFLUX_WRITE_FAILURES.labels(kind="unavailable").inc()
            raise InfluxServerError(response.status_code, response.text)
        if response.status_code not in (200, 204):
            INFLUX_WRITE_FAILURES.labels(kind="refused").inc()
            raise InfluxWriteError(response.status_code, response.text)

    def query(
        self, statement: str, epoch: str = "ms", params: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """Run InfluxQL; return the list of series dicts (name, tags, columns, values).

        Reads (SELECT, SHOW) go by GET, statements that change state (CREATE, DROP,
        SELECT INTO) and very long reads by POST. ``params`` are bound parameters
        (``$name`` in the statement), which avoids building InfluxQL from user input.
        """
        payload = self._send_query(statement, _is_read(statement), epoch, params)
        series: list[dict[str, Any]] = []
        for result in payload.get("results", []):
            if "error" in result:
                raise InfluxQueryError(f"{statement[:200]!r}: {result['error']}")
            series.extend(result.get("series", []))
        return series

    def _send_query(
        self, q: str, read: bool, epoch: str, params: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        """Send InfluxQL ``q`` (one or several statements) and return the decoded answer.

        Reads go by GET while the request is short enough, everything else by POST.
        Raises InfluxUnavailable on 5xx and InfluxQueryError on an answer that is not a
        JSON object or that reports an error for the whole request.
        """
        data = {"q": q, "db": self.database, "epoch": epoch}
        if params:
            data["params"] = json.dumps(dict(params))
        if read and len(q) + len(data.get("params", "")) < _GET_LIMIT:
            response = self._request("GET", "/query", params=data)
        else:
            response = self._request("POST", "/query", data=data)
        if response.status_code >= 500:
            raise InfluxUnavailable(f"InfluxDB query HTTP {response.status_code}")
        try:
            payload = response.json()
        except ValueError as exc:
            raise InfluxQueryError(f"{q[:200]!r}: not JSON ({response.text[:200]})") from exc
        if not isinstance(payload, dict):
            raise InfluxQueryError(f"{q[:200]!r}: unexpected answer {payload!r:.200}")
        if "error" in payload or "message" in payload and "results" not in payload:
            error = payload.get("error") or payload.get("message")
            raise InfluxQueryError(f"{q[:200]!r}: {error}")
        return payload

    def query_frame(self, statement: str, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
        """Run a SELECT and return one DataFrame: a UTC ``time`` column, the tags
        of each series (for GROUP BY tag queries) and the selected columns."""
        return _frame(self.query(statement, epoch="ms", params=params))

    def query_frames(
        self, statements: list[str], params: Mapping[str, Any] | None = None
    ) -> list[pd.DataFrame]:
        """Run several SELECTs in one request (one round trip) and return one DataFrame
        per statement, as ``query_frame`` would; ``params`` are shared by all."""
        joined = ";".join(statements)
        reads = all(_is_read(statement) for statement in statements)
        payload = self._send_query(joined, reads, "ms", params)
        if "results" not in payload:
            raise InfluxQueryError(f"{joined[:200]!r}: unexpected answer {payload!r:.200}")
        results = payload["results"]
        frames = []
        for k in range(len(statements)):
            result = next((r for r in results if r.get("statement_id", 0) == k), {})
            if "error" in result:
                raise InfluxQueryError(f"{statements[k][:200]!r}: {result['error']}")
            frames.append(_frame(result.get("series", [])))
        return frames

    def create_database(self, info: ServerInfo | None = None) -> bool:
        """Create the database (a no-op when it exists); True when it is there now.

        False, without asking, when switched off (``create_databases``) or the server
        is InfluxDB 3 (it creates a database on the first write); False when the server
        answers that it does not implement CREATE DATABASE (InfluxDB 2.x), which is
        remembered. info : what ``server_info`` said, if known.
        """
        if info is not None and info.generation == 3:
            self.create_databases = False  # remembered: InfluxDB 3 needs no CREATE
        if not self.create_databases:
            return False
        try:
            self.query(f'CREATE DATABASE "{self.database}"')
        except InfluxAuthError as exc:
            if "HTTP 403" not in str(exc):
                raise
            # 1.x: the user may write but is no admin ("requires admin privilege").
            self.create_databases = False
            self.create_refused = str(exc)
            return False
        except InfluxQueryError as exc:
            text = str(exc).lower()
            if "not implemented" in text or "not supported" in text:
                self.create_databases = False
                self.create_not_implemented = True
                return False
            raise
        return True

    def drop_database(self) -> None:
        """Drop the database and all its data."""
        self.query(f'DROP DATABASE "{self.database}"')

    def count(self, measurement: str, field: str, where: str = "") -> int:
        """Number of points of ``measurement`` with ``field`` set (optionally filtered)."""
        clause = f" WHERE {where}" if where else ""
        rows = self.query(f'SELECT count("{field}") FROM "{measurement}"{clause}')
        return int(rows[0]["values"][0][1]) if rows else 0


def _is_read(statement: str) -> bool:
    """SELECT (without INTO) or SHOW: statements that only read."""
    head = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else ""
    if head == "SHOW":
        return True
    return head == "SELECT" and " INTO " not in f" {statement.upper()} ".replace("\n", " ")


def _error_text(response: requests.Response) -> str:
    """The error a server put in its answer: 1.x ``error``, 2.x ``message``, else the text."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or "(no body)"
    if isinstance(body, dict):
        return str(body.get("error") or body.get("message") or body)[:200]
    return str(body)[:200]


def _frame(series: list[dict[str, Any]]) -> pd.DataFrame:
    """The series of one statement's result as one DataFrame (UTC ``time``, tags, columns)."""
    frames = []
    for item in series:
        frame = pd.DataFrame(item.get("values", []), columns=item["columns"])
        for key, value in (item.get("tags") or {}).items():
            frame[key] = value
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=["time"])
    frame = pd.concat(frames, ignore_index=True)
    frame["time"] = pd.to_datetime(frame["time"].astype("int64"), unit="ms", utc=True)
    return frame
