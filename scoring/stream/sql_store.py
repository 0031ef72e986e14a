"""The SQL backend of the alert store: alerts and the scorer checkpoint in one transaction."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.pool import NullPool

from scoring.db.engine import in_memory, make_engine, make_sessionmaker
from scoring.db.repository import NewAlert, insert_alerts, load_checkpoints, save_checkpoint
from scoring.stream.ports import DependencyDown, SavedState

#: The scorer keeps one checkpoint per consumer group (see README: state store).
PARTITION_KEY = "all"


class SqlAlertStore:
    """Writes alerts idempotently and saves the scorer's state checkpoint atomically."""

    def __init__(self, engine: Engine, consumer_group: str) -> None:
        self._engine = engine
        self._sessions = make_sessionmaker(engine)
        self._group = consumer_group

    @property
    def reopenable(self) -> bool:
        """False for in-memory SQLite: a new connection would open another, empty database."""
        url = self._engine.url
        return not (url.get_backend_name() == "sqlite" and in_memory(url))

    def reopened(self) -> SqlAlertStore:
        """The same store over new connections (for a forked child: never share a pool)."""
        return SqlAlertStore(make_engine(self._engine.url, poolclass=NullPool), self._group)

    def write(self, alerts: Sequence[NewAlert], checkpoint: SavedState | None) -> int:
        """Insert alerts (duplicates ignored) and the checkpoint in one transaction."""
        with _unavailable_as_down(), self._sessions.begin() as session:
            inserted = insert_alerts(session, alerts) if alerts else 0
            if checkpoint is not None:
                offsets = {f"{t}:{p}": o for (t, p), o in checkpoint.positions.items()}
                save_checkpoint(
                    session,
                    self._group,
                    PARTITION_KEY,
                    offsets,
                    checkpoint.state,
                    checkpoint.model_version,
                )
        return inserted

    def load(self) -> SavedState | None:
        """Return the group's checkpoint, or None on a first start."""
        with _unavailable_as_down(), self._sessions.begin() as session:
            found = load_checkpoints(session, self._group).get(PARTITION_KEY)
        if found is None:
            return None
        positions = {}
        for key, offset in found.offsets.items():
            topic, _, partition = key.rpartition(":")
            positions[(topic, int(partition))] = int(offset)
        return SavedState(found.state, positions, found.model_version)


@contextmanager
def _unavailable_as_down() -> Iterator[None]:
    """Connection-level failures become DependencyDown; other SQL errors propagate."""
    try:
        yield
    except OperationalError as err:
        raise DependencyDown(f"database unavailable: {_first_line(err)}") from err
    except DBAPIError as err:
        if err.connection_invalidated:
            raise DependencyDown(f"database connection lost: {_first_line(err)}") from err
        raise


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
