"""The single ``namazu`` console entry point.

Each sub-command lives in the module that owns it; this file only dispatches, so
that ``namazu --help`` stays cheap (modules are imported on demand).
Every command module exposes ``main(argv: list[str]) -> int``.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "demo": (
        "namazu.server.launch.demo",
        "local stack + simulated herd + ingest + scheduler + panel",
    ),
    "stack": ("namazu.server.launch.stack", "start|stop|status the local Mosquitto + InfluxDB"),
    "bridge": (
        "namazu.firmware_bridge.bridge",
        "gateway: collar frames -> activity -> MQTT (spooled)",
    ),
    "simulate": ("namazu.firmware_bridge.simulator", "drive a simulated herd through a gateway"),
    "ingest": (
        "namazu.server.ingest.service",
        "MQTT -> validation -> InfluxDB, dead-letters bad payloads",
    ),
    "scheduler": (
        "namazu.server.detection.scheduler",
        "detection ticks, data health, catalogue refresh, e-mails",
    ),
    "web": ("namazu.server.web", "the Flask panel and JSON API"),
    "users": ("namazu.server.web.users", "manage panel users (add the first admin)"),
    "subscriptions": (
        "namazu.server.alerts.subscriptions",
        "alert e-mail subscriptions add|list|remove, outbox",
    ),
    "import": (
        "namazu.server.research.importer",
        "activity files (Movebank, CSV) -> the normalised activity CSV",
    ),
    "catalog": ("namazu.server.catalogue.cli", "fetch|import earthquake catalogues"),
    "analyze": (
        "namazu.server.research.analysis",
        "offline: activity + catalogue -> alarms, evaluation, report",
    ),
    "reproduce": (
        "namazu.server.research.reproduce",
        "a study's own analysis on its data (wikelski2020), then honest tests of it",
    ),
    "check-config": (
        "namazu.server.core.config",
        "validate the configuration and name any bad key",
    ),
    "verify-log": ("namazu.server.detection.alarmlog", "verify the hash chain of the alarm log"),
}


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: namazu <command> [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "Run 'namazu <command> --help' for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``namazu <command> ...`` to ``<module>.main(rest)``; return its exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help", "help"}:
        print(_usage())
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"namazu: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
