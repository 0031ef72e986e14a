"""Kafka message codec and settings (no broker needed)."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from features.errors import InputError
from features.spec import LABEL_KEY, TRANSACTION_FIELDS
from ingest.kafka_io import (
    LABEL_FIELDS,
    KafkaSettings,
    dead_letter_headers,
    decode_label,
    decode_transaction,
    decode_transactions,
    encode_label,
    encode_labels,
    encode_transaction,
    encode_transactions,
    message_where,
)
from ingest.producer import Pacer
from ingest.records import records_to_table
from ingest.validation import ValidationError, validate_record
from tests.unit.test_validation import with_

T0 = datetime(2018, 4, 1, 10, 0, 31, 250000, tzinfo=UTC)


def records() -> list[dict]:
    return [
        validate_record(
            with_(transaction_id=f"tx-{i}", customer_id=f"c-é{i % 2}", is_fraud=i % 2),
            "r",
            labelled=True,
        )
        | {"timestamp": T0 + timedelta(seconds=i)}
        for i in range(4)
    ]


def test_transaction_round_trip() -> None:
    record = records()[1]
    key, value = encode_transaction(record)
    assert key == "c-é1".encode()
    obj = json.loads(value)
    assert list(obj) == list(TRANSACTION_FIELDS)
    assert LABEL_KEY not in obj
    assert obj["timestamp"] == "2018-04-01T10:00:32.250000Z"
    decoded = decode_transaction(value, "transactions[0]@1")
    assert decoded == {k: v for k, v in record.items() if k != LABEL_KEY}


def test_batch_encoding_equals_record_encoding() -> None:
    recs = records()
    table = records_to_table(recs, labelled=True)
    assert encode_transactions(table) == [encode_transaction(r) for r in recs]
    labels = [encode_label(r, labelled_at=r["timestamp"], source="simulator") for r in recs]
    assert encode_labels(table, source="simulator") == labels


def test_label_message() -> None:
    record = records()[1]
    later = T0 + timedelta(days=9)
    key, value = encode_label(record, labelled_at=later, source="chargeback")
    assert key == b"tx-1"
    obj = json.loads(value)
    assert tuple(obj) == LABEL_FIELDS
    assert obj["is_fraud"] == 1
    assert obj["labelled_at"] == "2018-04-10T10:00:31.250000Z"
    decoded = decode_label(value, "fraud-labels[0]@0")
    assert decoded["labelled_at"] == later
    assert decoded["timestamp"] == record["timestamp"]
    with pytest.raises(ValidationError, match=r"fraud-labels\[0\]@3: field 'is_fraud'"):
        decode_label(value.replace(b'"is_fraud":1', b'"is_fraud":7'), "fraud-labels[0]@3")


def test_decode_failures_carry_where() -> None:
    where = message_where("transactions", 2, 42)
    assert where == "transactions[2]@42"
    with pytest.raises(ValidationError) as caught:
        decode_transaction(None, where)
    assert caught.value.record == where
    _, value = encode_transaction(records()[0])
    with pytest.raises(ValidationError, match=r"^transactions\[2\]@42: field 'amount'"):
        decode_transaction(value.replace(b'"amount":57.16', b'"amount":"x"'), where)


def test_dead_letter_headers() -> None:
    err = ValidationError("transactions[2]@42", "amount", "must be >= 0, got -1.0")
    headers = dict(dead_letter_headers(err, "transactions", 2, 42))
    assert headers == {
        "error.reason": b"must be >= 0, got -1.0",
        "error.field": b"amount",
        "error.message": b"transactions[2]@42: field 'amount': must be >= 0, got -1.0",
        "source.topic": b"transactions",
        "source.partition": b"2",
        "source.offset": b"42",
    }
    assert dict(dead_letter_headers("boom", "t", 0, 1))["error.field"] == b""


def test_settings_from_env() -> None:
    env = {
        "FRAUD_KAFKA_SASL_USERNAME": "svc",
        "FRAUD_KAFKA_SASL_PASSWORD": "secret",
        "FRAUD_KAFKA_SASL_MECHANISM": "PLAIN",
        "FRAUD_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "FRAUD_KAFKA_SESSION_TIMEOUT_MS": "10000",
    }
    settings = KafkaSettings.from_env("k1:9092,k2:9092", env, client_id="scorer")
    assert settings.servers == ["k1:9092", "k2:9092"]
    assert settings.session_timeout_ms == 10000
    assert settings.max_poll_interval_ms == 5000
    config = settings.client_config()
    assert config["sasl_plain_username"] == "svc"
    assert config["security_protocol"] == "SASL_SSL"
    assert config["client_id"] == "scorer"
    assert "secret" not in repr(settings)
    assert "sasl_mechanism" not in KafkaSettings("h:1").client_config()


@pytest.mark.parametrize(
    "servers, env, message",
    [
        ("localhost", {}, "expected HOST:PORT"),
        ("", {}, "expected HOST:PORT"),
        ("h:1", {"FRAUD_KAFKA_HEARTBEAT_INTERVAL_MS": "9000"}, "heartbeat_interval_ms"),
        ("h:1", {"FRAUD_KAFKA_SESSION_TIMEOUT_MS": "soon"}, "expected an integer"),
    ],
)
def test_bad_settings(servers: str, env: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        KafkaSettings.from_env(servers, env)


def test_pacer_spreads_events_evenly() -> None:
    pacer = Pacer(rate=2000, stop=threading.Event())
    began = time.monotonic()
    granted = 0
    grants = []
    while granted < 400:
        n = pacer.take()
        grants.append(n)
        granted += n
    elapsed = time.monotonic() - began
    assert max(grants) <= pacer.burst == 20
    assert elapsed >= (400 - pacer.burst) / 2000


def test_pacer_stops_promptly() -> None:
    stop = threading.Event()
    pacer = Pacer(rate=0.01, stop=stop)
    assert pacer.take() == 1
    threading.Timer(0.05, stop.set).start()
    assert pacer.take() == 0


def test_batch_encoding_escapes_strings_and_keeps_values() -> None:
    recs = records()
    recs[0]["customer_id"] = 'c "quoted"\\ /x'
    recs[1]["amount"] = 12.0
    recs[2]["amount"] = 0.1 + 0.2
    table = records_to_table(recs, labelled=True)
    for (key, value), record in zip(encode_transactions(table), recs, strict=True):
        assert key == record["customer_id"].encode()
        assert decode_transaction(value, "x") == {k: v for k, v in record.items() if k != LABEL_KEY}
    for (_, value), record in zip(encode_labels(table, source="s"), recs, strict=True):
        assert decode_label(value, "x")["customer_id"] == record["customer_id"]


def test_a_valid_batch_decodes_at_once_to_what_record_by_record_gives() -> None:
    recs = records()
    recs[0]["customer_id"] = 'c "quoted"\\ /x'
    recs[1]["amount"] = 12.0
    recs[2]["merchant_category"] = None
    values = [value for _, value in encode_transactions(records_to_table(recs, labelled=True))]
    values[3] = b'{"transaction_id": "tx-3", "timestamp": "2018-04-01T12:00:34+02:00", ' + (
        b'"customer_id": "c", "terminal_id": "t", "amount": 7, "extra": {"nested": [1]}}'
    )

    table = decode_transactions(values)

    one_by_one = [decode_transaction(v, "x") for v in values]
    assert table is not None
    assert table.equals(records_to_table(one_by_one, labelled=False))


VALID = encode_transactions(records_to_table(records(), labelled=True))[0][1]


@pytest.mark.parametrize(
    "bad",
    [
        None,
        b"",
        b"   ",
        b"\xff\xfe",
        b"[1, 2]",
        b'{"transaction_id": "t",',
        b'{"transaction_id": "a", "transaction_id": "b"}',
        VALID.replace(b'"amount":', b'"amount": "NaN", "x":'),
        VALID.replace(b'"amount":', b'\n"amount":'),
        VALID.replace(b'"customer_id":"c-\xc3\xa90"', b'"customer_id":""'),
        VALID.replace(b"2018-04-01T10:00:31", b"2018-13-01T10:00:31"),
        VALID[:-1] + b', "pad": "' + b"x" * 1_100_000 + b'"}',
    ],
    ids=lambda v: repr(v)[:40],
)
def test_any_invalid_message_sends_the_batch_to_the_exact_path(bad: bytes | None) -> None:
    assert decode_transactions([VALID, VALID]) is not None
    assert decode_transactions([VALID, bad, VALID]) is None
