"""Labels as a bank gets them: the simulator's delays, the label rule, the publisher's position."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest

from features import spec
from features.terminal_state import NEVER, labelled_period
from features.timebase import DAY_US, to_epoch_us
from ingest import lake
from ingest.readers import read_transactions
from ingest.simulator import SimulationConfig, simulate
from ingest.simulator.run import simulate_to

BANK = SimulationConfig(customers=400, terminals=800, days=60, start_date=date(2018, 4, 1),
                        seed=11)


@pytest.fixture(scope="module")
def bank():
    result = simulate(BANK)
    return result, result.realistic_labels()


def test_chargebacks_come_days_to_weeks_late_for_every_fraud_and_only_frauds(bank):
    result, labels = bank
    charged = labels.filter(pc.equal(labels.column("source"), "chargeback"))
    truth = result.table.filter(pc.equal(result.table.column("is_fraud"), 1))
    assert sorted(charged.column("transaction_id").to_pylist()) == sorted(
        truth.column("transaction_id").to_pylist())
    assert set(charged.column("is_fraud").to_pylist()) == {1}
    delay = (to_epoch_us(charged.column("labelled_at"))
             - to_epoch_us(charged.column("timestamp"))) / DAY_US
    assert 8 < np.median(delay) < 12
    assert 0.02 < np.mean(delay >= 30) < 0.09
    assert delay.min() > 0


def test_analysts_decide_within_hours_and_the_latest_label_is_the_truth(bank):
    result, labels = bank
    analyst = labels.filter(pc.equal(labels.column("source"), "analyst"))
    hours = (to_epoch_us(analyst.column("labelled_at"))
             - to_epoch_us(analyst.column("timestamp"))) / 3_600_000_000
    assert np.median(hours) < 6
    assert set(analyst.column("is_fraud").to_pylist()) == {0, 1}
    # Every transaction ends with its true label: corrections and chargebacks come last.
    latest = lake.latest_labels(labels)
    truth = dict(zip(result.table.column("transaction_id").to_pylist(),
                     result.table.column("is_fraud").to_pylist(), strict=True))
    assert all(truth[txid] == value for txid, value in latest.items())
    assert sum(latest.values()) == sum(truth.values())
    # Some genuine transactions were wrongly confirmed fraud for a while, then corrected.
    periods = lake.label_periods(labels)
    assert any(frm != NEVER and until != NEVER for frm, until in periods.values())


def test_the_labels_are_the_same_for_the_same_seed_and_leave_the_transactions_alone(bank):
    result, labels = bank
    again = simulate(BANK)
    assert again.table.equals(result.table)
    assert again.realistic_labels().equals(labels)
    other = simulate(SimulationConfig(**{**BANK.__dict__, "seed": 12})).realistic_labels()
    assert not other.equals(labels)
    assert labels.column("labelled_at").to_pylist() == sorted(
        labels.column("labelled_at").to_pylist())


def test_the_realistic_protocol_writes_a_lake_read_back_point_in_time(tmp_path: Path, bank):
    result, labels = bank
    figures = simulate_to(BANK, tmp_path / "bank", label_protocol="realistic")
    assert figures["format"] == "lake" and figures["labels"] == labels.num_rows
    assert figures["labels_by_source"]["chargeback_fraud"] == figures["frauds"]
    read = read_transactions(tmp_path / "bank", labelled=True)
    assert read.table.column("is_fraud").to_pylist() == result.table.column("is_fraud").to_pylist()
    assert read.labels is not None and read.labels.num_rows == labels.num_rows
    # Known by day 20: only the labels that had arrived.
    cutoff = result.table.column("timestamp")[0].as_py().replace(hour=0) + (
        np.timedelta64(20, "D").astype(object))
    early = read_transactions(tmp_path / "bank", labelled=True, labels_known_before=cutoff)
    assert early.table.column("is_fraud").to_numpy().sum() < read.table.column(
        "is_fraud").to_numpy().sum()
    assert pc.max(early.labels.column("labelled_at")).as_py() < cutoff
    with pytest.raises(Exception, match="give a directory"):
        simulate_to(BANK, tmp_path / "bank.parquet", label_protocol="realistic")


def fold(labels: list[tuple[int, int]]) -> tuple[int, int]:
    period = (NEVER, NEVER)
    for value, known in labels:
        period = labelled_period(*period, value, known)
    return period


def test_the_latest_label_known_wins_from_when_it_is_known():
    assert fold([(1, 10)]) == (10, NEVER)
    assert fold([(1, 10), (0, 20)]) == (10, 20)  # an analyst clears a chargeback
    assert fold([(0, 10), (1, 20)]) == (20, NEVER)  # a chargeback overrules a clearance
    assert fold([(1, 10), (0, 20), (1, 30)]) == (30, NEVER)
    assert fold([(1, 10), (0, 10)]) == (NEVER, NEVER)  # known at once: the later one wins


def test_a_repeated_or_late_older_label_changes_nothing():
    sequences = [[(1, 10)], [(1, 10), (0, 20)], [(0, 10), (1, 20)], [(1, 10), (1, 15), (0, 20)]]
    for labels in sequences:
        in_order = fold(labels)
        # A publisher's retry: the whole round again, after it was applied.
        assert fold(labels + labels) == in_order, labels
        for k in range(1, len(labels)):
            assert fold(labels + labels[:k]) == in_order, (labels, k)
    # An older fraud label arriving after the period ended moves its start back only.
    assert fold([(1, 15), (0, 20), (1, 10)]) == (10, 20)
    # A genuine label older than the open period's start is ignored.
    assert fold([(1, 15), (0, 12)]) == (15, NEVER)
    # (A newer genuine label before any fraud one leaves no trace: labels of one
    # transaction share a partition, in labelled_at order, so this does not arise.)
    assert fold([(0, 20), (1, 10)]) == (10, NEVER)


def test_the_publisher_position_keeps_gaps_until_they_fill_or_expire():
    from scoring.label_publisher import Position, advance

    class D:
        def __init__(self, i: int) -> None:
            self.id = i

    position = advance(Position(), [D(1), D(2), D(4), D(5)], now=100.0, gap_seconds=60)
    assert position.last_id == 5 and position.gaps == {3: 100.0} and position.published == 4
    filled = advance(position, [D(3), D(6)], now=110.0, gap_seconds=60)
    assert filled.last_id == 6 and filled.gaps == {}
    expired = advance(position, [], now=161.0, gap_seconds=60)
    assert expired.last_id == 5 and expired.gaps == {}


def test_the_publisher_key_and_partition_are_those_of_the_transaction():
    from datetime import UTC, datetime

    from ingest.kafka_io import decode_label
    from scoring.db.workbench_models import Decision
    from scoring.label_publisher import label_of, partition_for

    at = datetime(2026, 12, 1, 9, tzinfo=UTC)
    decision = Decision(id=7, alert_id=1, transaction_id="tx-9", customer_id="c", terminal_id="t",
                        event_time=at, status="false_positive", analyst="ann", decided_at=at)
    key, value = label_of(decision)
    assert key == b"tx-9:7"
    record = decode_label(value, "here")
    assert record[spec.LABEL_KEY] == 0 and record["source"] == "analyst"
    assert record["labelled_at"] == at
    assert label_of(decision) == (key, value)  # deterministic: a retry is the same message
    assert partition_for("tx-9", [0, 1, 2]) == partition_for("tx-9", [2, 0, 1])


def test_realistic_produce_sends_each_label_once_the_stream_reaches_its_time(bank, monkeypatch):
    """Each label after every transaction at or before its labelled_at, before any later one."""
    import json

    from ingest import producer as module
    from ingest.kafka_io import KafkaSettings

    result, labels = bank
    sent: list[tuple[str, bytes]] = []

    class Future:
        def add_errback(self, _):
            return self

    class Producer:
        def send(self, topic, key=None, value=None):
            sent.append((topic, value))
            return Future()

        def flush(self):
            pass

        def close(self):
            pass

    monkeypatch.setattr(module, "check_reachable", lambda *_: None)
    monkeypatch.setattr(module, "ensure_topics", lambda *_: [])
    monkeypatch.setattr(module, "make_producer", lambda *a, **k: Producer())
    table = result.table.drop_columns(["is_fraud"])
    out = module.publish(table, KafkaSettings("x:1"), module.ProduceOptions(
        labels_topic="fraud-labels", chunk_rows=700), labels=labels)
    assert out.sent == table.num_rows and out.labels_sent == labels.num_rows
    stream_time = ""
    last_label = ""
    for topic, value in sent:
        record = json.loads(value)
        if topic == "transactions":
            assert not last_label or record["timestamp"] > last_label  # later ones after it
            stream_time = record["timestamp"]
        else:
            assert record["labelled_at"] >= stream_time  # the stream reached it ...
            assert record["labelled_at"] >= last_label  # ... in labelled_at order
            last_label = record["labelled_at"]
            assert record["source"] in ("chargeback", "analyst")
