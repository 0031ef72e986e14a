"""The lake keeps up: partitions added while archiving, small files compacted exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from features import spec
from ingest import lake
from ingest.archiver import ArchiveConfig, Archiver
from ingest.kafka_io import KafkaSettings, encode_transactions
from ingest.readers import read_transactions
from ingest.records import records_to_table

T0 = datetime(2018, 5, 1, tzinfo=UTC)


def tx(i: int, hours: float) -> dict[str, object]:
    return {
        spec.TRANSACTION_ID: f"t{i}", spec.TIMESTAMP: T0 + timedelta(hours=hours),
        spec.CUSTOMER_ID: f"C{i % 5}", spec.TERMINAL_ID: "T1", spec.AMOUNT: 10.0 + i,
        spec.MERCHANT_CATEGORY: "5411", spec.COUNTRY: "BE", spec.CHANNEL: "pos",
    }


def label(i: int, hours: float) -> dict[str, object]:
    return {
        spec.TRANSACTION_ID: f"t{i}", spec.LABEL_KEY: i % 2, spec.TIMESTAMP: T0,
        spec.CUSTOMER_ID: "C1", spec.TERMINAL_ID: "T1",
        "labelled_at": T0 + timedelta(hours=hours), "source": "chargeback",
    }


def small_files_lake(root: Path, batches: int = 30, per_batch: int = 20) -> int:
    """A lake of many small committed batches over 3 days; the number of transactions."""
    lake.create(root)
    n = 0
    for b in range(batches):
        rows = [tx(n + k, (n + k) * 0.1) for k in range(per_batch)]
        lake.write_batch(root, lake.Batch("transactions", b % 3, b, b),
                         records_to_table(rows, labelled=False), None, [])
        labels = lake.labels_table([label(n + k, 1) for k in range(0, per_batch, 4)])
        lake.write_batch(root, lake.Batch("fraud-labels", 0, b, b), None, labels, [])
        n += per_batch
    return n


def lake_records(root: Path) -> tuple[Counter[str], Counter[tuple[str, object]]]:
    """Every record the lake's files hold now (as a reader sees them), counted, no dedup."""
    tx_ids: Counter[str] = Counter()
    for path in lake.data_files(root, lake.TRANSACTIONS, None, None):
        tx_ids.update(pq.read_table(path).column(spec.TRANSACTION_ID).to_pylist())
    labels: Counter[tuple[str, object]] = Counter()
    for path in lake.data_files(root, lake.LABELS, None, None):
        table = pq.read_table(path)
        labels.update(zip(table.column(spec.TRANSACTION_ID).to_pylist(),
                          table.column("labelled_at").to_pylist(), strict=True))
    return tx_ids, labels


def test_compaction_merges_small_files_and_keeps_every_record_once(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    n = small_files_lake(root)
    before = lake_records(root)
    files = len(lake.data_files(root, lake.TRANSACTIONS, None, None))
    stats = lake.compact(root, min_files=2)
    after = lake_records(root)
    assert after == before
    assert set(after[0].values()) == {1} and len(after[0]) == n
    assert len(lake.data_files(root, lake.TRANSACTIONS, None, None)) < files
    assert stats.files_written == stats.partitions > 0
    assert not (root / lake.COMPACTIONS).exists() or not any((root / lake.COMPACTIONS).iterdir())
    read = read_transactions(root, labelled=True)
    assert read.table.num_rows == n
    # The archiver still resumes after the last committed offset.
    assert lake.recover(root, "transactions", 0) == 27
    assert lake_records(root) == before


@pytest.mark.parametrize("step", ["written", "manifest", "in place", "deleted"])
def test_a_compaction_cut_short_at_any_step_reads_once_and_recovers(tmp_path: Path,
                                                                     step: str) -> None:
    root = tmp_path / "lake"
    small_files_lake(root, batches=9)
    before = lake_records(root)

    class CrashError(Exception):
        pass

    def crash(name: str) -> None:
        if name == step:
            raise CrashError

    with pytest.raises(CrashError):
        lake.compact(root, min_files=2, on_step=crash)
    assert lake_records(root) == before  # readers see each record once, mid-compaction
    assert lake.recover_compactions(root) == 1
    assert lake_records(root) == before
    lake.compact(root, min_files=2)
    assert lake_records(root) == before


_KILLABLE = """
import os, random, signal, sys
from pathlib import Path
from ingest import lake
random.seed(int(sys.argv[2]))
doomed = random.randint(1, 12)  # SIGKILL at this step (if the compaction gets that far)
steps = 0
def step(name):
    global steps
    steps += 1
    if steps == doomed:
        os.kill(os.getpid(), signal.SIGKILL)
lake.compact(Path(sys.argv[1]), min_files=2, on_step=step)
"""


def test_kill_9_at_random_points_of_compaction_loses_and_repeats_nothing(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    n = small_files_lake(root, batches=60, per_batch=5)
    before = lake_records(root)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    kills = 0
    for attempt in range(12):
        # More batches arrive between compactions, as from a running archiver.
        lake.write_batch(root, lake.Batch("transactions", 9, 100 + attempt, 100 + attempt),
                         records_to_table([tx(10_000 + attempt, 1)], labelled=False), None, [])
        before[0][f"t{10_000 + attempt}"] += 1
        child = subprocess.Popen([sys.executable, "-c", _KILLABLE, str(root), str(attempt)],
                                 env=env)
        if child.wait(120) == -signal.SIGKILL:  # killed at its doomed step
            kills += 1
        assert lake_records(root) == before, f"attempt {attempt}"
    lake.compact(root, min_files=2)
    assert lake_records(root) == before
    assert sum(before[0].values()) == n + 12
    assert kills >= 3


@dataclass
class Message:
    topic: str
    partition: int
    offset: int
    value: bytes
    timestamp: int = -1


class GrowingTopics:
    """A consumer of topics whose partitions can be added (Tansu has no CreatePartitions)."""

    def __init__(self, partitions: dict[str, int]) -> None:
        self.messages: dict[tuple[str, int], list[Message]] = {}
        self.partitions = {t: set(range(n)) for t, n in partitions.items()}
        self.position: dict[tuple[str, int], int] = {}
        self.assigned: list[tuple[str, int]] = []

    def add_partition(self, topic: str) -> int:
        p = len(self.partitions[topic])
        self.partitions[topic].add(p)
        return p

    def publish(self, topic: str, partition: int, values: list[bytes]) -> None:
        log = self.messages.setdefault((topic, partition), [])
        for v in values:
            log.append(Message(topic, partition, len(log), v))

    def topics(self) -> set[str]:
        return set(self.partitions)

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(self.partitions[topic])

    def assign(self, partitions: list) -> None:
        self.assigned = [(tp.topic, tp.partition) for tp in partitions]

    def seek_to_beginning(self, tp) -> None:
        self.position[(tp.topic, tp.partition)] = 0

    def seek(self, tp, offset: int) -> None:
        self.position[(tp.topic, tp.partition)] = offset

    def poll(self, timeout_ms: int = 0) -> dict:
        from kafka import TopicPartition

        out = {}
        for key in self.assigned:
            log = self.messages.get(key, [])
            at = self.position.get(key, 0)
            if at < len(log):
                out[TopicPartition(*key)] = log[at:]
                self.position[key] = len(log)
        if not out:
            time.sleep(timeout_ms / 1000 / 10)
        return out

    def close(self) -> None:
        pass


def test_the_archiver_picks_up_a_partition_added_while_it_runs(tmp_path: Path, monkeypatch) -> None:
    topics = GrowingTopics({"transactions": 2, "fraud-labels": 1})
    monkeypatch.setattr("ingest.archiver.make_consumer", lambda *a, **k: topics)
    values = [v for _, v in encode_transactions(records_to_table(
        [tx(i, i) for i in range(30)], labelled=False))]
    topics.publish("transactions", 0, values[:10])
    topics.publish("transactions", 1, values[10:20])
    config = ArchiveConfig(out=tmp_path / "lake", batch_records=5, batch_seconds=0.05,
                           exit_when_idle=1.5, partition_check_seconds=0.1)
    archiver = Archiver(KafkaSettings("127.0.0.1:1"), config)
    with archiver:
        import threading

        def grow() -> None:
            time.sleep(0.5)
            p = topics.add_partition("transactions")
            topics.publish("transactions", p, values[20:])

        threading.Thread(target=grow).start()
        stats = archiver.run()
    assert stats.partitions_added == ["transactions-2"]
    ids = read_transactions(tmp_path / "lake", labelled=False).table.column(
        spec.TRANSACTION_ID).to_pylist()
    assert sorted(ids) == sorted(f"t{i}" for i in range(30))
    # A restart resumes the added partition after what the lake holds.
    with Archiver(KafkaSettings("127.0.0.1:1"), config) as again:
        assert again.stats.resumed_from["transactions-2"] == 10
