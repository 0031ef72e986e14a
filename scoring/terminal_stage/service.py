"""The terminal stage: the one owner of terminal state, shared with every scorer.

It reads every partition of ``transactions`` and ``fraud-labels`` (in its own
consumer group, holding until it owns all of them), keeps the terminal
histories with :class:`~features.terminal_state.TerminalStore` — the same
code the batch path replays — and after each batch publishes what changed,
with how far it has read (:mod:`.protocol`), to the state topic that every
scorer follows. Its state and input positions are checkpointed like a
scorer's (sealed, two kept, by a forked writer); input offsets are committed
only once a checkpoint holding them is written, so after ``kill -9`` it
restores the checkpoint, reads again from its positions and publishes again
what it had published since: replicas upsert, so nothing counts twice.

Invalid transactions are skipped here (the scorer owning their partition
sends them to the dead-letter topic); invalid labels go to the dead-letter
topic from here, the only reader of the labels topic.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np
import pyarrow as pa

from features import spec
from features.behaviour import BehaviourConfig, labelled_us, terminal_store
from features.state_codec import decode_terminals, encode_terminals
from features.terminal_state import Entry, TerminalStore
from features.timebase import DAY_US, to_epoch_us
from scoring.stream.checkpointer import RECOVERY, Checkpointer
from scoring.stream.checkpoints import Checkpoints, InlineCheckpoints
from scoring.stream.decoder import BatchDecoder
from scoring.stream.metrics import ScorerMetrics
from scoring.stream.ports import (
    AlertStore as CheckpointStore,
)
from scoring.stream.ports import (
    DeadLetterSink,
    Message,
    MessageSource,
    Partition,
    SavedState,
)
from scoring.stream.retry import Aborted, Retrier
from scoring.stream.sealed import CheckpointUnusable, seal, unseal
from scoring.terminal_stage.protocol import (
    PartitionProgress,
    StageProgress,
    StateMessage,
    config_from_json,
    config_json,
    encode,
)
from scoring.terminal_stage.settings import StageSettings

log = logging.getLogger(__name__)
T = TypeVar("T")


class StatePublisher(Protocol):
    """The state topic: every scorer's replica follows it."""

    def publish(self, message: bytes) -> None:
        """Queue one message."""
        ...

    def flush(self) -> int:
        """Wait until every queued message is written; the next offset (DependencyDown if not)."""
        ...


class FloorSource(Protocol):
    """How far back any scorer may still need terminal history."""

    def marks(self) -> dict[Partition, tuple[int | None, int]]:
        """Per scorer partition, its newest checkpoint row's watermark and next offset."""
        ...


@dataclass
class StageSummary:
    """What one run of the stage did (printed as JSON by ``fraud terminal-stage``)."""

    transactions: int = 0
    labels: int = 0
    repeats: int = 0
    invalid_transactions: int = 0
    dead_letters: int = 0
    messages_published: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        """Figures for the last line of stdout."""
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in vars(self).items()}


class TerminalStage:
    """One terminal stage process; its source, sinks and stores are injected."""

    def __init__(
        self,
        settings: StageSettings,
        config: BehaviourConfig,
        source: MessageSource,
        publisher: StatePublisher,
        store: CheckpointStore,
        floor: FloorSource,
        dead_letters: DeadLetterSink,
        *,
        metrics: ScorerMetrics | None = None,
        history: pa.Table | None = None,
        checkpoints: Checkpoints | None = None,
    ) -> None:
        self.settings = settings
        self.config = config
        self.source = source
        self.publisher = publisher
        self.store = store
        self.floor = floor
        self.dead_letters = dead_letters
        self.metrics = metrics or ScorerMetrics()
        self.summary = StageSummary()
        self.checkpointer = Checkpointer(
            settings, store, checkpoints or InlineCheckpoints(store), source, self.metrics
        )
        self.decoder = BatchDecoder(settings.labels_topic)
        self._history = history
        self.state: TerminalStore = self._new_state()
        self.epoch = uuid.uuid4().hex
        self.next_output_offset = 0
        self.reached: dict[Partition, int] = {}
        self.expiry_floor_us: int | None = None
        self._last_sweep_us: int | None = None
        self._stop = threading.Event()
        self._retry = Retrier(settings, self.metrics, source.keep_alive, self._stop.is_set)
        self._lock = threading.Lock()
        self._assigned = False
        self._partial = False
        self._last_publish = 0.0
        self._published_progress: StageProgress | None = None
        self._idle_since: float | None = None
        #: Entries changed since the last message published.
        self._pending_entries: list[Entry] = []

    def _new_state(self) -> TerminalStore:
        return terminal_store(self.config)

    def stop(self) -> None:
        """Finish the current batch and return (signal-safe)."""
        self._stop.set()

    # -- lifecycle ------------------------------------------------------------------

    def run(self) -> StageSummary:
        """Restore or warm the state, then follow both topics until stopped (or idle)."""
        started = time.monotonic()
        try:
            self._start()
            self.source.on_assignment(self._on_assigned, lambda partitions: None)
            while not self._stop.is_set():
                if self._partial:
                    self.source.rejoin()
                    self._partial = False
                messages = self.source.poll(self.settings.max_wait_ms, self.settings.max_batch)
                if self._partial or not self._assigned:
                    continue
                if messages:
                    self._idle_since = time.monotonic()
                    self._process(messages)
                elif self._idle_for_too_long():
                    break
                self._between_batches()
            if self._assigned:
                self._publish(force=True)
                self._checkpoint_now()
        except Aborted:
            log.warning("stopped while a dependency was down; the last checkpoint stands")
        finally:
            self.summary.seconds = time.monotonic() - started
            self.source.close()
        return self.summary

    def _idle_for_too_long(self) -> bool:
        limit = self.settings.exit_when_idle_seconds
        return limit is not None and self._idle_since is not None and (
            time.monotonic() - self._idle_since >= limit
        )

    def _start(self) -> None:
        """Restore the checkpoint, or start a new epoch (warmed from history) and write one.

        Scorers load the stage's checkpoint to build their replica, so one
        exists before anything is published.
        """
        logged_at = 0.0
        while not self._stop.is_set():
            saved = self._retry(self.store.load, "loading the checkpoint", "database")
            if saved is None:
                break
            try:
                self._restore(saved)
                self.metrics.health.state = ""
                return
            except CheckpointUnusable as err:
                if self.settings.rebuild_state:
                    log.warning("%s; --rebuild-state: rebuilding from history", err)
                    break
                reason = f"{err}; {RECOVERY}"
                self.metrics.health.state = reason  # hold (never a crash loop) until recovered
                if time.monotonic() - logged_at > 60:
                    log.error("holding: %s", reason)
                    logged_at = time.monotonic()
                self._stop.wait(self.settings.hold_check_seconds)
        if self._stop.is_set():
            return
        if self._history is not None:
            self._warm(self._history)
        self.checkpointer.start_fresh({})
        first = self._snapshot()
        self._retry(lambda: self.store.write([], first), "first checkpoint", "database")
        log.info("terminal stage epoch %s started (no checkpoint before)", self.epoch)

    def _restore(self, saved: SavedState) -> None:
        payload = unseal(saved.state, f"checkpoint of group {self.settings.group_id!r}")
        state = self._new_state()
        try:
            header = decode_terminals(payload, state)
        except Exception as err:
            raise CheckpointUnusable(f"terminal-stage checkpoint does not decode ({err})") from None
        config = config_from_json(header["config"])
        if config != self.config:
            raise CheckpointUnusable(
                "the terminal stage's checkpoint was built with another behavioural "
                f"configuration ({config}) than the model's ({self.config})"
            )
        self.state = state
        self.epoch = header["epoch"]
        self.next_output_offset = int(header["next_output_offset"])
        self.expiry_floor_us = header.get("expiry_floor_us")
        self.reached = {_partition(k): v for k, v in header.get("reached", {}).items()}
        self.checkpointer.positions = dict(saved.positions)
        self.checkpointer.written = dict(saved.positions)
        log.info("restored the terminal stage (epoch %s) at %s", self.epoch, saved.positions)

    def _warm(self, history: pa.Table) -> None:
        times = to_epoch_us(history.column(spec.TIMESTAMP))
        order = np.argsort(times, kind="stable")
        history, times = history.take(pa.array(order)), times[order]
        self.state.update_and_read(
            history.column(spec.TERMINAL_ID).to_pylist(),
            times.tolist(),
            history.column(spec.TRANSACTION_ID).to_pylist(),
            history.column(spec.LABEL_KEY).to_pylist(),
            labelled_us(history, times).tolist(),
        )
        log.info("warmed terminal state from %d history rows", history.num_rows)

    def _on_assigned(self, partitions: list[Partition]) -> dict[Partition, int]:
        """Every partition of both topics is needed: hold (rejoin) until they are ours."""
        topics = [self.settings.topic] + (
            [self.settings.labels_topic] if self.settings.labels_topic else []
        )
        owned = set(partitions)
        missing = [
            (topic, p)
            for topic in topics
            for p in range(self.source.partition_count(topic) or 0)
            if (topic, p) not in owned
        ]
        self._partial = bool(missing)
        self.metrics.health.partitions_ok = not missing
        if missing:
            message = f"holding: {len(missing)} input partitions assigned elsewhere; rejoining"
            log.warning(message)
            self.metrics.health.last_error = message
            return {}
        self._assigned = True
        self._idle_since = time.monotonic()
        return {p: o for p, o in self.checkpointer.positions.items() if p in owned}

    # -- one batch ----------------------------------------------------------------------

    def _process(self, messages: list[Message]) -> None:
        with self._lock:
            decoded = self.decoder.decode(messages)
            entries: list[Entry] = []
            table = decoded.transactions
            if table.num_rows:
                times = to_epoch_us(table.column(spec.TIMESTAMP))
                entries += self.state.insert(
                    table.column(spec.TERMINAL_ID).to_pylist(),
                    times.tolist(),
                    table.column(spec.TRANSACTION_ID).to_pylist(),
                )
                self.summary.repeats += table.num_rows - len(entries)
            if decoded.labels:
                labels = _labels_table(decoded.labels)
                ltimes = to_epoch_us(labels.column(spec.TIMESTAMP))
                entries += self.state.apply_labels(
                    labels.column(spec.TRANSACTION_ID).to_pylist(),
                    labels.column(spec.TERMINAL_ID).to_pylist(),
                    ltimes.tolist(),
                    labels.column(spec.LABEL_KEY).to_pylist(),
                    labelled_us(labels, ltimes).tolist(),
                )
            self._track(decoded.transaction_messages, table, decoded.label_messages, decoded.labels)
            for message, error in decoded.dead:
                if message.topic == self.settings.labels_topic:
                    self.dead_letters.send(message, error)
                    self.summary.dead_letters += 1
                else:
                    self.summary.invalid_transactions += 1
            self._retry(self.dead_letters.flush, "dead-letter publish", "broker")
            self._pending_entries.extend(entries)
            self._publish(force=bool(entries))
            self.checkpointer.advance(messages)
            self.summary.transactions += table.num_rows
            self.summary.labels += len(decoded.labels)

    def _track(
        self,
        tx_messages: list[Message],
        table: pa.Table,
        label_messages: list[Message],
        labels: list[dict[str, object]],
    ) -> None:
        """Progress per partition: event times reached, and the Kafka clock."""
        if table.num_rows:
            times = to_epoch_us(table.column(spec.TIMESTAMP)).tolist()
            for m, t in zip(tx_messages, times, strict=True):
                key = (m.topic, m.partition)
                if t > self.reached.get(key, -(2**62)):
                    self.reached[key] = t
        for m, label in zip(label_messages, labels, strict=True):
            key = (m.topic, m.partition)
            t = int(label["labelled_at"].timestamp() * 1_000_000)  # type: ignore[attr-defined]
            if t > self.reached.get(key, -(2**62)):
                self.reached[key] = t

    def progress(self) -> StageProgress:
        """The progress published now: event times reached and positions.

        Called between batches only, when every message polled so far is in
        the state (and in the entries this message or an earlier one carries),
        so the consumer's positions are what the state has read.
        """
        positions = self.source.positions() if self._assigned else {}
        parts: dict[str, dict[int, PartitionProgress]] = {"tx": {}, "labels": {}}
        topics = {self.settings.topic: "tx", self.settings.labels_topic: "labels"}
        for key in set(self.reached) | set(positions) | set(self.checkpointer.positions):
            kind = topics.get(key[0])
            if kind is None:
                continue
            parts[kind][key[1]] = PartitionProgress(self.reached.get(key), positions.get(key))
        return StageProgress(
            parts["tx"], parts["labels"], (self.settings.topic, self.settings.labels_topic)
        )

    def _publish(self, *, force: bool) -> None:
        """Publish pending entries with the progress (also when only the progress moved)."""
        now = time.monotonic()
        progress = self.progress()
        since = now - self._last_publish
        unchanged = progress == self._published_progress
        if not force and since < self.settings.heartbeat_seconds and (
            unchanged or since < self.settings.publish_idle_seconds
        ):
            return
        entries, self._pending_entries = self._pending_entries, []
        message = StateMessage(self.config, self.epoch, progress, self.expiry_floor_us, entries)
        self.publisher.publish(encode(message))
        self.next_output_offset = self._retry(self.publisher.flush, "state publish", "broker")
        self._published_progress = progress
        self._last_publish = now
        self.summary.messages_published += 1

    # -- between batches ------------------------------------------------------------------

    def _between_batches(self) -> None:
        with self._lock:
            self._publish(force=False)
            self._sweep()
            self.checkpointer.maybe_checkpoint(self._snapshot)
        self.metrics.health.checkpoint_age_seconds = self.checkpointer.age_seconds()
        self.metrics.lag.set(self.source.lag())

    def _sweep(self) -> None:
        """Once per day of event time: forget what no scorer can need any more.

        Exact by default: the floor is the earliest event time any scorer
        partition may still score (:meth:`_needed_from`) minus the look-back,
        and nothing is forgotten while a partition has no checkpoint row.
        ``retention_cap_days`` (when set) bounds memory instead: history more
        than that many days behind the stage's newest transaction plus the
        look-back goes even if a trailing scorer needs it (logged, counted).
        """
        tx = [t for (topic, _), t in self.reached.items() if topic == self.settings.topic]
        if not tx:
            return
        head = max(tx)
        if self._last_sweep_us is not None and head - self._last_sweep_us < DAY_US:
            return
        self._last_sweep_us = head
        needed_from = self._needed_from()
        floor = None if needed_from is None else needed_from - self.state.horizon_us
        cap = self.settings.retention_cap_days
        if cap:
            capped = head - cap * DAY_US - self.state.horizon_us
            if floor is None or capped > floor:
                log.warning(
                    "retention cap: forgetting terminal history before %s although a "
                    "scorer may still need it (it trails the stage by more than %d days)",
                    capped, cap,
                )
                self.metrics.stage_retention_capped.inc()
                floor = capped
        if floor is not None and (self.expiry_floor_us is None or floor > self.expiry_floor_us):
            self.expiry_floor_us = floor
            self.state.expire_before(floor)

    def _needed_from(self) -> int | None:
        """The earliest event time a scorer may still score, or None for "from the start".

        Per transactions partition: a scorer whose newest checkpoint row is at or
        past the stage's position there only has events ahead that the stage
        has not read (their times from the stage's reached time on); one that
        trails restarts, at worst, from its row's watermark; a partition with no
        row may be scored from its first offset.
        """
        marks = self.floor.marks()
        needed: list[int] = []
        partitions = {k for k in (*self.reached, *self.checkpointer.positions)
                      if k[0] == self.settings.topic}
        for key in partitions:
            mark = marks.get(key)
            if mark is None:
                return None
            watermark, next_offset = mark
            if next_offset >= self.checkpointer.positions.get(key, 0):
                if key in self.reached:
                    needed.append(self.reached[key])
            elif watermark is None:
                return None
            else:
                needed.append(watermark)
        return min(needed) if needed else None

    def _snapshot(self) -> SavedState:
        header = {
            "config": config_json(self.config),
            "epoch": self.epoch,
            "next_output_offset": self.next_output_offset,
            "expiry_floor_us": self.expiry_floor_us,
            "reached": {f"{t}:{p}": v for (t, p), v in self.reached.items()},
        }
        blob = seal(encode_terminals(self.state, header))
        return SavedState(blob, dict(self.checkpointer.positions), None)

    def _checkpoint_now(self) -> None:
        def write() -> None:
            snapshot = self._snapshot()
            self._retry(lambda: self.store.write([], snapshot), "checkpoint", "database")

        with self._lock:
            self.checkpointer.checkpoint_now(self._snapshot, write)


def _partition(key: str) -> Partition:
    topic, _, partition = key.rpartition(":")
    return topic, int(partition)


def _labels_table(labels: list[dict[str, object]]) -> pa.Table:
    ts = pa.timestamp("us", tz="UTC")
    return pa.table(
        {
            spec.TRANSACTION_ID: [r[spec.TRANSACTION_ID] for r in labels],
            spec.TERMINAL_ID: [r[spec.TERMINAL_ID] for r in labels],
            spec.TIMESTAMP: pa.array([r[spec.TIMESTAMP] for r in labels], ts),
            spec.LABEL_KEY: pa.array([r[spec.LABEL_KEY] for r in labels], pa.int8()),
            spec.LABELLED_AT: pa.array([r[spec.LABELLED_AT] for r in labels], ts),
        }
    )

