"""The streaming scorer's loop: poll, decode, update state, score, write alerts, commit.

Any number of scorers share one consumer group, each owning some partitions
of ``transactions`` (:mod:`.ownership`): customer state follows the
partitions, terminal state comes from the terminal stage through a replica
(:mod:`.replica`), and a batch is scored only once the stage has read far
enough for its events to get the features of the batch path.

Delivery: at-least-once consumption plus an idempotent sink. A micro-batch is
durable once its alerts are committed to the database; each partition's
checkpoint rows then hold its state and position, and only afterwards are
those positions committed to Kafka. On (re)assignment a partition is
restored from its rows and read again from their position, so a crash
replays at most the events since its last checkpoint, through the same
state, giving the same scores; ``alerts.transaction_id`` being unique makes
the replay write nothing twice.

Nothing a message carries stops the loop. A message that fails to decode is
a dead letter (:mod:`.decoder`); a batch whose feature computation raises is
replayed from its partitions' checkpoints, one message at a time around the
failure, until the message that raises is known — it becomes a dead letter
with the reason and every other event is scored as if it had never been
there; rows the model rejects as invalid are found by splitting the request
(:mod:`.predictor`); rows the database refuses by writing one at a time
(:mod:`.alert_writer`). Transient faults of the model server, the database or
the broker are retried with backoff and never dead-lettered.
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
from features.behaviour import BehaviourConfig, assemble_features
from features.model_inputs import to_model_inputs
from features.timebase import to_epoch_us
from ingest.validation import ValidationError
from scoring.clients.base import ModelUnavailable
from scoring.db.repository import NewAlert
from scoring.reasons import reason_codes
from scoring.stream.alert_writer import AlertWriter
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
from scoring.stream.ownership import OwnedPartitions
from scoring.stream.ports import (
    AlertStore,
    DeadLetterSink,
    DependencyDown,
    Message,
    MessageSource,
    Partition,
    PartitionStore,
)
from scoring.stream.predictor import predict_rows
from scoring.stream.replica import StageNotReady, TerminalReplica
from scoring.stream.retry import Aborted, Retrier
from scoring.stream.sealed import CheckpointUnusable
from scoring.stream.served_model import ModelRefused, ServedModel
from scoring.stream.settings import ScorerSettings
from scoring.terminal_stage.protocol import InputEnds

log = logging.getLogger(__name__)

#: How long the revocation callback waits for the loop to be between batches.
REVOKE_LOCK_SECONDS = 0.5
#: While a batch waits for the terminal stage: how long before health says so, and
#: how often the group is told the scorer is alive.
STAGE_WAIT_REPORT_SECONDS = 2.0
KEEP_ALIVE_SECONDS = 1.0
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
    """One scorer process; sources, sinks, stores and the model are injected."""

    def __init__(
        self,
        settings: ScorerSettings,
        source: MessageSource,
        dead_letters: DeadLetterSink,
        alerts: AlertStore,
        partition_store: PartitionStore,
        model: ServedModel,
        replica: TerminalReplica,
        *,
        metrics: ScorerMetrics | None = None,
        history: pa.Table | None = None,
        checkpoints: Checkpoints | None = None,
        observer: BatchObserver | None = None,
    ) -> None:
        self.settings = settings
        self.source = source
        self.dead_letters = dead_letters
        self.model = model
        self.replica = replica
        self.metrics = metrics or ScorerMetrics()
        self.observer = observer
        self.summary = RunSummary()
        model.listen(self._model_bound, self._model_refused)
        self.owned = OwnedPartitions(
            settings,
            partition_store,
            checkpoints or InlineCheckpoints(partition_store),
            source,
            self.metrics,
        )
        self.decoder = BatchDecoder(None)
        self._retry = Retrier(
            settings,
            self.metrics,
            source.keep_alive,
            lambda: self._stop.is_set() or (self._in_batch and self._rebalanced),
            self._dependency_failed,
        )
        self.alert_writer = AlertWriter(alerts, self._retry)
        self._history = history
        self._stop = threading.Event()
        #: Held by the loop while it reads or writes state; the revocation callback
        #: (on the Kafka client's thread) takes it or does nothing. Reentrant: an
        #: assignment taken during a keep-alive inside a batch runs on the loop's
        #: own thread (and the batch is then dropped and replayed).
        self._state_lock = threading.RLock()
        self._rebalanced = False
        self._in_batch = False
        self._retention_logged_at = 0.0
        self._idle_since: float | None = None
        #: Messages of a batch that failed in feature computation: replayed one by one.
        self._suspects: set[MessageId] = set()
        #: Messages found to break feature computation, with the reason.
        self._poison: dict[MessageId, str] = {}
        self._first_batch_at: float | None = None
        self._held_checked_at = 0.0

    # -- lifecycle ------------------------------------------------------------

    @property
    def assigned(self) -> bool:
        """True once partitions are assigned and their state restored."""
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
                if self._idle_since is not None:
                    with self._state_lock:
                        self._retry(self.owned.checkpoint_now, "checkpoint", "database")
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
            messages = self.source.poll(self.settings.max_wait_ms, self.settings.max_batch)
            self.replica.follow(0)
            if messages and self._idle_since is not None:
                self._idle_since = time.monotonic()
                self._process(messages)
            elif self._idle_for_too_long():
                break
            self._between_batches()

    def _between_batches(self) -> None:
        with self._state_lock:
            self.owned.maybe_checkpoint()
            if self.owned.blocked and time.monotonic() - self._held_checked_at > (
                self.settings.hold_check_seconds
            ):
                self._held_checked_at = time.monotonic()
                self.source.rewind(self.owned.retry_held())
        self.model.follow()
        lag = self.source.lag()
        self.metrics.lag.set(lag)
        health = self.metrics.health
        health.lag = lag
        health.checkpoint_age_seconds = self.owned.age_seconds()
        self.metrics.checkpoint_age_seconds.set(health.checkpoint_age_seconds)

    def _dependency_failed(self, dependency: str) -> None:
        if dependency == "model":
            self.model.follow(force=True)  # the bound version may have been replaced

    def _model_bound(self, version: int) -> None:
        health = self.metrics.health
        health.model_version = version
        health.refused_versions = {v: r for v, r in health.refused_versions.items() if v > version}
        self.metrics.model_version.set(version)
        self.owned.model_version = version

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
        """Before joining the group: bind the model and load the terminal stage's state.

        Holds (consuming nothing, health degraded) while no usable model version
        is served or the stage has no usable checkpoint; False if stopped meanwhile.
        """
        binding = self._hold(self.model.bind, "model")
        if binding is None:
            return False
        config = binding.metadata.behaviour
        log.info(
            "scoring with model version %d (threshold %.6g, label delay %d days)",
            binding.version,
            binding.threshold,
            config.delay_days,
        )
        if self._hold(lambda: self._start_replica(config), "stage") is None:
            return False
        self.owned.config = config
        self.owned.warm_from(self._history)
        self.metrics.health.terminal_stage_allowed_lag_seconds = (
            config.label_latency_minutes * 60.0
        )
        self._hold(self._warm, "state")
        return not self._stop.is_set()

    def _warm(self) -> bool:
        self.owned.warm_all()
        return True

    def _start_replica(self, config: BehaviourConfig) -> bool:
        self.replica.start(config)
        return True

    def _hold(self, attempt: Callable[[], T], what: str) -> T | None:
        """Call ``attempt`` until it succeeds; refusals and outages hold, with the reason."""
        health = self.metrics.health
        logged_at = 0.0
        while not self._stop.is_set():
            try:
                result = attempt()
            except (
                ModelRefused,
                CheckpointUnusable,
                ModelUnavailable,
                DependencyDown,
                StageNotReady,
            ) as err:
                reason = str(err)
                if what == "model":
                    health.model_ok = False
                elif what == "stage":
                    health.terminal_stage = reason
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
            elif what == "stage":
                health.terminal_stage = ""
            else:
                health.state = ""
            return result
        return None

    # -- rebalance ------------------------------------------------------------

    def _on_assigned(self, partitions: list[Partition]) -> dict[Partition, int]:
        """Keep the partitions kept, restore the new ones; the positions to seek to."""
        with self._state_lock:
            positions = self.owned.assign(partitions)
        self._rebalanced = True
        self._idle_since = time.monotonic()
        return positions

    def _on_revoked(self, partitions: list[Partition]) -> None:
        """Best-effort checkpoint of the partitions leaving (one attempt, no Kafka calls).

        Runs on the Kafka client's IO thread. It takes the state lock, which
        the loop holds whenever it touches the state, or gives up: the next
        owner then replays from the last checkpoint, which is just as correct.
        """
        leaving = [p for p in partitions if p[0] == self.settings.topic]
        if not leaving or self._idle_since is None:
            return
        if not self._state_lock.acquire(timeout=REVOKE_LOCK_SECONDS):
            return
        try:
            if not self._in_batch:
                self.owned.checkpoint_now(leaving)
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
                messages = [m for m in messages if (m.topic, m.partition) in self.owned.states]
                decoded = self.decoder.decode(messages, self._poison)
                self._wait_for_stage(decoded)
                scored = self._compute(decoded, messages)
                inserted, refused = self.alert_writer.write(scored.alerts, scored.alert_messages)
                dead = decoded.dead + scored.rejected + refused
                for message, error in dead:
                    self.dead_letters.send(message, error)
                self._retry(self.dead_letters.flush, "dead-letter publish", "broker")
                self.owned.advance(messages)
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

    def _wait_for_stage(self, decoded: DecodedBatch) -> None:
        """Hold the batch until the terminal stage has read far enough for all its events."""
        table = decoded.transactions
        if not table.num_rows:
            return
        times = to_epoch_us(table.column(spec.TIMESTAMP))
        latest_us = int(times.max())
        self._check_retention(int(times.min()), table.num_rows)
        if self.replica.covers(latest_us):
            return
        # Asked now, after the batch was fetched: whatever was appended before
        # these events is below these offsets.
        ends = self._input_ends()
        if self.replica.covers(latest_us, ends):
            return
        self.metrics.terminal_stage_waits.inc()
        health = self.metrics.health
        waited_from = time.monotonic()
        kept_alive = waited_from
        while not self.replica.covers(latest_us, ends):
            if self._stop.is_set() or self._rebalanced:
                raise Aborted("waiting for the terminal stage")
            self.replica.follow(50)
            now = time.monotonic()
            if now - waited_from > STAGE_WAIT_REPORT_SECONDS:
                lag = self.replica.lag_seconds(latest_us, ends)
                waiting = (
                    f"waiting: the terminal stage is {lag:.0f} s (event time) behind what "
                    "the next events need"
                )
                if self.replica.progress.reads_other_topics(ends):
                    waiting = (
                        f"waiting: the terminal stage reads {self.replica.progress.topics}, "
                        f"this scorer {ends.topics}: give both the same --topic and "
                        "--labels-topic"
                    )
                if health.terminal_stage != waiting:
                    log.warning("%s (its progress: %s)", waiting, self.replica.progress)
                health.terminal_stage = waiting
                health.terminal_stage_lag_seconds = lag
                self.metrics.terminal_stage_lag_seconds.set(lag)
            if now - kept_alive > KEEP_ALIVE_SECONDS:
                self.source.keep_alive(0.01)
                kept_alive = now
        health.terminal_stage, health.terminal_stage_lag_seconds = "", 0.0
        self.metrics.terminal_stage_lag_seconds.set(0)

    def _check_retention(self, earliest_us: int, events: int) -> None:
        """Count (and log, once a minute) events whose look-back the stage no longer holds."""
        floor = self.replica.expiry_floor_us
        if floor is None or earliest_us - self.replica.horizon_us >= floor:
            return
        self.metrics.events_past_stage_retention.inc(events)
        now = time.monotonic()
        if now - self._retention_logged_at > 60:
            self._retention_logged_at = now
            log.warning(
                "the terminal stage has forgotten history these events' look-back needs "
                "(its --retention-cap-days is shorter than this scorer trails it): their "
                "terminal features may miss older transactions"
            )

    def _input_ends(self) -> InputEnds:
        """The end offsets of the stage's inputs (transactions and labels), asked now."""
        topics = [self.settings.topic] + (
            [self.settings.labels_topic] if self.settings.labels_topic else []
        )
        found = self._retry(lambda: self.source.end_offsets(topics), "end offsets", "broker")
        return InputEnds(
            {p: end for (t, p), end in found.items() if t == self.settings.topic},
            {p: end for (t, p), end in found.items() if t == self.settings.labels_topic},
            (self.settings.topic, self.settings.labels_topic),
        )

    def _compute(self, decoded: DecodedBatch, messages: list[Message]) -> _Scored:
        """Features into the state, then scores; rewinds if computing the features raises."""
        try:
            return self._score(decoded)
        except (Aborted, ModelUnavailable, DependencyDown):
            raise
        except Exception as err:
            self._rewind(messages, err)
            raise _Rewound from err

    def _features(
        self, table: pa.Table, messages: list[Message]
    ) -> tuple[pa.Table, list[Message], pa.Table, int]:
        """Customer features per partition (repeats dropped), terminal features from the stage."""
        times = to_epoch_us(table.column(spec.TIMESTAMP))
        parts = np.array([m.partition for m in messages])
        keep = np.ones(table.num_rows, dtype=bool)
        customer: np.ndarray | None = None
        names: list[str] = []
        for number in np.unique(parts):
            state = self.owned.states[(messages[0].topic, int(number))]
            rows = np.flatnonzero(parts == number)
            part = table.take(pa.array(rows, pa.int64()))
            repeats = state.repeats(part)
            keep[rows[repeats]] = False
            rows = rows[~repeats]
            if not len(rows):
                continue
            values = state.update_and_read(table.take(pa.array(rows, pa.int64())), times[rows])
            if customer is None:
                names = state.customers.feature_names()
                customer = np.zeros((table.num_rows, values.shape[1]))
            customer[rows] = values
        repeats_dropped = int((~keep).sum())
        kept = np.flatnonzero(keep)
        table = table.take(pa.array(kept, pa.int64()))
        messages = [messages[i] for i in kept]
        times = times[kept]
        assert customer is not None or not len(kept)
        customer = customer[kept] if customer is not None else np.zeros((0, 0))
        terminal = self.replica.read(table.column(spec.TERMINAL_ID).to_pylist(), times.tolist())
        assert self.replica.store is not None
        features = assemble_features(
            names, customer, self.replica.store.feature_names(), terminal, times
        )
        return table, messages, features, repeats_dropped

    def _score(self, decoded: DecodedBatch) -> _Scored:
        out = _Scored()
        if not decoded.transactions.num_rows:
            return out
        table, messages, features, out.repeats = self._features(
            decoded.transactions, decoded.transaction_messages
        )
        if not table.num_rows:
            return out
        inputs = to_model_inputs(table, features)
        scores, versions, rejected = predict_rows(
            self.model.predict, inputs, lambda call: self._retry(call, "model predict", "model")
        )
        thresholds = np.array([self.model.threshold_of(int(v)) for v in versions])
        valid = ~np.isnan(scores)
        out.rejected = [(messages[i], err) for i, err in rejected]
        out.scored_messages = [m for m, ok in zip(messages, valid, strict=True) if ok]
        hits = np.flatnonzero(valid & (scores >= thresholds))
        alert_inputs = {name: values[hits] for name, values in inputs.items()}
        out.alerts = _alerts(
            table.take(pa.array(hits, pa.int64())),
            alert_inputs,
            scores[hits],
            thresholds[hits],
            versions[hits],
            self._reasons(alert_inputs, versions[hits]),
        )
        out.alert_messages = [messages[i] for i in hits]
        self.summary.model_versions.update(int(v) for v in np.unique(versions[valid]))
        return out

    def _reasons(
        self, inputs: dict[str, np.ndarray], versions: np.ndarray
    ) -> list[list[dict[str, object]]]:
        """Reason codes of the alerts, from the model that scored them (see scoring.reasons).

        Explanations never hold an alert back: if they cannot be computed (an
        export without a baseline, the model server failing just now, more
        alerts in the batch than ``max_reason_rows``), the alert is written
        without them and the metric counts it.
        """
        out: list[list[dict[str, object]]] = [[] for _ in range(len(versions))]
        if not self.settings.reason_codes or not len(versions):
            return out
        for version in np.unique(versions):
            every = np.flatnonzero(versions == version)
            rows = every[: self.settings.max_reason_rows]
            self.metrics.unexplained_alerts.inc(len(every) - len(rows))
            baseline = self.model.baseline_of(int(version))
            if baseline is None:
                self.metrics.unexplained_alerts.inc(len(rows))
                continue
            try:
                found = reason_codes(
                    self.model.scorer_of(int(version)),
                    {name: values[rows] for name, values in inputs.items()},
                    baseline,
                )
            except Exception as err:
                log.warning("reason codes not computed for %d alerts: %s", len(rows), err)
                self.metrics.unexplained_alerts.inc(len(rows))
                continue
            for row, reasons in zip(rows, found, strict=True):
                out[row] = reasons
        return out

    def _rewind(self, messages: list[Message], err: BaseException) -> None:
        """Replace the damaged partitions' state by their checkpoints and replay from there.

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
                "a batch of %d messages failed (%s); replaying its partitions from their "
                "checkpoints, one message at a time around the failure",
                len(messages),
                reason,
            )
        keys = {(m.topic, m.partition) for m in messages}
        self.source.rewind(self.owned.rewind(keys))

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
        summary.repeats += scored.repeats
        metrics.events.inc(events)
        metrics.alerts.inc(inserted)
        metrics.repeats.inc(scored.repeats)
        finished = time.monotonic()
        metrics.batch_seconds.observe(finished - started)
        self._first_batch_at = self._first_batch_at or started
        summary.active_seconds = finished - self._first_batch_at
        metrics.health.last_batch_at = now


def _alerts(
    transactions: pa.Table,
    inputs: dict[str, np.ndarray],
    scores: np.ndarray,
    thresholds: np.ndarray,
    versions: np.ndarray,
    reasons: list[list[dict[str, object]]],
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
            reasons=why,
        )
        for record, score, threshold, version, why, *values in zip(
            transactions.to_pylist(),
            scores.tolist(),
            thresholds.tolist(),
            versions.tolist(),
            reasons,
            *columns,
            strict=True,
        )
    ]
