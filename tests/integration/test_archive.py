"""`fraud archive` against a real broker process: every record in the lake exactly once."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from features import spec
from ingest import lake
from ingest.kafka_io import KafkaSettings, make_producer
from ingest.readers import read_transactions

pytestmark = pytest.mark.integration

FRAUD = str(Path(sys.executable).with_name("fraud"))


def _fraud(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([FRAUD, *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture
def published(kafka_broker, unique_topic, tmp_path):
    """A small simulated bank published with its labels, plus two invalid messages."""
    from ingest.simulator import SimulationConfig, simulate

    table = simulate(SimulationConfig(customers=150, terminals=300, days=6, seed=11)).table
    source = tmp_path / "bank.parquet"
    pq.write_table(table, source)
    topic, labels = unique_topic("tx"), unique_topic("labels")
    _fraud("produce", "--input", str(source), "--bootstrap-servers", kafka_broker.bootstrap,
           "--topic", topic, "--labels-topic", labels, "--partitions", "3")
    producer = make_producer(KafkaSettings(kafka_broker.bootstrap))
    producer.send(topic, key=b"bad", value=b"{not json")
    producer.send(topic, key=b"bad", value=json.dumps({"transaction_id": "x"}).encode())
    producer.flush()
    producer.close()
    return table, topic, labels


def _archive(broker, out: Path, topic: str, labels: str) -> dict:
    done = _fraud("archive", "--out", str(out), "--bootstrap-servers", broker.bootstrap,
                  "--topic", topic, "--labels-topic", labels, "--batch-records", "700",
                  "--exit-when-idle", "3")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _as_rows(table) -> list[tuple]:
    names = spec.arrow_schema(labelled=True).names
    return sorted(tuple(r[n] for n in names) for r in table.select(names).to_pylist())


def test_archive_writes_each_record_once_and_resumes_after_a_crash(
    kafka_broker, published, tmp_path
):
    table, topic, labels = published
    out = tmp_path / "lake"

    first = _archive(kafka_broker, out, topic, labels)
    assert first["transactions"] == table.num_rows
    assert first["labels"] == table.num_rows
    assert first["rejected"] == 2
    assert _as_rows(read_transactions(out, labelled=True).table) == _as_rows(table)

    # The rejected messages are kept with their reason and where they came from.
    rejected = [json.loads(line) for path in (out / lake.REJECTED).glob("*.jsonl")
                for line in path.read_text().splitlines()]
    assert sorted(r["value"] for r in rejected) == sorted(['{not json', '{"transaction_id": "x"}'])
    assert all(r["topic"] == topic and r["reason"] for r in rejected)

    # Run again: nothing new, nothing twice.
    again = _archive(kafka_broker, out, topic, labels)
    assert (again["transactions"], again["labels"], again["rejected"]) == (0, 0, 0)
    assert set(again["resumed_from"]) == {f"{topic}-{p}" for p in range(3)} | {
        f"{labels}-{p}" for p in range(3)}

    # A crash after a batch's files but before its commit marker: the files are
    # deleted on restart and the batch archived again, once.
    markers = sorted((out / lake.COMMITS / f"{topic}-1").glob("*.json"))
    lost = json.loads(markers[-1].read_text())
    markers[-1].unlink()
    redone = _archive(kafka_broker, out, topic, labels)
    assert redone["transactions"] == lost["transactions"] > 0
    assert _as_rows(read_transactions(out, labelled=True).table) == _as_rows(table)


def test_a_second_archiver_is_refused(kafka_broker, published, tmp_path):
    _, topic, labels = published
    out = tmp_path / "lake"
    lake.create(out)
    with (out / "_archiver.lock").open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        done = _fraud("archive", "--out", str(out), "--bootstrap-servers",
                      kafka_broker.bootstrap, "--topic", topic, "--labels-topic", labels,
                      "--exit-when-idle", "1", check=False)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: {out}: another fraud archive is writing this lake")


def test_a_missing_topic_is_a_clear_error(kafka_broker, unique_topic, tmp_path):
    done = _fraud("archive", "--out", str(tmp_path / "lake"), "--bootstrap-servers",
                  kafka_broker.bootstrap, "--topic", unique_topic("none"), "--labels-topic", "",
                  "--exit-when-idle", "1", "--topic-wait", "1", check=False)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "does not exist" in done.stderr.strip().splitlines()[-1]

