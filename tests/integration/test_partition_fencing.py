"""A scorer that lost its partition cannot bend the state its successor restores.

A scorer frozen past its session timeout (a long GC pause, SIGSTOP, a VM
migration) wakes up still believing it owns its partitions. Its next
checkpoint rows must not land on top of the new owner's: the store refuses
the rows of any owner but the one whose base claimed the partition last.
Against real SQLite and PostgreSQL.
"""

from __future__ import annotations

import pytest

from scoring.db.engine import make_engine
from scoring.db.migrate import upgrade
from scoring.stream.ports import PartitionRow
from scoring.stream.sql_store import SqlPartitionStore

pytestmark = pytest.mark.integration

KEY = ("transactions", 0)


def _row(kind: str, offset: int, owner: str, *, claim: bool = False) -> PartitionRow:
    return PartitionRow(
        topic=KEY[0], partition=KEY[1], seq=-1, kind=kind, state=f"{owner}@{offset}".encode(),
        next_offset=offset, watermark_us=offset, owner=owner, claim=claim,
    )


def test_a_former_owners_rows_are_refused_after_a_new_owner_claims(db_url: str) -> None:
    engine = make_engine(db_url)
    upgrade(engine)
    store = SqlPartitionStore(engine, "group-a")
    store.write_rows([_row("base", 10, "scorer-1", claim=True)])
    store.write_rows([_row("delta", 20, "scorer-1")])

    store.write_rows([_row("base", 20, "scorer-2", claim=True)])  # restored by scorer-2
    store.write_rows([_row("delta", 35, "scorer-1")])  # scorer-1 wakes up: refused
    store.write_rows([_row("base", 40, "scorer-1")])  # not even a base of its own
    store.write_rows([_row("delta", 30, "scorer-2")])

    chain = store.rows(KEY)
    assert [(r.kind, r.owner, r.next_offset) for r in chain] == [
        ("base", "scorer-2", 20), ("delta", "scorer-2", 30)
    ]
    assert [r.seq for r in chain] == sorted({r.seq for r in chain})  # the store numbers rows

    store.write_rows([_row("base", 50, "scorer-1", claim=True)])  # it gets the partition back
    assert [(r.owner, r.next_offset) for r in store.rows(KEY)] == [("scorer-1", 50)]


def test_rows_of_other_partitions_and_groups_are_not_fenced(db_url: str) -> None:
    engine = make_engine(db_url)
    upgrade(engine)
    first, second = SqlPartitionStore(engine, "group-a"), SqlPartitionStore(engine, "group-b")
    first.write_rows([_row("base", 10, "scorer-1", claim=True)])
    second.write_rows([_row("base", 12, "scorer-9", claim=True)])
    second.write_rows([_row("delta", 15, "scorer-9")])
    assert [r.next_offset for r in first.rows(KEY)] == [10]
    assert [r.next_offset for r in second.rows(KEY)] == [12, 15]
