"""In-memory fakes of the scorer's and the terminal stage's own Protocols (no services).

``make_scorer`` first runs a real :class:`TerminalStage` over the same messages
(in memory), then builds a real :class:`Scorer` whose replica follows what
that stage published: the scorer's unit tests run the whole scale-out design.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from features.behaviour import BehaviourConfig
from features.model_dir import ModelMetadata
from scoring.clients.base import (
    ModelRequestError,
    ModelStatus,
    ModelUnavailable,
    Prediction,
    ServedMetadata,
)
from scoring.stream.ports import DependencyDown, Message, Partition, PartitionRow, SavedState
from scoring.stream.replica import TerminalReplica
from scoring.stream.served_model import ServedModel
from scoring.stream.service import Scorer
from scoring.stream.settings import ScorerSettings
from scoring.terminal_stage.service import TerminalStage
from scoring.terminal_stage.settings import StageSettings

T0 = datetime(2024, 3, 1, tzinfo=UTC)


def tx_message(
    offset: int, amount: float, customer: str = "C1", partition: int = 0, **extra: Any
) -> Message:
    record = {
        "transaction_id": f"t{offset}",
        "timestamp": (T0 + timedelta(minutes=offset)).isoformat(),
        "customer_id": customer,
        "terminal_id": "T1",
        "amount": amount,
        **extra,
    }
    value = json.dumps(record).encode()
    return Message("transactions", partition, offset, customer.encode(), value, _ms(record))


def _ms(record: dict[str, Any]) -> int:
    """A Kafka timestamp for a record: produced at its event time (as a live bank's are)."""
    return int(datetime.fromisoformat(str(record["timestamp"])).timestamp() * 1000)


def label_message(offset: int, transaction: Message, is_fraud: int = 1) -> Message:
    record = json.loads(transaction.value or b"{}")
    label = {
        "transaction_id": record["transaction_id"],
        "is_fraud": is_fraud,
        "timestamp": record["timestamp"],
        "customer_id": record["customer_id"],
        "terminal_id": record["terminal_id"],
        "labelled_at": record["timestamp"],
        "source": "test",
    }
    return Message("fraud-labels", 0, offset, b"l", json.dumps(label).encode(), _ms(label))


class FakeSource:
    """Messages in list order, one position per partition; every partition is ours."""

    def __init__(
        self,
        messages: list[Message],
        partitions: int | None = None,
        topics: tuple[str, ...] = ("transactions",),
        others: list[Message] | None = None,
    ) -> None:
        self.messages = messages
        self.others = others or []
        self.end_queries = 0
        counts = {t: 1 for t in topics}
        for m in messages:
            counts[m.topic] = max(counts.get(m.topic, 1), m.partition + 1)
        if partitions:
            counts["transactions"] = partitions
        self.counts = counts
        self.all = sorted((t, p) for t, n in counts.items() for p in range(n))
        self.at: dict[Partition, int] = {}
        self.commits: list[dict[Partition, int]] = []
        self.assigned: Callable[[list[Partition]], dict[Partition, int]] | None = None
        self.revoked: Callable[[list[Partition]], None] | None = None
        self.held: set[Partition] = set()
        self.rewinds = 0
        self.closed = False
        self.left = False

    def on_assignment(self, assigned, revoked) -> None:
        self.assigned, self.revoked = assigned, revoked

    def poll(self, timeout_ms: int, max_records: int) -> list[Message]:
        if self.assigned is not None:
            self.at.update(self.assigned(list(self.all)))
            self.assigned = None
        out = []
        for m in self.messages:
            key = (m.topic, m.partition)
            if key in self.held or m.offset < self.at.get(key, 0):
                continue
            if out and any((o.topic, o.partition) == key and o.offset >= m.offset for o in out):
                continue
            out.append(m)
            self.at[key] = m.offset + 1
            if len(out) == max_records:
                break
        return out

    def commit(self, positions: dict[Partition, int]) -> None:
        self.commits.append(dict(positions))

    def keep_alive(self, seconds: float) -> None:
        pass

    def lag(self) -> int:
        return sum(
            1 for m in self.messages if m.offset >= self.at.get((m.topic, m.partition), 0)
        )

    def positions(self) -> dict[Partition, int]:
        return {k: self.at.get(k, 0) for k in self.all}

    def end_offsets(self, topics) -> dict[Partition, int]:
        """Ends of ``topics`` from our messages and those only the stage reads (``others``)."""
        ends = {k: 0 for k in self.all if k[0] in topics}
        ends.update({(t, 0): 0 for t in topics if all(k[0] != t for k in ends)})
        for m in [*self.messages, *self.others]:
            key = (m.topic, m.partition)
            if m.topic in topics:
                ends[key] = max(ends.get(key, 0), m.offset + 1)
        self.end_queries += 1
        return ends

    def partition_count(self, topic: str) -> int:
        return self.counts.get(topic, 0)

    def rejoin(self) -> None:
        raise AssertionError("every partition is always ours here")

    def rewind(self, positions: dict[Partition, int]) -> None:
        self.at.update(positions)
        self.rewinds += 1

    def beginning_offsets(self, partitions: list[Partition]) -> dict[Partition, int]:
        return {p: 0 for p in partitions}

    def committed(self, partitions: list[Partition]) -> dict[Partition, int]:
        last: dict[Partition, int] = {}
        for commit in self.commits:
            last.update(commit)
        return {p: last[p] for p in partitions if p in last}

    def hold(self, partitions: list[Partition]) -> None:
        self.held.update(partitions)

    def release(self, partitions: list[Partition]) -> None:
        self.held.difference_update(partitions)

    def leave(self) -> None:
        self.left = True

    def close(self) -> None:
        self.closed = True


class FakeDeadLetters:
    def __init__(self) -> None:
        self.sent: list[tuple[Message, Exception]] = []
        self.queued: list[tuple[Message, Exception]] = []

    def send(self, message: Message, reason: Exception) -> None:
        self.queued.append((message, reason))

    def flush(self) -> None:
        self.sent += self.queued
        self.queued = []


class FakeStore:
    """The alerts table, and one checkpoint slot (the terminal stage's)."""

    def __init__(self, down_for: int = 0) -> None:
        self.alerts: dict[str, object] = {}
        self.saved: SavedState | None = None
        self.down_for = down_for
        self.writes = 0

    def write(self, alerts, checkpoint=None) -> int:
        if self.down_for > 0:
            self.down_for -= 1
            raise DependencyDown("database unavailable")
        self.writes += 1
        new = [a for a in alerts if a.transaction_id not in self.alerts]
        self.alerts.update({a.transaction_id: a for a in new})
        if checkpoint is not None:
            self.saved = checkpoint
        return len(new)

    def load(self) -> SavedState | None:
        return self.saved

    def discard(self) -> int:
        found, self.saved = self.saved, None
        return int(found is not None)


class FakePartitionStore:
    def __init__(self) -> None:
        self.by_partition: dict[Partition, list[PartitionRow]] = {}
        self.writes = 0
        self.refused: list[PartitionRow] = []

    def write_rows(self, rows) -> None:
        """As the SQL store: the next seq of the partition; a former owner's rows refused."""
        import dataclasses

        self.writes += 1
        for row in rows:
            chain = self.by_partition.setdefault(row.key, [])
            bases = [r for r in chain if r.kind == "base"]
            owner = bases[-1].owner if bases else None
            if not row.claim and owner not in (None, "", row.owner):
                self.refused.append(row)
                continue
            seq = chain[-1].seq + 1 if chain else 0
            chain.append(dataclasses.replace(row, seq=seq, claim=False))

    def rows(self, partition: Partition) -> list[PartitionRow]:
        chain = self.by_partition.get(partition, [])
        bases = [i for i, r in enumerate(chain) if r.kind == "base"]
        return chain[bases[-1] :] if bases else []

    def partitions(self) -> set[Partition]:
        return {k for k, v in self.by_partition.items() if v}

    def truncate(self, partition: Partition, from_seq: int) -> int:
        chain = self.by_partition.get(partition, [])
        kept = [r for r in chain if r.seq < from_seq]
        self.by_partition[partition] = kept
        return len(chain) - len(kept)

    def discard(self) -> int:
        count = sum(len(v) for v in self.by_partition.values())
        self.by_partition.clear()
        return count

    def marks(self) -> dict[Partition, tuple[int | None, int]]:
        chains = self.by_partition.items()
        return {k: (c[-1].watermark_us, c[-1].next_offset) for k, c in chains if c}


class FakeModel:
    """score = amount / 100 capped at 1; serves ``versions`` (metadata per version)."""

    def __init__(
        self,
        down_for: int = 0,
        reject: Callable[[dict[str, np.ndarray]], bool] | None = None,
        versions: dict[int, ModelMetadata] | None = None,
    ) -> None:
        self.down_for = down_for
        self.reject = reject
        self.calls = 0
        self.seen: list[dict[str, np.ndarray]] = []
        self.versions = versions or {3: ModelMetadata(threshold=0.5)}
        self.requested: list[int | None] = []

    def predict(self, inputs, version=None) -> Prediction:
        self.calls += 1
        self.requested.append(version)
        if self.reject is not None and self.reject(inputs):
            raise ModelRequestError("input 'amount' has a value the model rejects")
        if self.down_for > 0:
            self.down_for -= 1
            raise ModelUnavailable("connection refused")
        self.seen.append(dict(inputs))
        scores = np.minimum(inputs["amount"].astype(np.float32) / 100, 1).astype(np.float32)
        return Prediction(scores=scores, model_version=version or max(self.versions))

    def metadata(self, version=None) -> ServedMetadata:
        version = version or max(self.versions)
        return ServedMetadata(version, self.versions[version])

    def status(self) -> ModelStatus:
        return ModelStatus(True, max(self.versions)) if self.versions else ModelStatus(False, None)

    def close(self) -> None:
        pass


class FakePublisher:
    """The state topic: a list."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.queued: list[bytes] = []

    def publish(self, message: bytes) -> None:
        self.queued.append(message)

    def flush(self) -> int:
        self.messages += self.queued
        self.queued = []
        return len(self.messages)


class FakeFollower:
    def __init__(self, publisher: FakePublisher) -> None:
        self.publisher = publisher
        self.offset = 0

    def seek(self, offset: int) -> None:
        self.offset = offset

    def poll(self, timeout_ms: int) -> list[tuple[int, bytes]]:
        out = list(enumerate(self.publisher.messages))[self.offset :]
        self.offset = len(self.publisher.messages)
        return out

    def close(self) -> None:
        pass


class NoFloor:
    """No scorer has a checkpoint row: the stage may forget nothing (without a cap)."""

    def marks(self) -> dict[Partition, tuple[int | None, int]]:
        return {}


def run_stage(
    messages: list[Message],
    config: BehaviourConfig | None = None,
    *,
    publisher: FakePublisher | None = None,
    store: FakeStore | None = None,
    history: Any = None,
) -> tuple[TerminalStage, FakePublisher, FakeStore]:
    """Run an in-memory terminal stage over ``messages`` until it has read them all."""
    publisher = publisher or FakePublisher()
    store = store or FakeStore()
    source = FakeSource(messages, topics=("transactions", "fraud-labels"))
    stage = TerminalStage(
        StageSettings(exit_when_idle_seconds=0, checkpoint_seconds=1e-9),
        config or BehaviourConfig(),
        source,
        publisher,
        store,
        NoFloor(),
        FakeDeadLetters(),
        history=history,
    )
    stage.run()
    return stage, publisher, store


def make_scorer(
    messages,
    *,
    store=None,
    model=None,
    source=None,
    partition_store=None,
    checkpoint_seconds=1e-9,
    stage_messages=None,
    **settings,
):
    """A scorer over ``messages``, after its stage read them (or ``stage_messages``)."""
    model = model or FakeModel()
    behaviour = model.metadata().metadata.behaviour
    _, publisher, stage_store = run_stage(
        stage_messages if stage_messages is not None else messages, behaviour
    )
    stage_input = stage_messages if stage_messages is not None else messages
    source = source or FakeSource(
        [m for m in messages if m.topic == "transactions"],
        others=[m for m in stage_input if m.topic != "transactions"],
    )
    dlq = FakeDeadLetters()
    store = store or FakeStore()
    partition_store = partition_store or FakePartitionStore()
    values: dict[str, Any] = {
        "threshold": 0.5,
        "checkpoint_seconds": checkpoint_seconds,
        "exit_when_idle_seconds": 0,
        "retry_initial_seconds": 0.001,
        "retry_max_seconds": 0.001,
        "hold_check_seconds": 0.01,
        "model_follow_seconds": 0.0,
    }
    history = settings.pop("history", None)
    values.update(settings)
    config = ScorerSettings(**values)
    scorer = Scorer(
        config,
        source,
        dlq,
        store,
        partition_store,
        ServedModel(
            model, fixed_threshold=config.threshold, follow_seconds=0.0,
            # Only a fake that knows labels is asked by label (FakeModel serves "latest").
            label=config.model_label if hasattr(model, "labels") else None,
            canary_label=config.canary_label, canary_share=config.canary_share,
        ),
        TerminalReplica(FakeFollower(publisher), stage_store),
        history=history,
    )
    scorer.partition_store = partition_store  # type: ignore[attr-defined]
    return scorer, source, dlq, store, model
