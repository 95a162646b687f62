"""The launcher starts real Mosquitto and InfluxDB, and InfluxDB round-trips points."""

from __future__ import annotations

import socket

from namazu.server.launch.stack import Stack, port_open
from namazu.server.store.influx import InfluxClient, float_series_lines, point_line


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


def test_services_health_reports_every_part(influx, tmp_path):
    import time as _time

    from namazu.server.core.config import load_config
    from namazu.server.core.metrics import start_metrics_server
    from namazu.server.launch.stack import free_port, services_health
    from namazu.server.store.influx import point_line

    now_ms = int(_time.time() * 1000)
    influx.write_lines(
        [
            point_line("activity", {"farm": "f", "animal": "a", "species": "cow"}, {"odba": 0.1},
                       now_ms - 5000),
            point_line("gateway_status", {"farm": "f", "gateway": "g1"}, {"online": True}, now_ms),
            point_line("gateway_status", {"farm": "f", "gateway": "g2"}, {"online": False}, now_ms),
        ]
    )  # fmt: skip
    metrics = start_metrics_server(0)
    config = load_config(
        environ={
            "NAMAZU_INFLUX__DATABASE": influx.database,
            "NAMAZU_INGEST__METRICS_PORT": str(metrics.port),
            "NAMAZU_SCHEDULER__METRICS_PORT": str(free_port()),
            "NAMAZU_WEB__PORT": str(free_port()),
            "NAMAZU_STATE__URL": f"sqlite:///{tmp_path / 'none.sqlite'}",
        }
    )
    report = services_health(config, influx.url)
    metrics.close()
    assert report["ingest"]["metrics"] is True
    assert report["scheduler"]["metrics"] is False  # nothing listens there
    assert report["scheduler"]["last_tick_age_s"] is None
    assert report["web"]["answers"] is False
    assert 4 <= report["data"]["newest_sample_age_s"] < 60
    assert report["data"]["gateways"] == {"f/g1": "online", "f/g2": "offline"}


def test_shielded_stack_ignores_the_callers_group_signal_and_dies_with_it(tmp_path):
    """A shielded stack (the demo's): Ctrl-C to the caller's process group leaves the
    services to the caller, and a caller killed with SIGKILL takes them with it."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    def running(pid: int) -> bool:  # a zombie awaiting its reaper counts as gone
        try:
            with open(f"/proc/{pid}/stat") as stat:
                return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
        except FileNotFoundError:
            return False

    script = (
        "import json, signal, sys, time\n"
        "from namazu.server.launch.stack import Stack\n"
        "signal.signal(signal.SIGINT, lambda *_: print('caller got SIGINT', flush=True))\n"
        f"stack = Stack({str(tmp_path / 'stack')!r}, shielded=True).start()\n"
        "print(json.dumps(stack.state()['pids']), flush=True)\n"
        "time.sleep(120)\n"
    )
    caller = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, process_group=0
    )
    try:
        pids = json.loads(caller.stdout.readline())
        assert sorted(pids) == ["influxd", "mosquitto"]
        os.killpg(caller.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        assert caller.stdout.readline().strip() == "caller got SIGINT"
        time.sleep(1.0)
        assert all(running(pid) for pid in pids.values()), "a service took the Ctrl-C"
        caller.kill()
        caller.wait(10)
        deadline = time.monotonic() + 20
        while any(running(pid) for pid in pids.values()) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(running(pid) for pid in pids.values()), "services outlived caller"
    finally:
        if caller.poll() is None:
            caller.kill()
        caller.wait(10)


def test_stack_start_restarts_only_the_service_that_is_down(tmp_path, capsys):
    """``namazu stack start`` after Mosquitto was SIGKILLed brings Mosquitto back on its
    port and leaves the running InfluxDB alone (same pid, not restarted)."""
    import os
    import signal
    import time

    from namazu.server.launch import stack as stack_cli

    data_dir = tmp_path / "stack"
    assert stack_cli.main(["start", "--data-dir", str(data_dir), "--mqtt-port", "0",
                           "--influx-port", "0"]) == 0  # fmt: skip
    try:
        first = stack_cli.read_state(data_dir)
        os.kill(first["pids"]["mosquitto"], signal.SIGKILL)
        deadline = time.monotonic() + 10
        while port_open(first["mqtt_port"]) and time.monotonic() < deadline:
            time.sleep(0.05)  # the kernel closes the killed broker's socket
        report = stack_cli.status(data_dir)
        assert stack_cli.healthy_services(report) == {"influxd"}
        capsys.readouterr()
        assert stack_cli.main(["start", "--data-dir", str(data_dir)]) == 0
        out = capsys.readouterr().out
        assert f"influxd: still running (pid {first['pids']['influxd']}), kept" in out
        second = stack_cli.read_state(data_dir)
        assert second["pids"]["influxd"] == first["pids"]["influxd"]
        assert second["pids"]["mosquitto"] != first["pids"]["mosquitto"]
        assert second["mqtt_port"] == first["mqtt_port"]
        assert stack_cli.healthy_services(stack_cli.status(data_dir)) == {"mosquitto", "influxd"}
    finally:
        stack_cli.stop_detached(data_dir)


def test_stack_start_with_postgres_gives_a_state_url_and_stop_ends_it(capsys):
    """``namazu stack start --postgres`` adds PostgreSQL (run as the postgres user under
    root) with a ``namazu`` database ready for ``state.url``; a second start keeps it;
    ``namazu stack stop`` shuts it down."""
    import os
    import shutil
    import tempfile
    from pathlib import Path

    from namazu.server.launch import stack as stack_cli
    from namazu.server.store.state import dispose_engine, init_db

    data_dir = Path(tempfile.mkdtemp(prefix="namazu-stack-pg-"))
    try:
        if os.geteuid() == 0:
            refused = stack_cli.main(["start", "--data-dir", str(data_dir), "--postgres"])
            assert refused == 1 and "the postgres user cannot reach it" in capsys.readouterr().err
        data_dir.chmod(0o755)  # reachable by the postgres user
        assert stack_cli.main(["start", "--data-dir", str(data_dir), "--mqtt-port", "0",
                               "--influx-port", "0", "--postgres"]) == 0  # fmt: skip
        state = stack_cli.read_state(data_dir)
        url = state["state_url"]
        assert f"postgres:  {url}  (state.url)" in capsys.readouterr().out
        assert stack_cli.healthy_services(stack_cli.status(data_dir)) == {
            "mosquitto", "influxd", "postgres"
        }  # fmt: skip
        init_db(url)
        dispose_engine(url)
        assert stack_cli.main(["start", "--data-dir", str(data_dir)]) == 0
        assert "stack already running" in capsys.readouterr().out
        stack_cli.stop_detached(data_dir)
        assert not stack_cli._pid_alive(state["pids"]["postgres"])
        assert not port_open(state["postgres_port"])
    finally:
        stack_cli.stop_detached(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)


def test_stack_start_runs_an_influxdb_for_each_local_instance(tmp_path, capsys):
    """A configured ``[influx_instances.north]`` on 127.0.0.1 gets its own InfluxDB from
    ``namazu stack start``; an instance on another host does not; ``stop`` ends both."""
    from namazu.server.launch import stack as stack_cli
    from namazu.server.launch.stack import free_port

    port = free_port()
    config = tmp_path / "namazu.toml"
    config.write_text(
        f'[influx_instances.north]\nurl = "http://127.0.0.1:{port}"\n'
        '[influx_instances.far]\nurl = "http://10.0.0.9:8086"\n'
    )
    data_dir = tmp_path / "stack"
    assert stack_cli.main(["start", "--config", str(config), "--data-dir", str(data_dir),
                           "--mqtt-port", "0", "--influx-port", "0"]) == 0  # fmt: skip
    try:
        out = capsys.readouterr().out
        assert f"influxdb:  http://127.0.0.1:{port}  (influx_instances.north)" in out
        assert "far" not in out
        report = stack_cli.status(data_dir)
        assert report["running"] and report["influxd-north"]["ping"]
        assert stack_cli.healthy_services(report) == {"mosquitto", "influxd", "influxd-north"}
        assert stack_cli.main(["start", "--config", str(config), "--data-dir", str(data_dir)]) == 0
        assert "stack already running" in capsys.readouterr().out
        pid = stack_cli.read_state(data_dir)["pids"]["influxd-north"]
    finally:
        stopped = stack_cli.stop_detached(data_dir)
    assert "influxd-north" in stopped and not stack_cli._pid_alive(pid)
    assert not port_open(port)
