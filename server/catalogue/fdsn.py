"""FDSN event web services (fdsnws-event 1.x): the only module that queries them.

Queries use ``format=text`` and the pure ``namazu.analytics.catalog.parse_fdsn_text``.
HTTP behaviour (FDSN web-service specification 1.2, section "HTTP status codes"):

- 200 → the catalogue; 204 (no data) → an empty catalogue;
- 429 (too many requests) and 5xx (503 service unavailable...) → retried up to
  ``max_retries`` times, waiting ``backoff_s * 2**attempt`` seconds, or the server's
  ``Retry-After`` (seconds or HTTP date) when it asks for longer, capped at
  ``max_wait_s``; connection errors and time-outs are retried the same way;
- 413 (request too large) → the time window is split in two and both halves queried;
- any other status → ``FdsnError`` naming the status and the URL.
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd
import requests

from namazu.analytics.catalog import CatalogFormatError, empty_catalog, parse_fdsn_text
from namazu.server.store.state import MAX_SOURCE_URL

FDSN_SERVICES: dict[str, str] = {
    "INGV": "https://webservices.ingv.it/fdsnws/event/1",
    "USGS": "https://earthquake.usgs.gov/fdsnws/event/1",
    "EMSC": "https://www.seismicportal.eu/fdsnws/event/1",
}

#: Kilometres per degree of great-circle arc on the mean Earth sphere (R = 6371.0088 km).
KM_PER_DEGREE = 6371.0088 * math.pi / 180.0

_USER_AGENT = "namazu-catalog/1 (+fdsnws-event client)"


class FdsnError(Exception):
    """An FDSN event service request failed; the message names the status and URL."""


class FdsnServiceUnavailable(FdsnError):
    """The service kept answering 429/5xx (or was unreachable) after all retries."""


def resolve_service(name_or_url: str) -> str:
    """Base URL (``.../fdsnws/event/1``) of a service given by name or URL.

    name_or_url : ``INGV``, ``USGS``, ``EMSC`` (any case) or an ``http(s)://`` fdsnws
        event URL (a trailing ``/query`` or ``/`` is removed).
    Raises FdsnError naming the valid names when neither, or when the URL is longer
    than the state store keeps (``MAX_SOURCE_URL`` characters).
    """
    text = name_or_url.strip()
    if text.upper() in FDSN_SERVICES:
        return FDSN_SERVICES[text.upper()]
    if text.startswith(("http://", "https://")) and len(text) > len("https://"):
        text = text.rstrip("/").removesuffix("/query")
        if len(text) > MAX_SOURCE_URL:
            raise FdsnError(
                f"FDSN service URL {text[:60]!r}... has {len(text)} characters, "
                f"at most {MAX_SOURCE_URL}"
            )
        return text
    raise FdsnError(
        f"unknown FDSN service {name_or_url!r}; use one of {', '.join(FDSN_SERVICES)} "
        "or an http(s):// fdsnws-event URL"
    )


def _utc(value: str | pd.Timestamp) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _iso(stamp: pd.Timestamp) -> str:
    return stamp.tz_convert("UTC").tz_localize(None).isoformat(timespec="milliseconds")


@dataclass
class FdsnClient:
    """Client of one fdsnws-event service.

    base_url : service URL ending in ``/fdsnws/event/1`` (see ``resolve_service``).
    session : a ``requests.Session`` (injected; one is created when None).
    max_retries : retries after a 429/5xx/connection failure before giving up.
    backoff_s : first retry wait [s]; doubles on each further retry.
    max_wait_s : longest single wait, also for ``Retry-After`` [s].
    timeout_s : HTTP connect/read time-out [s].
    sleep : the wait function (``time.sleep``); tests may wrap it to observe waits.
    """

    base_url: str
    session: requests.Session | None = None
    max_retries: int = 4
    backoff_s: float = 2.0
    max_wait_s: float = 120.0
    timeout_s: float = 60.0
    sleep: Callable[[float], None] = time.sleep
    waits: list[float] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.base_url = resolve_service(self.base_url)
        if self.max_retries < 0 or self.backoff_s < 0:
            raise ValueError("max_retries and backoff_s must be >= 0")
        if self.session is None:
            self.session = requests.Session()
            self.session.headers["User-Agent"] = _USER_AGENT

    def query(
        self,
        starttime: str | pd.Timestamp,
        endtime: str | pd.Timestamp,
        minmagnitude: float | None = None,
        latitude: float | None = None,
        longitude: float | None = None,
        maxradius_km: float | None = None,
        updatedafter: str | pd.Timestamp | None = None,
    ) -> pd.DataFrame:
        """Events with origin time in [starttime, endtime] (UTC; naive times are UTC).

        minmagnitude : lowest magnitude, or None for all.
        latitude, longitude : circle centre [deg N, deg E]; with ``maxradius_km``, the
            circle radius [km] (sent as ``maxradius`` in degrees of arc).
        updatedafter : only events created or updated after this UTC time (incremental
            refresh), or None.
        Returns the catalogue DataFrame (``namazu.analytics.catalog`` schema), possibly empty.
        Raises FdsnError (4xx, unparsable body) or FdsnServiceUnavailable.
        """
        start, end = _utc(starttime), _utc(endtime)
        if end <= start:
            raise FdsnError(f"endtime {end} is not after starttime {start}")
        params: dict[str, str] = {"format": "text"}
        if minmagnitude is not None:
            params["minmagnitude"] = f"{minmagnitude:g}"
        circle = (latitude, longitude, maxradius_km)
        if any(v is not None for v in circle):
            if any(v is None for v in circle):
                raise FdsnError("latitude, longitude and maxradius_km must be given together")
            params["latitude"] = f"{latitude:.6f}"
            params["longitude"] = f"{longitude:.6f}"
            params["maxradius"] = f"{float(maxradius_km) / KM_PER_DEGREE:.6f}"  # type: ignore[arg-type]
        if updatedafter is not None:
            params["updatedafter"] = _iso(_utc(updatedafter))
        return self._query_window(start, end, params)

    def _query_window(
        self, start: pd.Timestamp, end: pd.Timestamp, params: dict[str, str]
    ) -> pd.DataFrame:
        window = {**params, "starttime": _iso(start), "endtime": _iso(end)}
        response = self._get(window)
        if response.status_code == 413 and end - start > pd.Timedelta(hours=1):
            middle = start + (end - start) / 2
            halves = [
                self._query_window(start, middle, params),
                self._query_window(middle, end, params),
            ]
            merged = pd.concat([h for h in halves if not h.empty] or [empty_catalog()])
            merged = merged.drop_duplicates(subset=["event_id", "time"])
            return merged.sort_values("time", kind="stable").reset_index(drop=True)
        if response.status_code == 204:
            return empty_catalog()
        if response.status_code != 200:
            raise FdsnError(
                f"HTTP {response.status_code} from {response.url}: {_first_line(response)}"
            )
        text = response.content.decode("utf-8", errors="replace")
        if not text.strip():
            return empty_catalog()
        try:
            return parse_fdsn_text(text)
        except CatalogFormatError as exc:
            raise FdsnError(f"unexpected response from {response.url}: {exc}") from exc

    def _get(self, params: dict[str, str]) -> requests.Response:
        url = f"{self.base_url}/query"
        assert self.session is not None
        for attempt in range(self.max_retries + 1):
            problem: str
            retry_after: float | None = None
            try:
                response = self.session.get(url, params=params, timeout=self.timeout_s)
            except (requests.ConnectionError, requests.Timeout) as exc:
                problem = f"{type(exc).__name__} for {url}"
            else:
                status = response.status_code
                if status != 429 and status < 500:
                    return response
                problem = f"HTTP {status} from {response.url}"
                retry_after = _retry_after_s(response.headers.get("Retry-After"))
            if attempt == self.max_retries:
                raise FdsnServiceUnavailable(f"{problem}; gave up after {self.max_retries} retries")
            wait = self.backoff_s * 2**attempt
            if retry_after is not None:
                wait = max(wait, retry_after)
            wait = min(wait, self.max_wait_s)
            self.waits.append(wait)
            self.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover


def _retry_after_s(value: str | None) -> float | None:
    """Seconds asked for by a Retry-After header (delta-seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (pd.Timestamp(when) - pd.Timestamp.now(tz="UTC")).total_seconds())


def _first_line(response: requests.Response) -> str:
    text = response.text.strip().splitlines()
    return text[0][:200] if text else "(empty body)"
