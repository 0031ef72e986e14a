"""`fraud db upgrade`: create or migrate the alerts schema.

Also the ``--db`` option and the database plumbing shared by the commands that
work on the alerts database.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer

from scoring.db import DEFAULT_DB_URL

if TYPE_CHECKING:
    from sqlalchemy import Engine


DbOption = Annotated[
    str,
    typer.Option(
        "--db",
        envvar="FRAUD_DB_URL",
        help="SQLAlchemy URL of the alerts database (PostgreSQL in production).",
    ),
]

app = typer.Typer(help="The alerts database schema.", no_args_is_help=True)


@contextmanager
def open_engine(url: str, *, require_schema: bool = True) -> Iterator[Engine]:
    """Yield an engine for ``url`` and dispose of it; an unreachable database exits 1 in one line.

    With ``require_schema`` the database must be migrated to the current revision.
    """
    from sqlalchemy.exc import OperationalError

    from scoring.db.engine import make_engine, safe_url
    from scoring.db.migrate import require_schema as check_schema

    engine = make_engine(url)
    try:
        if require_schema:
            check_schema(engine)
        yield engine
    except OperationalError as err:
        reason = str(err.orig).strip().splitlines()[0] if err.orig else str(err)
        print(f"error: database {safe_url(url)}: {reason}", file=sys.stderr)
        raise typer.Exit(1) from None
    finally:
        engine.dispose()


@app.command("upgrade")
def upgrade(db: DbOption = DEFAULT_DB_URL) -> None:
    """Create the alerts schema, or migrate it to the newest revision; safe to re-run.

    Prints the revision the database is at as the last line.
    """
    from scoring.db.migrate import upgrade as run_upgrade

    with open_engine(db, require_schema=False) as engine:
        revision = run_upgrade(engine)
    print(revision)
