"""The record validator: canonical output and one specific error per kind of bad input."""

from __future__ import annotations

import json
import math
import pickle
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest

from features.errors import InputError
from features.spec import BOUNDS, LABEL_KEY, MAX_RECORD_BYTES, RAW_FIELDS, arrow_schema
from ingest.records import records_to_table, table_to_records
from ingest.validation import (
    WHITESPACE,
    ValidationError,
    decode_json_record,
    validate_record,
)

GOOD = {
    "transaction_id": "tx-1",
    "timestamp": "2018-04-01T10:00:31",
    "customer_id": "c-7",
    "terminal_id": "t-3",
    "amount": 57.16,
    "merchant_category": "5411",
    "country": "FR",
    "channel": "pos",
    "is_fraud": 0,
}


DROP = object()


def with_(**changes: object) -> dict[str, object]:
    raw = dict(GOOD)
    for name, value in changes.items():
        if value is DROP:
            raw.pop(name)
        else:
            raw[name] = value
    return raw


def test_valid_record_is_canonical() -> None:
    raw = with_(
        transaction_id=42,
        customer_id="  c-7 ",
        amount="12.50",
        timestamp="2018-04-01T12:00:00+02:00",
        merchant_category=5411,
        country=DROP,
        channel="",
        extra_field={"ignored": True},
    )
    record = validate_record(raw, "r", labelled=True)
    assert list(record) == list(RAW_FIELDS)
    assert record["transaction_id"] == "42"
    assert record["customer_id"] == "c-7"
    assert record["amount"] == 12.5
    assert record["timestamp"] == datetime(2018, 4, 1, 10, 0, tzinfo=UTC)
    assert record["merchant_category"] == "5411"
    assert record["country"] == "unknown"
    assert record["channel"] == "unknown"
    assert record["is_fraud"] == 0


def test_naive_timestamp_means_utc() -> None:
    record = validate_record(with_(timestamp="2018-04-01 10:00:31.25"), "r")
    assert record["timestamp"] == datetime(2018, 4, 1, 10, 0, 31, 250000, tzinfo=UTC)
    assert record["timestamp"].tzinfo is UTC


def test_label_is_ignored_unless_labelled() -> None:
    record = validate_record(with_(is_fraud="not a label"), "r", labelled=False)
    assert LABEL_KEY not in record


@pytest.mark.parametrize("value, expected", [(1, 1), ("0", 0), (" 1 ", 1), (True, 1), (0.0, 0)])
def test_label_forms(value: object, expected: int) -> None:
    assert validate_record(with_(is_fraud=value), "r", labelled=True)["is_fraud"] == expected


BAD: list[tuple[dict[str, object], str, str]] = [
    # (changes, field, reason)
    ({"transaction_id": DROP}, "transaction_id", "required field is missing"),
    ({"customer_id": None}, "customer_id", "required field is missing"),
    ({"terminal_id": "   "}, "terminal_id", "required field is missing"),
    ({"amount": DROP}, "amount", "required field is missing"),
    ({"timestamp": ""}, "timestamp", "required field is missing"),
    ({"transaction_id": 1.5}, "transaction_id", "expected a string, got float 1.5"),
    ({"transaction_id": True}, "transaction_id", "expected a string, got boolean True"),
    ({"customer_id": ["c"]}, "customer_id", "expected a string, got array ['c']"),
    ({"country": {"code": "FR"}}, "country", "expected a string, got object {'code': 'FR'}"),
    ({"amount": -3.5}, "amount", "must be >= 0, got -3.5"),
    ({"amount": math.nan}, "amount", "must be finite, got nan"),
    ({"amount": math.inf}, "amount", "must be finite, got inf"),
    ({"amount": "1e999"}, "amount", "must be finite, got inf"),
    ({"amount": "12,50"}, "amount", "not a number: '12,50'"),
    ({"amount": "nan"}, "amount", "not a number: 'nan'"),
    ({"amount": True}, "amount", "expected a number, got boolean True"),
    ({"timestamp": "yesterday"}, "timestamp", "not an ISO-8601 timestamp: 'yesterday'"),
    ({"timestamp": "2018-13-01T00:00:00"}, "timestamp", "not an ISO-8601 timestamp"),
    ({"timestamp": 1522540800}, "timestamp", "expected an ISO-8601 string, got integer"),
    ({"is_fraud": 2}, "is_fraud", "must be 0 or 1, got 2"),
    ({"is_fraud": "yes"}, "is_fraud", "must be 0 or 1, got 'yes'"),
    ({"is_fraud": 0.5}, "is_fraud", "must be 0 or 1, got 0.5"),
    ({"is_fraud": DROP}, "is_fraud", "required field is missing"),
    # The bounds (features.spec.BOUNDS, docs/ingest.md, Bounds).
    ({"transaction_id": "x" * 256}, "transaction_id", "must be at most 255 characters, got 256"),
    ({"terminal_id": 10**300}, "terminal_id", "must be at most 255 characters, got 301"),
    ({"country": "B" * 65}, "country", "must be at most 64 characters, got 65"),
    ({"customer_id": "c\x00d"}, "customer_id",
     "must not contain a control character, got U+0000 at character 2"),
    ({"terminal_id": "t\ud800"}, "terminal_id",
     "must not contain a lone surrogate, got U+D800 at character 2"),
    ({"transaction_id": "\udc00"}, "transaction_id",
     "must not contain a lone surrogate, got U+DC00 at character 1"),
    ({"merchant_category": "54\x7f11"}, "merchant_category",
     "must not contain a control character, got U+007F at character 3"),
    ({"channel": "p\x85s"}, "channel",
     "must not contain a control character, got U+0085 at character 2"),
    ({"customer_id": " c\td "}, "customer_id",
     "must not contain a control character, got U+0009 at character 2"),
    ({"amount": 1e9 + 1}, "amount", "must be <= 1000000000, got 1000000001.0"),
    ({"amount": "2e9"}, "amount", "must be <= 1000000000, got 2000000000.0"),
    ({"amount": 10**400}, "amount", "must be finite, got inf"),
    ({"amount": -(10**400)}, "amount", "must be finite, got -inf"),
    ({"amount": "1" * 400}, "amount", "must be finite, got inf"),
    ({"amount": "٣"}, "amount", "not a number: '٣'"),
    ({"timestamp": "1969-12-31T23:59:59.999999Z"}, "timestamp",
     "must not be before 1970-01-01T00:00:00Z, got '1969-12-31T23:59:59.999999Z'"),
    ({"timestamp": "1970-01-01T00:30:00+01:00"}, "timestamp",
     "must not be before 1970-01-01T00:00:00Z, got '1970-01-01T00:30:00+01:00'"),
    ({"timestamp": "2100-01-01T00:00:00"}, "timestamp",
     "must be before 2100-01-01T00:00:00Z, got '2100-01-01T00:00:00'"),
    ({"timestamp": "2099-12-31T23:30:00-01:00"}, "timestamp",
     "must be before 2100-01-01T00:00:00Z, got '2099-12-31T23:30:00-01:00'"),
    ({"timestamp": "0001-01-01T00:00:00+01:00"}, "timestamp",
     "must not be before 1970-01-01T00:00:00Z, got '0001-01-01T00:00:00+01:00'"),
    ({"timestamp": "9999-12-31T23:59:59-01:00"}, "timestamp",
     "must be before 2100-01-01T00:00:00Z, got '9999-12-31T23:59:59-01:00'"),
    ({"timestamp": "2018-02-29T00:00:00Z"}, "timestamp", "not an ISO-8601 timestamp"),
]

#: Values at the bounds, accepted: (changes, field, canonical value).
EDGES: list[tuple[dict[str, object], str, object]] = [
    ({"transaction_id": "x" * 255}, "transaction_id", "x" * 255),
    ({"customer_id": " \t" + "é" * 255 + "\u3000\n"}, "customer_id", "é" * 255),
    ({"terminal_id": 10**254}, "terminal_id", str(10**254)),
    ({"country": "B" * 64}, "country", "B" * 64),
    ({"channel": "\x85\xa0"}, "channel", "unknown"),
    ({"merchant_category": "\U0001f600 \ufeff"}, "merchant_category", "\U0001f600 \ufeff"),
    ({"amount": 1e9}, "amount", 1e9),
    ({"amount": "1000000000.0"}, "amount", 1e9),
    ({"amount": "-0"}, "amount", 0.0),
    ({"amount": 0}, "amount", 0.0),
    ({"timestamp": "1970-01-01T00:00:00Z"}, "timestamp", datetime(1970, 1, 1, tzinfo=UTC)),
    ({"timestamp": "1970-01-01T01:00:00+01:00"}, "timestamp", datetime(1970, 1, 1, tzinfo=UTC)),
    ({"timestamp": "2099-12-31T23:59:59.999999"}, "timestamp",
     datetime(2099, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
]


@pytest.mark.parametrize("changes, field, value", EDGES)
def test_values_at_the_bounds_are_accepted(changes: dict, field: str, value: object) -> None:
    record = validate_record(with_(**changes), "r")
    assert record[field] == value
    assert math.copysign(1, record["amount"]) == 1  # -0 is canonical 0


def test_datetime_values_outside_the_bounds() -> None:
    with pytest.raises(ValidationError) as caught:
        validate_record(with_(timestamp=datetime(2150, 1, 1, tzinfo=UTC)), "r")
    assert caught.value.reason == (
        "must be before 2100-01-01T00:00:00Z, got 2150-01-01T00:00:00Z")
    east = timezone(timedelta(hours=1))
    with pytest.raises(ValidationError) as caught:
        validate_record(with_(timestamp=datetime(1, 1, 1, tzinfo=east)), "r")
    assert caught.value.reason == ("must not be before 1970-01-01T00:00:00Z, got "
                                   "-62135600400000000 microseconds from 1970-01-01T00:00:00Z")


def test_whitespace_is_what_str_strip_strips() -> None:
    stripped = "".join(chr(c) for c in range(0x110000) if chr(c).isspace())
    assert stripped == WHITESPACE


def test_bounds_are_declared_once_in_the_spec() -> None:
    assert BOUNDS.max_id_length == 255
    assert BOUNDS.max_category_length == 64
    assert BOUNDS.max_amount == 1e9
    assert np.float32(BOUNDS.max_amount) == BOUNDS.max_amount  # exact, finite in float32
    assert BOUNDS.max_amount < 10**14  # inside Numeric(18, 4)
    assert (BOUNDS.earliest, BOUNDS.latest) == (datetime(1970, 1, 1, tzinfo=UTC),
                                                datetime(2100, 1, 1, tzinfo=UTC))
    assert BOUNDS.max_future_skew == timedelta(hours=24)
    for name in ("transaction_id", "customer_id", "terminal_id"):
        assert RAW_FIELDS[name].max_length == BOUNDS.max_id_length
    for name in ("merchant_category", "country", "channel"):
        assert RAW_FIELDS[name].max_length == BOUNDS.max_category_length


@pytest.mark.parametrize("changes, field, reason", BAD)
def test_bad_field_names_record_and_field(changes: dict, field: str, reason: str) -> None:
    with pytest.raises(ValidationError) as caught:
        validate_record(with_(**changes), "line 12 of data.csv", labelled=True)
    err = caught.value
    assert isinstance(err, InputError)
    assert (err.record, err.field) == ("line 12 of data.csv", field)
    assert err.reason.startswith(reason)
    assert str(err).startswith(f"line 12 of data.csv: field '{field}': {reason}")


def test_message_format() -> None:
    with pytest.raises(ValidationError) as caught:
        validate_record(with_(amount=-3.5), "line 12 of data.csv")
    assert str(caught.value) == "line 12 of data.csv: field 'amount': must be >= 0, got -3.5"


def test_error_survives_pickling() -> None:
    err = ValidationError("transactions[0]@42", "amount", "must be >= 0, got -1.0")
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.record, copy.field, copy.reason, str(copy)) == (
        err.record,
        err.field,
        err.reason,
        str(err),
    )


def encoded(**changes: object) -> bytes:
    return json.dumps(with_(**changes)).encode()


@pytest.mark.parametrize(
    "data, reason",
    [
        (b'{"transaction_id": "\xff\xfe"}', "invalid UTF-8 at byte 20"),
        (b'{"transaction_id": "tx-1",', "invalid JSON"),
        (b"", "invalid JSON"),
        (b"[1, 2]", "expected a JSON object, got array"),
        (b'"just a string"', "expected a JSON object, got string"),
        (b" " * (MAX_RECORD_BYTES + 1), f"record is {MAX_RECORD_BYTES + 1} bytes, over the"),
    ],
)
def test_bad_message_names_record(data: bytes, reason: str) -> None:
    with pytest.raises(ValidationError) as caught:
        decode_json_record(data, "transactions[0]@42")
    assert caught.value.field is None
    assert caught.value.reason.startswith(reason)
    assert str(caught.value).startswith(f"transactions[0]@42: {reason}")


def test_decoded_json_fields_are_validated() -> None:
    with pytest.raises(ValidationError) as caught:
        decode_json_record(encoded(amount=-1), "transactions[2]@7")
    assert str(caught.value) == "transactions[2]@7: field 'amount': must be >= 0, got -1.0"
    record = decode_json_record(encoded(), "x", labelled=True)
    assert record == validate_record(GOOD, "x", labelled=True)


def test_oversized_limit_is_exclusive() -> None:
    record = encoded()
    padded = record[:-1] + b" " * (MAX_RECORD_BYTES - len(record)) + b"}"
    assert len(padded) == MAX_RECORD_BYTES
    assert decode_json_record(padded, "x")["transaction_id"] == "tx-1"


@pytest.mark.parametrize("labelled", [True, False])
def test_records_to_table_has_the_contract_schema(labelled: bool) -> None:
    records = [
        validate_record(with_(transaction_id=i, amount=float(i)), f"r{i}", labelled=labelled)
        for i in range(3)
    ]
    table = records_to_table(records, labelled=labelled)
    assert table.schema == arrow_schema(labelled=labelled)
    assert table["transaction_id"].to_pylist() == ["0", "1", "2"]
    assert list(table_to_records(table)) == records


def test_records_to_table_empty() -> None:
    assert records_to_table([], labelled=True).num_rows == 0
