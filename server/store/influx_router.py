"""Which InfluxDB instance holds a farm: one client per configured instance.

The configuration maps farms to instances (``[influx]`` is the instance named
``"default"``, ``[influx_instances.NAME]`` the others, ``farms[].influx_instance`` the
mapping; a farm that is not mapped, or not listed at all, is in the default instance).
This module only chooses clients; every request to InfluxDB still goes through
``namazu.server.store.influx``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from namazu.server.core.config import DEFAULT_INFLUX_INSTANCE, InfluxConfig, NamazuConfig
from namazu.server.store.influx import InfluxClient

T = TypeVar("T")


class InfluxRouter:
    """The InfluxDB clients of all instances and the farm -> instance map.

    clients : instance name -> client; must hold ``"default"``.
    farm_instances : farm id -> instance name (farms not in it are in ``"default"``).
    configs : instance name -> its ``InfluxConfig`` (for per-instance settings such as
    the rollup retention policy), when built from a configuration.
    """

    def __init__(
        self,
        clients: Mapping[str, InfluxClient],
        farm_instances: Mapping[str, str] | None = None,
        configs: Mapping[str, InfluxConfig] | None = None,
    ):
        if DEFAULT_INFLUX_INSTANCE not in clients:
            raise ValueError(f"InfluxRouter needs a {DEFAULT_INFLUX_INSTANCE!r} instance")
        self._clients = dict(clients)
        self._farm_instances = dict(farm_instances or {})
        unknown = set(self._farm_instances.values()) - set(self._clients)
        if unknown:
            raise ValueError(
                f"farms mapped to unknown InfluxDB instances {sorted(unknown)}; "
                f"known: {', '.join(self._clients)}"
            )
        self._configs = dict(configs or {})

    @classmethod
    def from_config(cls, cfg: NamazuConfig, **client_options: Any) -> InfluxRouter:
        """One client per instance of ``cfg`` (``client_options`` go to each client,
        e.g. ``gzip_writes=True``)."""
        configs = cfg.influx_configs()
        clients = {name: InfluxClient.from_config(item) for name, item in configs.items()}
        for client in clients.values():
            for key, value in client_options.items():
                setattr(client, key, value)
        farms = {farm.id: cfg.influx_instance_of(farm.id) for farm in cfg.farms}
        return cls(clients, farms, configs)

    @classmethod
    def single(cls, client: InfluxClient) -> InfluxRouter:
        """A router with one instance holding every farm (tests, one-off tools)."""
        return cls({DEFAULT_INFLUX_INSTANCE: client})

    @property
    def default(self) -> InfluxClient:
        """The ``[influx]`` instance (data that belongs to no farm, e.g. earthquakes)."""
        return self._clients[DEFAULT_INFLUX_INSTANCE]

    @property
    def several(self) -> bool:
        """True when more than one instance is configured."""
        return len(self._clients) > 1

    def instance_of(self, farm_id: str) -> str:
        """Name of the instance holding ``farm_id``."""
        return self._farm_instances.get(farm_id, DEFAULT_INFLUX_INSTANCE)

    def for_farm(self, farm_id: str) -> InfluxClient:
        """The client of the instance holding ``farm_id``."""
        return self._clients[self.instance_of(farm_id)]

    def instances(self) -> dict[str, InfluxClient]:
        """Instance name -> client, ``"default"`` first."""
        return dict(self._clients)

    def config_of(self, name: str) -> InfluxConfig | None:
        """The configuration of instance ``name`` (None when built without one)."""
        return self._configs.get(name)

    def farms_by_instance(self, farm_ids: Iterable[str]) -> dict[str, list[str]]:
        """``farm_ids`` grouped by instance name (only instances with farms, in the
        order of ``instances()``; farms keep their order)."""
        return group_by_instance(self, farm_ids, lambda farm: farm)

    def split_lines(self, lines: Iterable[str]) -> dict[str, list[str]]:
        """Line-protocol points grouped by instance, by their ``farm`` tag (points
        without one go to the default instance)."""
        if not self.several:
            listed = list(lines)
            return {DEFAULT_INFLUX_INSTANCE: listed} if listed else {}
        return group_by_instance(self, lines, farm_tag)

    def write_lines(self, lines: Iterable[str], **write_options: Any) -> None:
        """Write points to the instances their farm tags name (see ``split_lines``);
        ``write_options`` go to ``InfluxClient.write_lines``. An instance that fails
        raises at once; the instances written before it keep their points (writes are
        idempotent, so writing everything again is safe)."""
        for name, group in self.split_lines(lines).items():
            self._clients[name].write_lines(group, **write_options)

    def close(self) -> None:
        for client in self._clients.values():
            client.close()


def group_by_instance(
    router: InfluxRouter, items: Iterable[T], farm_of: Callable[[T], str | None]
) -> dict[str, list[T]]:
    """``items`` grouped by the instance of their farm (``farm_of(item)``; None = the
    default instance), in the order of ``router.instances()``, items keeping their order."""
    groups: dict[str, list[T]] = {name: [] for name in router.instances()}
    for item in items:
        farm = farm_of(item)
        name = DEFAULT_INFLUX_INSTANCE if farm is None else router.instance_of(farm)
        groups[name].append(item)
    return {name: group for name, group in groups.items() if group}


def farm_tag(line: str) -> str | None:
    """The value of the ``farm`` tag of one line-protocol point (unescaped), or None.

    The series key ends at the first unescaped space; tags are separated by unescaped
    commas and split at the first unescaped ``=`` (escapes: ``\\,``, ``\\=``, ``\\ ``).
    """
    if "\\" not in line:  # nothing escaped: plain splits
        for tag in line.split(" ", 1)[0].split(",")[1:]:
            name, _, value = tag.partition("=")
            if name == "farm":
                return value
        return None
    key_end = _unescaped(line, " ", 0)
    key = line if key_end < 0 else line[:key_end]
    start = _unescaped(key, ",", 0)
    while start >= 0:
        end = _unescaped(key, ",", start + 1)
        tag = key[start + 1 : len(key) if end < 0 else end]
        equals = _unescaped(tag, "=", 0)
        if equals >= 0 and _unescape(tag[:equals]) == "farm":
            return _unescape(tag[equals + 1 :])
        start = end
    return None


def _unescaped(text: str, char: str, start: int) -> int:
    """Index of the first ``char`` at or after ``start`` not preceded by a backslash
    escape, or -1."""
    i = start
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == char:
            return i
        i += 1
    return -1


def _unescape(text: str) -> str:
    return text.replace("\\,", ",").replace("\\=", "=").replace("\\ ", " ")
