"""In-memory fakes of the scorer's own Protocols, shared by the scorer's unit tests."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from features.model_dir import ModelMetadata
from scoring.clients.base import (
    ModelRequestError,
    ModelStatus,
    ModelUnavailable,
    Prediction,
    ServedMetadata,
)
from scoring.stream.ports import DependencyDown, Message, Partition, SavedState
from scoring.stream.served_model import ServedModel
from scoring.stream.service import Scorer
from scoring.stream.settings import ScorerSettings

T0 = datetime(2024, 3, 1, tzinfo=UTC)


def tx_message(offset: int, amount: float, customer: str = "C1", **extra) -> Message:
    record = {
        "transaction_id": f"t{offset}",
        "timestamp": (T0 + timedelta(minutes=offset)).isoformat(),
        "customer_id": customer,
        "terminal_id": "T1",
        "amount": amount,
        **extra,
    }
    return Message("transactions", 0, offset, customer.encode(), json.dumps(record).encode(), 0)


class FakeSource:
    def __init__(self, messages: list[Message]) -> None:
        self.messages = messages
        self.position = 0
        self.commits: list[dict[Partition, int]] = []
        self.assigned: Callable[[list[Partition]], dict[Partition, int]] | None = None
        self.closed = False

    def on_assignment(self, assigned, revoked) -> None:
        self.assigned = assigned

    def poll(self, timeout_ms: int, max_records: int) -> list[Message]:
        if self.assigned is not None:
            seek = self.assigned([("transactions", 0)])
            self.assigned = None
            if ("transactions", 0) in seek:
                self.position = seek[("transactions", 0)]
        batch = self.messages[self.position : self.position + max_records]
        self.position += len(batch)
        return batch

    def commit(self, positions: dict[Partition, int]) -> None:
        self.commits.append(dict(positions))

    def keep_alive(self, seconds: float) -> None:
        pass

    def lag(self) -> int:
        return len(self.messages) - self.position

    def partition_count(self, topic: str) -> int:
        return 1

    def rejoin(self) -> None:
        raise AssertionError("a single-partition source is always complete")

    def rewind(self, positions: dict[Partition, int]) -> None:
        self.position = positions.get(("transactions", 0), 0)
        self.rewinds += 1

    rewinds = 0

    def beginning_offsets(self, partitions: list[Partition]) -> dict[Partition, int]:
        return {p: 0 for p in partitions}

    def committed(self, partitions: list[Partition]) -> dict[Partition, int]:
        return dict(self.commits[-1]) if self.commits else {}

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
    def __init__(self, down_for: int = 0) -> None:
        self.alerts: dict[str, object] = {}
        self.saved: SavedState | None = None
        self.down_for = down_for
        self.writes = 0

    def write(self, alerts, checkpoint) -> int:
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


def make_scorer(
    messages, *, store=None, model=None, source=None, checkpoint_seconds=1e-9, **settings
):
    source = source or FakeSource(messages)
    dlq = FakeDeadLetters()
    store = store or FakeStore()
    model = model or FakeModel()
    initial_state = settings.pop("initial_state", None)
    values: dict[str, Any] = {
        "threshold": 0.5,
        "checkpoint_seconds": checkpoint_seconds,
        "exit_when_idle_seconds": 0,
        "retry_initial_seconds": 0.001,
        "retry_max_seconds": 0.001,
        "hold_check_seconds": 0.01,
        "model_follow_seconds": 0.0,
    }
    values.update(settings)
    config = ScorerSettings(**values)
    extra = {"initial_state": initial_state} if initial_state else {}
    scorer = Scorer(
        config,
        source,
        dlq,
        store,
        ServedModel(model, fixed_threshold=config.threshold, follow_seconds=0.0),
        **extra,
    )
    return scorer, source, dlq, store, model
