"""A long export to hold a heavy request in flight: 40 days of one animal's 1-minute
activity in InfluxDB, and a client that reads an export's headers and then stops
reading with a small receive buffer, so the server's stream blocks on the socket, as it
does for a slow client."""

from __future__ import annotations

import http.client
import socket

import numpy as np
import pandas as pd

from namazu.server.store.influx import InfluxClient, float_series_lines

FARM, ANIMAL = "demo-farm", "cow-1"
START = pd.Timestamp("2024-01-01T00:00:00Z")
DAYS = 40  # 57,600 one-minute samples: a Movebank CSV of ~6 MB, far over socket buffers


def write_activity(influx_url: str, database: str) -> None:
    """Create ``database`` and write ``DAYS`` days of ``ANIMAL``'s activity into it."""
    influx = InfluxClient(influx_url, database)
    influx.create_database()
    index = pd.date_range(START, periods=DAYS * 1440, freq="1min")
    odba = 0.1 + np.random.default_rng(3).gamma(2.0, 0.01, index.size)
    t_ms = index.as_unit("ms").asi8
    for k in range(0, index.size, 50_000):
        part = slice(k, k + 50_000)
        influx.write_lines(
            float_series_lines(
                "activity",
                {"farm": FARM, "gateway": "gw-1", "animal": ANIMAL, "species": "cow"},
                {"odba": odba[part], "vedba": odba[part] * 0.8},
                t_ms[part],
            )
        )
    influx.close()


def export_path(days: int = DAYS) -> str:
    """The Movebank export of ``ANIMAL``'s first ``days`` days."""
    end = START + pd.Timedelta(days=days)
    return (
        f"/api/v1/export/movebank.csv?farm={FARM}&animal={ANIMAL}"
        f"&start={START:%Y-%m-%dT%H:%MZ}&end={end:%Y-%m-%dT%H:%MZ}"
    )


def hold(port: int, token: str, path: str) -> tuple[socket.socket, str]:
    """Send a GET, read only the status line and headers, then stop reading; returns
    the socket (close it to let the request go) and the head."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        piece = sock.recv(1)
        assert piece, "connection closed before the headers"
        head += piece
    return sock, head.decode("latin-1")


def get(port: int, token: str, path: str) -> tuple[int, dict[str, str], bytes]:
    """A whole GET with a bearer token: (status, headers, body)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        connection.request("GET", path, headers={"Authorization": f"Bearer {token}"})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()
