"""Positions, checkpoint schedule and offset commits of the scorer, in one documented order.

1. the loop commits a batch's alerts to the database, then moves the
   positions past its messages (:meth:`Checkpointer.advance`);
2. between batches, when one is due, a checkpoint of the state and those
   positions is written (by a forked writer, see :mod:`.checkpoints`);
3. once it is written, exactly its positions are committed to Kafka.

So Kafka's committed offsets never pass the checkpoint's positions, and a
restart that restores the checkpoint and seeks there replays only events
whose alerts are idempotent. The checkpoint blob is sealed (format version
and checksum, :mod:`.sealed`); one that fails verification, or a missing one
while Kafka holds committed offsets for the group (the state was lost), is
refused with the recovery to follow, never replaced by an empty state.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from features.behaviour import BehaviourState
from scoring.stream.checkpoints import CheckpointOutcome, Checkpoints
from scoring.stream.metrics import ScorerMetrics
from scoring.stream.ports import AlertStore, Message, MessageSource, Partition, SavedState
from scoring.stream.sealed import CheckpointUnusable, seal, unseal


class CheckpointTiming(Protocol):
    """The settings a checkpointer follows."""

    @property
    def checkpoint_seconds(self) -> float:
        """How often a checkpoint is due."""
        ...

    @property
    def retry_max_seconds(self) -> float:
        """The longest wait before retrying a failed one."""
        ...

log = logging.getLogger(__name__)

RECOVERY = (
    "recover with `fraud checkpoint use-previous --db URL --group-id GROUP` (the previous "
    "checkpoint: more events replayed, alerts are idempotent) or restart the scorer with "
    "`--rebuild-state --history LAKE` (the state rebuilt from history, the topic replayed "
    "from its beginning); see docs/operations.md"
)


@dataclass(frozen=True)
class Restored:
    """A verified checkpoint: the state and the positions it reflects."""

    state: BehaviourState
    positions: dict[Partition, int]


def sealed_snapshot(
    state: BehaviourState, positions: dict[Partition, int], model_version: int | None
) -> SavedState:
    """The checkpoint of ``state`` at ``positions``, its blob sealed."""
    return SavedState(seal(state.to_bytes()), dict(positions), model_version)


def open_checkpoint(saved: SavedState, where: str) -> Restored:
    """Verify and decode a stored checkpoint; :class:`CheckpointUnusable` says why not."""
    payload = unseal(saved.state, where)
    try:
        state = BehaviourState.from_bytes(payload)
    except Exception as err:  # a verified blob that still does not decode: other format
        raise CheckpointUnusable(f"{where}: state does not decode ({err})") from None
    return Restored(state, dict(saved.positions))


class Checkpointer:
    """Owns the positions consumed, when checkpoints are due, and the offset commits."""

    def __init__(
        self,
        settings: CheckpointTiming,
        store: AlertStore,
        writer: Checkpoints,
        source: MessageSource,
        metrics: ScorerMetrics,
    ) -> None:
        self.settings = settings
        self.store = store
        self.writer = writer
        self.source = source
        self.metrics = metrics
        #: Next offset to read of each partition, past every message whose batch is durable.
        self.positions: dict[Partition, int] = {}
        #: Positions of the last checkpoint written or restored.
        self.written: dict[Partition, int] | None = None
        self._last_started = time.monotonic()
        #: When the last checkpoint was written or restored (for the checkpoint age).
        self._written_at = time.monotonic()

    # -- restore ------------------------------------------------------------------

    def restore(self, where: str) -> Restored | None:
        """The last checkpoint, verified; None on a first start.

        Waits for a checkpoint still being written (it is the one to restore).
        """
        outcome = self.writer.wait()
        if outcome is not None:
            self.ended(outcome)
        saved = self.store.load()
        if saved is None:
            return None
        restored = open_checkpoint(saved, where)
        self.positions = dict(restored.positions)
        self.written = dict(restored.positions)
        self._written_at = time.monotonic()
        return restored

    def start_fresh(self, positions: dict[Partition, int] | None = None) -> None:
        """No checkpoint: start from ``positions`` (or wherever the source begins)."""
        self.positions = dict(positions or {})
        self.written = None

    # -- progress -----------------------------------------------------------------

    def advance(self, messages: list[Message]) -> None:
        """Move the positions past ``messages``: their batch is durable."""
        positions = self.positions
        for m in messages:
            key = (m.topic, m.partition)
            if m.offset + 1 > positions.get(key, 0):
                positions[key] = m.offset + 1

    @property
    def dirty(self) -> bool:
        """True when something was consumed since the last checkpoint."""
        return self.positions != self.written and bool(self.positions)

    def age_seconds(self) -> float:
        """Seconds since the last checkpoint, while there is progress it does not hold."""
        return time.monotonic() - self._written_at if self.dirty else 0.0

    # -- writing ----------------------------------------------------------------

    def maybe_checkpoint(self, snapshot: Callable[[], SavedState]) -> None:
        """Between batches: collect a finished checkpoint, start the next one when due."""
        outcome = self.writer.poll()
        if outcome is not None:
            self.ended(outcome)
        if self.writer.running or not self.dirty:
            return
        if time.monotonic() - self._last_started >= self.settings.checkpoint_seconds:
            self._last_started = time.monotonic()
            self.writer.start(lambda store: store.write([], snapshot()), dict(self.positions))

    def checkpoint_now(self, snapshot: Callable[[], SavedState], write: Callable[[], None]) -> None:
        """At shutdown: let a running checkpoint end, then write the final one in-line.

        ``write`` stores ``snapshot()`` (with the caller's retries).
        """
        outcome = self.writer.wait()
        if outcome is not None:
            self.ended(outcome)
        if not self.dirty:
            return
        positions = dict(self.positions)
        write()
        # Not timed: at shutdown nothing waits for it; the gauges keep the last running one.
        self.ended(CheckpointOutcome(positions, True), timed=False)

    def ended(self, outcome: CheckpointOutcome, *, timed: bool = True) -> None:
        """After a checkpoint: commit its positions to Kafka, or schedule a retry."""
        metrics = self.metrics
        if not outcome.written:
            log.warning("checkpoint not written (%s); retrying soon", outcome.error)
            metrics.health.last_error = f"checkpoint: {outcome.error}"[:500]
            if outcome.dependency_down:
                metrics.retries.labels(dependency="database").inc()
            retry_in = min(self.settings.retry_max_seconds, self.settings.checkpoint_seconds)
            self._last_started = time.monotonic() - self.settings.checkpoint_seconds + retry_in
            return
        self.written = dict(outcome.positions)
        self._written_at = time.monotonic()
        if outcome.positions:
            try:
                self.source.commit(dict(outcome.positions))
            except Exception as err:
                log.warning("offset commit failed (%s); the checkpoint keeps the positions", err)
        metrics.last_checkpoint.set(time.time())
        metrics.checkpoints.inc()
        if timed:
            metrics.checkpoint_seconds.set(outcome.seconds)
            metrics.checkpoint_pause_seconds.set(outcome.pause_seconds)
