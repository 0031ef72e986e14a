"""Hostile transactions and labels mixed into a live stream (real broker, PostgreSQL and SQLite).

Every message a producer could send that breaks the contract, a decoder, the
state's clock or a database column must end in the dead-letter topic with a
reason, while the scorer runs through and every valid event is scored as the
batch path scores it.
"""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
from kafka import KafkaConsumer

from ingest.kafka_io import HEADER_OFFSET, HEADER_REASON, HEADER_TOPIC, KafkaSettings, encode_labels
from scoring.stream.app import Endpoints
from tests.integration.scoring_support import (
    ScorerThread,
    StageThread,
    Topics,
    alerts,
    produce_raw,
    small_bank,
)
from tests.integration.test_scorer import _encoded, expected_scores

pytestmark = pytest.mark.integration


def _nested(depth: int) -> bytes:
    return b'{"transaction_id": ' + b"[" * depth + b"]" * depth + b"}"


def hostile_transactions(base: dict) -> dict[str, bytes]:
    """One message per class of hostile transaction, by what it tries."""

    def variant(**changes: object) -> bytes:
        return json.dumps({**base, **changes}).encode()

    return {
        "deep nesting": _nested(5000),
        "year 1 with an offset": variant(timestamp="0001-01-01T00:00:00+01:00"),
        "year 9999 with an offset": variant(timestamp="9999-12-31T23:59:59-01:00"),
        "dated 2099": variant(timestamp="2099-01-01T00:00:00Z"),
        "amount beyond the column": variant(amount=1e15),
        "amount inf in float32": variant(amount=1e39),
        "huge integer": b'{"transaction_id": "x", "amount": ' + b"9" * 5000 + b"}",
        "id longer than the column": variant(transaction_id="x" * 300),
        "NUL in an id": variant(terminal_id="T\x001"),
        "lone surrogate": b'{"transaction_id": "s1", "customer_id": "\\ud800", '
        + json.dumps({k: v for k, v in base.items() if k not in ("transaction_id", "customer_id")})
        .encode()[1:],
        "control character": variant(customer_id="C\x07"),
    }


def hostile_labels(base: dict) -> dict[str, bytes]:
    def variant(**changes: object) -> bytes:
        return json.dumps({**base, **changes}).encode()

    return {
        "label deep nesting": _nested(5000),
        "label year 1 with an offset": variant(timestamp="0001-01-01T00:00:00+01:00"),
        "label known in 2099": variant(labelled_at="2099-06-01T00:00:00Z"),
        "label lone surrogate": variant(terminal_id="\ud800"),
        "label NUL": variant(transaction_id="t\x00"),
    }


def test_hostile_messages_are_dead_letters_and_every_valid_event_scores_as_in_batch(
    kafka_broker, unique_topic, alerts_db_url, model_server
):
    topics = Topics(
        unique_topic("tx"), unique_topic("labels"), unique_topic("dlq"), unique_topic("group")
    )
    bank = small_bank(days=6, seed=11)
    valid = bank.slice(0, 300)
    good = list(_encoded(valid))
    base = json.loads(good[0][1])
    bad_tx = hostile_transactions({**base, "transaction_id": "hostile"})
    retry = good[10]  # a producer's retry: the same message again, scored once
    stream = good[:100] + [(b"h", v) for v in bad_tx.values()] + [retry] + good[100:]
    placed = produce_raw(kafka_broker.bootstrap, topics.transactions, stream)
    hostile_offsets = {placed[100 + i][1] for i in range(len(bad_tx))}

    labels = encode_labels(valid.slice(0, 50), source="chargeback")
    label_base = json.loads(labels[0][1])
    bad_labels = hostile_labels(label_base)
    label_stream = labels[:25] + [(b"h", v) for v in bad_labels.values()] + labels[25:]
    produce_raw(kafka_broker.bootstrap, topics.labels, label_stream)

    endpoints = Endpoints(
        KafkaSettings(kafka_broker.bootstrap),
        alerts_db_url,
        f"grpc://127.0.0.1:{model_server.grpc_port}",
    )
    stage = StageThread(
        topics.stage_settings(), endpoints.kafka, alerts_db_url, endpoints.model
    ).start()
    scorer = ScorerThread(
        topics.settings(threshold=0.0, exit_when_idle_seconds=4, max_batch=64), endpoints
    )
    summary = scorer.start().join(timeout_s=240)
    stage.stop()
    stage_summary = stage.process.stage.summary

    expected = expected_scores(valid, weight=0.5)
    rows = {a["transaction_id"]: a for a in alerts(alerts_db_url)}
    assert rows.keys() == expected.keys()
    worst = max(abs(rows[t]["score"] - s) for t, s in expected.items())
    assert worst <= 1e-5, f"largest stream/batch score difference {worst}"
    assert summary.events == valid.num_rows and summary.repeats == 1
    assert stage_summary.labels == len(labels)

    letters = _read(kafka_broker.bootstrap, topics.dlq, len(bad_tx) + len(bad_labels))
    by_source: dict[str, list[int]] = {}
    for letter in letters:
        headers = dict(letter.headers)
        assert headers[HEADER_REASON].decode().strip(), "every dead letter says why"
        by_source.setdefault(headers[HEADER_TOPIC].decode(), []).append(
            int(headers[HEADER_OFFSET])
        )
    assert set(by_source[topics.transactions]) == hostile_offsets
    assert len(by_source[topics.labels]) == len(bad_labels)
    assert summary.dead_letters == len(bad_tx)  # the scorers dead-letter transactions,
    assert stage_summary.dead_letters == len(bad_labels)  # the stage the labels it reads
    # The 2099 event and label moved no clock: the state's watermarks are the bank's.
    states = scorer.process.scorer.owned.states.values()
    newest = max(s.watermark_us for s in states if s.watermark_us is not None)
    assert newest == max(valid.column("timestamp").cast(pa.int64()).to_pylist())
    reached = stage.process.stage.reached.values()
    assert max(reached) <= newest


def _read(bootstrap: str, topic: str, count: int) -> list:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=10_000,
        max_partition_fetch_bytes=16 * 1024 * 1024,
    )
    try:
        out = []
        for message in consumer:
            out.append(message)
            if len(out) == count:
                break
        assert len(out) == count, f"{len(out)} of {count} dead letters"
        return out
    finally:
        consumer.close()
