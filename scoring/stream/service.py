"""The streaming scorer's loop: poll, validate, update state, score, write alerts, commit.

Delivery: at-least-once consumption plus an idempotent sink. A micro-batch is
durable once its alerts are committed to the database. Every
``checkpoint_seconds``, between batches, the behavioural state and the
positions it reflects are written as a checkpoint (by a forked copy of the
process, see :mod:`scoring.stream.checkpoints`, so scoring does not pause);
only once it is written are those positions committed to Kafka. On
(re)assignment the scorer restores the last checkpoint and seeks to its
positions, so a crash replays at most the events since that checkpoint —
through the same state, giving the same scores — and ``alerts.transaction_id``
being unique makes the replay write nothing twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import pyarrow as pa

from features import spec
from features.behaviour import BehaviourState
from features.model_inputs import to_model_inputs
from ingest.kafka_io import (
    BATCH_DECODE_MIN_MESSAGES,
    decode_label,
    decode_transaction,
    decode_transactions,
    message_where,
)
from ingest.records import records_to_table
from ingest.validation import ValidationError
from scoring.clients.base import ModelClient, ModelRequestError, ModelUnavailable, Prediction
from scoring.db.repository import NewAlert
from scoring.stream.checkpoints import CheckpointOutcome, Checkpoints, InlineCheckpoints
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
from scoring.stream.settings import ScorerSettings

log = logging.getLogger(__name__)

#: How far behind the fastest partition expiry may be held for the slowest one.
MAX_EXPIRY_HOLD_US = 7 * 86_400 * 1_000_000
#: Resolves the alert threshold of the model version that produced a prediction.
ThresholdOf = Callable[[Prediction], float]
T = TypeVar("T")


@dataclass
class RunSummary:
    """What one run of the scorer did (printed as JSON by ``fraud score``)."""

    events: int = 0
    alerts: int = 0
    dead_letters: int = 0
    labels: int = 0
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
            "batches": self.batches,
            "seconds": round(self.seconds, 3),
            "active_seconds": round(self.active_seconds, 3),
            "events_per_s": round(rate, 1),
            "model_versions": sorted(self.model_versions),
        }


@dataclass
class _Decoded:
    """One micro-batch after validation: valid transactions (in message order), labels, dead."""

    transactions: pa.Table
    transaction_messages: list[Message]
    labels: list[dict[str, object]] = field(default_factory=list)
    dead: list[tuple[Message, Exception]] = field(default_factory=list)


class Scorer:
    """One scorer process; sources, sinks and the model are injected."""

    def __init__(
        self,
        settings: ScorerSettings,
        source: MessageSource,
        dead_letters: DeadLetterSink,
        store: AlertStore,
        model: ModelClient,
        threshold_of: ThresholdOf,
        metrics: ScorerMetrics | None = None,
        initial_state: Callable[[], BehaviourState] = BehaviourState,
        history: pa.Table | None = None,
        checkpoints: Checkpoints | None = None,
    ) -> None:
        self.settings = settings
        self.source = source
        self.dead_letters = dead_letters
        self.store = store
        self.model = model
        self.threshold_of = threshold_of
        self.metrics = metrics or ScorerMetrics()
        self.summary = RunSummary()
        self.checkpoints = checkpoints or InlineCheckpoints(store)
        self._initial_state = initial_state
        self._history = history
        self.state = initial_state()
        self._warmed: bytes | None = None
        self._positions: dict[Partition, int] = {}
        self._stop = threading.Event()
        self._rebalanced = False
        self._in_batch = False
        self._last_checkpoint = time.monotonic()
        #: Positions of the last checkpoint written (or restored).
        self._checkpoint_positions: dict[Partition, int] | None = None
        self._model_version: int | None = None
        self._idle_since: float | None = None
        #: Only some of the transactions topic's partitions are assigned: do not score.
        self._partial = False
        self._first_batch_at: float | None = None
        #: When set, every alert's event-to-alert latency (s) is appended (benchmarks).
        self.latency_sink: list[float] | None = None
        #: When set, every scored event's latency (s) from its Kafka timestamp to the
        #: commit of its batch — when its alert, had it scored high, was written.
        self.decision_latency_sink: list[float] | None = None
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
        self._warm_up()
        self.source.on_assignment(self._on_assigned, self._on_revoked)
        try:
            while not self._stop.is_set():
                if self._partial:
                    self._wait_for_every_partition()
                messages = self.source.poll(self.settings.max_wait_ms, self.settings.max_batch)
                if self._partial:
                    continue  # this poll brought a partial assignment (and no records)
                if messages:
                    self._idle_since = time.monotonic()
                    self._process(messages)
                elif self._idle_for_too_long():
                    break
                self._maybe_checkpoint()
                self.metrics.lag.set(self.source.lag())
            if self._idle_since is not None:
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

    def _idle_for_too_long(self) -> bool:
        """Idle time counts from the first partition assignment (a group join takes seconds)."""
        limit = self.settings.exit_when_idle_seconds
        if limit is None or self._idle_since is None:
            return False
        return time.monotonic() - self._idle_since >= limit

    # -- rebalance ------------------------------------------------------------

    def _warm_up(self) -> None:
        """Before joining the group: warm a fresh state from history unless a checkpoint exists.

        Done up front because it can take longer than the group's poll interval;
        a checkpoint already contains that history (and more), so it is never
        counted twice.
        """
        if self._history is None:
            return
        if self._retry(self.store.load, "loading the checkpoint", "database") is not None:
            log.info("a state checkpoint exists: --history is not replayed again")
            return
        state = self._initial_state()
        rows = state.warm(self._history)
        self._warmed = state.to_bytes()
        log.info("warmed behavioural state from %d history rows", rows)

    def _on_assigned(self, partitions: list[Partition]) -> dict[Partition, int]:
        """Restore state and positions from the last checkpoint (or the warmed start state)."""
        self.checkpoints.wait()  # a checkpoint still being written is the one to restore
        saved = self._retry(self.store.load, "loading the checkpoint", "database")
        if saved is None:
            self.state = (
                BehaviourState.from_bytes(self._warmed) if self._warmed else self._initial_state()
            )
            self._positions = {}
        else:
            self.state = BehaviourState.from_bytes(saved.state)
            self._positions = dict(saved.positions)
            self._checkpoint_positions = dict(saved.positions)
            log.info("restored the state checkpoint at positions %s", saved.positions)
        # Partitions not read yet count as being at the state's watermark.
        start = self.state.watermark_us
        self._event_times = {
            p: start for p in partitions if p[0] == self.settings.topic and start is not None
        }
        self._rebalanced = True
        self._idle_since = time.monotonic()
        self._partial = self._missing_partitions(partitions)
        return {p: o for p, o in self._positions.items() if p in set(partitions)}

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
        """Consume nothing; leave and rejoin the group until a join assigns every partition.

        Rejoining as a new member (rather than waiting for a rebalance that
        keeps some partitions) gives the complete assignment fresh partition
        states; see :meth:`MessageSource.rejoin`.
        """
        self.source.rejoin()
        self._partial = False
        self._idle_since = None  # not assigned until the next join

    def _on_revoked(self, partitions: list[Partition]) -> None:
        """Best-effort checkpoint before losing partitions (one attempt, no Kafka calls).

        Runs on the Kafka client's IO thread; if it fails, the next owner
        replays from the previous checkpoint, which is just as correct.
        """
        if self._in_batch or not partitions or self._idle_since is None:
            return
        self.checkpoints.wait()
        saved = self._snapshot()
        try:
            self.store.write([], saved)
        except DependencyDown as err:
            log.warning("checkpoint on revocation failed (%s); the last one stands", err)

    # -- one micro-batch ------------------------------------------------------

    def _process(self, messages: list[Message]) -> None:
        started = time.monotonic()
        self._rebalanced = False
        self._in_batch = True
        try:
            decoded = self._decode(messages)
            self._hold_expiry(decoded)
            if decoded.labels:
                self.state.apply_labels(_labels_table(decoded.labels))
            alerts, alert_messages = self._score(decoded)
            for message, error in decoded.dead:
                self.dead_letters.send(message, error)
            self._retry(self.dead_letters.flush, "dead-letter publish", "broker")
            self._advance_positions(messages)
            inserted = self._retry(
                lambda: self.store.write(alerts, None), "alert write", "database"
            )
        except Aborted:
            if self._stop.is_set():
                raise
            log.warning("partitions were reassigned mid-batch: batch dropped, it will be replayed")
            return
        finally:
            self._in_batch = False
        self._count(decoded, alert_messages, inserted, started)

    def _count(
        self, decoded: _Decoded, alert_messages: list[Message], inserted: int, started: float
    ) -> None:
        now = time.time()
        for message in alert_messages:
            latency = max(0.0, now - message.timestamp_ms / 1000)
            self.metrics.event_to_alert_seconds.observe(latency)
            if self.latency_sink is not None:
                self.latency_sink.append(latency)
        if self.decision_latency_sink is not None:
            self.decision_latency_sink.extend(
                max(0.0, now - m.timestamp_ms / 1000) for m in decoded.transaction_messages
            )
        for _, error in decoded.dead:
            self.metrics.dead_letters.labels(field=getattr(error, "field", None) or "").inc()
        self.summary.batches += 1
        self.summary.events += decoded.transactions.num_rows
        self.summary.alerts += inserted
        self.summary.dead_letters += len(decoded.dead)
        self.summary.labels += len(decoded.labels)
        self.metrics.events.inc(decoded.transactions.num_rows)
        self.metrics.alerts.inc(inserted)
        self.metrics.labels.inc(len(decoded.labels))
        finished = time.monotonic()
        self.metrics.batch_seconds.observe(finished - started)
        self._first_batch_at = self._first_batch_at or started
        self.summary.active_seconds = finished - self._first_batch_at
        self.metrics.health.last_batch_at = now
        self.metrics.health.lag = int(self.metrics.lag._value.get())

    def _decode(self, messages: list[Message]) -> _Decoded:
        """Validate a batch: all transactions at once when all are valid, else one by one."""
        labels_topic = self.settings.labels_topic
        transaction_messages = [m for m in messages if m.topic != labels_topic]
        table = None
        if len(transaction_messages) >= BATCH_DECODE_MIN_MESSAGES:
            table = decode_transactions([m.value for m in transaction_messages])
        if table is not None:
            out = _Decoded(table, transaction_messages)
        else:
            out = self._decode_one_by_one(transaction_messages)
        for m in messages:
            if m.topic == labels_topic:
                try:
                    out.labels.append(decode_label(m.value, _where(m)))
                except ValidationError as err:
                    out.dead.append((m, err))
        return out

    @staticmethod
    def _decode_one_by_one(messages: list[Message]) -> _Decoded:
        """The exact path: each bad message goes to the dead letters with its own reason."""
        records: list[dict[str, object]] = []
        valid: list[Message] = []
        dead: list[tuple[Message, Exception]] = []
        for m in messages:
            try:
                records.append(decode_transaction(m.value, _where(m)))
                valid.append(m)
            except ValidationError as err:
                dead.append((m, err))
        return _Decoded(records_to_table(records, labelled=False), valid, dead=dead)

    def _score(self, decoded: _Decoded) -> tuple[list[NewAlert], list[Message]]:
        table = decoded.transactions
        if not table.num_rows:
            return [], []
        features = self.state.update_and_read(table)
        inputs = to_model_inputs(table, features)
        try:
            prediction = self._retry(lambda: self.model.predict(inputs), "model predict", "model")
        except ModelRequestError as err:
            # The model refuses these inputs: nothing to score them with. Keep
            # them (dead-letter topic, with the reason) rather than crash-loop.
            log.error("model rejected the batch: %s", err)
            decoded.dead.extend((m, err) for m in decoded.transaction_messages)
            return [], []
        self._model_version = prediction.model_version
        self.summary.model_versions.add(prediction.model_version)
        self.metrics.model_version.set(prediction.model_version)
        threshold = self.threshold_of(prediction)
        hits = np.flatnonzero(prediction.scores >= threshold)
        alerts = _alerts(
            table.take(pa.array(hits, pa.int64())),
            {name: values[hits] for name, values in inputs.items()},
            prediction.scores[hits],
            threshold,
            prediction.model_version,
        )
        return alerts, [decoded.transaction_messages[i] for i in hits]

    def _hold_expiry(self, decoded: _Decoded) -> None:
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

    # -- positions, commits and checkpoints ------------------------------------

    def _advance_positions(self, messages: list[Message]) -> None:
        for m in messages:
            key = (m.topic, m.partition)
            self._positions[key] = max(self._positions.get(key, 0), m.offset + 1)

    def _snapshot(self) -> SavedState:
        return SavedState(self.state.to_bytes(), dict(self._positions), self._model_version)

    def _maybe_checkpoint(self) -> None:
        """Between batches: collect a finished checkpoint, start the next one when due.

        Never before the first assignment restored the state.
        """
        outcome = self.checkpoints.poll()
        if outcome is not None:
            self._checkpoint_ended(outcome)
        if self._idle_since is None or self.checkpoints.running:
            return
        if self._positions == self._checkpoint_positions:
            return  # nothing consumed since the last one: the state is the same
        if time.monotonic() - self._last_checkpoint >= self.settings.checkpoint_seconds:
            self._last_checkpoint = time.monotonic()
            self.checkpoints.start(self._snapshot, dict(self._positions))

    def _checkpoint_now(self) -> None:
        """At shutdown: let a running checkpoint end, then write the final one in-line."""
        outcome = self.checkpoints.wait()
        if outcome is not None:
            self._checkpoint_ended(outcome)
        if self._positions == self._checkpoint_positions:
            return
        saved = self._snapshot()
        self._retry(lambda: self.store.write([], saved), "checkpoint", "database")
        # Not timed: at shutdown nothing waits for it; the gauges keep the last running one.
        self._checkpoint_ended(CheckpointOutcome(saved.positions, True), timed=False)

    def _checkpoint_ended(self, outcome: CheckpointOutcome, *, timed: bool = True) -> None:
        """After a checkpoint: commit its positions to Kafka, or schedule a retry.

        Kafka's committed offsets thus never pass the database checkpoint's
        positions: a restart seeks there with exactly the state of that moment.
        """
        if not outcome.written:
            log.warning("checkpoint not written (%s); retrying soon", outcome.error)
            self.metrics.health.last_error = f"checkpoint: {outcome.error}"[:500]
            if outcome.dependency_down:
                self.metrics.health.database_ok = False
                self.metrics.retries.labels(dependency="database").inc()
            retry_in = min(self.settings.retry_max_seconds, self.settings.checkpoint_seconds)
            self._last_checkpoint = time.monotonic() - self.settings.checkpoint_seconds + retry_in
            return
        self._checkpoint_positions = dict(outcome.positions)
        if outcome.positions:
            try:
                self.source.commit(dict(outcome.positions))
            except Exception as err:
                log.warning("offset commit failed (%s); the checkpoint keeps the positions", err)
        self.metrics.last_checkpoint.set(time.time())
        self.metrics.checkpoints.inc()
        if timed:
            self.metrics.checkpoint_seconds.set(outcome.seconds)
            self.metrics.checkpoint_pause_seconds.set(outcome.pause_seconds)
        size = self.state.size()
        self.metrics.state_keys.labels(kind="customers").set(size["customers"])
        self.metrics.state_keys.labels(kind="terminals").set(size["terminals"])
        self.metrics.too_late.set(self.state.terminals.too_late)

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


def _where(message: Message) -> str:
    return message_where(message.topic, message.partition, message.offset)


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
    threshold: float,
    model_version: int,
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
            model_version=model_version,
            features=dict(zip(names, values, strict=True)),
        )
        for record, score, *values in zip(
            transactions.to_pylist(), scores.tolist(), *columns, strict=True
        )
    ]
