"""The SQL backend of the alert store: alerts and the scorer checkpoint in one transaction.

The two newest checkpoints of a group are kept: ``all`` (the current one) and
``all~previous``. A current checkpoint that fails its checksum is refused by
the scorer; the previous one is the documented way back (``fraud checkpoint
use-previous``), replaying more events, which the idempotent alerts absorb.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Self

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from scoring.db.engine import in_memory, make_engine, make_sessionmaker
from scoring.db.repository import (
    CHECKPOINTS,
    PARTITION_ROWS,
    NewAlert,
    insert_alerts,
    load_checkpoints,
    save_checkpoint,
)
from scoring.stream.ports import (
    DependencyDown,
    Partition,
    PartitionRow,
    RowsRejected,
    SavedState,
)

log = logging.getLogger(__name__)

#: One checkpoint per group: the terminal stage's (docs/scoring.md, the state store).
PARTITION_KEY = "all"
#: Where the checkpoint before the current one is kept.
PREVIOUS_KEY = f"{PARTITION_KEY}~previous"


@dataclass(frozen=True)
class StoredCheckpoint:
    """A checkpoint row as stored, before its blob is verified."""

    saved: SavedState
    updated_at: datetime


class _GroupStore:
    """A consumer group's rows in one database, reopenable in a forked child."""

    def __init__(self, engine: Engine, consumer_group: str) -> None:
        self._engine = engine
        self._sessions = make_sessionmaker(engine)
        self._group = consumer_group

    @property
    def reopenable(self) -> bool:
        """False for in-memory SQLite: a new connection would open another, empty database."""
        url = self._engine.url
        return not (url.get_backend_name() == "sqlite" and in_memory(url))

    def reopened(self) -> Self:
        """The same store over new connections (for a forked child: never share a pool)."""
        return type(self)(make_engine(self._engine.url, poolclass=NullPool), self._group)


class SqlAlertStore(_GroupStore):
    """Writes alerts idempotently and saves the scorer's state checkpoint atomically."""

    def write(self, alerts: Sequence[NewAlert], checkpoint: SavedState | None) -> int:
        """Insert alerts (duplicates ignored) and the checkpoint in one transaction.

        :class:`DependencyDown` when the database cannot be reached (retry);
        :class:`RowsRejected` when it refuses the contents (a value out of a
        column's range, a character it cannot store): the caller retries the
        alerts one at a time to find the row.
        """
        with _classified(), self._sessions.begin() as session:
            inserted = insert_alerts(session, alerts) if alerts else 0
            if checkpoint is not None:
                self._save(session, checkpoint)
        return inserted

    def _save(self, session: Session, checkpoint: SavedState) -> None:
        """Keep the current checkpoint as the previous one, then write the new one."""
        rows = CHECKPOINTS
        group = rows.c.consumer_group == self._group
        session.execute(delete(rows).where(group, rows.c.partition_key == PREVIOUS_KEY))
        session.execute(
            update(rows)
            .where(group, rows.c.partition_key == PARTITION_KEY)
            .values(partition_key=PREVIOUS_KEY)
        )
        offsets = {f"{t}:{p}": o for (t, p), o in checkpoint.positions.items()}
        save_checkpoint(
            session, self._group, PARTITION_KEY, offsets, checkpoint.state, checkpoint.model_version
        )

    def load(self) -> SavedState | None:
        """Return the group's current checkpoint (its blob not verified), None on a first start."""
        stored = self.stored(PARTITION_KEY)
        return None if stored is None else stored.saved

    def stored(self, key: str = PARTITION_KEY) -> StoredCheckpoint | None:
        """The checkpoint row ``key`` (current or previous) with when it was written."""
        with _classified(), self._sessions.begin() as session:
            found = load_checkpoints(session, self._group).get(key)
        if found is None:
            return None
        positions = {}
        for name, offset in found.offsets.items():
            topic, _, partition = name.rpartition(":")
            positions[(topic, int(partition))] = int(offset)
        return StoredCheckpoint(
            SavedState(found.state, positions, found.model_version), found.updated_at
        )

    def use_previous(self) -> bool:
        """Make the previous checkpoint the current one (the bad current is dropped)."""
        rows = CHECKPOINTS
        group = rows.c.consumer_group == self._group
        with _classified(), self._sessions.begin() as session:
            if self._count(session, PREVIOUS_KEY) == 0:
                return False
            session.execute(delete(rows).where(group, rows.c.partition_key == PARTITION_KEY))
            session.execute(
                update(rows)
                .where(group, rows.c.partition_key == PREVIOUS_KEY)
                .values(partition_key=PARTITION_KEY)
            )
        return True

    def discard(self) -> int:
        """Delete every checkpoint of the group (before a rebuild from history)."""
        rows = CHECKPOINTS
        with _classified(), self._sessions.begin() as session:
            result = session.execute(delete(rows).where(rows.c.consumer_group == self._group))
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    def _count(self, session: Session, key: str) -> int:
        return len(load_checkpoints(session, self._group).keys() & {key})


@contextmanager
def _classified() -> Iterator[None]:
    """Connection-level failures become DependencyDown; refused contents RowsRejected."""
    try:
        yield
    except OperationalError as err:
        raise DependencyDown(f"database unavailable: {first_line(err)}") from err
    except DBAPIError as err:
        if err.connection_invalidated:
            raise DependencyDown(f"database connection lost: {first_line(err)}") from err
        raise RowsRejected(f"database refused the write: {first_line(err)}") from err
    except (SQLAlchemyError, ValueError, UnicodeError) as err:
        # Raised while binding values (a NUL character, an unencodable string).
        raise RowsRejected(f"database refused the write: {first_line(err)}") from err


def first_line(err: BaseException) -> str:
    """The first line of an error's text, without SQL parameters (engines hide them)."""
    text = str(getattr(err, "orig", None) or err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__


class SqlPartitionStore(_GroupStore):
    """Each scorer partition's checkpoint rows (table ``partition_checkpoints``).

    Rows are appended; writing a base prunes the rows before the *previous*
    base, so the one before the newest base (and its deltas) stays as the way
    back when a newer row turns out unusable (``fraud checkpoint use-previous``).
    """

    def write_rows(self, rows: Sequence[PartitionRow]) -> None:
        """Append ``rows`` in one transaction; prune what no restore needs any more.

        Each row's ``seq`` is the next of its partition, given here. A row of a
        scorer that no longer owns the partition (another one claimed it since,
        with a base of its own) is not written: a scorer frozen past its
        session timeout cannot bend the state its successor restores.
        """
        if not rows:
            return
        table = PARTITION_ROWS
        with _classified(), self._sessions.begin() as session:
            for r in rows:
                mine = (
                    (table.c.consumer_group == self._group)
                    & (table.c.topic == r.topic)
                    & (table.c.partition == r.partition)
                )
                last = session.execute(select(func.max(table.c.seq)).where(mine)).scalar()
                owner = session.execute(
                    select(table.c.owner)
                    .where(mine, table.c.kind == "base")
                    .order_by(table.c.seq.desc())
                    .limit(1)
                ).scalar()
                if not r.claim and owner not in (None, "", r.owner):
                    log.warning(
                        "not writing a checkpoint of %s[%d]: another scorer owns it now",
                        r.topic,
                        r.partition,
                    )
                    continue
                session.execute(
                    insert(table),
                    {
                        "consumer_group": self._group,
                        "topic": r.topic,
                        "partition": r.partition,
                        "seq": 0 if last is None else int(last) + 1,
                        "kind": r.kind,
                        "state": r.state,
                        "next_offset": r.next_offset,
                        "watermark_us": r.watermark_us,
                        "model_version": r.model_version,
                        "owner": r.owner,
                    },
                )
                if r.kind == "base":
                    self._prune(session, r.topic, r.partition)

    def _prune(self, session: Session, topic: str, partition: int) -> None:
        """Delete the rows before the previous base of one partition."""
        table = PARTITION_ROWS
        mine = (
            (table.c.consumer_group == self._group)
            & (table.c.topic == topic)
            & (table.c.partition == partition)
        )
        bases = session.execute(
            select(table.c.seq).where(mine, table.c.kind == "base").order_by(table.c.seq.desc())
        ).scalars().all()
        if len(bases) > 2:
            session.execute(delete(table).where(mine, table.c.seq < bases[1]))

    def rows(self, partition: Partition) -> list[PartitionRow]:
        """The newest base of ``partition`` and every row after it, in order."""
        return self._chain(partition, newest=True)

    def all_rows(self, partition: Partition) -> list[PartitionRow]:
        """Every stored row of ``partition`` (both kept bases), in order."""
        return self._chain(partition, newest=False)

    def _chain(self, partition: Partition, *, newest: bool) -> list[PartitionRow]:
        table = PARTITION_ROWS
        topic, number = partition
        with _classified(), self._sessions.begin() as session:
            found = session.execute(
                select(table)
                .where(
                    table.c.consumer_group == self._group,
                    table.c.topic == topic,
                    table.c.partition == number,
                )
                .order_by(table.c.seq)
            ).mappings().all()
        rows = [
            PartitionRow(
                topic=r["topic"],
                partition=r["partition"],
                seq=r["seq"],
                kind=r["kind"],
                state=bytes(r["state"]),
                next_offset=int(r["next_offset"]),
                watermark_us=r["watermark_us"],
                model_version=r["model_version"],
                owner=r["owner"],
            )
            for r in found
        ]
        if newest:
            bases = [i for i, r in enumerate(rows) if r.kind == "base"]
            rows = rows[bases[-1] :] if bases else []
        return rows

    def partitions(self) -> set[Partition]:
        """Partitions that have checkpoint rows."""
        table = PARTITION_ROWS
        with _classified(), self._sessions.begin() as session:
            found = session.execute(
                select(table.c.topic, table.c.partition)
                .where(table.c.consumer_group == self._group)
                .distinct()
            ).all()
        return {(t, int(p)) for t, p in found}

    def truncate(self, partition: Partition, from_seq: int) -> int:
        """Delete the rows of ``partition`` from ``from_seq`` on (back to an older good one)."""
        table = PARTITION_ROWS
        topic, number = partition
        with _classified(), self._sessions.begin() as session:
            result = session.execute(
                delete(table).where(
                    table.c.consumer_group == self._group,
                    table.c.topic == topic,
                    table.c.partition == number,
                    table.c.seq >= from_seq,
                )
            )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    def discard(self) -> int:
        """Delete every row of the group."""
        table = PARTITION_ROWS
        with _classified(), self._sessions.begin() as session:
            result = session.execute(delete(table).where(table.c.consumer_group == self._group))
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    def marks(self) -> dict[Partition, tuple[int | None, int]]:
        """Per partition, its newest row's event-time watermark and next offset."""
        table = PARTITION_ROWS
        newest = (
            select(table.c.topic, table.c.partition, func.max(table.c.seq).label("seq"))
            .where(table.c.consumer_group == self._group)
            .group_by(table.c.topic, table.c.partition)
            .subquery()
        )
        stmt = select(
            table.c.topic, table.c.partition, table.c.watermark_us, table.c.next_offset
        ).join(
            newest,
            (table.c.topic == newest.c.topic)
            & (table.c.partition == newest.c.partition)
            & (table.c.seq == newest.c.seq),
        ).where(table.c.consumer_group == self._group)
        with _classified(), self._sessions.begin() as session:
            found = session.execute(stmt).all()
        return {
            (topic, int(partition)): (None if mark is None else int(mark), int(offset))
            for topic, partition, mark, offset in found
        }
