"""deploy/docker-compose*.yml: the 1.x stack and the overrides for InfluxDB 2.x and 3.x
set only real configuration keys, every secret they need is listed in env.example, and
each pins an InfluxDB generation. (No container runtime runs here: these files are
checked, not started.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from namazu.server.core.config_reference import reference_entries

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
FILES = {
    "docker-compose.yml": "influxdb:1.11",
    "docker-compose.influxdb2.yml": "influxdb:2.7",
    "docker-compose.influxdb3.yml": "influxdb:3-core",
}


class ComposeLoader(yaml.SafeLoader):
    """YAML with Compose's merge tags (!override, !reset) read as plain values."""


def _plain(loader: yaml.SafeLoader, node: yaml.Node) -> object:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)


for tag in ("!override", "!reset"):
    ComposeLoader.add_constructor(tag, _plain)


def _load(name: str) -> dict:
    return yaml.load((DEPLOY / name).read_text(), Loader=ComposeLoader)  # noqa: S506


@pytest.mark.parametrize("name", FILES)
def test_compose_file_pins_its_influxdb_and_sets_only_known_keys(name):
    compose = _load(name)
    assert compose["services"]["influxdb"]["image"] == FILES[name]
    known = {item.env for _, keys in reference_entries().values() for item in keys}
    for service, spec in compose["services"].items():
        environment = spec.get("environment") or {}
        for key in environment:
            if key.startswith("NAMAZU_") and "__" in key:
                assert key in known, f"{name} {service}: {key} is not a configuration key"


@pytest.mark.parametrize("name", FILES)
def test_every_secret_is_in_env_example(name):
    listed = set(re.findall(r"^(\w+)=", (DEPLOY / "env.example").read_text(), re.M))
    needed = set(re.findall(r"\$\{(\w+):\?", (DEPLOY / name).read_text()))
    assert needed <= listed, f"{name}: not in env.example: {sorted(needed - listed)}"


def test_influxdb2_setup_script_and_task_are_shipped():
    script = (DEPLOY / "influxdb" / "v2" / "namazu-init.sh").read_text()
    assert "v1 dbrp create" in script and "--rp raw --default" in script
    task = (DEPLOY / "influxdb" / "v2" / "activity_1m.flux").read_text()
    assert 'to(bucket: "namazu_forever")' in task and '"activity_1m"' in task
