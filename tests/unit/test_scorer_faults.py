"""Faults and hostile input the scorer must survive: each case failed on the earlier loop."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import numpy as np
import pytest

from features.behaviour import BehaviourConfig
from features.model_dir import ModelMetadata
from scoring.stream import decoder
from scoring.stream.partitions import PartitionState
from scoring.stream.ports import Message, PartitionRow, RowsRejected
from scoring.stream.sealed import CheckpointUnusable
from tests.unit.scorer_fakes import (
    T0,
    FakeModel,
    FakePartitionStore,
    FakeStore,
    make_scorer,
    tx_message,
)


def _features(model: FakeModel, name: str) -> dict[str, float]:
    """Last value the model saw of ``name`` for every transaction id it scored."""
    out: dict[str, float] = {}
    for batch in model.seen:
        out.update(zip(batch["transaction_id"].tolist(), batch[name].tolist(), strict=True))
    return out


def test_any_exception_while_decoding_one_message_dead_letters_it_alone(monkeypatch):
    real = decoder.decode_transaction

    def fragile(value, where, **bounds):
        if b"t2" in value:
            raise RecursionError("maximum recursion depth exceeded")
        return real(value, where, **bounds)

    monkeypatch.setattr(decoder, "decode_transaction", fragile)
    messages = [tx_message(i, 90) for i in range(4)]
    scorer, _, dlq, store, _ = make_scorer(messages)
    summary = scorer.run()
    assert sorted(store.alerts) == ["t0", "t1", "t3"]
    assert [m.offset for m, _ in dlq.sent] == [2]
    assert "RecursionError" in dlq.sent[0][1].reason
    assert summary.dead_letters == 1 and summary.events == 3


def test_an_event_dated_far_past_its_kafka_timestamp_is_a_dead_letter():
    stamp_ms = int((T0 + timedelta(minutes=5)).timestamp() * 1000)
    future = {
        "transaction_id": "t99",
        "timestamp": "2099-01-01T00:00:00Z",
        "customer_id": "C1",
        "terminal_id": "T1",
        "amount": 5,
    }
    messages = [
        tx_message(0, 90)._replace(timestamp_ms=stamp_ms),
        Message("transactions", 0, 1, b"C1", json.dumps(future).encode(), stamp_ms),
        tx_message(2, 90)._replace(timestamp_ms=stamp_ms),
    ]
    scorer, _, dlq, store, _ = make_scorer(messages)
    scorer.run()
    assert [m.offset for m, _ in dlq.sent] == [1]
    assert dlq.sent[0][1].field == "timestamp"
    assert sorted(store.alerts) == ["t0", "t2"]
    partition = scorer.owned.states[("transactions", 0)]
    assert partition.watermark_us == int((T0 + timedelta(minutes=2)).timestamp() * 1e6)


@pytest.mark.parametrize("max_batch", [1, 5, 50])
def test_a_message_that_breaks_feature_computation_is_isolated_and_the_state_stays_exact(
    max_batch, monkeypatch
):
    real = PartitionState.update_and_read

    def poisoned(self, transactions, times):
        """Raises on one transaction, after it has changed the state (the worst case)."""
        out = real(self, transactions, times)
        if "t7" in transactions.column("transaction_id").to_pylist():
            raise ZeroDivisionError("float division by zero")
        return out

    monkeypatch.setattr(PartitionState, "update_and_read", poisoned)
    messages = [tx_message(i, float(20 + 7 * i % 80)) for i in range(20)]
    scorer, source, dlq, store, model = make_scorer(messages, max_batch=max_batch)
    summary = scorer.run()
    assert [m.offset for m, _ in dlq.sent] == [7]
    assert "ZeroDivisionError" in dlq.sent[0][1].reason
    assert source.rewinds >= 1

    # The same stream without the poisonous message, on a healthy state.
    clean = [m for m in messages if m.offset != 7]
    reference_scorer, _, _, reference_store, reference_model = make_scorer(
        clean, max_batch=max_batch
    )
    reference_scorer.run()
    assert sorted(store.alerts) == sorted(reference_store.alerts)
    for name in ("customer_nb_tx_1d", "customer_avg_amount_1d", "terminal_nb_tx_30d"):
        assert _features(model, name) == _features(reference_model, name)
    assert summary.dead_letters == 1


def test_only_the_rows_the_model_rejects_go_to_the_dead_letter_topic():
    messages = [tx_message(i, 60 + i) for i in range(9)]
    model = FakeModel(reject=lambda inputs: bool(np.any(inputs["amount"] == 64)))
    scorer, _, dlq, store, _ = make_scorer(messages, model=model, max_batch=9)
    summary = scorer.run()
    assert [m.offset for m, _ in dlq.sent] == [4]
    assert "rejects" in dlq.sent[0][1].reason
    assert sorted(store.alerts) == sorted(f"t{i}" for i in range(9) if i != 4)
    assert summary.events == 8


class RefusingStore(FakeStore):
    """Refuses any write holding the alert of ``bad`` (as PostgreSQL refuses a NUL)."""

    def __init__(self, bad: str) -> None:
        super().__init__()
        self.bad = bad

    def write(self, alerts, checkpoint) -> int:
        if any(a.transaction_id == self.bad for a in alerts):
            raise RowsRejected("database refused the write: value out of range")
        return super().write(alerts, checkpoint)


def test_a_batch_the_database_refuses_is_written_row_by_row_and_only_the_bad_row_is_dead():
    messages = [tx_message(i, 90) for i in range(6)]
    scorer, source, dlq, store, _ = make_scorer(messages, store=RefusingStore("t3"), max_batch=6)
    summary = scorer.run()
    assert sorted(store.alerts) == ["t0", "t1", "t2", "t4", "t5"]
    assert [m.offset for m, _ in dlq.sent] == [3]
    assert "out of range" in dlq.sent[0][1].reason
    assert source.commits[-1] == {("transactions", 0): 6}
    assert summary.alerts == 5


def test_a_repeated_transaction_is_counted_once_as_in_the_batch_path():
    messages = [tx_message(i, 90) for i in range(5)]
    retry = messages[2]._replace(offset=5)  # a producer's retry: the same message again
    scorer, _, dlq, _, model = make_scorer([*messages, retry], max_batch=2)
    summary = scorer.run()
    reference_scorer, _, _, _, reference = make_scorer(messages, max_batch=2)
    reference_scorer.run()
    assert summary.repeats == 1 and summary.events == 5 and not dlq.sent
    assert _features(model, "customer_nb_tx_1d") == _features(reference, "customer_nb_tx_1d")
    assert scorer.metrics.repeats._value.get() == 1


def _health_after(scorer, seconds: float) -> dict:
    """Run ``scorer`` for ``seconds`` and return its health as it stood then."""
    seen: dict = {}

    def look_and_stop() -> None:
        seen.update(scorer.metrics.health.as_dict())
        scorer.stop()

    timer = threading.Timer(seconds, look_and_stop)
    timer.start()
    scorer.run()
    timer.join()
    return seen


def test_a_served_version_without_a_threshold_holds_the_scorer_visibly():
    model = FakeModel(versions={4: ModelMetadata(threshold=None)})
    scorer, source, dlq, store, _ = make_scorer(
        [tx_message(0, 99)], model=model, threshold=None, exit_when_idle_seconds=None
    )
    seen = _health_after(scorer, 0.3)
    assert not store.alerts and not dlq.sent and not source.commits
    assert seen["status"] == "degraded" and seen["model"] == "unavailable"
    assert "no alert threshold" in seen["last_error"]


def test_a_hot_swap_to_a_version_with_another_behavioural_config_is_refused():
    model = FakeModel(versions={3: ModelMetadata(threshold=0.5)})
    messages = [tx_message(i, 90) for i in range(6)]
    scorer, _, _, store, _ = make_scorer(messages, model=model, max_batch=2, threshold=None)

    original = scorer._process_batch
    calls = []

    def swap_after_first_batch(batch):
        calls.append(len(batch))
        if len(calls) == 2:  # version 4, trained with a 3-day label delay, appears
            other = BehaviourConfig(delay_days=3)
            model.versions[4] = ModelMetadata(threshold=0.1, behaviour=other)
        return original(batch)

    scorer._process_batch = swap_after_first_batch  # type: ignore[method-assign]
    scorer.run()
    assert {a.model_version for a in store.alerts.values()} == {3}
    assert set(model.requested) == {3}
    health = scorer.metrics.health.as_dict()
    assert health["status"] == "degraded"
    assert "label delay 3 days" in health["refused_model_versions"]["4"]


def test_a_hot_swap_to_a_compatible_version_is_followed():
    model = FakeModel(versions={3: ModelMetadata(threshold=0.5)})
    messages = [tx_message(i, 90) for i in range(6)]
    scorer, _, _, store, _ = make_scorer(messages, model=model, max_batch=2, threshold=None)
    original = scorer._process_batch

    def swap(batch):
        if batch[0].offset == 2:
            model.versions[5] = ModelMetadata(threshold=0.95)
        return original(batch)

    scorer._process_batch = swap  # type: ignore[method-assign]
    scorer.run()
    versions = {k: a.model_version for k, a in store.alerts.items()}
    assert versions == {"t0": 3, "t1": 3, "t2": 3, "t3": 3}  # 0.90 < 0.95 after the swap
    assert scorer.metrics.health.as_dict()["model_version"] == 5


def _rows_after(messages, partitions) -> list:
    make_scorer(messages, partition_store=partitions)[0].run()
    return partitions.by_partition[("transactions", 0)]


def _damage(rows, index: int) -> None:
    row = rows[index]
    rows[index] = PartitionRow(
        row.topic, row.partition, row.seq, row.kind, row.state[:-10] + b"0123456789",
        row.next_offset, row.watermark_us, row.model_version,
    )


def test_a_corrupt_checkpoint_holds_its_partition_and_never_resumes_with_an_empty_state():
    partitions = FakePartitionStore()
    rows = _rows_after([tx_message(i, 90) for i in range(3)], partitions)
    _damage(rows, len(rows) - 1)
    scorer, source, _, store, _ = make_scorer(
        [tx_message(i, 90) for i in range(5)],
        partition_store=partitions,
        exit_when_idle_seconds=None,
    )
    seen = _health_after(scorer, 0.3)
    assert seen["status"] == "degraded"
    assert "checksum mismatch" in seen["state"] and "use-previous" in seen["state"]
    assert ("transactions", 0) in source.held
    assert not store.alerts and not source.commits


def test_a_corrupt_checkpoint_is_rebuilt_from_the_beginning_when_asked():
    partitions = FakePartitionStore()
    rows = _rows_after([tx_message(i, 90) for i in range(3)], partitions)
    _damage(rows, 0)
    messages = [tx_message(i, 90) for i in range(5)]
    scorer, source, _, store, model = make_scorer(
        messages, partition_store=partitions, rebuild_state=True
    )
    source.commits.append({("transactions", 0): 3})  # Kafka remembers the group's offsets
    scorer.run()
    assert set(store.alerts) == {f"t{i}" for i in range(5)}
    assert _features(model, "customer_nb_tx_1d")["t4"] == 5.0  # replayed from the beginning


def test_a_lost_checkpoint_with_committed_offsets_holds_instead_of_starting_empty():
    messages = [tx_message(i, 90) for i in range(5)]
    scorer, source, _, store, _ = make_scorer(messages, exit_when_idle_seconds=None)
    source.commits.append({("transactions", 0): 3})  # Kafka remembers the group's offsets
    seen = _health_after(scorer, 0.3)
    assert "its state was lost" in seen["state"] and "--rebuild-state" in seen["state"]
    assert not store.alerts


def test_the_revocation_callback_never_touches_the_state_while_a_batch_runs():
    partitions = FakePartitionStore()
    scorer, _, _, _, _ = make_scorer([tx_message(0, 90)], partition_store=partitions)
    scorer.run()
    rows_before = len(partitions.by_partition[("transactions", 0)])
    scorer._idle_since = 1.0
    scorer.owned.states[("transactions", 0)].next_offset = 99  # progress to checkpoint
    with scorer._state_lock:  # the loop is mid-batch
        done = threading.Event()
        thread = threading.Thread(
            target=lambda: (scorer._on_revoked([("transactions", 0)]), done.set())
        )
        thread.start()
        assert done.wait(5)  # gave up waiting for the lock instead of blocking or snapshotting
    assert len(partitions.by_partition[("transactions", 0)]) == rows_before
    scorer._on_revoked([("transactions", 0)])  # between batches it does checkpoint
    rows = partitions.by_partition[("transactions", 0)]
    assert len(rows) == rows_before + 1 and rows[-1].next_offset == 99


def test_checkpoint_age_is_reported_and_a_stale_one_degrades_health():
    scorer, _, _, _, _ = make_scorer([tx_message(0, 90)])
    health = scorer.metrics.health
    health.stale_checkpoint_seconds = 30
    health.checkpoint_age_seconds = 31
    assert health.as_dict()["checkpoint"] == "stale" and health.as_dict()["status"] == "degraded"
    health.checkpoint_age_seconds = 5
    assert health.as_dict()["status"] == "ok"


def test_partition_rows_round_trip_and_refuse_damage():
    partitions = FakePartitionStore()
    rows = _rows_after([tx_message(i, 90, customer=f"C{i % 3}") for i in range(9)], partitions)
    restored = PartitionState.restore(("transactions", 0), BehaviourConfig(), list(rows))
    assert sorted(restored.customers.histories) == ["C0", "C1", "C2"]
    assert restored.next_offset == 9
    _damage(rows, 0)
    with pytest.raises(CheckpointUnusable, match="checksum"):
        PartitionState.restore(("transactions", 0), BehaviourConfig(), list(rows))


def test_a_stage_whose_checkpoint_is_unusable_holds_instead_of_crash_looping():
    from scoring.stream.ports import SavedState
    from scoring.terminal_stage.service import TerminalStage
    from scoring.terminal_stage.settings import StageSettings
    from tests.unit.scorer_fakes import FakeDeadLetters, FakePublisher, FakeSource, NoFloor

    store = FakeStore()
    store.saved = SavedState(b"not a checkpoint", {}, None)
    stage = TerminalStage(
        StageSettings(hold_check_seconds=0.01), BehaviourConfig(),
        FakeSource([tx_message(0, 10)], topics=("transactions", "fraud-labels")),
        FakePublisher(), store, NoFloor(), FakeDeadLetters(),
    )
    runner = threading.Thread(target=stage.run)
    runner.start()
    deadline = threading.Event()
    while not stage.metrics.health.state and not deadline.wait(0.01):
        pass
    assert "not a sealed checkpoint" in stage.metrics.health.state
    assert "use-previous" in stage.metrics.health.state
    stage.stop()
    runner.join(5)
    assert not runner.is_alive()
