"""`fraud labels export`: analysts' decisions as a labels file for retraining."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from features.errors import InputError
from fraud.cli.db import DbOption, open_engine
from scoring.db import DEFAULT_DB_URL

app = typer.Typer(help="Labels from the analysts' decisions.", no_args_is_help=True)


@app.command("export")
def export(
    since: Annotated[
        str,
        typer.Option(help="Decisions reviewed at or after this ISO date/time (UTC if no offset)."),
    ],
    out: Annotated[Path, typer.Option(help="Labels file to write: .jsonl or .csv.")],
    db: DbOption = DEFAULT_DB_URL,
) -> None:
    """Write confirmed-fraud and false-positive decisions as labels; prints a JSON summary last."""
    from scoring.db.engine import make_sessionmaker
    from scoring.db.export import write_labels
    from scoring.db.repository import labels_since

    start = _parse_since(since)
    with open_engine(db) as engine, make_sessionmaker(engine)() as session:
        labels = labels_since(session, start)
    written = write_labels(labels, out)
    frauds = sum(label.is_fraud for label in labels)
    print(json.dumps({"labels": written, "frauds": frauds, "out": str(out)}))


def _parse_since(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InputError(f"--since: {value!r} is not an ISO-8601 date or date-time") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed
