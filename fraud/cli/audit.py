"""`fraud audit verify`: check the audit trail's hash chain."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from fraud.cli.db import DbOption, open_engine
from scoring.db import DEFAULT_DB_URL

app = typer.Typer(help="The tamper-evident audit trail.", no_args_is_help=True)


@app.command("verify")
def verify(
    db: DbOption = DEFAULT_DB_URL,
    quiet: Annotated[bool, typer.Option(help="Only the JSON result.")] = False,
) -> None:
    """Recompute every entry's hash; exit 1 naming the first broken link, 0 when intact."""
    import sys

    from scoring.db.audit import verify as check
    from scoring.db.engine import make_sessionmaker

    with open_engine(db) as engine, make_sessionmaker(engine)() as session:
        result = check(session)
    if not quiet:
        if result.ok:
            print(f"OK: {result.entries} audit entries, chain intact", file=sys.stderr)
        else:
            print(f"BROKEN at entry seq={result.broken_seq} id={result.broken_id}: "
                  f"{result.reason}", file=sys.stderr)
    print(json.dumps(result.to_dict()))
    if not result.ok:
        raise typer.Exit(1)
