"""The streaming scorer's loop: poll, decode, update state, score, write alerts, commit.

Delivery: at-least-once consumption plus an idempotent sink. A micro-batch is
durable once its alerts are committed to the database; the
:class:`~scoring.stream.checkpointer.Checkpointer` then writes state and
positions together and only afterwards commits those positions to Kafka. On
(re)assignment the scorer restores the last checkpoint and seeks to its
positions, so a crash replays at most the events since that checkpoint,
through the same state, giving the same scores; ``alerts.transaction_id``
being unique makes the replay write nothing twice.

Nothing a message carries stops the loop. A message that fails to decode is
a dead letter (:mod:`.decoder`); a batch whose feature computation raises is
replayed from the last checkpoint, one message at a time around the failure,
until the message that raises is known — it becomes a dead letter with the
reason and every other event is scored as if it had never been there; rows
the model rejects as invalid are found by splitting the request; rows the
database refuses are found by writing one at a time (:mod:`.alert_writer`).
Transient faults of the model server, the database or the broker are
retried with backoff and never dead-lettered.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import numpy as np
import pyarrow as pa

from features import spec
from features.behaviour import BehaviourConfig, BehaviourState
from features.model_inputs import to_model_inputs
from ingest.validation import ValidationError
from scoring.clients.base import ModelRequestError, ModelUnavailable, Prediction
from scoring.db.repository import NewAlert
from scoring.stream.alert_writer import AlertWriter
from scoring.stream.checkpointer import (
    RECOVERY,
    Checkpointer,
    Restored,
    open_checkpoint,
    sealed_snapshot,
)
from scoring.stream.checkpoints import Checkpoints, InlineCheckpoints
from scoring.stream.decoder import (
    BatchDecoder,
    DecodedBatch,
    MessageId,
    message_id,
    unexpected,
    where,
)
from scoring.stream.metrics import ScorerMetrics
from scoring.stream.ports import (
    AlertStore,
    DeadLetterSink,
    DependencyDown,
    Message,
    MessageSource,
    Partition,
    SavedState,
)
from scoring.stream.retry import Aborted, retry_until_done
from scoring.stream.sealed import CheckpointUnusable
from scoring.stream.served_model import ModelRefused, ServedModel
from scoring.stream.settings import ScorerSettings

log = logging.getLogger(__name__)

#: How far behind the fastest partition expiry may be held for the slowest one.
MAX_EXPIRY_HOLD_US = 7 * 86_400 * 1_000_000
#: How long the revocation callback waits for the loop to be between batches.
REVOKE_LOCK_SECONDS = 0.5
T = TypeVar("T")


class BatchObserver(Protocol):
    """Sees every committed batch (benchmarks measure latencies with it)."""

    def batch_committed(
        self, scored: list[Message], alerted: list[Message], committed_at: float
    ) -> None:
        """``scored`` events were committed at ``committed_at``; ``alerted`` became alerts."""
        ...


@dataclass
class RunSummary:
    """What one run of the scorer did (printed as JSON by ``fraud score``)."""

    events: int = 0
    alerts: int = 0
    dead_letters: int = 0
    labels: int = 0
    repeats: int = 0
    batches: int = 0
    seconds: float = 0.0
    #: From the start of the first batch to the end of the last one.
    active_seconds: float = 0.0
    model_versions: set[int] = field(default_factory=set)

    def as_dict(self) -> dict[str, object]:
        """Figures for the last line of stdout."""
        rate = self.events / self.active_seconds if self.active_seconds else 0.0
        return {
            "events": self.events,
            "alerts": self.alerts,
            "dead_letters": self.dead_letters,
            "labels": self.labels,
            "repeats": self.repeats,
            "batches": self.batches,
            "seconds": round(self.seconds, 3),
            "active_seconds": round(self.active_seconds, 3),
            "events_per_s": round(rate, 1),
            "model_versions": sorted(self.model_versions),
        }


@dataclass
class _Scored:
    """What computing one batch produced, before anything is written."""

    alerts: list[NewAlert] = field(default_factory=list)
    alert_messages: list[Message] = field(default_factory=list)
    scored_messages: list[Message] = field(default_factory=list)
    rejected: list[tuple[Message, ValidationError]] = field(default_factory=list)
    repeats: int = 0


class _Rewound(Exception):  # noqa: N818 - control flow: the batch was replaced by a replay
    """The batch raised while computing features; the source was rewound to the checkpoint."""


class Scorer:
    """One scorer process; sources, sinks and the model are injected."""

    def __init__(
        self,
        settings: ScorerSettings,
        source: MessageSource,
        dead_letters: DeadLetterSink,
        store: AlertStore,
        model: ServedModel,
        *,
        metrics: ScorerMetrics | None = None,
        history: pa.Table | None = None,
        checkpoints: Checkpoints | None = None,
        observer: BatchObserver | None = None,
        initial_state: Callable[..., BehaviourState] = BehaviourState,
    ) -> None:
        self.settings = settings
        self.source = source
        self.dead_letters = dead_letters
        self.store = store
        self.model = model
        self.metrics = metrics or ScorerMetrics()
        self.observer = observer
        self.summary = RunSummary()
        model.listen(self._model_bound, self._model_refused)
        self.checkpointer = Checkpointer(
            settings, store, checkpoints or InlineCheckpoints(store), source, self.metrics
        )
        self.decoder = BatchDecoder(settings.labels_topic)
        self.alert_writer = AlertWriter(store, self._retry)
        self._initial_state = initial_state
        self._history = history
        self.state: BehaviourState = initial_state()
        self._warmed: bytes | None = None
        self._stop = threading.Event()
        #: Held by the loop while it reads or writes the state; the revocation
        #: callback (on the Kafka client's thread) takes it or does nothing.
        self._state_lock = threading.Lock()
        self._rebalanced = False
        self._in_batch = False
        self._idle_since: float | None = None
        #: Only some of the transactions topic's partitions are assigned: do not score.
        self._partial = False
        #: Why the state cannot be restored (the scorer holds until it can), if so.
        self._blocked: str | None = None
        #: Messages of a batch that failed in feature computation: replayed one by one.
        self._suspects: set[MessageId] = set()
        #: Messages found to break feature computation, with the reason.
        self._poison: dict[MessageId, str] = {}
        self._first_batch_at: float | None = None
        #: The partitions of the last assignment.
        self._assignment: list[Partition] = []
        #: Latest transaction event time (µs) read from each partition (expiry hold).
        self._event_times: dict[Partition, int] = {}

    # -- lifecycle ------------------------------------------------------------

    @property
    def assigned(self) -> bool:
        """True once partitions are assigned and the state restored or warmed."""
        return self._idle_since is not None

    def stop(self) -> None:
        """Ask the loop to finish the current batch and return (signal-safe)."""
        self._stop.set()

    def run(self) -> RunSummary:
        """Consume until stopped (or idle for ``exit_when_idle_seconds``)."""
        started = time.monotonic()
        try:
            if self._prepare():
                self.source.on_assignment(self._on_assigned, self._on_revoked)
                self._loop()
                if self._idle_since is not None and self._blocked is None:
                    self._checkpoint_now()
        except Aborted:
            log.warning(
                "stopped while a dependency was down; events since the last "
                "checkpoint will be replayed on restart"
            )
        finally:
            self.summary.seconds = time.monotonic() - started
            self.source.close()
        return self.summary

    def _loop(self) -> None:
        while not self._stop.is_set():
            if self._blocked is not None:
                self._hold_until_restorable()
                continue
            if self._partial:
                self._wait_for_every_partition()
            messages = self.source.poll(self.settings.max_wait_ms, self.settings.max_batch)
            if self._partial or self._blocked is not None:
                continue  # this poll brought a partial or unusable assignment (and no records)
            if messages:
                self._idle_since = time.monotonic()
                self._process(messages)
            elif self._idle_for_too_long():
                break
            self._between_batches()

    def _between_batches(self) -> None:
        with self._state_lock:
            self.checkpointer.maybe_checkpoint(self._snapshot)
        self.model.follow()
        lag = self.source.lag()
        self.metrics.lag.set(lag)
        health = self.metrics.health
        health.lag = lag
        health.checkpoint_age_seconds = self.checkpointer.age_seconds()
        self.metrics.checkpoint_age_seconds.set(health.checkpoint_age_seconds)

    def _model_bound(self, version: int) -> None:
        health = self.metrics.health
        health.model_version = version
        health.refused_versions = {v: r for v, r in health.refused_versions.items() if v > version}
        self.metrics.model_version.set(version)

    def _model_refused(self, version: int, reason: str) -> None:
        self.metrics.health.refused_versions[version] = reason
        self.metrics.refused_model_version.set(version)

    def _idle_for_too_long(self) -> bool:
        """Idle time counts from the first partition assignment (a group join takes seconds)."""
        limit = self.settings.exit_when_idle_seconds
        if limit is None or self._idle_since is None:
            return False
        return time.monotonic() - self._idle_since >= limit

    # -- start-up -------------------------------------------------------------

    def _prepare(self) -> bool:
        """Before joining the group: bind the model and check the checkpoint.

        Holds (consuming nothing, health degraded) while no usable model version
        is served or the checkpoint cannot be restored; False if stopped meanwhile.
        """
        restored = self._hold(self._restorable, "state")
        if self._stop.is_set():
            return False
        behaviour = restored.state.config if isinstance(restored, Restored) else None
        if not self._hold(lambda: self._bind(behaviour), "model"):
            return False
        if not isinstance(restored, Restored):
            self._warm_up()
        return True

    def _bind(self, behaviour: BehaviourConfig | None) -> bool:
        binding = self.model.bind(behaviour)
        log.info(
            "scoring with model version %d (threshold %.6g, label delay %d days)",
            binding.version,
            binding.threshold,
            binding.metadata.delay_days,
        )
        return True

    def _hold(self, attempt: Callable[[], T], what: str) -> T | None:
        """Call ``attempt`` until it succeeds; refusals and outages hold, with the reason."""
        health = self.metrics.health
        logged_at = 0.0
        while not self._stop.is_set():
            try:
                result = attempt()
            except (ModelRefused, CheckpointUnusable, ModelUnavailable, DependencyDown) as err:
                reason = str(err)
                if what == "model":
                    health.model_ok = False
                else:
                    health.state = reason
                health.last_error = reason[:500]
                if time.monotonic() - logged_at > 60:
                    log.error("holding: %s", reason)
                    logged_at = time.monotonic()
                self._stop.wait(self.settings.hold_check_seconds)
                continue
            if what == "model":
                health.model_ok = True
            else:
                health.state = ""
            return result
        return None

    def _restorable(self) -> Restored | bool:
        """Verify the stored checkpoint before joining (CheckpointUnusable if it is not).

        True when there is none and none is needed (a first start, or a rebuild).
        """
        saved = self.store.load()
        if saved is None:
            self._check_not_lost()
            return True
        try:
            return open_checkpoint(saved, f"checkpoint of group {self.settings.group_id!r}")
        except CheckpointUnusable as err:
            if self.settings.rebuild_state:
                log.warning("%s; --rebuild-state: discarding it and rebuilding", err)
                self.store.discard()
                return True
            raise CheckpointUnusable(f"{err}; {RECOVERY}") from None

    def _check_not_lost(self) -> None:
        """No checkpoint: refuse to start empty if Kafka has offsets the state went with."""
        if self.settings.rebuild_state:
            return
        committed = self.source.committed(self._topic_partitions())
        if committed:
            raise CheckpointUnusable(
                f"no state checkpoint for group {self.settings.group_id!r}, but Kafka has "
                f"committed offsets for it ({len(committed)} partitions): the state was lost, "
                "and resuming with an empty one would give other scores than the batch path; "
                "restart with `--rebuild-state --history LAKE`"
            )

    def _topic_partitions(self) -> list[Partition]:
        topics = [self.settings.topic]
        if self.settings.labels_topic:
            topics.append(self.settings.labels_topic)
        return [
            (topic, p)
            for topic in topics
            for p in range(self.source.partition_count(topic) or 0)
        ]

    def _warm_up(self) -> None:
        """Warm a fresh state from history (only when there is no checkpoint).

        Done before joining the group because it can take longer than the
        group's poll interval; a checkpoint already holds that history.
        """
        config = self.model.binding.metadata.behaviour
        state = self._initial_state(config)
        if self._history is not None:
            rows = state.warm(self._history)
            log.info("warmed behavioural state from %d history rows", rows)
        self._warmed = state.to_bytes()

    # -- rebalance ------------------------------------------------------------

    def _on_assigned(self, partitions: list[Partition]) -> dict[Partition, int]:
        """Restore state and positions from the last checkpoint (or the warmed start state)."""
        self._assignment = list(partitions)
        with self._state_lock:
            try:
                positions = self._restore(partitions)
            except (CheckpointUnusable, DependencyDown) as err:
                self._block(str(err))
                return {}
        start = self.state.watermark_us
        self._event_times = {
            p: start for p in partitions if p[0] == self.settings.topic and start is not None
        }
        self._rebalanced = True
        self._idle_since = time.monotonic()
        self._partial = self._missing_partitions(partitions)
        owned = set(partitions)
        return {p: o for p, o in positions.items() if p in owned}

    def _restore(self, partitions: list[Partition]) -> dict[Partition, int]:
        restored = self.checkpointer.restore(f"checkpoint of group {self.settings.group_id!r}")
        if restored is not None:
            if restored.state.config != self.model.binding.metadata.behaviour:
                raise CheckpointUnusable(
                    "the checkpoint's behavioural configuration differs from the bound "
                    f"model version {self.model.binding.version}'s; {RECOVERY}"
                )
            self.state = restored.state
            log.info("restored the state checkpoint at positions %s", restored.positions)
            return restored.positions
        self._check_not_lost()
        self.state = BehaviourState.from_bytes(self._warmed) if self._warmed else self.state
        rebuild = self.settings.rebuild_state and self.source.committed(partitions)
        positions = self.source.beginning_offsets(partitions) if rebuild else {}
        self.checkpointer.start_fresh(positions)
        return positions

    def _block(self, reason: str) -> None:
        log.error("cannot restore the state: %s", reason)
        self._blocked = reason
        self.metrics.health.state = reason
        self.metrics.health.last_error = reason[:500]

    def _hold_until_restorable(self) -> None:
        """Leave the group; rejoin once the checkpoint can be restored (e.g. use-previous)."""
        self.source.leave()
        self._idle_since = None
        self._hold(self._restorable, "state")
        if not self._stop.is_set():
            self._blocked = None
            self.source.rejoin()

    def _missing_partitions(self, partitions: list[Partition]) -> bool:
        """True when the transactions topic has partitions assigned to another member.

        Terminal risk needs every partition's events in time order (one scorer
        per group): scoring a subset would give other scores than the batch
        path. A subset is what a scorer gets right after a ``kill -9`` while the
        dead member's session has not expired yet; it then rejoins until a join
        hands it the rest (:meth:`_wait_for_every_partition`).
        """
        total = self.source.partition_count(self.settings.topic)
        owned = {p for t, p in partitions if t == self.settings.topic}
        self.metrics.health.partitions_ok = total is None or len(owned) >= total
        if self.metrics.health.partitions_ok:
            return False
        message = (
            f"holding: {len(owned)} of {total} partitions of {self.settings.topic!r} assigned; "
            "terminal risk needs all of them (one scorer per consumer group); rejoining "
            "until the group hands over the rest (e.g. a killed member's session expires)"
        )
        log.warning(message)
        self.metrics.health.last_error = message
        return True

    def _wait_for_every_partition(self) -> None:
        """Consume nothing; leave and rejoin the group until a join assigns every partition."""
        self.source.rejoin()
        self._partial = False
        self._idle_since = None  # not assigned until the next join

    def _on_revoked(self, partitions: list[Partition]) -> None:
        """Best-effort checkpoint before losing partitions (one attempt, no Kafka calls).

        Runs on the Kafka client's IO thread. It takes the state lock, which
        the loop holds whenever it touches the state, or gives up: if it
        cannot checkpoint, the next owner replays from the previous one,
        which is just as correct.
        """
        if not partitions or self._idle_since is None or self._blocked is not None:
            return
        if not self._state_lock.acquire(timeout=REVOKE_LOCK_SECONDS):
            return
        try:
            if self._in_batch or not self.checkpointer.dirty:
                return
            self.checkpointer.writer.wait()
            self.store.write([], self._snapshot())
        except Exception as err:  # never into the Kafka client: the last checkpoint stands
            log.warning("checkpoint on revocation failed (%r); the last one stands", err)
        finally:
            self._state_lock.release()

    # -- one micro-batch ------------------------------------------------------

    def _process(self, messages: list[Message]) -> None:
        """Score a poll's messages; suspects of an earlier failure go one at a time."""
        if self._suspects and any(message_id(m) in self._suspects for m in messages):
            for m in messages:
                self._suspects.discard(message_id(m))
                if not self._process_batch([m]):
                    return  # rewound: the rest comes again
            return
        self._process_batch(messages)

    def _process_batch(self, messages: list[Message]) -> bool:
        """One batch from decode to commit; False when it was rewound instead."""
        started = time.monotonic()
        self._rebalanced = False
        with self._state_lock:
            self._in_batch = True
            try:
                decoded = self.decoder.decode(messages, self._poison)
                scored = self._compute(decoded, messages)
                inserted, refused = self.alert_writer.write(scored.alerts, scored.alert_messages)
                dead = decoded.dead + scored.rejected + refused
                for message, error in dead:
                    self.dead_letters.send(message, error)
                self._retry(self.dead_letters.flush, "dead-letter publish", "broker")
                self.checkpointer.advance(messages)
            except _Rewound:
                return False
            except Aborted:
                if self._stop.is_set():
                    raise
                log.warning("partitions reassigned mid-batch: batch dropped, it will be replayed")
                return True
            finally:
                self._in_batch = False
        self._count(decoded, scored, dead, inserted, started)
        return True

    def _compute(self, decoded: DecodedBatch, messages: list[Message]) -> _Scored:
        """Labels and features into the state, then scores; rewinds if any of it raises."""
        try:
            if decoded.labels:
                self.state.apply_labels(_labels_table(decoded.labels))
            self._hold_expiry(decoded)
            return self._score(decoded)
        except (Aborted, ModelUnavailable, DependencyDown):
            raise
        except Exception as err:
            self._rewind(messages, err)
            raise _Rewound from err

    def _score(self, decoded: DecodedBatch) -> _Scored:
        table = decoded.transactions
        out = _Scored()
        if not table.num_rows:
            return out
        repeats = self.state.repeats(table)
        messages = decoded.transaction_messages
        if repeats.any():
            out.repeats = int(repeats.sum())
            keep = np.flatnonzero(~repeats)
            table = table.take(pa.array(keep, pa.int64()))
            messages = [messages[i] for i in keep]
            if not table.num_rows:
                return out
        features = self.state.update_and_read(table)
        inputs = to_model_inputs(table, features)
        scores, versions, rejected = self._predict(inputs)
        thresholds = np.array([self.model.threshold_of(int(v)) for v in versions])
        valid = ~np.isnan(scores)
        out.rejected = [(messages[i], err) for i, err in rejected]
        out.scored_messages = [m for m, ok in zip(messages, valid, strict=True) if ok]
        hits = np.flatnonzero(valid & (scores >= thresholds))
        out.alerts = _alerts(
            table.take(pa.array(hits, pa.int64())),
            {name: values[hits] for name, values in inputs.items()},
            scores[hits],
            thresholds[hits],
            versions[hits],
        )
        out.alert_messages = [messages[i] for i in hits]
        self.summary.model_versions.update(int(v) for v in np.unique(versions[valid]))
        return out

    def _predict(
        self, inputs: dict[str, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray, list[tuple[int, ValidationError]]]:
        """Scores (NaN where rejected), each row's model version, and the rejected rows.

        A request the model rejects as invalid is split in halves until the
        rows it rejects are found; a transient fault is retried (and the
        served version looked up again: the bound one may have been replaced).
        """
        n = len(next(iter(inputs.values())))
        scores = np.full(n, np.nan, dtype=np.float32)
        versions = np.full(n, -1, dtype=np.int64)
        rejected: list[tuple[int, ValidationError]] = []
        pending = [np.arange(n)]
        while pending:
            rows = pending.pop()
            part = inputs if len(rows) == n else {k: v[rows] for k, v in inputs.items()}
            try:
                prediction = self._retry(self._predictor(part), "model predict", "model")
            except ModelRequestError as err:
                if len(rows) == 1:
                    reason = f"the model rejected the event: {err}"[:500]
                    rejected.append((int(rows[0]), ValidationError("model", None, reason)))
                else:
                    half = len(rows) // 2
                    pending += [rows[half:], rows[:half]]
                continue
            scores[rows] = prediction.scores
            versions[rows] = prediction.model_version
        return scores, versions, sorted(rejected, key=lambda r: r[0])

    def _predictor(self, inputs: dict[str, np.ndarray]) -> Callable[[], Prediction]:
        return lambda: self.model.predict(inputs)

    def _rewind(self, messages: list[Message], err: BaseException) -> None:
        """Replace the damaged state by the last checkpoint's and replay from its positions.

        The first failure marks the batch's messages as suspects (replayed one
        at a time); a failure of a single message marks it as poison (a dead
        letter on the replay).
        """
        reason = unexpected(messages[0], err, "computing features").reason
        if len(messages) == 1:
            self._poison[message_id(messages[0])] = reason
            log.error("%s: %s; it goes to the dead-letter topic", where(messages[0]), reason)
        else:
            self._suspects |= {message_id(m) for m in messages}
            log.error(
                "a batch of %d messages failed (%s); replaying from the last checkpoint, "
                "one message at a time around the failure",
                len(messages),
                reason,
            )
        self.source.rewind(self._restore(self._assignment))

    def _count(
        self,
        decoded: DecodedBatch,
        scored: _Scored,
        dead: list[tuple[Message, ValidationError]],
        inserted: int,
        started: float,
    ) -> None:
        now = time.time()
        metrics, summary = self.metrics, self.summary
        for message in scored.alert_messages:
            metrics.event_to_alert_seconds.observe(max(0.0, now - message.timestamp_ms / 1000))
        if self.observer is not None:
            self.observer.batch_committed(scored.scored_messages, scored.alert_messages, now)
        for _, error in dead:
            metrics.dead_letters.labels(field=error.field or "").inc()
        events = len(scored.scored_messages)
        summary.batches += 1
        summary.events += events
        summary.alerts += inserted
        summary.dead_letters += len(dead)
        summary.labels += len(decoded.labels)
        summary.repeats += scored.repeats
        metrics.events.inc(events)
        metrics.alerts.inc(inserted)
        metrics.labels.inc(len(decoded.labels))
        metrics.repeats.inc(scored.repeats)
        finished = time.monotonic()
        metrics.batch_seconds.observe(finished - started)
        self._first_batch_at = self._first_batch_at or started
        summary.active_seconds = finished - self._first_batch_at
        metrics.health.last_batch_at = now
        size = self.state.size()
        metrics.state_keys.labels(kind="customers").set(size["customers"])
        metrics.state_keys.labels(kind="terminals").set(size["terminals"])
        metrics.too_late.set(self.state.terminals.too_late)

    def _hold_expiry(self, decoded: DecodedBatch) -> None:
        """Let state expire only what the slowest partition no longer needs.

        Terminal state mixes all partitions, and Kafka may hand us one partition
        days ahead of another (a whole producer batch at a time); expiring by
        the fastest one would drop history the others still need. The hold is
        capped at ``MAX_EXPIRY_HOLD`` so an idle partition cannot grow memory.
        """
        messages = decoded.transaction_messages
        if messages:
            times = decoded.transactions.column(spec.TIMESTAMP).cast(pa.int64()).to_numpy()
            partitions = np.array([m.partition for m in messages])
            for partition in np.unique(partitions):
                key = (messages[0].topic, int(partition))
                t = int(times[partitions == partition].max())
                if t > self._event_times.get(key, t - 1):
                    self._event_times[key] = t
        if self._event_times:
            slowest, fastest = min(self._event_times.values()), max(self._event_times.values())
            self.state.expiry_floor_us = max(slowest, fastest - MAX_EXPIRY_HOLD_US)

    # -- checkpoints ------------------------------------------------------------

    def _snapshot(self) -> SavedState:
        return sealed_snapshot(self.state, self.checkpointer.positions, self.model.binding.version)

    def _checkpoint_now(self) -> None:
        """At shutdown: the final checkpoint, written in-line."""

        def write() -> None:
            snapshot = self._snapshot()
            self._retry(lambda: self.store.write([], snapshot), "checkpoint", "database")

        with self._state_lock:
            self.checkpointer.checkpoint_now(self._snapshot, write)

    # -- retries ----------------------------------------------------------------

    def _retry(self, attempt: Callable[[], T], what: str, dependency: str) -> T:
        """Run ``attempt`` until it succeeds, retrying while ``dependency`` is down.

        Waits keep the consumer in its group; a stop request or a rebalance
        during the wait aborts the batch (nothing of it is committed).
        """
        health = self.metrics.health
        field_name = _HEALTH_FIELD[dependency]

        def failed(err: BaseException) -> None:
            setattr(health, field_name, False)
            health.last_error = f"{what}: {err}"[:500]
            self.metrics.retries.labels(dependency=dependency).inc()
            if dependency == "model":
                self.model.follow(force=True)  # the bound version may have been replaced

        def wait(seconds: float) -> bool:
            if self._stop.is_set() or (self._in_batch and self._rebalanced):
                return False
            self.source.keep_alive(seconds)
            return not (self._stop.is_set() or (self._in_batch and self._rebalanced))

        result = retry_until_done(
            attempt,
            (DependencyDown, ModelUnavailable),
            what=what,
            wait=wait,
            on_failure=failed,
            initial_seconds=self.settings.retry_initial_seconds,
            max_seconds=self.settings.retry_max_seconds,
        )
        setattr(health, field_name, True)
        return result


_HEALTH_FIELD = {"model": "model_ok", "database": "database_ok", "broker": "broker_ok"}


def _labels_table(labels: list[dict[str, object]]) -> pa.Table:
    return pa.table(
        {
            spec.TRANSACTION_ID: [r[spec.TRANSACTION_ID] for r in labels],
            spec.TERMINAL_ID: [r[spec.TERMINAL_ID] for r in labels],
            spec.TIMESTAMP: pa.array(
                [r[spec.TIMESTAMP] for r in labels], pa.timestamp("us", tz="UTC")
            ),
            spec.LABEL_KEY: pa.array([r[spec.LABEL_KEY] for r in labels], pa.int8()),
        }
    )


def _alerts(
    transactions: pa.Table,
    inputs: dict[str, np.ndarray],
    scores: np.ndarray,
    thresholds: np.ndarray,
    versions: np.ndarray,
) -> list[NewAlert]:
    """One alert per row, with the model inputs it was scored on as its feature snapshot.

    Columns become Python values a column at a time (``tolist`` is C code):
    when every event alerts, building snapshots value by value cost more than
    scoring the batch.
    """
    names = list(inputs)
    columns = [inputs[name].tolist() for name in names]
    return [
        NewAlert(
            transaction_id=str(record[spec.TRANSACTION_ID]),
            customer_id=str(record[spec.CUSTOMER_ID]),
            terminal_id=str(record[spec.TERMINAL_ID]),
            amount=float(record[spec.AMOUNT]),
            event_time=record[spec.TIMESTAMP],
            score=score,
            threshold=threshold,
            model_version=version,
            features=dict(zip(names, values, strict=True)),
        )
        for record, score, threshold, version, *values in zip(
            transactions.to_pylist(),
            scores.tolist(),
            thresholds.tolist(),
            versions.tolist(),
            *columns,
            strict=True,
        )
    ]
