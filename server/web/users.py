"""``namazu users``: manage panel users. There is no default account: ``namazu users add
NAME --role admin`` creates the first admin.

    namazu users add alice --role admin            # prompts for the password twice
    echo "$PW" | namazu users add bob --role viewer --password-stdin
    namazu users list
    namazu users token alice [--label grafana]     # prints a new API token once
    namazu users email alice alice@example.org     # told when the account is being guessed
    namazu users unlock alice [--address 192.0.2.7]  # forget failed log-ins (admin unlock)
"""

from __future__ import annotations

import argparse
import getpass
import sys

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from namazu.server.core.config import ConfigError, load_config
from namazu.server.store.models import ROLES, User
from namazu.server.store.state import StateError, init_db, session_scope
from namazu.server.web.auth import (
    AuthError,
    create_user,
    issue_token,
    unlock,
    validate_email,
    validate_role,
)


class UsersCommandError(Exception):
    """A ``namazu users`` command failed; the message says why."""


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise UsersCommandError("no password on standard input")
        return password
    if not sys.stdin.isatty():
        raise UsersCommandError(
            "no terminal to ask for the password; pipe it in with --password-stdin"
        )
    try:
        first = getpass.getpass("password: ")
        second = getpass.getpass("again: ")
    except EOFError:
        raise UsersCommandError("no password given (end of input)") from None
    if first != second:
        raise UsersCommandError("the two passwords differ")
    return first


def main(argv: list[str]) -> int:
    """Entry point of ``namazu users add|list|token|email|unlock``; returns the exit code."""
    parser = argparse.ArgumentParser(prog="namazu users", description="Manage panel users.")
    parser.add_argument("--config", help="TOML file (default $NAMAZU_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True)
    add = sub.add_parser("add", help="add a user")
    add.add_argument("name")
    add.add_argument("--role", required=True, help=f"one of {', '.join(ROLES)}")
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    add.add_argument("--email", help="address told when the account is being guessed")
    email = sub.add_parser("email", help="set (or with '' clear) a user's e-mail address")
    email.add_argument("name")
    email.add_argument("address")
    release = sub.add_parser("unlock", help="forget failed log-ins of an account or address")
    release.add_argument("name", nargs="?", help="account whose failed log-ins are forgotten")
    release.add_argument("--address", help="client address whose failed log-ins are forgotten")
    sub.add_parser("list", help="list users")
    token = sub.add_parser("token", help="issue an API token (printed once)")
    token.add_argument("name")
    token.add_argument("--label", default="cli", help="what the token is for")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        engine = init_db(config.state.url)
        with session_scope(engine) as db:
            if args.command == "add":
                validate_role(args.role)
                password = _read_password(args.password_stdin)
                user = create_user(db, args.name, args.role, password)
                if args.email:
                    user.email = validate_email(args.email)
                print(f"user {user.name!r} added with role {user.role}")
            elif args.command == "list":
                for user in db.scalars(select(User).order_by(User.name)):
                    state = "active" if user.active else "disabled"
                    print(f"{user.name}\t{user.role}\t{state}\t{user.created_at:%Y-%m-%dT%H:%MZ}")
            elif args.command == "unlock":
                if args.name is None and args.address is None:
                    raise UsersCommandError("unlock: name an account or give --address")
                forgotten = unlock(db, args.name, args.address)
                print(f"{forgotten} failed log-in(s) forgotten")
            else:
                user = db.scalar(select(User).where(User.name == args.name))
                if user is None:
                    raise UsersCommandError(f"no user named {args.name!r}")
                if args.command == "email":
                    user.email = validate_email(args.address) if args.address else None
                    print(f"user {user.name!r}: e-mail {user.email or 'cleared'}")
                else:
                    print(issue_token(db, user, args.label))
    except (ConfigError, StateError, AuthError, UsersCommandError) as exc:
        print(f"namazu users: {exc}", file=sys.stderr)
        return 1
    except SQLAlchemyError as exc:
        print(f"namazu users: state store error: {exc.__class__.__name__}: {exc}", file=sys.stderr)
        return 1
    return 0
