"""`fraud users add|list|disable|token`: the workbench's accounts."""

from __future__ import annotations

import getpass
import json
import os
import sys
from typing import Annotated

import typer

from features.errors import InputError
from fraud.cli.db import DbOption, open_engine
from scoring.db import DEFAULT_DB_URL

app = typer.Typer(help="Workbench users: add, list, disable, API tokens.", no_args_is_help=True)

NameArg = Annotated[str, typer.Argument(metavar="NAME", help="The user's name.")]


def _actor() -> str:
    return "cli:" + (os.environ.get("USER") or getpass.getuser() or "unknown")


def _password() -> str:
    password = os.environ.get("FRAUD_PASSWORD")
    if password:
        return password
    if sys.stdin.isatty():
        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            raise InputError("the passwords differ")
        return first
    line = sys.stdin.readline().rstrip("\r\n")
    if not line:
        raise InputError("no password: give it on stdin or in FRAUD_PASSWORD")
    return line


@app.command("add")
def add(
    name: NameArg,
    role: Annotated[str, typer.Option(help="analyst, supervisor or admin.")],
    db: DbOption = DEFAULT_DB_URL,
) -> None:
    """Create a user; the password comes from stdin or FRAUD_PASSWORD (never an argument)."""
    from scoring.db.engine import make_sessionmaker
    from scoring.workbench.auth import add_user

    password = _password()
    with open_engine(db) as engine, make_sessionmaker(engine).begin() as session:
        user = add_user(session, name, role, password, _actor())
        out = {"name": user.name, "role": user.role}
    print(json.dumps(out))


@app.command("list")
def list_users(db: DbOption = DEFAULT_DB_URL) -> None:
    """Every user with role and state; a JSON array as the last line."""
    from scoring.db.engine import make_sessionmaker
    from scoring.workbench.auth import list_users as query

    with open_engine(db) as engine, make_sessionmaker(engine)() as session:
        rows = [{"name": u.name, "role": u.role, "disabled": u.disabled,
                 "created_at": u.created_at.isoformat()} for u in query(session)]
    for row in rows:
        print(f"{row['name']:24} {row['role']:11} {'disabled' if row['disabled'] else 'active'}",
              file=sys.stderr)
    print(json.dumps(rows))


@app.command("disable")
def disable(name: NameArg, db: DbOption = DEFAULT_DB_URL) -> None:
    """Disable a user: sessions end and API tokens stop working at once."""
    from scoring.db.engine import make_sessionmaker
    from scoring.workbench.auth import disable_user

    with open_engine(db) as engine, make_sessionmaker(engine).begin() as session:
        user = disable_user(session, name, _actor())
        out = {"name": user.name, "disabled": user.disabled}
    print(json.dumps(out))


@app.command("token")
def token(name: NameArg, db: DbOption = DEFAULT_DB_URL) -> None:
    """Issue an API token for NAME: printed once (last line), stored only as its hash."""
    from scoring.db.engine import make_sessionmaker
    from scoring.workbench.auth import create_token

    with open_engine(db) as engine, make_sessionmaker(engine).begin() as session:
        value = create_token(session, name, _actor())
    print(value)
