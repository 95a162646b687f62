"""FDSN client against a real local HTTP server serving the real catalogue files."""

from __future__ import annotations

import socket
import time

import pandas as pd
import pytest
from numpy.testing import assert_allclose

from namazu.server.catalogue.fdsn import (
    FDSN_SERVICES,
    KM_PER_DEGREE,
    FdsnClient,
    FdsnError,
    FdsnServiceUnavailable,
    resolve_service,
)
from namazu.server.store.state import MAX_SOURCE_URL
from tests.conftest import require_data
from tests.server.fdsn_stub import ScriptedResponse, fdsn_stub

EMILIA = "catalogs/fdsn_text_ingv_emilia_2012-05-29.txt"
IRIS = "catalogs/fdsn_text_iris_style_obspy.txt"


def _ok(relpath: str) -> ScriptedResponse:
    return ScriptedResponse(200, require_data(relpath).read_bytes())


class _Waits:
    """Records requested waits without sleeping (for long Retry-After values)."""

    def __init__(self) -> None:
        self.seen: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.seen.append(seconds)


def test_query_sends_fdsn_parameters_and_parses_real_response() -> None:
    with fdsn_stub([_ok(EMILIA)]) as stub:
        client = FdsnClient(stub.base_url, backoff_s=0)
        events = client.query(
            "2012-05-29T23:00:00",
            pd.Timestamp("2012-05-30T01:00:00+01:00"),
            minmagnitude=1.5,
            latitude=44.87,
            longitude=11.03,
            maxradius_km=50.0,
            updatedafter="2012-05-29T00:00:00Z",
        )
    assert stub.paths == ["/fdsnws/event/1/query"]
    sent = stub.requests[0]
    assert sent["format"] == "text"
    assert sent["starttime"] == "2012-05-29T23:00:00.000"
    assert sent["endtime"] == "2012-05-30T00:00:00.000"  # converted to UTC
    assert sent["minmagnitude"] == "1.5"
    assert sent["updatedafter"] == "2012-05-29T00:00:00.000"
    assert_allclose(float(sent["maxradius"]), 50.0 / KM_PER_DEGREE, rtol=1e-5)
    assert_allclose([float(sent["latitude"]), float(sent["longitude"])], [44.87, 11.03])
    assert len(events) == 8
    assert events["event_id"].iloc[-1] == "863301"
    assert str(events["time"].dtype) == "datetime64[ns, UTC]"


def test_204_no_data_gives_empty_catalogue() -> None:
    with fdsn_stub([ScriptedResponse(204)]) as stub:
        events = FdsnClient(stub.base_url).query("2020-01-01", "2020-01-02")
    assert events.empty
    assert list(events.columns)[:3] == ["time", "latitude", "longitude"]
    assert len(stub.requests) == 1


def test_503_is_retried_with_backoff_then_succeeds() -> None:
    script = [ScriptedResponse(503, b"Service Unavailable"), _ok(IRIS)]
    with fdsn_stub(script) as stub:
        client = FdsnClient(stub.base_url, backoff_s=0.2, max_retries=3)
        started = time.perf_counter()
        events = client.query("1960-01-01", "2013-01-01")
        elapsed = time.perf_counter() - started
    assert len(stub.requests) == 2
    assert client.waits == [0.2]
    assert elapsed >= 0.2
    assert len(events) == 2
    assert_allclose(events["magnitude"], [8.5, 8.6])


def test_429_honours_retry_after_and_backs_off_exponentially() -> None:
    waits = _Waits()
    script = [
        ScriptedResponse(429, b"slow down", {"Retry-After": "7"}),
        ScriptedResponse(502, b"bad gateway"),
        ScriptedResponse(500, b"oops"),
        _ok(EMILIA),
    ]
    with fdsn_stub(script) as stub:
        client = FdsnClient(stub.base_url, backoff_s=1.0, max_retries=3, sleep=waits)
        events = client.query("2012-05-29", "2012-05-30")
    assert waits.seen == [7.0, 2.0, 4.0]
    assert len(stub.requests) == 4
    assert len(events) == 8


def test_gives_up_after_max_retries_naming_status_and_url() -> None:
    waits = _Waits()
    script = [ScriptedResponse(503, b"down")] * 3
    with fdsn_stub(script) as stub:
        client = FdsnClient(stub.base_url, backoff_s=0.5, max_retries=2, sleep=waits)
        with pytest.raises(FdsnServiceUnavailable, match=r"HTTP 503 from http://127\.0\.0\.1"):
            client.query("2020-01-01", "2020-01-02")
    assert waits.seen == [0.5, 1.0]
    assert len(stub.requests) == 3


def test_client_error_is_not_retried_and_names_status() -> None:
    body = b"Error 400: Bad Request\n\nminmagnitude out of range\n"
    expected = r"HTTP 400 from http://127.*query\?.*Error 400"
    with fdsn_stub([ScriptedResponse(400, body)]) as stub, pytest.raises(FdsnError, match=expected):
        FdsnClient(stub.base_url).query("2020-01-01", "2020-01-02", minmagnitude=99)
    assert len(stub.requests) == 1


def test_413_splits_the_time_window() -> None:
    script = [ScriptedResponse(413, b"too large"), _ok(EMILIA), _ok(IRIS)]
    with fdsn_stub(script) as stub:
        events = FdsnClient(stub.base_url).query("1960-01-01", "2013-01-01")
    assert len(stub.requests) == 3
    first_half, second_half = stub.requests[1], stub.requests[2]
    assert first_half["starttime"] == "1960-01-01T00:00:00.000"
    assert first_half["endtime"] == second_half["starttime"]
    assert second_half["endtime"] == "2013-01-01T00:00:00.000"
    assert len(events) == 10
    assert events["time"].is_monotonic_increasing


def test_unreachable_service_is_retried_then_reported() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    waits = _Waits()
    client = FdsnClient(f"http://127.0.0.1:{port}/fdsnws/event/1", max_retries=1, sleep=waits)
    with pytest.raises(FdsnServiceUnavailable, match="ConnectionError"):
        client.query("2020-01-01", "2020-01-02")
    assert waits.seen == [2.0]


def test_garbage_body_is_an_fdsn_error() -> None:
    garbage = ScriptedResponse(200, b"<html>maintenance</html>")
    with fdsn_stub([garbage]) as stub, pytest.raises(FdsnError, match="unexpected response"):
        FdsnClient(stub.base_url).query("2020-01-01", "2020-01-02")


def test_resolve_service_names_and_urls() -> None:
    assert resolve_service("ingv") == FDSN_SERVICES["INGV"]
    assert resolve_service(" EMSC ") == FDSN_SERVICES["EMSC"]
    url = "http://example.org/fdsnws/event/1"
    assert resolve_service(url + "/query") == url
    assert resolve_service(url + "/") == url
    with pytest.raises(FdsnError, match="INGV, USGS, EMSC"):
        resolve_service("GFZ")
    longest = "https://example.org/" + "p" * (MAX_SOURCE_URL - 35) + "/fdsnws/event/1"
    assert resolve_service(longest) == longest and len(longest) == MAX_SOURCE_URL
    with pytest.raises(FdsnError, match=f"has {MAX_SOURCE_URL + 1} characters, at most"):
        resolve_service(longest.replace("/fdsnws", "p/fdsnws"))


def test_query_argument_errors() -> None:
    client = FdsnClient("USGS")
    with pytest.raises(FdsnError, match="not after"):
        client.query("2020-01-02", "2020-01-01")
    with pytest.raises(FdsnError, match="together"):
        client.query("2020-01-01", "2020-01-02", latitude=43.0)
