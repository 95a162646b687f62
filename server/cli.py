"""The single ``namazu`` console entry point.

Each sub-command lives in the module that owns it; this file only dispatches, so
that ``namazu --help`` stays cheap (modules are imported on demand).
Every command module exposes ``main(argv: list[str]) -> int``.

Global options (``--config FILE``, ``--log-level LEVEL``, ``--log-format json|text``)
are accepted before or after the command. ``namazu --version`` prints the version,
``namazu completion bash`` a shell completion script. Errors are one line naming what
is wrong; the exit codes are in ``EXIT_CODES`` (and in ``namazu --help``). Set
``NAMAZU_DEBUG=1`` to see the traceback of an unexpected error.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from importlib import metadata
from typing import NoReturn

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
    "deadletter": (
        "namazu.server.ingest.deadletter",
        "list|replay|purge the messages ingest refused (replay once the cause is fixed)",
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
    "db": ("namazu.server.store.migrate", "upgrade|current|revision the state store's schema"),
    "rollup": (
        "namazu.server.store.rollups",
        "create, backfill and extend the panel's downsampled rollups once",
    ),
    "check-config": (
        "namazu.server.core.config",
        "validate the configuration and name any bad key",
    ),
    "verify-log": (
        "namazu.server.detection.alarmlog",
        "verify the alarm log: signatures, chain, time-stamps",
    ),
    "keys": ("namazu.server.detection.logkeys", "generate|list the alarm log's signing keys"),
}

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_UNDRAINED = 3
EXIT_MISSING_DEPENDENCY = 4
EXIT_INTERRUPTED = 130

#: What each exit code of every ``namazu`` command means.
EXIT_CODES: dict[int, str] = {
    EXIT_OK: "success",
    EXIT_FAILURE: "the command ran and failed: bad input data, a service unreachable or "
    "refusing, a check that found a problem, an output that cannot be written",
    EXIT_USAGE: "a bad option or argument, or an invalid configuration (the message names the key)",
    EXIT_UNDRAINED: "namazu bridge stopped with samples still spooled (not yet acknowledged "
    "by the broker)",
    EXIT_MISSING_DEPENDENCY: "a dependency of the command is not installed (a gateway "
    "install without the server extra)",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
}

#: Options every command accepts, before or after the command name.
GLOBAL_OPTIONS: dict[str, str] = {
    "--config": "TOML configuration file (default $NAMAZU_CONFIG)",
    "--log-level": "DEBUG, INFO, WARNING or ERROR (default INFO)",
    "--log-format": "json (default) or text (for people; keeps every field)",
}
_LOG_FORMATS = ("json", "text")

#: Top-level modules of the ``server`` extra (``pip install 'namazu[server]'``).
SERVER_EXTRA_MODULES = frozenset(
    {"scipy", "flask", "gunicorn", "apscheduler", "requests", "sqlalchemy", "argon2",
     "matplotlib", "tqdm", "werkzeug", "jinja2", "cryptography", "statsmodels", "patsy",
     "threadpoolctl", "alembic", "psycopg"}
)  # fmt: skip

#: Commands that run as long-lived services: they log JSON lines unless told otherwise.
SERVICE_COMMANDS = frozenset({"bridge", "web"})


class UsageError(Exception):
    """The command line is wrong; the message says how."""


def version() -> str:
    """The installed version of the ``namazu`` distribution ("unknown" from a bare tree)."""
    try:
        return metadata.version("namazu")
    except metadata.PackageNotFoundError:
        return "unknown"


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: namazu [--version] [global options] <command> [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "global options (before or after the command):"]
    lines += [f"  {option} ...  {text}" for option, text in GLOBAL_OPTIONS.items()]
    lines += ["", "exit codes:"]
    lines += [f"  {code:>3}  {text}" for code, text in EXIT_CODES.items()]
    lines += ["", "Run 'namazu <command> --help' for a command's options."]
    return "\n".join(lines)


class _Captured(Exception):
    def __init__(self, parser: argparse.ArgumentParser):
        super().__init__("parser captured")
        self.parser = parser


def command_parser(name: str) -> argparse.ArgumentParser | None:
    """The argument parser of command ``name``, or None when it cannot be had.

    The command's ``main`` is called with ``--help`` while argparse's parse methods are
    replaced by one that hands back the parser before parsing anything, so each module
    keeps building its parser its own way.
    """
    module = importlib.import_module(COMMANDS[name][0])
    saved = argparse.ArgumentParser.parse_args, argparse.ArgumentParser.parse_known_args

    def capture(self: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        raise _Captured(self)

    argparse.ArgumentParser.parse_args = capture  # type: ignore[assignment]
    argparse.ArgumentParser.parse_known_args = capture  # type: ignore[assignment]
    try:
        module.main(["--help"])
    except _Captured as captured:
        return captured.parser
    except BaseException:  # noqa: BLE001 - no parser to be had; the caller copes
        return None
    finally:
        argparse.ArgumentParser.parse_args, argparse.ArgumentParser.parse_known_args = saved
    return None


def _take_option(args: list[str], i: int) -> tuple[str, str, int]:
    """(option, value, next index) for ``--opt VALUE`` or ``--opt=VALUE`` at ``args[i]``."""
    option, sep, value = args[i].partition("=")
    if sep:
        return option, value, i + 1
    if i + 1 >= len(args) or args[i + 1].startswith("--"):
        raise UsageError(f"option {option} needs a value")
    return option, args[i + 1], i + 2


def _global_name(token: str) -> str | None:
    option = token.partition("=")[0]
    return option if option in GLOBAL_OPTIONS else None


def split_arguments(args: list[str]) -> tuple[dict[str, str], str | None, list[str]]:
    """(global options before the command, the command, everything after it)."""
    found: dict[str, str] = {}
    i = 0
    while i < len(args) and args[i].startswith("-"):
        if _global_name(args[i]) is None:
            raise UsageError(f"unknown option {args[i]!r} before the command")
        option, value, i = _take_option(args, i)
        found[option] = value
    command = args[i] if i < len(args) else None
    return found, command, args[i + 1 :]


def _known_options(parser: argparse.ArgumentParser | None) -> set[str]:
    return set(parser._option_string_actions) if parser is not None else set()  # noqa: SLF001


def place_global_options(
    before: dict[str, str], rest: list[str], known: set[str]
) -> tuple[dict[str, str], list[str]]:
    """Resolve the global options of one command line.

    before : global options given before the command; rest : the command's arguments;
    known : the options the command's own parser defines. Global options after the
    command that the command does not define are taken out of ``rest``. Returns the
    global options the command does not handle itself, and its argument list (a global
    option given before the command is passed on when the command defines it and was
    not given it again).
    """
    taken: dict[str, str] = {}
    remaining: list[str] = []
    i = 0
    while i < len(rest):
        name = _global_name(rest[i])
        if rest[i] == "--":
            remaining += rest[i:]
            break
        if name is not None and name not in known:
            option, value, i = _take_option(rest, i)
            taken[option] = value
            continue
        remaining.append(rest[i])
        i += 1
    passed: list[str] = []
    for option, value in before.items():
        given_after = any(_global_name(token) == option for token in remaining)
        if option in known and not given_after:
            passed += [option, value]
        elif option not in known:
            taken.setdefault(option, value)
    return taken, passed + remaining


def _apply_global_options(options: dict[str, str], command: str) -> None:
    """Configuration path to the environment; logging configured when asked for."""
    if "--config" in options:
        os.environ["NAMAZU_CONFIG"] = options["--config"]
    log_format = options.get("--log-format", "json")
    if log_format not in _LOG_FORMATS:
        raise UsageError(f"--log-format must be json or text, got {log_format!r}")
    if {"--log-level", "--log-format"} & set(options) or command in SERVICE_COMMANDS:
        from namazu.server.core.logging_setup import LoggingConfigError, configure_logging

        try:
            configure_logging(options.get("--log-level", "INFO"), json=log_format == "json")
        except LoggingConfigError as exc:
            raise UsageError(str(exc)) from exc


def _one_line_error(self: argparse.ArgumentParser, message: str) -> NoReturn:
    """argparse's error, as one line: what is wrong and where the help is (exit 2)."""
    self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _missing_dependency(exc: ModuleNotFoundError) -> str | None:
    top = (exc.name or "").partition(".")[0]
    if top in SERVER_EXTRA_MODULES:
        return (
            f"needs the server dependencies (module {top!r} is not installed); "
            "install them with: pip install 'namazu[server]'"
        )
    return None


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``namazu <command> ...`` to ``<module>.main(rest)``; return its exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "--version":
        print(f"namazu {version()}")
        return EXIT_OK
    if not args or args[0] in {"-h", "--help", "help"}:
        print(_usage())
        return EXIT_OK
    try:
        before, name, rest = split_arguments(args)
        if name is None:
            raise UsageError("no command given")
        if name == "completion":
            from namazu.server.completion import main as completion_main

            return completion_main(rest)
        if name not in COMMANDS:
            raise UsageError(f"unknown command {name!r}; run 'namazu --help' for the list")
    except UsageError as exc:
        print(f"namazu: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    prog = f"namazu {name}"
    saved_error = argparse.ArgumentParser.error
    argparse.ArgumentParser.error = _one_line_error  # type: ignore[method-assign]
    try:
        parser = command_parser(name)
        options, rest = place_global_options(before, rest, _known_options(parser))
        _apply_global_options(options, name)
        module = importlib.import_module(COMMANDS[name][0])
        return int(module.main(rest) or 0)
    except UsageError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - one line instead of a traceback
        reason = _missing_dependency(exc) if isinstance(exc, ModuleNotFoundError) else None
        if reason is not None:
            print(f"{prog}: error: {reason}", file=sys.stderr)
            return EXIT_MISSING_DEPENDENCY
        if os.environ.get("NAMAZU_DEBUG"):
            traceback.print_exc()
        detail = str(exc) or type(exc).__name__
        print(
            f"{prog}: error: {detail} ({type(exc).__name__}; NAMAZU_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    finally:
        argparse.ArgumentParser.error = saved_error  # type: ignore[method-assign]


if __name__ == "__main__":
    raise SystemExit(main())
