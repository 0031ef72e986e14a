"""Writing the scorer's state checkpoints without stopping the scoring.

A checkpoint is the whole behavioural state (tens of MB for a bank of a few
thousand cards and terminals) plus the positions it reflects. Encoding and
writing it takes a few hundred milliseconds; done in the scoring loop, every
event arriving meanwhile waits, which is the whole latency tail.

:class:`ForkedCheckpoints` takes the snapshot the way Redis's ``BGSAVE`` does:
``fork()`` gives a child process a frozen, copy-on-write image of the state for
the cost of copying page tables (milliseconds); the child encodes and writes
it while the parent goes on scoring, and the parent commits the snapshot's
positions to Kafka once the child reports success. The child opens its own
database connection — never one inherited from the parent — and leaves with
``os._exit`` so that nothing inherited (Kafka sockets, the model client, the
parent's connection pool) is closed or flushed from the copy.

:class:`InlineCheckpoints` writes in the caller's thread: for platforms without
``fork`` and for unit tests with in-memory stores (a child's writes to an
in-memory store would be lost with the child).

A forked writer has a time limit (``timeout_seconds``): a child stuck on a lock
or a half-open connection is killed (its connection dies with it, releasing
any lock it held) and the checkpoint is retried, so a stuck writer can never
stop checkpoints and offset commits for good.

Both give the same guarantee: a checkpoint is written only between batches,
after every alert of the events before its positions is committed, so the
stored (state, positions) pair is always consistent and a restart from it
replays the rest (alerts are idempotent).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from scoring.stream.ports import DependencyDown, Partition

#: What a checkpoint does with a freshly opened store: encode the snapshot, then write it.
Job = Callable[[Any], None]

log = logging.getLogger(__name__)

#: How much lower the checkpoint writer's CPU priority is than the scorer's: on a
#: small machine it competes with the scorer, whose events are the ones waiting.
CHILD_NICENESS = 10
#: Exit codes of a checkpoint child.
_WRITTEN, _FAILED, _DEPENDENCY_DOWN = 0, 1, 3


@dataclass(frozen=True)
class CheckpointOutcome:
    """How a checkpoint ended: written (its positions may be committed) or not, and why."""

    positions: dict[Partition, int]
    written: bool
    error: str | None = None
    #: True when the database was unreachable (a retryable failure).
    dependency_down: bool = False
    #: From start to end of the checkpoint.
    seconds: float = 0.0
    #: How long the scoring loop was held up by it (the fork, or the whole inline write).
    pause_seconds: float = 0.0


class Checkpoints(Protocol):
    """Starts a checkpoint and reports when it has ended."""

    def start(self, job: Job, positions: dict[Partition, int]) -> bool:
        """Begin ``job`` (which writes the checkpoint of ``positions``); False if one still runs."""
        ...

    def poll(self) -> CheckpointOutcome | None:
        """The outcome of the checkpoint that just ended, else None (non-blocking)."""
        ...

    def wait(self) -> CheckpointOutcome | None:
        """Block until the running checkpoint (if any) ends; its outcome."""
        ...

    @property
    def running(self) -> bool:
        """True while a checkpoint is being written."""
        ...


class InlineCheckpoints:
    """Writes each checkpoint at once, in the caller's thread."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self._outcome: CheckpointOutcome | None = None

    @property
    def running(self) -> bool:
        """Never: a checkpoint is finished when :meth:`start` returns."""
        return False

    def start(self, job: Job, positions: dict[Partition, int]) -> bool:
        """Write the checkpoint now; the outcome is returned by the next :meth:`poll`."""
        started = time.monotonic()
        try:
            job(self._store)
        except DependencyDown as err:
            self._outcome = CheckpointOutcome(positions, False, str(err), dependency_down=True)
        else:
            took = time.monotonic() - started
            self._outcome = CheckpointOutcome(positions, True, seconds=took, pause_seconds=took)
        return True

    def poll(self) -> CheckpointOutcome | None:
        """The last checkpoint's outcome, once."""
        outcome, self._outcome = self._outcome, None
        return outcome

    def wait(self) -> CheckpointOutcome | None:
        """Same as :meth:`poll`: nothing is ever running."""
        return self.poll()


class ForkedCheckpoints:
    """Writes each checkpoint from a forked copy of the process (see the module docstring).

    ``open_store`` is called in the child to build a store with fresh
    connections (for SQL: a new engine from the same URL).
    """

    def __init__(self, open_store: Callable[[], Any], *, timeout_seconds: float = 120.0) -> None:
        self._open_store = open_store
        self.timeout_seconds = timeout_seconds
        #: Rebalance callbacks may wait from the Kafka client's thread: one reaper at a time.
        self._lock = threading.Lock()
        self._child: int | None = None
        self._positions: dict[Partition, int] = {}
        self._started = 0.0
        self._pause = 0.0
        #: The outcome of a checkpoint written in-line because fork() failed.
        self._inline: CheckpointOutcome | None = None

    @property
    def running(self) -> bool:
        """True while the child is writing."""
        return self._child is not None

    def start(self, job: Job, positions: dict[Partition, int]) -> bool:
        """Fork a child that runs ``job``; False if the previous one still runs."""
        with self._lock:
            if self._child is not None:
                return False
            self._positions, self._started = dict(positions), time.monotonic()
            try:
                pid = os.fork()
            except OSError as err:  # no memory or process slots left: write it here
                log.warning("cannot fork the checkpoint writer (%s): writing in-line", err)
                self._inline = _outcome(
                    self._positions,
                    _write(self._open_store, job),
                    time.monotonic() - self._started,
                    self._started,
                )
                return True
            if pid == 0:  # the child: write, then leave without running any cleanup
                _child_main(self._open_store, job)
            self._child = pid
            self._pause = time.monotonic() - self._started
            return True

    def poll(self) -> CheckpointOutcome | None:
        """The outcome once the child has exited (or was killed for taking too long)."""
        outcome = self._reap(os.WNOHANG)
        if outcome is None and self._overdue():
            return self._kill()
        return outcome

    def _overdue(self) -> bool:
        return self._child is not None and (
            time.monotonic() - self._started > self.timeout_seconds
        )

    def _kill(self) -> CheckpointOutcome | None:
        """Kill an overdue writer; the outcome is a failure the caller retries."""
        with self._lock:
            child = self._child
            if child is None:
                return None
            log.error(
                "checkpoint writer %d still running after %.0f s: killing it",
                child,
                self.timeout_seconds,
            )
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
            self._child = None
        return CheckpointOutcome(
            self._positions,
            False,
            f"checkpoint writer timed out after {self.timeout_seconds:.0f} s and was killed",
            dependency_down=True,
            seconds=time.monotonic() - self._started,
        )

    def wait(self) -> CheckpointOutcome | None:
        """Block until the child exits or its time is up; its outcome (None if none ran)."""
        while self._child is not None and not self._overdue():
            outcome = self._reap(os.WNOHANG)
            if outcome is not None:
                return outcome
            time.sleep(0.01)
        if self._child is not None:
            return self._kill()
        return self._reap(os.WNOHANG)

    def _reap(self, flags: int) -> CheckpointOutcome | None:
        with self._lock:
            if self._inline is not None:
                outcome, self._inline = self._inline, None
                return outcome
            if self._child is None:
                return None
            pid, status = os.waitpid(self._child, flags)
            if pid == 0:
                return None
            self._child = None
        code = os.waitstatus_to_exitcode(status)
        return _outcome(self._positions, code, self._pause, self._started)


def _child_main(open_store: Callable[[], Any], job: Job) -> None:
    """The forked writer's whole life: it must never return into the scorer's code."""
    code = _FAILED
    try:
        with contextlib.suppress(OSError):
            os.nice(CHILD_NICENESS)
        code = _write(open_store, job)
    finally:
        os._exit(code)


def _outcome(
    positions: dict[Partition, int], code: int, pause: float, started: float
) -> CheckpointOutcome:
    """The outcome of a writer that ended with exit ``code`` (negative: killed by a signal)."""
    seconds = time.monotonic() - started
    if code == _WRITTEN:
        return CheckpointOutcome(positions, True, seconds=seconds, pause_seconds=pause)
    if code == _DEPENDENCY_DOWN:
        return CheckpointOutcome(positions, False, "database unavailable", True, seconds)
    reason = f"signal {-code}" if code < 0 else f"exit status {code}"
    return CheckpointOutcome(positions, False, f"checkpoint writer failed ({reason})")


def _write(open_store: Callable[[], Any], job: Job) -> int:
    """Run the job on a freshly opened store; an exit code for the parent. Never raises.

    Jobs encode their snapshot before the database transaction begins, so the
    transaction (and, on SQLite, the write lock) lasts only for the write.
    """
    try:
        job(open_store())
    except DependencyDown as err:
        log.warning("checkpoint not written: %s", err)
        return _DEPENDENCY_DOWN
    except BaseException:
        log.exception("checkpoint writer failed")
        return _FAILED
    return _WRITTEN


def default_checkpoints(
    store: Any, open_store: Callable[[], Any], *, timeout_seconds: float = 120.0
) -> Checkpoints:
    """Forked checkpoints where the platform can fork, inline ones elsewhere."""
    if hasattr(os, "fork"):
        return ForkedCheckpoints(open_store, timeout_seconds=timeout_seconds)
    return InlineCheckpoints(store)
