"""`fraud alerts list` and `fraud alerts label`: the analyst's command line."""

from __future__ import annotations

import getpass
import json
import os
import sys
from typing import Annotated, Any

import typer

from fraud.cli.db import DbOption, open_engine
from scoring.db import DEFAULT_DB_URL

app = typer.Typer(help="Triage alerts: list them, label them.", no_args_is_help=True)

#: Alert field -> table header, for the human-readable listing.
_TABLE_COLUMNS = {
    "id": "id",
    "created_at": "created UTC",
    "transaction_id": "transaction",
    "customer_id": "customer",
    "amount": "amount",
    "score": "score",
    "status": "status",
    "reviewed_by": "analyst",
}
_NUMERIC = ("id", "amount", "score")
_IDENTIFIERS = ("transaction_id", "customer_id", "reviewed_by")
_PIPE_WIDTH = 160


@app.command("list")
def list_alerts(
    db: DbOption = DEFAULT_DB_URL,
    status: Annotated[
        str | None,
        typer.Option(help="Only this status: open, confirmed_fraud or false_positive."),
    ] = None,
    customer: Annotated[str | None, typer.Option(help="Only this customer's alerts.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many alerts.")] = 50,
    offset: Annotated[int, typer.Option(help="Skip this many alerts first (paging).")] = 0,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON array as the last line instead.")
    ] = False,
) -> None:
    """List alerts, newest first."""
    from scoring.db.engine import make_sessionmaker
    from scoring.db.repository import list_alerts as query

    with open_engine(db) as engine, make_sessionmaker(engine)() as session:
        alerts = query(session, status=status, limit=limit, offset=offset, customer_id=customer)
        rows = [alert.to_dict() for alert in alerts]
    if as_json:
        print(json.dumps(rows))
    else:
        _print_table(rows)


@app.command("label")
def label_alert(
    alert_id: Annotated[int, typer.Argument(metavar="ID", help="The alert's id.")],
    status: Annotated[
        str,
        typer.Option(help="confirmed_fraud or false_positive (open reopens the alert)."),
    ],
    db: DbOption = DEFAULT_DB_URL,
    analyst: Annotated[
        str | None,
        typer.Option(envvar="FRAUD_ANALYST", help="Who decides; defaults to $USER."),
    ] = None,
    note: Annotated[str | None, typer.Option(help="Why, for the audit trail.")] = None,
) -> None:
    """Record a decision on an alert; prints the updated alert as JSON last."""
    from scoring.db.engine import make_sessionmaker
    from scoring.db.repository import label_alert as record

    who = analyst or os.environ.get("USER") or getpass.getuser()
    with open_engine(db) as engine, make_sessionmaker(engine).begin() as session:
        result = record(session, alert_id, status, who, note).to_dict()
    print(json.dumps(result))


def _print_table(rows: list[dict[str, Any]]) -> None:
    from rich import box
    from rich.console import Console, JustifyMethod
    from rich.table import Table

    table = Table(title=f"{len(rows)} alert(s)", box=box.SIMPLE_HEAD, pad_edge=False)
    for column, header in _TABLE_COLUMNS.items():
        justify: JustifyMethod = "right" if column in _NUMERIC else "left"
        if column in _IDENTIFIERS:  # never cut an id an analyst needs to copy
            table.add_column(header, justify=justify, overflow="fold")
        else:
            table.add_column(header, justify=justify, no_wrap=True)
    for row in rows:
        table.add_row(*(_cell(column, row[column]) for column in _TABLE_COLUMNS))
    # Piped output is not cut to 80 columns; a terminal gets its own width.
    Console(width=None if sys.stdout.isatty() else _PIPE_WIDTH).print(table)


def _cell(column: str, value: Any) -> str:
    if value is None:
        return ""
    if column == "score":
        return f"{value:.4f}"
    if column == "amount":
        return f"{value:.2f}"
    if column == "created_at":
        return str(value)[:16].replace("T", " ")
    return str(value)
