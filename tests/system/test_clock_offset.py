"""Gateway clock offset, measured on real services: a gateway whose clock is 90 s ahead
of the server learns it from the ingest heartbeats (which carry the server clock) and
reports it in its retained status, which ingest stores as ``gateway_status``."""

from __future__ import annotations

import time

import pytest

from namazu.firmware_bridge.publisher import GatewayPublisher
from namazu.firmware_bridge.spool import Spool
from namazu.server.ingest.service import IngestService
from tests.server.ingest_support import make_config, wait_for

pytestmark = pytest.mark.services

SKEW_MS = 90_000


def _stored_offsets(influx, farm: str, gateway: str) -> list[float]:
    series = influx.query(
        "SELECT clock_offset_s FROM gateway_status WHERE farm = $f AND gateway = $g",
        params={"f": farm, "g": gateway},
    )
    return [row[1] for s in series for row in s["values"] if row[1] is not None]


def _skewed_gateway(stack, tmp_path, gateway: str, **options) -> GatewayPublisher:
    """A publisher of ``clock-farm`` whose clock runs ``SKEW_MS`` ahead of the server."""
    return GatewayPublisher(
        "clock-farm",
        gateway,
        Spool(tmp_path / "spool.sqlite"),
        port=stack.mqtt_port,
        clock_ms=lambda: time.time_ns() // 1_000_000 + SKEW_MS,
        **options,
    )


@pytest.mark.parametrize("wait_for_ingest", [True, False])
def test_gateway_reports_its_clock_offset_measured_against_the_server(
    stack, influx, tmp_path, wait_for_ingest
):
    farm, gateway = "clock-farm", f"gw-skewed-{int(wait_for_ingest)}"
    cfg = make_config(stack.mqtt_port, stack.influx_url, influx.database, heartbeat_s=0.2)
    service = IngestService(cfg, influx).start()
    publisher = _skewed_gateway(stack, tmp_path, gateway, wait_for_ingest=wait_for_ingest)
    try:
        assert service.wait_ready(10)
        assert publisher.measured_clock_offset_s is None
        publisher.start()
        wait_for(lambda: publisher.stats["ingest_heartbeats"] >= 3, 15, "three heartbeats")
        measured = publisher.measured_clock_offset_s
        # receive - send = offset + transit delay; on loopback the delay is milliseconds
        assert measured == pytest.approx(SKEW_MS / 1000, abs=0.5)
        wait_for(lambda: _stored_offsets(influx, farm, gateway), 15, "a status with the offset")
        assert _stored_offsets(influx, farm, gateway)[-1] == pytest.approx(90.0, abs=0.5)
    finally:
        publisher.stop()
        service.stop(end_session=True)


def test_a_clock_source_of_the_gateway_takes_precedence(stack, influx, tmp_path):
    farm, gateway = "clock-farm", "gw-gps"
    cfg = make_config(stack.mqtt_port, stack.influx_url, influx.database, heartbeat_s=0.2)
    service = IngestService(cfg, influx).start()
    publisher = _skewed_gateway(stack, tmp_path, gateway, clock_offset_s=lambda: -0.25)
    try:
        assert service.wait_ready(10)
        publisher.start()
        wait_for(lambda: publisher.stats["ingest_heartbeats"] >= 2, 15, "two heartbeats")
        assert publisher.measured_clock_offset_s == pytest.approx(90.0, abs=0.5)
        wait_for(lambda: _stored_offsets(influx, farm, gateway), 15, "a stored status")
        assert set(_stored_offsets(influx, farm, gateway)) == {-0.25}
    finally:
        publisher.stop()
        service.stop(end_session=True)
