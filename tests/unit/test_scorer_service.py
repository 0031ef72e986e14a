"""The scorer's loop against in-memory fakes of its own Protocols (no services)."""

from __future__ import annotations

import json
from datetime import timedelta

import numpy as np
import pytest

from features import spec
from ingest.kafka_io import BATCH_DECODE_MIN_MESSAGES, decode_transactions
from scoring.stream import decoder
from scoring.stream.ports import Message
from tests.unit.scorer_fakes import (
    T0,
    FakeModel,
    FakePartitionStore,
    FakeSource,
    FakeStore,
    label_message,
    make_scorer,
    tx_message,
)


def test_scores_above_threshold_become_alerts_with_snapshot_and_version():
    messages = [tx_message(i, amount) for i, amount in enumerate([10, 70, 40, 95])]
    scorer, source, dlq, store, _ = make_scorer(messages)
    summary = scorer.run()
    assert sorted(store.alerts) == ["t1", "t3"]
    alert = store.alerts["t3"]
    assert alert.model_version == 3 and alert.threshold == 0.5
    assert alert.score == pytest.approx(0.95)
    assert alert.features["amount"] == 95.0
    assert alert.features["customer_nb_tx_1d"] == 4.0  # the behavioural state saw all four
    assert set(spec.MODEL_INPUTS) <= set(alert.features)
    assert summary.events == 4 and summary.alerts == 2 and not dlq.sent
    assert source.commits[-1] == {("transactions", 0): 4}
    assert source.closed


def test_invalid_messages_go_to_the_dead_letter_topic_and_valid_ones_around_them_are_scored():
    bad_amount = tx_message(1, -5)
    not_json = Message("transactions", 0, 2, b"k", b"{oops", 0)
    bad_utf8 = Message("transactions", 0, 3, b"k", b"\xff\xfe", 0)
    messages = [tx_message(0, 80), bad_amount, not_json, bad_utf8, tx_message(4, 90)]
    scorer, _, dlq, store, _ = make_scorer(messages)
    summary = scorer.run()
    assert sorted(store.alerts) == ["t0", "t4"]
    assert [m.offset for m, _ in dlq.sent] == [1, 2, 3]
    assert "amount" in str(dlq.sent[0][1]) and "transactions[0]@1" in str(dlq.sent[0][1])
    assert summary.dead_letters == 3 and summary.events == 2


@pytest.mark.parametrize("poisoned", [False, True])
def test_a_large_batch_is_scored_the_same_whether_validated_at_once_or_one_by_one(
    poisoned, monkeypatch
):
    """Batches of BATCH_DECODE_MIN_MESSAGES+ take the column path unless one message is bad."""
    column_path: list[bool] = []

    def spy(values, **bounds):
        table = decode_transactions(values, **bounds)
        column_path.append(table is not None)
        return table

    monkeypatch.setattr(decoder, "decode_transactions", spy)
    n = BATCH_DECODE_MIN_MESSAGES + 44
    messages = [tx_message(i, 30 + (i * 37) % 70, customer=f"C{i % 7}") for i in range(n)]
    if poisoned:
        messages[150] = Message("transactions", 0, 150, b"k", b'{"amount": 1}', 0)
    scorer, _, dlq, store, _ = make_scorer(messages)
    summary = scorer.run()

    expected = {f"t{i}" for i in range(n) if 30 + (i * 37) % 70 >= 50}
    if poisoned:
        expected.discard("t150")
    assert set(store.alerts) == expected
    assert summary.events == n - poisoned and len(dlq.sent) == poisoned
    assert set(column_path) == {not poisoned}  # the stage and the scorer decode alike
    if poisoned:
        assert "transactions[0]@150" in str(dlq.sent[0][1])
    one_by_one, _, _, reference, _ = make_scorer(messages, max_batch=50)
    one_by_one.run()
    assert {k: a.features for k, a in reference.alerts.items()} == {
        k: a.features for k, a in store.alerts.items()
    }


def test_database_down_is_retried_without_loss_or_duplicates():
    messages = [tx_message(i, 99) for i in range(6)]
    scorer, source, _, store, _ = make_scorer(messages, store=FakeStore(down_for=4), max_batch=3)
    scorer.run()
    assert sorted(store.alerts) == [f"t{i}" for i in range(6)]
    assert scorer.metrics.retries.labels(dependency="database")._value.get() == 4
    assert source.commits[-1] == {("transactions", 0): 6}
    assert scorer.metrics.health.database_ok


def test_model_down_is_retried_and_nothing_is_committed_meanwhile():
    model = FakeModel(down_for=3)
    scorer, source, _, store, _ = make_scorer([tx_message(0, 99)], model=model)
    scorer.run()
    assert model.calls == 4 and list(store.alerts) == ["t0"]
    assert source.commits[-1] == {("transactions", 0): 1}


def test_a_model_that_rejects_the_inputs_sends_the_batch_to_the_dead_letter_topic():
    model = FakeModel(reject=lambda inputs: True)
    scorer, _, dlq, store, _ = make_scorer([tx_message(0, 99)], model=model)
    scorer.run()
    assert not store.alerts and len(dlq.sent) == 1 and "rejects" in str(dlq.sent[0][1])


def test_restart_from_an_older_checkpoint_replays_to_identical_features_without_duplicates():
    messages = [tx_message(i, float(10 + 13 * i % 90)) for i in range(40)]
    store, partitions = FakeStore(), FakePartitionStore()
    make_scorer(messages[:15], store=store, partition_store=partitions, max_batch=5)[0].run()
    older = list(partitions.by_partition[("transactions", 0)])
    assert older[-1].next_offset == 15
    # Crash after alerts of events 15..24 were written but before their checkpoint rows.
    make_scorer(messages[:25], store=store, partition_store=partitions, max_batch=5)[0].run()
    alerts_before = dict(store.alerts)
    partitions.by_partition[("transactions", 0)] = older
    restarted, _, _, _, model = make_scorer(
        messages, store=store, partition_store=partitions, max_batch=5
    )
    restarted.run()

    uninterrupted, _, _, reference_store, reference_model = make_scorer(messages, max_batch=5)
    uninterrupted.run()
    assert sorted(store.alerts) == sorted(reference_store.alerts)
    assert all(store.alerts[k] is v for k, v in alerts_before.items())  # first write kept
    for name in ("customer_nb_tx_1d", "customer_avg_amount_7d", "terminal_nb_tx_30d"):
        replayed = np.concatenate([s[name] for s in model.seen])
        reference = np.concatenate([s[name] for s in reference_model.seen])[15:]
        np.testing.assert_array_equal(replayed, reference)


def test_checkpoints_are_incremental_per_partition():
    """A checkpoint row holds only the customers changed since the row before."""
    messages = [tx_message(i, 20, customer=f"C{i % 4}") for i in range(8)]
    messages += [tx_message(i, 20, customer="C0") for i in range(8, 12)]
    partitions = FakePartitionStore()
    scorer = make_scorer(messages, partition_store=partitions, max_batch=4)[0]
    scorer.run()
    rows = partitions.by_partition[("transactions", 0)]
    assert [r.kind for r in rows[:3]] == ["base", "delta", "delta"]
    from features.state_codec import decode_customers
    from scoring.stream.sealed import unseal

    changed = [sorted(decode_customers(unseal(r.state, "t"))[0]) for r in rows]
    assert changed[0] == ["C0", "C1", "C2", "C3"]  # the first row is a base: everything
    assert changed[2] == ["C0"]  # the last four events touched one customer only
    assert rows[-1].next_offset == 12


def test_labels_are_applied_to_terminal_state_by_the_stage():
    first = tx_message(0, 10)
    record = {
        "transaction_id": "t9",
        "timestamp": (T0 + timedelta(days=7, minutes=1)).isoformat(),
        "customer_id": "C2",
        "terminal_id": "T1",
        "amount": 1.0,
    }
    later = Message(
        "transactions", 0, 1, b"C2", json.dumps(record).encode(),
        int((T0 + timedelta(days=7, minutes=1)).timestamp() * 1000),
    )
    messages = [first, label_message(0, first), later]
    scorer, _, _, _, model = make_scorer(messages, max_batch=2)
    scorer.run()
    assert model.seen[-1]["terminal_nb_tx_1d"][-1] == 1.0
    assert model.seen[-1]["terminal_risk_1d"][-1] == 1.0


def test_scorers_sharing_the_partitions_score_exactly_as_one():
    """Customer state follows the partitions; terminal state comes from the stage."""
    messages = []
    for i in range(60):
        customer = f"C{i % 6}"
        messages.append(tx_message(i, 20 + (i * 31) % 80, customer=customer,
                                   partition=i % 6 % 2, terminal_id=f"T{i % 5}"))
    by_partition: dict[int, int] = {}
    renumbered = []
    for m in messages:  # offsets per partition
        offset = by_partition.get(m.partition, 0)
        by_partition[m.partition] = offset + 1
        renumbered.append(m._replace(offset=offset))
    single, _, _, one_store, _ = make_scorer(renumbered, max_batch=7)
    single.run()
    stores = []
    for mine in (0, 1):
        source = FakeSource([m for m in renumbered if m.partition == mine])
        source.all = [("transactions", mine)]
        scorer, _, _, store, _ = make_scorer(
            renumbered, source=source, max_batch=7, stage_messages=renumbered
        )
        scorer.run()
        stores.append(store)
    union = {**stores[0].alerts, **stores[1].alerts}
    assert union.keys() == one_store.alerts.keys()
    for key, alert in one_store.alerts.items():
        assert union[key].features == alert.features
        assert union[key].score == pytest.approx(alert.score)


def test_alerts_carry_reason_codes_from_the_model_that_scored_them():
    from features.model_dir import ModelMetadata

    baseline = {
        name: ("unknown" if dtype == "string" else 1.0)
        for name, dtype in spec.model_input_dtypes().items()
    }
    model = FakeModel(versions={3: ModelMetadata(threshold=0.5, details={"baseline": baseline})})
    messages = [tx_message(i, amount) for i, amount in enumerate([10, 70, 95])]
    scorer, _, _, store, _ = make_scorer(messages, model=model)
    scorer.run()
    reasons = store.alerts["t2"].reasons
    assert reasons and reasons[0]["group"] == "amount"
    assert reasons[0]["contribution"] == pytest.approx(0.95 - 0.01, abs=1e-4)
    assert "amount" in reasons[0]["text"].lower()


def test_an_export_without_a_baseline_gives_alerts_without_reasons_counted():
    messages = [tx_message(i, amount) for i, amount in enumerate([10, 70, 95])]
    scorer, _, _, store, _ = make_scorer(messages)
    scorer.run()
    assert all(not a.reasons for a in store.alerts.values()) and len(store.alerts) == 2
    assert scorer.metrics.unexplained_alerts._value.get() == 2
