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


# --- delayed labels (the realistic protocol) ---------------------------------


@pytest.fixture(scope="module")
def realistic() -> tuple[pa.Table, pa.Table]:
    """A bank's transactions (no labels) and every label as it gets them, late."""
    result = simulate(SimulationConfig(
        customers=150, terminals=300, days=70, start_date=date(2018, 4, 1), seed=7
    ))
    return result.table.drop_columns(["is_fraud"]), result.realistic_labels()


def stream_with_late_labels(
    state: BehaviourState, live: pa.Table, labels: pa.Table, rng: np.random.Generator
) -> pa.Table:
    """Micro-batches (1..64 events); labels applied as a lagging terminal stage would.

    A label is read once the stream has reached its ``labelled_at``, then
    applied at a random later batch, but before a batch that needs it
    (``labelled_at + latency`` at or before the batch's last event).
    """
    latency = state.terminals.label_latency_us
    known = to_epoch_us(labels.column("labelled_at"))
    times = to_epoch_us(live.column("timestamp"))
    outputs, start, applied = [], 0, 0
    while start < live.num_rows:
        size = int(rng.integers(1, 65))
        batch = live.slice(start, size)
        reached = int(times[min(start + size, live.num_rows) - 1])
        must = int(np.searchsorted(known, reached - latency, side="right"))
        may = int(np.searchsorted(known, int(times[start]), side="right"))
        upto = max(must, applied + int(rng.integers(0, max(1, may - applied) + 1)))
        upto = min(max(upto, must), max(may, must))
        if upto > applied:
            state.apply_labels(labels.slice(applied, upto - applied))
            applied = upto
        outputs.append(state.update_and_read(batch))
        start += size
    return pa.concat_tables(outputs)


def test_delayed_labels_stream_equals_batch(realistic: tuple[pa.Table, pa.Table]):
    live, labels = realistic
    sources = set(labels.column("source").to_pylist())
    assert sources == {"chargeback", "analyst"}
    batch = compute_features(live, workers=1, labels=labels)
    streamed = stream_with_late_labels(BehaviourState(), live, labels, np.random.default_rng(1))
    assert_same_features(streamed, batch)
    assert np.count_nonzero(batch.column("terminal_risk_7d").to_numpy()) > 0


def test_delayed_labels_show_later_than_the_handbook_ones(realistic, history):
    live, labels = realistic
    late = compute_features(live, workers=1, labels=labels).column("terminal_risk_30d")
    handbook = compute_features(history, workers=1).column("terminal_risk_30d")
    assert 0 < np.count_nonzero(late.to_numpy()) < np.count_nonzero(handbook.to_numpy())


def test_labels_apart_known_with_their_transactions_equal_the_labelled_replay(history):
    from ingest.label_files import own_labels

    apart = compute_features(history.drop_columns(["is_fraud"]), workers=1,
                             labels=own_labels(history))
    assert_same_features(apart, compute_features(history, workers=1))


def test_sharded_replay_with_labels_apart_equals_sequential(realistic, monkeypatch):
    live, labels = realistic
    sequential = compute_features(live, workers=1, labels=labels)
    monkeypatch.setattr("features.behaviour._PARALLEL_MIN_ROWS", 0)
    assert_same_features(compute_features(live, workers=2, labels=labels), sequential)
