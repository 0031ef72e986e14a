"""Checkpoints written by a forked child: consistent snapshots, outcomes, failures.

The child writes to a real SQLite file (a child's writes to an in-memory fake
would vanish with it); no other service is needed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from scoring.db.engine import make_engine
from scoring.db.migrate import upgrade
from scoring.stream.checkpoints import ForkedCheckpoints, InlineCheckpoints
from scoring.stream.ports import AlertStore, DependencyDown, SavedState
from scoring.stream.sql_store import SqlAlertStore

POSITIONS = {("transactions", 0): 41, ("transactions", 1): 7}


@pytest.fixture
def store(tmp_path: Path) -> SqlAlertStore:
    engine = make_engine(f"sqlite:///{tmp_path / 'alerts.db'}")
    upgrade(engine)
    return SqlAlertStore(engine, "scorer")


def writes(snapshot: Callable[[], SavedState]) -> Callable[[AlertStore], None]:
    """The checkpoint job that stores ``snapshot()``."""
    return lambda store: store.write([], snapshot())


def slow(open_store: Callable[[], AlertStore], seconds: float) -> Callable[[], AlertStore]:
    """Open the store only after ``seconds``: the parent moves on meanwhile."""

    def opened() -> AlertStore:
        time.sleep(seconds)
        return open_store()

    return opened


def test_the_child_writes_the_state_as_it_was_at_the_fork(store: SqlAlertStore) -> None:
    state = bytearray(b"state at the fork")
    checkpoints = ForkedCheckpoints(store.reopened)

    def snapshot_later() -> SavedState:
        time.sleep(0.3)  # the parent has changed its state by now
        return SavedState(bytes(state), POSITIONS, 3)

    assert checkpoints.start(writes(snapshot_later), POSITIONS)
    state[:] = b"changed by the parent afterwards"  # the child's copy must not see this
    assert checkpoints.running
    assert checkpoints.poll() is None  # still sleeping
    outcome = checkpoints.wait()

    assert outcome is not None and outcome.written and outcome.positions == POSITIONS
    assert outcome.seconds >= 0.3
    assert 0 < outcome.pause_seconds < 0.3  # the parent only waited for the fork
    assert not checkpoints.running
    saved = store.load()
    assert saved == SavedState(b"state at the fork", POSITIONS, 3)


def test_only_one_checkpoint_runs_at_a_time(store: SqlAlertStore) -> None:
    checkpoints = ForkedCheckpoints(slow(store.reopened, 0.3))
    snapshot = lambda: SavedState(b"first", POSITIONS)  # noqa: E731

    assert checkpoints.start(writes(snapshot), POSITIONS)
    assert not checkpoints.start(writes(lambda: SavedState(b"second", POSITIONS)), POSITIONS)
    assert checkpoints.wait() is not None
    assert checkpoints.wait() is None  # nothing left to wait for
    assert store.load() == SavedState(b"first", POSITIONS)


def test_a_database_outage_in_the_child_is_reported_as_retryable(store: SqlAlertStore) -> None:
    def unreachable() -> AlertStore:
        raise DependencyDown("database unavailable: connection refused")

    checkpoints = ForkedCheckpoints(unreachable)
    checkpoints.start(writes(lambda: SavedState(b"s", POSITIONS)), POSITIONS)
    outcome = checkpoints.wait()

    assert outcome is not None and not outcome.written and outcome.dependency_down
    assert store.load() is None


def test_a_failing_snapshot_is_reported_not_raised(store: SqlAlertStore) -> None:
    def broken() -> SavedState:
        raise ValueError("cannot encode")

    checkpoints = ForkedCheckpoints(store.reopened)
    checkpoints.start(writes(broken), POSITIONS)
    outcome = checkpoints.wait()

    assert outcome is not None and not outcome.written and not outcome.dependency_down
    assert "exit status 1" in (outcome.error or "")
    assert store.load() is None


def test_inline_checkpoints_write_at_once_and_report_on_the_next_poll(
    store: SqlAlertStore,
) -> None:
    checkpoints = InlineCheckpoints(store)

    assert checkpoints.start(writes(lambda: SavedState(b"now", POSITIONS, 1)), POSITIONS)
    assert store.load() == SavedState(b"now", POSITIONS, 1)
    outcome = checkpoints.poll()
    assert outcome is not None and outcome.written
    assert checkpoints.poll() is None


def test_only_a_database_other_connections_can_open_is_written_from_a_child(
    store: SqlAlertStore,
) -> None:
    assert store.reopenable
    assert not SqlAlertStore(make_engine("sqlite://"), "scorer").reopenable


def test_when_fork_fails_the_checkpoint_is_written_in_line(
    store: SqlAlertStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_fork() -> int:
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr("scoring.stream.checkpoints.os.fork", no_fork)
    checkpoints = ForkedCheckpoints(store.reopened)

    assert checkpoints.start(writes(lambda: SavedState(b"here", POSITIONS)), POSITIONS)
    assert not checkpoints.running
    outcome = checkpoints.poll()
    assert outcome is not None and outcome.written and outcome.pause_seconds > 0
    assert store.load() == SavedState(b"here", POSITIONS)


def test_a_stuck_writer_is_killed_after_its_time_limit_and_the_next_one_writes(
    store: SqlAlertStore,
) -> None:
    """A child stuck on a lock or a half-open connection must not stop checkpoints for good."""
    stuck = ForkedCheckpoints(slow(store.reopened, 3600), timeout_seconds=0.5)
    assert stuck.start(writes(lambda: SavedState(b"never written", POSITIONS, 1)), POSITIONS)
    started = time.monotonic()
    outcome = None
    while outcome is None and time.monotonic() - started < 10:
        outcome = stuck.poll()
        time.sleep(0.05)
    assert outcome is not None and not outcome.written
    assert "timed out" in (outcome.error or "") and outcome.dependency_down
    assert 0.5 <= time.monotonic() - started < 5
    assert not stuck.running and store.load() is None

    fine = ForkedCheckpoints(store.reopened, timeout_seconds=30)
    assert fine.start(writes(lambda: SavedState(b"written", POSITIONS, 2)), POSITIONS)
    assert (fine.wait() or outcome).written
    assert store.load() == SavedState(b"written", POSITIONS, 2)


def test_wait_gives_up_on_a_stuck_writer_too(store: SqlAlertStore) -> None:
    stuck = ForkedCheckpoints(slow(store.reopened, 3600), timeout_seconds=0.3)
    stuck.start(writes(lambda: SavedState(b"x", POSITIONS, 1)), POSITIONS)
    started = time.monotonic()
    outcome = stuck.wait()
    assert outcome is not None and not outcome.written and time.monotonic() - started < 5
