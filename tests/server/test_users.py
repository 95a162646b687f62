"""``namazu users``: the first admin, listing, tokens, clear errors."""

from __future__ import annotations

import io

from sqlalchemy import select

from namazu.server.store.models import User
from namazu.server.store.state import make_engine, session_scope
from namazu.server.web.auth import user_for_token
from namazu.server.web.users import main


def run(monkeypatch, capsys, argv, stdin=""):
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_add_list_token(monkeypatch, capsys, state_url):
    url = state_url
    monkeypatch.setenv("NAMAZU_STATE__URL", f'"{url}"')
    code, out, _ = run(
        monkeypatch, capsys, ["add", "alice", "--role", "admin", "--password-stdin"],
        "a long passphrase\n",
    )  # fmt: skip
    assert code == 0 and "alice" in out
    code, out, _ = run(monkeypatch, capsys, ["list"])
    assert code == 0 and out.startswith("alice\tadmin\tactive")
    code, token, _ = run(monkeypatch, capsys, ["token", "alice"])
    assert code == 0
    with session_scope(make_engine(url)) as db:
        assert user_for_token(db, token.strip()).name == "alice"
        stored = db.scalar(select(User).where(User.name == "alice")).password_hash
        assert stored.startswith("$argon2id$")


def test_errors_are_one_line(monkeypatch, capsys, state_url):
    monkeypatch.setenv("NAMAZU_STATE__URL", f'"{state_url}"')
    cases = [
        (["add", "bob", "--role", "root", "--password-stdin"], "pw long enough\n", "role"),
        (["add", "bob", "--role", "viewer", "--password-stdin"], "short\n", "too short"),
        (["add", "../bob", "--role", "viewer", "--password-stdin"], "long enough pw\n", "invalid"),
        (["add", "bob", "--role", "viewer", "--password-stdin"], "", "no password"),
        (["token", "nobody"], "", "no user"),
    ]
    for argv, stdin, word in cases:
        code, _, err = run(monkeypatch, capsys, argv, stdin)
        assert code == 1, argv
        assert word in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    run(monkeypatch, capsys, ["add", "bob", "--role", "viewer", "--password-stdin"], "x" * 12)
    code, _, err = run(
        monkeypatch, capsys, ["add", "bob", "--role", "viewer", "--password-stdin"], "y" * 12
    )
    assert code == 1 and "already exists" in err
