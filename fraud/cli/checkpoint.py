"""`fraud checkpoint show|use-previous|discard`: the scorers' and the stage's checkpoints.

See docs/operations.md: a scorer holds a partition whose checkpoint it cannot
restore (and the stage holds when its own is unusable); these commands are
how an operator lets them go on.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from features.errors import InputError
from fraud.cli.db import DbOption, open_engine
from ingest.kafka_io import SCORER_GROUP
from scoring.db import DEFAULT_DB_URL
from scoring.terminal_stage.settings import STAGE_GROUP

app = typer.Typer(help="The scorers' and the terminal stage's checkpoints.", no_args_is_help=True)

GroupOption = Annotated[
    str, typer.Option("--group-id", envvar="FRAUD_GROUP_ID", help="The scorers' consumer group.")
]
StageOption = Annotated[
    str,
    typer.Option("--stage-group", envvar="FRAUD_STAGE_GROUP", help="The terminal stage's group."),
]


def _first_bad_row(rows: list[Any]) -> tuple[int | None, str]:
    """The seq of the first row that does not verify (None if all do), and why."""
    from scoring.stream.sealed import CheckpointUnusable, unseal

    for row in rows:
        try:
            unseal(row.state, f"row {row.seq}")
        except CheckpointUnusable as err:
            return row.seq, str(err)
    return None, ""


@app.command("show")
def show(
    db: DbOption = DEFAULT_DB_URL,
    group_id: GroupOption = SCORER_GROUP,
    stage_group: StageOption = STAGE_GROUP,
) -> None:
    """Every partition's checkpoint rows and the stage's checkpoints, verified; JSON last."""
    from scoring.stream.sql_store import SqlAlertStore, SqlPartitionStore

    with open_engine(db) as engine:
        partitions = SqlPartitionStore(engine, group_id)
        report: dict[str, Any] = {"partitions": {}, "stage": {}}
        for key in sorted(partitions.partitions()):
            rows = partitions.all_rows(key)
            bad, reason = _first_bad_row(partitions.rows(key))
            report["partitions"][f"{key[0]}:{key[1]}"] = {
                "rows": [
                    {"seq": r.seq, "kind": r.kind, "next_offset": r.next_offset,
                     "bytes": len(r.state)}
                    for r in rows
                ],
                "usable": bad is None,
                **({"first_bad_seq": bad, "reason": reason} if bad is not None else {}),
            }
        stage = SqlAlertStore(engine, stage_group)
        for name, slot in (("current", "all"), ("previous", "all~previous")):
            stored = stage.stored(slot)
            if stored is None:
                report["stage"][name] = None
                continue
            bad, reason = _first_bad_row([_Row(stored.saved.state)])
            report["stage"][name] = {
                "written_at": stored.updated_at.isoformat(),
                "bytes": len(stored.saved.state),
                "usable": bad is None,
                **({"reason": reason} if bad is not None else {}),
            }
    print(json.dumps(report))


class _Row:
    """A stage checkpoint seen as a row (for :func:`_first_bad_row`)."""

    seq = 0

    def __init__(self, state: bytes) -> None:
        self.state = state


@app.command("use-previous")
def use_previous(
    db: DbOption = DEFAULT_DB_URL,
    group_id: GroupOption = SCORER_GROUP,
    stage_group: StageOption = STAGE_GROUP,
) -> None:
    """Go back to the last good checkpoint wherever the newest cannot be restored.

    A partition's rows from its first unusable one on are deleted (the scorer
    then restores the rows before and replays more); an unusable stage
    checkpoint is replaced by the previous one. Holding processes resume.
    """
    from scoring.stream.sql_store import SqlAlertStore, SqlPartitionStore

    done: dict[str, Any] = {"partitions": {}, "stage": None}
    with open_engine(db) as engine:
        partitions = SqlPartitionStore(engine, group_id)
        for key in sorted(partitions.partitions()):
            bad, _ = _first_bad_row(partitions.rows(key))
            if bad is not None:
                removed = partitions.truncate(key, bad)
                done["partitions"][f"{key[0]}:{key[1]}"] = {"from_seq": bad, "removed": removed}
        stage = SqlAlertStore(engine, stage_group)
        current = stage.stored("all")
        if current is not None and _first_bad_row([_Row(current.saved.state)])[0] is not None:
            if not stage.use_previous():
                raise InputError(f"stage group {stage_group!r} has no previous checkpoint")
            done["stage"] = "previous"
    if not done["partitions"] and done["stage"] is None:
        raise InputError("every checkpoint verifies: nothing to go back from")
    print(json.dumps(done))


@app.command("discard")
def discard(
    db: DbOption = DEFAULT_DB_URL,
    group_id: GroupOption = SCORER_GROUP,
    stage_group: StageOption = STAGE_GROUP,
    yes: Annotated[bool, typer.Option("--yes", help="Really delete them.")] = False,
) -> None:
    """Delete the scorers' and the stage's checkpoints (before a `--rebuild-state`)."""
    from scoring.stream.sql_store import SqlAlertStore, SqlPartitionStore

    if not yes:
        raise InputError("discarding checkpoints cannot be undone: add --yes")
    with open_engine(db) as engine:
        rows = SqlPartitionStore(engine, group_id).discard()
        stage = SqlAlertStore(engine, stage_group).discard()
    print(json.dumps({"partition_rows": rows, "stage_checkpoints": stage}))
