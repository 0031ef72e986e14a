"""Parity: the batch replay and the event-by-event streaming API give identical features."""

from __future__ import annotations

from datetime import date

import numpy as np
import pyarrow as pa
import pytest

from features import spec
from features.behaviour import BehaviourState, compute_features
from features.timebase import DAY_US, to_epoch_us
from ingest.simulator import SimulationConfig, simulate


@pytest.fixture(scope="module")
def history() -> pa.Table:
    config = SimulationConfig(
        customers=150, terminals=300, days=70, start_date=date(2018, 4, 1), seed=7
    )
    return simulate(config).table


def labels_of(batch: pa.Table) -> pa.Table:
    return batch.select(["transaction_id", "terminal_id", "timestamp", "is_fraud"])


def stream(state: BehaviourState, live: pa.Table, rng: np.random.Generator) -> pa.Table:
    """Feed events in random micro-batches (1..64), labels arriving right after each batch."""
    outputs, start = [], 0
    while start < live.num_rows:
        size = int(rng.integers(1, 65))
        batch = live.slice(start, size)
        outputs.append(state.update_and_read(batch.drop(["is_fraud"])))
        state.apply_labels(labels_of(batch))
        start += size
    return pa.concat_tables(outputs)


def assert_same_features(a: pa.Table, b: pa.Table) -> None:
    assert a.num_rows == b.num_rows
    for name in spec.BEHAVIOURAL_FEATURES:
        x, y = a.column(name).to_numpy(), b.column(name).to_numpy()
        mismatch = np.flatnonzero(x != y)
        assert mismatch.size == 0, (
            f"{name} differs at {mismatch[:5]}: {x[mismatch[:5]]} vs {y[mismatch[:5]]}"
        )


def test_streaming_after_warm_equals_batch_value_for_value(history: pa.Table):
    times = to_epoch_us(history.column("timestamp"))
    cut = int(np.searchsorted(times, times[0] + 45 * DAY_US))
    batch = compute_features(history, workers=1)

    state = BehaviourState()
    state.warm(history.slice(0, cut))
    restored = BehaviourState.from_bytes(state.to_bytes())  # as a restarted scorer would
    streamed = stream(restored, history.slice(cut), np.random.default_rng(0))

    assert_same_features(streamed, batch.slice(cut))
    assert np.count_nonzero(streamed.column("terminal_risk_7d").to_numpy()) > 0


def test_streaming_one_event_at_a_time_equals_batch(history: pa.Table):
    head = history.slice(0, 3000)
    state = BehaviourState()
    outputs = []
    for i in range(head.num_rows):
        row = head.slice(i, 1)
        outputs.append(state.update_and_read(row.drop(["is_fraud"])))
        state.apply_labels(labels_of(row))
    assert_same_features(pa.concat_tables(outputs), compute_features(head, workers=1))


def test_sharded_batch_replay_equals_sequential(history: pa.Table, monkeypatch):
    monkeypatch.setattr("features.behaviour._PARALLEL_MIN_ROWS", 0)
    assert_same_features(compute_features(history, workers=2), compute_features(history, workers=1))
