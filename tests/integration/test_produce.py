"""`fraud produce` against a real broker process, read back with kafka-python."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fraud.dev.local_broker import LocalBroker
from ingest.kafka_io import KafkaSettings, decode_label, decode_transaction, make_consumer
from ingest.readers import read_transactions

pytestmark = pytest.mark.integration

FRAUD = str(Path(sys.executable).with_name("fraud"))
T0 = datetime(2018, 4, 1, tzinfo=UTC)


def write_transactions(path: Path, n: int, seed: int = 0) -> Path:
    """A labelled Parquet file in shuffled event order, with some timestamp ties."""
    rng = random.Random(seed)
    seconds = [rng.randrange(0, 3 * 86400) // 7 * 7 for _ in range(n)]
    table = pa.table(
        {
            "transaction_id": [f"tx-{i}" for i in range(n)],
            "timestamp": [T0 + timedelta(seconds=s) for s in seconds],
            "customer_id": [f"c-{rng.randrange(12)}" for _ in range(n)],
            "terminal_id": [f"t-{rng.randrange(40)}" for _ in range(n)],
            "amount": [round(rng.uniform(0, 300), 2) for _ in range(n)],
            "country": [rng.choice(["FR", "BE", "DE"]) for _ in range(n)],
            "is_fraud": [int(rng.random() < 0.1) for _ in range(n)],
        }
    )
    pq.write_table(table, path)
    return path


def consume_all(bootstrap: str, topic: str, expected: int, timeout_s: float = 30) -> list:
    consumer = make_consumer(KafkaSettings(bootstrap), None, topic, consumer_timeout_ms=1000)
    messages: list = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(messages) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                messages.extend(batch)
        # A short extra poll catches anything beyond the expected count.
        for batch in consumer.poll(timeout_ms=500).values():
            messages.extend(batch)
    finally:
        consumer.close()
    return messages


def run_produce(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FRAUD, "produce", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def test_produce_publishes_in_event_order_keyed_by_customer(
    kafka_broker: LocalBroker, unique_topic: Callable[[str], str], tmp_path: Path
) -> None:
    path = write_transactions(tmp_path / "tx.parquet", 600)
    topic, labels = unique_topic("tx"), unique_topic("labels")
    done = run_produce(
        "--input", str(path), "--bootstrap-servers", kafka_broker.bootstrap,
        "--topic", topic, "--labels-topic", labels, "--partitions", "3",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert (figures["sent"], figures["labels_sent"], figures["skipped"]) == (600, 600, 0)
    assert figures["interrupted"] is False

    expected = read_transactions(path, labelled=True).table.to_pylist()
    messages = consume_all(kafka_broker.bootstrap, topic, 600)
    assert len(messages) == 600
    assert {m.partition for m in messages} == {0, 1, 2}
    decoded = {}
    per_customer: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
    partition_of: dict[bytes, set[int]] = defaultdict(set)
    for m in messages:
        record = decode_transaction(m.value, f"{m.topic}[{m.partition}]@{m.offset}")
        assert m.key == record["customer_id"].encode()
        partition_of[m.key].add(m.partition)
        decoded[record["transaction_id"]] = record
        per_customer[record["customer_id"]].append(
            (m.partition, m.offset, record["transaction_id"])
        )
    assert all(len(parts) == 1 for parts in partition_of.values())
    # Content equals the file (label aside).
    assert decoded == {
        r["transaction_id"]: {k: v for k, v in r.items() if k != "is_fraud"} for r in expected
    }
    # Per customer, offsets follow event time, ties in file order (the reader's stable sort).
    for customer, seen in per_customer.items():
        in_offset_order = [tx for _, _, tx in sorted(seen)]
        in_event_order = [r["transaction_id"] for r in expected if r["customer_id"] == customer]
        assert in_offset_order == in_event_order
        times = [decoded[tx]["timestamp"] for tx in in_offset_order]
        assert times == sorted(times)

    label_messages = consume_all(kafka_broker.bootstrap, labels, 600)
    assert len(label_messages) == 600
    by_id = {r["transaction_id"]: r for r in expected}
    for m in label_messages:
        label = decode_label(m.value, "labels")
        original = by_id[label["transaction_id"]]
        assert m.key == original["transaction_id"].encode()
        assert label["is_fraud"] == original["is_fraud"]
        assert label["timestamp"] == label["labelled_at"] == original["timestamp"]
        assert (label["customer_id"], label["terminal_id"]) == (
            original["customer_id"],
            original["terminal_id"],
        )
        assert label["source"] == "simulator"


def test_produce_date_window_and_bad_input(
    kafka_broker: LocalBroker, unique_topic: Callable[[str], str], tmp_path: Path
) -> None:
    path = write_transactions(tmp_path / "tx.parquet", 300)
    topic = unique_topic("tx")
    done = run_produce(
        "--input", str(path), "--bootstrap-servers", kafka_broker.bootstrap,
        "--topic", topic, "--start", "2018-04-02", "--end", "2018-04-02",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    day = [
        r
        for r in read_transactions(path, labelled=False).table.to_pylist()
        if r["timestamp"].date() == T0.date() + timedelta(days=1)
    ]
    assert json.loads(done.stdout.splitlines()[-1])["sent"] == len(day) > 0
    assert len(consume_all(kafka_broker.bootstrap, topic, len(day))) == len(day)

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"transaction_id": "1", "timestamp": "2018-04-01", "customer_id": "c"}\n')
    done = run_produce("--input", str(bad), "--bootstrap-servers", kafka_broker.bootstrap)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: {bad}: missing required column 'terminal_id'"
    ]


def test_ctrl_c_flushes_and_reports_partial_count(
    kafka_broker: LocalBroker, unique_topic: Callable[[str], str], tmp_path: Path
) -> None:
    path = write_transactions(tmp_path / "tx.parquet", 1000)
    topic = unique_topic("tx")
    args = ["--input", str(path), "--bootstrap-servers", kafka_broker.bootstrap]
    process = subprocess.Popen(
        [FRAUD, "produce", *args, "--topic", topic, "--rate", "50"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(3)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    figures = json.loads(out.strip().splitlines()[-1])
    assert figures["interrupted"] is True
    assert 0 < figures["sent"] < 1000
    assert f"interrupted: sent {figures['sent']} of 1000" in err
    assert len(consume_all(kafka_broker.bootstrap, topic, figures["sent"])) == figures["sent"]
