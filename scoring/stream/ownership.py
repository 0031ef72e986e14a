"""The partitions a scorer owns: their state, positions, checkpoints and offset commits.

On (re)assignment a partition the scorer keeps keeps its state and position;
a new one is restored from its checkpoint rows (newest base plus deltas,
verified); one that cannot be restored — an unusable row, or no rows while
Kafka holds a committed offset for it (its state was lost) — is *held*:
paused, reported, and retried until it can be (``fraud checkpoint
use-previous``) or the scorer runs with ``--rebuild-state``. The other
partitions go on.

Checkpoints, between batches every ``checkpoint_seconds``: each partition
consumed since its last row gets one new row (a delta, or a base when due),
all written by a forked writer in one transaction; then exactly those rows'
offsets are committed to Kafka. The database rows are what a restore reads;
Kafka's committed offsets follow them (for lag monitoring and to recognise
a lost state).
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass

import pyarrow as pa

from features import spec
from features.behaviour import BehaviourConfig
from features.timebase import to_epoch_us
from scoring.stream.checkpoints import CheckpointOutcome, Checkpoints, Job
from scoring.stream.metrics import ScorerMetrics
from scoring.stream.partitions import PartitionState
from scoring.stream.ports import (
    DependencyDown,
    Message,
    MessageSource,
    Partition,
    PartitionStore,
    RowsRejected,
)
from scoring.stream.sealed import CheckpointUnusable
from scoring.stream.settings import ScorerSettings

log = logging.getLogger(__name__)

RECOVERY = (
    "recover with `fraud checkpoint use-previous --db URL --group-id GROUP` (the older "
    "checkpoint rows: more events replayed, alerts are idempotent) or restart the scorers "
    "with `--rebuild-state --history LAKE`; see docs/operations.md"
)


@dataclass
class _InFlight:
    """A checkpoint being written: which partitions, their changes, the rows planned."""

    changes: dict[Partition, tuple[set[str], set[str]]]
    rows: dict[Partition, tuple[int, str, int]]  # seq, kind, next offset


def partition_of(customer_id: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives a message keyed by ``customer_id``."""
    from kafka.partitioner.default import murmur2

    return (murmur2(customer_id.encode("utf-8")) & 0x7FFFFFFF) % partitions


class OwnedPartitions:
    """The scorer's partitions: restore, hold, checkpoint and commit."""

    def __init__(
        self,
        settings: ScorerSettings,
        store: PartitionStore,
        writer: Checkpoints,
        source: MessageSource,
        metrics: ScorerMetrics,
    ) -> None:
        self.settings = settings
        self.store = store
        self.writer = writer
        self.source = source
        self.metrics = metrics
        self.config = BehaviourConfig()
        self.model_version: int | None = None
        self.states: dict[Partition, PartitionState] = {}
        #: Partitions that cannot be restored now, with why.
        self.blocked: dict[Partition, str] = {}
        self._in_flight: _InFlight | None = None
        self._last_started = time.monotonic()
        self._written_at = time.monotonic()
        self._history: pa.Table | None = None
        #: This scorer's id in the rows it writes (a former owner's rows are refused).
        self.owner = uuid.uuid4().hex

    # -- assignment ---------------------------------------------------------------

    def warm_from(self, history: pa.Table | None) -> None:
        """Keep labelled history to build partitions that have no checkpoint yet."""
        self._history = history

    def assign(self, partitions: list[Partition]) -> dict[Partition, int]:
        """Keep, restore or hold each assigned partition; the positions to seek to."""
        owned = {p for p in partitions if p[0] == self.settings.topic}
        for key in list(self.states):
            if key not in owned:
                del self.states[key]  # its rows stay; its next owner restores them
        for key in list(self.blocked):
            if key not in owned:
                del self.blocked[key]
        positions: dict[Partition, int] = {}
        for key in sorted(owned):
            state = self.states.get(key) or self._restore(key)
            if state is None:
                continue
            self.states[key] = state
            if state.next_offset is not None:
                positions[key] = state.next_offset
        self._report()
        return positions

    def _restore(self, key: Partition) -> PartitionState | None:
        """Restore one partition; None (and held) when it cannot be."""
        try:
            rows = self.store.rows(key)
            if rows:
                try:
                    state = PartitionState.restore(key, self.config, rows)
                except CheckpointUnusable as err:
                    if not self.settings.rebuild_state:
                        raise
                    log.warning("%s; --rebuild-state: rebuilding the partition", err)
                    self.store.truncate(key, 0)
                    return self._fresh(key)
                self.metrics.partitions_restored.inc()
                self.metrics.health.partitions_restored += 1
                log.info("restored partition %s[%d] at offset %s", *key, state.next_offset)
                return state
            return self._fresh(key)
        except (CheckpointUnusable, DependencyDown) as err:
            reason = f"{err}; {RECOVERY}" if isinstance(err, CheckpointUnusable) else str(err)
            self._hold(key, reason)
            return None

    def _fresh(self, key: Partition) -> PartitionState:
        """A partition without rows: empty (first start) or rebuilt — never a lost state."""
        committed = self.source.committed([key])
        if committed and not self.settings.rebuild_state:
            raise CheckpointUnusable(
                f"no state checkpoint for partition {key[0]}[{key[1]}], but Kafka has a "
                f"committed offset for it ({committed[key]}): its state was lost, and scoring "
                "it from there with an empty one would give other scores than the batch path; "
                "restart the scorers with `--rebuild-state --history LAKE`"
            )
        state = self._built(key)
        if committed or state.next_offset is None:
            # From the partition's first offset: a first start, or a rebuild (the whole
            # topic again; repeats are dropped). An explicit position, so a batch dropped
            # in a rebalance is read again rather than skipped.
            state.next_offset = self.source.beginning_offsets([key]).get(key, 0)
        return state

    def _built(self, key: Partition) -> PartitionState:
        """A partition's state from the history (if any), before its first live event."""
        state = PartitionState(key, self.config)
        history = self._history
        if history is not None and history.num_rows:
            count = self.source.partition_count(key[0]) or 1
            ids = history.column(spec.CUSTOMER_ID).to_pylist()
            owner = {cid: partition_of(cid, count) for cid in set(ids)}
            mine = [i for i, cid in enumerate(ids) if owner[cid] == key[1]]
            part = history.take(pa.array(mine, pa.int64()))
            times = to_epoch_us(part.column(spec.TIMESTAMP))
            order = times.argsort(kind="stable")
            part, times = part.take(pa.array(order)), times[order]
            state.update_and_read(part, times)
            state.next_offset = 0
        return state

    def warm_all(self) -> None:
        """First start with history: a base for every partition, built once for the group.

        Before joining the group (a replay of a large history takes longer than
        the group allows between polls); a scorer that finds rows skips it.
        """
        if self._history is None or self.store.partitions():
            return
        count = self.source.partition_count(self.settings.topic) or 0
        rows = []
        for number in range(count):
            key = (self.settings.topic, number)
            state = self._built(key)
            state.next_offset = state.next_offset or 0
            rows.append(state.encode_row(state.take_changes(), "base", 0, None, ""))
        try:
            self.store.write_rows(rows)
            log.info("warmed %d partitions from history", count)
        except RowsRejected:
            log.info("another scorer warmed the partitions from history first")

    def _hold(self, key: Partition, reason: str) -> None:
        log.error("holding partition %s[%d]: %s", key[0], key[1], reason)
        self.blocked[key] = reason
        self.source.hold([key])

    def retry_held(self) -> dict[Partition, int]:
        """Try the held partitions again; the positions of those now restored."""
        positions = {}
        for key in list(self.blocked):
            del self.blocked[key]
            state = self._restore(key)
            if state is not None:
                self.states[key] = state
                self.source.release([key])
                if state.next_offset is not None:
                    positions[key] = state.next_offset
        self._report()
        return positions

    def _report(self) -> None:
        health = self.metrics.health
        health.partitions_owned = sorted(p for _, p in self.states)
        health.state = "; ".join(self.blocked.values())
        self.metrics.partitions_owned.set(len(self.states))
        self.metrics.partitions_held.set(len(self.blocked))

    # -- progress -----------------------------------------------------------------------

    def advance(self, messages: list[Message]) -> None:
        """Move each partition's position past ``messages`` (their batch is durable)."""
        states = self.states
        for m in messages:
            state = states.get((m.topic, m.partition))
            if state is not None and (state.next_offset is None or m.offset >= state.next_offset):
                state.next_offset = m.offset + 1

    def rewind(self, keys: set[Partition]) -> dict[Partition, int]:
        """Replace these partitions' states by their checkpoints; the positions to seek to."""
        positions = {}
        for key in keys:
            self.states.pop(key, None)
            state = self._restore(key)
            if state is None:
                continue
            self.states[key] = state
            offset = state.next_offset
            if offset is None:
                offset = self.source.beginning_offsets([key]).get(key, 0)
            positions[key] = offset
        return positions

    @property
    def dirty(self) -> list[Partition]:
        """Partitions consumed since their last checkpoint row."""
        return [k for k, s in self.states.items() if s.dirty]

    def age_seconds(self) -> float:
        """Seconds since the last checkpoint, while there is progress it does not hold."""
        return time.monotonic() - self._written_at if self.dirty else 0.0

    # -- checkpoints ----------------------------------------------------------------------

    def maybe_checkpoint(self) -> None:
        """Between batches: collect a finished checkpoint, start the next when due."""
        outcome = self.writer.poll()
        if outcome is not None:
            self._ended(outcome)
        if self.writer.running or not self.dirty:
            return
        if time.monotonic() - self._last_started < self.settings.checkpoint_seconds:
            return
        self._last_started = time.monotonic()
        job, positions = self._plan()
        self.writer.start(job, positions)

    def _plan(self) -> tuple[Job, dict[Partition, int]]:
        """Take every dirty partition's changes; the job a writer runs to store them."""
        changes: dict[Partition, tuple[set[str], set[str]]] = {}
        rows: dict[Partition, tuple[int, str, int]] = {}
        for key in self.dirty:
            state = self.states[key]
            changes[key] = state.take_changes()
            kind = state.row_kind()
            assert state.next_offset is not None
            rows[key] = (state.seq + 1, kind, state.next_offset)
        self._in_flight = _InFlight(changes, rows)
        states, version = self.states, self.model_version

        owner = self.owner

        def job(store: PartitionStore) -> None:
            store.write_rows(
                [
                    states[key].encode_row(changes[key], rows[key][1], rows[key][0], version, owner)
                    for key in rows
                ]
            )

        return job, {key: row[2] for key, row in rows.items()}

    def checkpoint_now(self, keys: list[Partition] | None = None) -> None:
        """Write the dirty partitions' rows in-line (at shutdown, or before a revocation)."""
        outcome = self.writer.wait()
        if outcome is not None:
            self._ended(outcome)
        targets = [k for k in (keys if keys is not None else self.dirty) if k in self.states]
        targets = [k for k in targets if self.states[k].dirty]
        if not targets:
            return
        changes = {k: self.states[k].take_changes() for k in targets}
        rows = []
        for key in targets:
            state = self.states[key]
            rows.append(state.encode_row(changes[key], state.row_kind(), state.seq + 1,
                                         self.model_version, self.owner))
        try:
            self.store.write_rows(rows)
        except (DependencyDown, RowsRejected):
            for key in targets:
                self.states[key].give_back(changes[key])
            raise
        for row in rows:
            changed = len(changes[row.key][0])
            self.states[row.key].written(row.seq, row.kind, row.next_offset, changed)
        self._written_at = time.monotonic()

    def _ended(self, outcome: CheckpointOutcome) -> None:
        """After a forked checkpoint: commit its offsets, or give its changes back."""
        flight, self._in_flight = self._in_flight, None
        if flight is None:
            return
        if not outcome.written:
            log.warning("checkpoint not written (%s); retrying soon", outcome.error)
            self.metrics.health.last_error = f"checkpoint: {outcome.error}"[:500]
            if outcome.dependency_down:
                self.metrics.retries.labels(dependency="database").inc()
            for key, changes in flight.changes.items():
                if key in self.states:
                    self.states[key].give_back(changes)
            retry_in = min(self.settings.retry_max_seconds, self.settings.checkpoint_seconds)
            self._last_started = time.monotonic() - self.settings.checkpoint_seconds + retry_in
            return
        commits = {}
        for key, (seq, kind, offset) in flight.rows.items():
            state = self.states.get(key)
            if state is not None:
                state.written(seq, kind, offset, len(flight.changes[key][0]))
                commits[key] = offset
        self._written_at = time.monotonic()
        if commits:
            try:
                self.source.commit(commits)
            except Exception as err:
                log.warning("offset commit failed (%s); the checkpoint rows keep them", err)
        metrics = self.metrics
        metrics.last_checkpoint.set(time.time())
        metrics.checkpoints.inc()
        metrics.checkpoint_seconds.set(outcome.seconds)
        metrics.checkpoint_pause_seconds.set(outcome.pause_seconds)
