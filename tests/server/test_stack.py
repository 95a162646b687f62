"""The launcher starts real Mosquitto and InfluxDB, and InfluxDB round-trips points."""

from __future__ import annotations

import socket

from server.influx import InfluxClient, float_series_lines, point_line
from server.stack import Stack, port_open


def test_session_stack_serves_both(stack):
    assert port_open(stack.mqtt_port)
    assert InfluxClient(stack.influx_url, "x").ping()


def test_write_is_idempotent_and_escaped(influx):
    tags = {"farm": "f 1", "animal": "cow,7", "species": "cow", "gateway": "g=1"}
    lines = float_series_lines(
        "activity", tags, {"odba": [0.1, 0.2], "vedba": [0.3, 0.4]}, [0, 60000]
    )
    influx.write_lines(lines)
    influx.write_lines(lines)  # same series + timestamps: overwritten, not duplicated
    influx.write_lines([point_line("activity", tags, {"odba": 0.5, "vedba": 0.6}, 120000)])
    frame = influx.query_frame(
        "SELECT odba, vedba, animal FROM activity WHERE farm = $f", {"f": "f 1"}
    )
    assert frame["odba"].tolist() == [0.1, 0.2, 0.5]
    assert frame["animal"].iloc[0] == "cow,7"
    assert str(frame["time"].dt.tz) == "UTC"
    assert influx.count("activity", "odba") == 3


def test_private_stack_restarts_on_same_ports(private_stack: Stack):
    port = private_stack.mqtt_port
    private_stack.stop_mosquitto()
    assert not port_open(port)
    private_stack.start_mosquitto()
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
    private_stack.stop_influx()
    assert not InfluxClient(private_stack.influx_url, "x").ping()
    private_stack.start_influx()
    assert InfluxClient(private_stack.influx_url, "x").ping()
