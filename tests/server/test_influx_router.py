"""Several InfluxDB instances: the configuration that maps farms to them and the router
that picks a farm's client (no server needed; the live tests are in
test_influx_instances.py)."""

from __future__ import annotations

import pytest

from namazu.server.core.config import ConfigError, load_config
from namazu.server.core.config import main as check_config
from namazu.server.store.influx import InfluxClient, point_line
from namazu.server.store.influx_router import InfluxRouter, farm_tag

TWO_INSTANCES = """
[influx]
url = "http://127.0.0.1:8086"
database = "namazu"
[influx_instances.north]
url = "http://10.0.0.3:8086"
database = "namazu_north"
rollup_retention_policy = "rollups"
[[farms]]
id = "farm-a"
latitude = 43.0
longitude = 13.0
influx_instance = "north"
[[farms]]
id = "farm-b"
latitude = 43.1
longitude = 13.1
"""


@pytest.fixture
def two_instances(tmp_path):
    path = tmp_path / "namazu.toml"
    path.write_text(TWO_INSTANCES)
    return path


def test_farms_are_mapped_to_their_instances(two_instances):
    config = load_config(two_instances, environ={})
    assert set(config.influx_configs()) == {"default", "north"}
    assert config.influx_instance_of("farm-a") == "north"
    assert config.influx_instance_of("farm-b") == "default"
    assert config.influx_instance_of("not-listed") == "default"
    router = InfluxRouter.from_config(config)
    assert list(router.instances()) == ["default", "north"]
    assert router.for_farm("farm-a").url == "http://10.0.0.3:8086"
    assert router.for_farm("farm-a").database == "namazu_north"
    assert router.for_farm("farm-b") is router.default
    assert router.for_farm("enrolled-later") is router.default
    assert router.config_of("north").rollup_retention_policy == "rollups"
    assert router.farms_by_instance(["farm-b", "farm-a", "x"]) == {
        "default": ["farm-b", "x"],
        "north": ["farm-a"],
    }


def test_an_unknown_instance_is_one_line_naming_farm_and_instances(two_instances):
    two_instances.write_text(
        TWO_INSTANCES.replace('influx_instance = "north"', 'influx_instance = "south"')
    )
    with pytest.raises(ConfigError) as caught:
        load_config(two_instances, environ={})
    message = str(caught.value)
    assert "\n" not in message
    assert message == (
        "farms: farm 'farm-a' names unknown influx_instance 'south'; "
        "known instances: default, north"
    )


@pytest.mark.parametrize("name", ["default", "North", "9x", "a-b"])
def test_instance_names_are_checked(tmp_path, name):
    path = tmp_path / "namazu.toml"
    path.write_text(f'[influx_instances."{name}"]\nurl = "http://h:8086"\n')
    with pytest.raises(ConfigError, match=rf"^influx_instances: instance name '{name}'"):
        load_config(path, environ={})


def test_an_instance_is_validated_like_influx(tmp_path):
    path = tmp_path / "namazu.toml"
    path.write_text("[influx_instances.north]\ntimeout_s = 0\n")
    with pytest.raises(ConfigError, match=r"^influx_instances\.north\.timeout_s: "):
        load_config(path, environ={})
    path.write_text('[influx_instances.north]\ntoken = "t"\nusername = "u"\n')
    with pytest.raises(ConfigError, match="either token or username"):
        load_config(path, environ={})


def test_the_environment_sets_and_adds_instances(two_instances):
    config = load_config(
        two_instances,
        environ={
            "NAMAZU_INFLUX_INSTANCES__NORTH__PASSWORD": "secret",
            "NAMAZU_INFLUX_INSTANCES__SOUTH__URL": "http://10.0.0.4:8086",
        },
    )
    assert config.influx_instances["north"].password == "secret"
    assert config.influx_instances["north"].url == "http://10.0.0.3:8086"
    assert config.influx_instances["south"].url == "http://10.0.0.4:8086"


def test_check_config_hides_instance_secrets(two_instances, capsys, monkeypatch):
    monkeypatch.setenv("NAMAZU_INFLUX_INSTANCES__NORTH__TOKEN", "hidden-token")
    assert check_config(["--config", str(two_instances)]) == 0
    out = capsys.readouterr().out
    assert "hidden-token" not in out and '"token": "***"' in out


def test_points_are_split_by_their_farm_tag(two_instances):
    router = InfluxRouter.from_config(load_config(two_instances, environ={}))
    a = point_line("activity", {"farm": "farm-a", "animal": "1"}, {"odba": 0.1}, 1)
    b = point_line("activity", {"farm": "farm-b", "animal": "1"}, {"odba": 0.2}, 1)
    quake = point_line("earthquake", {"event": "e 1"}, {"mag": 4.0}, 1)
    assert router.split_lines([a, b, quake, a]) == {"default": [b, quake], "north": [a, a]}
    single = InfluxRouter.single(InfluxClient("http://127.0.0.1:1", "x"))
    assert single.split_lines([a, b]) == {"default": [a, b]}
    assert single.split_lines([]) == {}


@pytest.mark.parametrize(
    "tags",
    [
        {"farm": "a b,c=d", "animal": "x"},
        {"animal": "x y", "farm": "plain"},
        {"farmer": "no", "farm": "yes"},
        {"a=b": "farm=no", "farm": "f\\g"},
    ],
)
def test_farm_tag_reads_escaped_series_keys(tags):
    line = point_line("m e,a", tags, {"v": 1.0, "s": 'x y,farm=no "q"'}, 5)
    assert farm_tag(line) == tags["farm"]


def test_farm_tag_of_a_point_without_one():
    assert farm_tag(point_line("m", {"animal": "1"}, {"farm": "no"}, 1)) is None
    assert farm_tag(point_line("m\\,x", {"animal": "1"}, {"farm": "no"}, 1)) is None
