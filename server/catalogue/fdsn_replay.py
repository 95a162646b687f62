"""A local FDSN event web service (``fdsnws/event/1``) that replays a catalogue.

Used by ``namazu demo`` (and available to anyone rehearsing a set-up offline): a
real catalogue, shifted in time so that it falls on the simulated days, is served
in the FDSN ``format=text`` the scheduler's catalogue refresh already speaks. The
refresh job therefore runs through its real code path: HTTP, parsing, revisions,
InfluxDB annotations. Only time, magnitude and ``updatedafter`` filters are applied;
the circle filter is applied as a great-circle distance from the requested centre.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pandas as pd

from namazu.analytics.geo import great_circle_km

FDSN_TEXT_HEADER = (
    "#EventID|Time|Latitude|Longitude|Depth/km|Author|Catalog|Contributor|"
    "ContributorID|MagType|Magnitude|MagAuthor|EventLocationName"
)
KM_PER_DEGREE = 111.19492664455873
QUERY_PATH = "/fdsnws/event/1/query"


def shift_catalog(catalog: pd.DataFrame, offset: timedelta) -> pd.DataFrame:
    """The catalogue with every origin time moved by ``offset``.

    Event ids are marked ``replay-``; events without an id get one from their original
    origin time, so that every replayed event keeps an identity of its own.
    """
    shifted = catalog.copy()
    original = shifted["time"].dt.strftime("%Y%m%dT%H%M%S%f")
    ids = shifted["event_id"].fillna("").astype(str)
    shifted["event_id"] = "replay-" + ids.where(ids != "", original)
    shifted["time"] = shifted["time"] + pd.Timedelta(offset)
    return shifted.reset_index(drop=True)


def fdsn_text(catalog: pd.DataFrame, author: str = "replay") -> str:
    """A catalogue DataFrame (project schema) as an FDSN ``format=text`` document."""
    lines = [FDSN_TEXT_HEADER]
    for row in catalog.itertuples(index=False):
        stamp = pd.Timestamp(row.time).tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%S.%f")
        depth = "" if pd.isna(row.depth_km) else f"{row.depth_km:g}"
        lines.append(
            f"{row.event_id}|{stamp}|{row.latitude:.4f}|{row.longitude:.4f}|{depth}|{author}|"
            f"{author}|{author}|{row.event_id}|{row.mag_type or 'ML'}|{row.magnitude:.1f}|"
            f"{author}|replayed event"
        )
    return "\n".join(lines) + "\n"


class ReplayFdsnServer:
    """Serve ``catalog`` as an FDSN event service on 127.0.0.1 (a free port by default).

    Events become visible as of ``published_at`` (UTC): a request with ``updatedafter``
    later than that gets 204 (nothing new), as a real incremental service answers.
    """

    def __init__(self, catalog: pd.DataFrame, published_at: pd.Timestamp, port: int = 0):
        self.catalog = catalog.sort_values("time").reset_index(drop=True)
        self.published_at = pd.Timestamp(published_at).tz_convert("UTC")
        self.requests: list[dict[str, str]] = []
        handler = self._handler()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        """Base URL to configure as a catalogue source."""
        return f"http://127.0.0.1:{self._server.server_port}/fdsnws/event/1"

    def select(self, query: dict[str, str]) -> pd.DataFrame:
        """The events matching an FDSN query's time, magnitude and circle filters."""
        frame = self.catalog
        if "updatedafter" in query and _utc(query["updatedafter"]) >= self.published_at:
            return frame.iloc[0:0]
        if "starttime" in query:
            frame = frame[frame["time"] >= _utc(query["starttime"])]
        if "endtime" in query:
            frame = frame[frame["time"] <= _utc(query["endtime"])]
        if "minmagnitude" in query:
            frame = frame[frame["magnitude"] >= float(query["minmagnitude"])]
        if {"latitude", "longitude", "maxradius"} <= query.keys():
            distance = great_circle_km(
                float(query["latitude"]),
                float(query["longitude"]),
                frame["latitude"].to_numpy(float),
                frame["longitude"].to_numpy(float),
            )
            frame = frame[distance <= float(query["maxradius"]) * KM_PER_DEGREE]
        return frame

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                url = urlparse(self.path)
                if url.path != QUERY_PATH:
                    self.send_error(404, "only /fdsnws/event/1/query is served")
                    return
                query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                outer.requests.append(query)
                try:
                    events = outer.select(query)
                except (ValueError, TypeError) as exc:
                    self.send_error(400, f"bad query: {exc}")
                    return
                if events.empty:
                    self.send_response(204)
                    self.end_headers()
                    return
                body = fdsn_text(events).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                return

        return Handler

    def start(self) -> ReplayFdsnServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _utc(text: str) -> pd.Timestamp:
    stamp = pd.Timestamp(text)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
