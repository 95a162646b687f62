"""The ``namazu`` entry point: --version, global options before or after the command,
one-line errors with documented exit codes, and bash completion."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib import metadata

import pytest

from namazu.server import cli

NAMAZU = [sys.executable, "-m", "namazu.server.cli"]


def run(*args: str, env: dict | None = None, stdin: str = "") -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("NAMAZU_")}
    return subprocess.run(
        [*NAMAZU, *args], env={**base, **(env or {})}, input=stdin,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_version_is_the_installed_distribution(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out == f"namazu {metadata.version('namazu')}\n"


def test_help_lists_commands_global_options_and_exit_codes(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for word in ("analyze", "--log-format", "exit codes:"):
        assert word in out
    for code in cli.EXIT_CODES:
        assert f"  {code:>3}  " in out


@pytest.mark.parametrize(
    "args",
    [
        ["--config", "{bad}", "check-config"],
        ["check-config", "--config", "{bad}"],
        ["--config={bad}", "check-config", "--quiet"],
    ],
)
def test_config_before_or_after_the_command(tmp_path, args):
    bad = tmp_path / "bad.toml"
    bad.write_text("[mqtt]\nport = 'x'\n")
    proc = run(*[a.replace("{bad}", str(bad)) for a in args])
    assert proc.returncode == cli.EXIT_USAGE
    assert proc.stderr.strip().splitlines() == [
        "namazu check-config: invalid configuration: mqtt.port: Input should be a valid "
        "integer, unable to parse string as an integer"
    ]


def test_log_options_after_a_command_that_has_none_of_its_own(tmp_path):
    proc = run("catalog", "import", str(tmp_path / "absent.csv"), "--out",
               str(tmp_path / "o.csv"), "--log-level", "debug", "--log-format", "text")  # fmt: skip
    assert proc.returncode == cli.EXIT_FAILURE
    assert "absent.csv" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_check_config_names_the_key_and_the_expected_type(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[rule]\nincrease_pct = "a lot"\n')
    proc = run("check-config", "--config", str(bad))
    assert proc.returncode == cli.EXIT_USAGE
    assert proc.stderr.strip() == (
        "namazu check-config: invalid configuration: rule.increase_pct: expected a number, "
        "got str 'a lot'"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope"], "namazu: error: unknown command 'nope'; run 'namazu --help' for the list"),
        (["--verbose", "analyze"], "namazu: error: unknown option '--verbose' before the command"),
        (["--config"], "namazu: error: option --config needs a value"),
        (["analyze", "--increase-pct", "-50"],
         "namazu analyze: error: argument --increase-pct: must be > 0, got -50 "
         "(see 'namazu analyze --help')"),
        (["analyze", "--n-shifts", "many"],
         "namazu analyze: error: argument --n-shifts: must be an integer, got 'many' "
         "(see 'namazu analyze --help')"),
        (["check-config", "--log-level", "loud"],
         "namazu check-config: error: log level 'loud' is unknown; valid levels: "
         "DEBUG, INFO, WARNING, ERROR, CRITICAL"),
    ],
)  # fmt: skip
def test_usage_errors_are_one_line_with_exit_code_2(args, message, capsys):
    try:
        code = cli.main(args)
    except SystemExit as exc:  # argparse exits; the console script turns that into the code
        code = exc.code
    assert code == cli.EXIT_USAGE
    assert capsys.readouterr().err.strip().splitlines() == [message]


def test_an_unwritable_output_is_one_line(tmp_path):
    csv = tmp_path / "a.csv"
    csv.write_text("time,animal\n2024-01-01T00:00:00Z,1\n")
    proc = run("analyze", "--activity", str(csv), "--catalog", str(csv), "--farm", "43,13",
               "--out", "/proc/nope")  # fmt: skip
    assert proc.returncode in (cli.EXIT_FAILURE,)
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_a_web_page_is_not_a_catalogue(tmp_path):
    page = tmp_path / "page.html"
    page.write_text("<html><head><title>Moved</title></head><body>gone</body></html>\n")
    proc = run("catalog", "import", str(page), "--out", str(tmp_path / "c.csv"))
    assert proc.returncode == cli.EXIT_FAILURE
    assert proc.stderr.strip() == (
        f"namazu catalog import: {page}: quakeml: <html> is not a QuakeML document "
        "(no eventParameters)"
    )
    assert not (tmp_path / "c.csv").exists()


def test_users_add_without_a_terminal_says_what_to_do(state_url):
    proc = run("users", "add", "dave", "--role", "admin",
               env={"NAMAZU_STATE__URL": state_url})  # fmt: skip
    assert proc.returncode == cli.EXIT_FAILURE
    assert proc.stderr.strip() == (
        "namazu users: no terminal to ask for the password; pipe it in with --password-stdin"
    )


def test_a_missing_server_dependency_is_named(monkeypatch, tmp_path, capsys):
    (tmp_path / "needs_scipy_cmd.py").write_text("import scipy\n\ndef main(argv):\n    return 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(sys.modules, "scipy", None)  # as on a gateway install
    monkeypatch.setitem(cli.COMMANDS, "needs-scipy", ("needs_scipy_cmd", "test"))
    assert cli.main(["needs-scipy"]) == cli.EXIT_MISSING_DEPENDENCY
    assert capsys.readouterr().err.strip() == (
        "namazu needs-scipy: error: needs the server dependencies (module 'scipy' is not "
        "installed); install them with: pip install 'namazu[server]'"
    )


def test_an_unexpected_error_is_one_line(monkeypatch, tmp_path, capsys):
    (tmp_path / "broken_cmd.py").write_text("def main(argv):\n    raise KeyError('lost')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(cli.COMMANDS, "broken", ("broken_cmd", "test"))
    monkeypatch.delenv("NAMAZU_DEBUG", raising=False)
    assert cli.main(["broken"]) == cli.EXIT_FAILURE
    assert capsys.readouterr().err.strip() == (
        "namazu broken: error: 'lost' (KeyError; NAMAZU_DEBUG=1 shows the traceback)"
    )


def test_global_options_are_placed_where_the_command_takes_them():
    known = {"--config", "--help", "--quiet"}
    taken, argv = cli.place_global_options(
        {"--config": "a.toml", "--log-level": "debug"},
        ["--quiet", "--log-format", "text"],
        known,
    )
    assert taken == {"--log-format": "text", "--log-level": "debug"}
    assert argv == ["--config", "a.toml", "--quiet"]
    taken, argv = cli.place_global_options({"--config": "a.toml"}, ["--config", "b.toml"], known)
    assert (taken, argv) == ({}, ["--config", "b.toml"])  # the later one wins


@pytest.fixture(scope="module")
def completion_script(tmp_path_factory):
    proc = run("completion", "bash")
    assert proc.returncode == 0, proc.stderr
    script = tmp_path_factory.mktemp("completion") / "namazu.bash"
    script.write_text(proc.stdout)
    return script


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("namazu ana", {"analyze"}),
        ("namazu --log-format ", {"json", "text"}),
        ("namazu analyze --increase", {"--increase-pct"}),
        ("namazu analyze --activity-format ", {"csv", "movebank"}),
        ("namazu catalog ", {"fetch", "import"}),
        ("namazu stack st", {"start", "stop", "status"}),
        ("namazu bridge --log-l", {"--log-level"}),
        ("namazu completion ", {"bash"}),
    ],
)
def test_bash_completion(line, expected, completion_script):
    words = line.split() + ([""] if line.endswith(" ") else [])
    probe = (
        f"source {completion_script}\n"
        f"COMP_WORDS=({' '.join(repr(w) for w in words)}); COMP_CWORD={len(words) - 1}\n"
        "_namazu\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n"
    )
    out = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert set(out.stdout.split()) == expected


def test_bridge_without_a_broker_says_spooled_and_exits_3(tmp_path):
    from namazu.server.launch.stack import free_port

    port = free_port()  # nothing listens there
    proc = run("bridge", "--source", "simulator", "--cows", "2", "--duration-min", "10",
               "--mqtt-port", str(port), "--drain-timeout-s", "2", "--confirm", "puback",
               "--spool", str(tmp_path / "spool.sqlite"))  # fmt: skip
    assert proc.returncode == cli.EXIT_UNDRAINED
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["all_confirmed"] is False and summary["samples_spooled"] > 0
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("namazu bridge: stopped with ")
    assert "messages still spooled, not confirmed as accepted" in lines[-1]
    logged = [json.loads(line) for line in lines[:-1]]
    unreachable = [e for e in logged if e["msg"].startswith("cannot reach broker")]
    assert unreachable and unreachable[0]["level"] == "WARNING"
    assert unreachable[0]["msg"].startswith(
        f"cannot reach broker 127.0.0.1:{port} (connection refused); "
    )
    assert "messages spooled; retrying in 1 s" in unreachable[0]["msg"]
