"""`fraud checkpoint show|use-previous|discard`: the scorer's state checkpoints, for recovery.

See docs/operations.md: a scorer that cannot restore its checkpoint holds,
and these commands are how an operator lets it go on.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from features.errors import InputError
from fraud.cli.db import DbOption, open_engine
from scoring.db import DEFAULT_DB_URL

app = typer.Typer(help="The streaming scorer's state checkpoints.", no_args_is_help=True)

GroupOption = Annotated[
    str, typer.Option("--group-id", envvar="FRAUD_GROUP_ID", help="The scorers' consumer group.")
]


@app.command("show")
def show(db: DbOption = DEFAULT_DB_URL, group_id: GroupOption = "fraud-scorer") -> None:
    """Both kept checkpoints of a group, each verified; JSON as the last line."""
    from scoring.stream.checkpointer import open_checkpoint
    from scoring.stream.sealed import CheckpointUnusable
    from scoring.stream.sql_store import PARTITION_KEY, PREVIOUS_KEY, SqlAlertStore

    with open_engine(db) as engine:
        store = SqlAlertStore(engine, group_id)
        report: dict[str, Any] = {}
        for name, key in (("current", PARTITION_KEY), ("previous", PREVIOUS_KEY)):
            stored = store.stored(key)
            if stored is None:
                report[name] = None
                continue
            entry: dict[str, Any] = {
                "written_at": stored.updated_at.isoformat(),
                "bytes": len(stored.saved.state),
                "model_version": stored.saved.model_version,
                "positions": {f"{t}:{p}": o for (t, p), o in stored.saved.positions.items()},
            }
            try:
                restored = open_checkpoint(stored.saved, f"{name} checkpoint")
            except CheckpointUnusable as err:
                entry["usable"], entry["reason"] = False, str(err)
            else:
                entry["usable"] = True
                entry["behaviour"] = {
                    "windows_days": list(restored.state.config.windows_days),
                    "delay_days": restored.state.config.delay_days,
                    "late_tolerance_hours": restored.state.config.late_tolerance_hours,
                }
            report[name] = entry
    print(json.dumps(report))


@app.command("use-previous")
def use_previous(db: DbOption = DEFAULT_DB_URL, group_id: GroupOption = "fraud-scorer") -> None:
    """Drop the current checkpoint and make the previous one current (a holding scorer resumes)."""
    from scoring.stream.sql_store import SqlAlertStore

    with open_engine(db) as engine:
        if not SqlAlertStore(engine, group_id).use_previous():
            raise InputError(f"group {group_id!r} has no previous checkpoint to fall back to")
    print(json.dumps({"group_id": group_id, "using": "previous"}))


@app.command("discard")
def discard(
    db: DbOption = DEFAULT_DB_URL,
    group_id: GroupOption = "fraud-scorer",
    yes: Annotated[bool, typer.Option("--yes", help="Really delete them.")] = False,
) -> None:
    """Delete every checkpoint of a group (before `fraud score --rebuild-state`)."""
    from scoring.stream.sql_store import SqlAlertStore

    if not yes:
        raise InputError("discarding checkpoints cannot be undone: add --yes")
    with open_engine(db) as engine:
        count = SqlAlertStore(engine, group_id).discard()
    print(json.dumps({"group_id": group_id, "discarded": count}))
