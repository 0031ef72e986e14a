"""Hostile input (issue #11): whatever the bytes, the decoders and readers raise only
ValidationError, the bounds hold on every path, and the batch path agrees with the
per-message path (no broker needed)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from features import spec
from ingest import lake
from ingest.kafka_io import (
    decode_label,
    decode_transaction,
    decode_transactions,
    encode_label,
    encode_transaction,
)
from ingest.label_files import read_label_files
from ingest.readers import read_transactions
from ingest.records import records_to_table
from ingest.validation import UNEXPECTED, ValidationError, validate_record
from tests.unit.test_validation import BAD, GOOD, with_

T0 = datetime(2018, 4, 1, 10, 0, 31, 250000, tzinfo=UTC)
T0_MS = int(T0.timestamp() * 1000)
DAY_US = 24 * 3600 * 1_000_000


def record(i: int = 0, **changes: object) -> dict[str, object]:
    base = validate_record(with_(transaction_id=f"tx-{i}"), "r") | {"timestamp": T0}
    return base | changes


def value(i: int = 0, **changes: object) -> bytes:
    return encode_transaction(record(i, **changes))[1]


def label_value(**changes: object) -> bytes:
    _, raw = encode_label(record() | {"is_fraud": 1}, labelled_at=T0, source="chargeback")
    obj = json.loads(raw) | changes
    return json.dumps(obj).encode()


VALID = value()
VALID_LABEL = label_value()


def splice(message: bytes, field: str, raw_json: bytes) -> bytes:
    """``message`` with ``field``'s JSON value replaced by ``raw_json`` (bytes as given)."""
    obj = json.loads(message)
    marker = "\u2063MARK\u2063"
    obj[field] = marker
    return json.dumps(obj, ensure_ascii=False).encode().replace(
        json.dumps(marker, ensure_ascii=False).encode(), raw_json)


def deep(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


def hostile(base: bytes, number: str, text: str) -> list[tuple[str, bytes | None]]:
    """(name, message bytes) of damaged messages: each is refused, whatever it breaks.

    ``base`` is a valid message, ``number`` and ``text`` two of its numeric and
    optional string fields.
    """
    return [
        ("null value", None),
        ("empty", b""),
        ("whitespace", b" \t\r\n "),
        ("newline", b"\n"),
        ("BOM", b"\xef\xbb\xbf" + base),
        ("BOM only", b"\xef\xbb\xbf"),
        ("invalid UTF-8", base.replace(b"tx-0", b"tx-\xff")),
        ("encoded surrogate", base.replace(b"tx-0", b"tx-\xed\xa0\x80")),
        ("array", b"[1, 2]"),
        ("string", b'"x"'),
        ("number", b"1"),
        ("null", b"null"),
        ("true", b"true"),
        ("truncated", base[:-1]),
        ("two objects", base + base),
        ("trailing garbage", base + b" x"),
        ("raw NUL after", base + b"\x00"),
        ("raw NUL inside", base.replace(b"tx-0", b"tx-\x00")),
        ("raw tab in a string", base.replace(b"tx-0", b"tx-\t0")),
        ("oversized", base[:-1] + b', "pad": "' + b"x" * spec.MAX_RECORD_BYTES + b'"}'),
        ("nested 30,000 deep", splice(base, "extra", deep(30_000))),
        ("nested 33 deep", splice(base, "extra", deep(32))),
        ("deep and unclosed", b"{" * 40_000),
        ("deep arrays only", deep(32_000)),
        ("5000-digit number", splice(base, number, b"9" * 5000)),
        ("5000-digit id", splice(base, "customer_id", b"9" * 5000)),
        ("300-digit id", splice(base, "customer_id", b"9" * 300)),
        ("1e400", splice(base, number, b"1e400")),
        ("-1e400", splice(base, number, b"-1e400")),
        ("NaN", splice(base, number, b"NaN")),
        ("Infinity", splice(base, number, b"Infinity")),
        ("-Infinity", splice(base, number, b"-Infinity")),
        ("NaN id", splice(base, "transaction_id", b"NaN")),
        ("over the amount bound", splice(base, number, b"1000000000.01")),
        ("escaped NUL in an id", splice(base, "customer_id", b'"c\\u0000"')),
        ("escaped C1 in an id", splice(base, "terminal_id", b'"t\\u0085x"')),
        ("escaped DEL", splice(base, text, b'"B\\u007fE"')),
        ("lone high surrogate", splice(base, "customer_id", b'"\\ud800"')),
        ("lone low surrogate", splice(base, text, b'"pos\\udfff"')),
        ("reversed pair", splice(base, text, b'"\\ude00\\ud83d"')),
        ("id too long", splice(base, "transaction_id", b'"' + b"x" * 256 + b'"')),
        ("text too long", splice(base, text, b'"' + b"5" * 65 + b'"')),
        ("year 1 with an offset", splice(base, "timestamp", b'"0001-01-01T00:00:00+01:00"')),
        ("year 9999 with an offset", splice(base, "timestamp", b'"9999-12-31T23:59:59-01:00"')),
        ("before 1970", splice(base, "timestamp", b'"1969-12-31T23:59:59Z"')),
        ("in 2100", splice(base, "timestamp", b'"2100-01-01T00:00:00Z"')),
        ("timestamp as a number", splice(base, "timestamp", b"20180401")),
        ("timestamp with NUL", splice(base, "timestamp", b'"2018-04-01T10:00:31\\u0000"')),
        ("NUL as a separator", splice(base, "timestamp", b'"2018-04-01\\u000010:00:31"')),
        ("timestamp lone surrogate", splice(base, "timestamp", b'"2018-04-01\\ud800"')),
        ("duplicate key, the last bad", base[:-1] + f', "{number}": -1}}'.encode()),
        ("object as a field", splice(base, number, b'{"value": 1}')),
        ("array as a field", splice(base, "customer_id", b'["c"]')),
    ]


HOSTILE = hostile(VALID, "amount", "country")
LABEL_HOSTILE = hostile(VALID_LABEL, "is_fraud", "source")


@pytest.mark.parametrize("message", [m for _, m in HOSTILE], ids=[n for n, _ in HOSTILE])
def test_a_hostile_transaction_raises_only_validation_error(message: bytes | None) -> None:
    with pytest.raises(ValidationError) as caught:
        decode_transaction(message, "transactions[0]@7", kafka_timestamp_ms=T0_MS)
    assert caught.value.record == "transactions[0]@7"
    assert caught.value.reason and not caught.value.reason.startswith(UNEXPECTED)
    assert decode_transactions([VALID] * 3) is not None
    assert decode_transactions([VALID, message, VALID]) is None  # type: ignore[list-item]
    assert decode_transactions([message] * 300) is None  # type: ignore[list-item]


@pytest.mark.parametrize("message", [m for _, m in LABEL_HOSTILE],
                         ids=[n for n, _ in LABEL_HOSTILE])
def test_a_hostile_label_raises_only_validation_error(message: bytes | None) -> None:
    with pytest.raises(ValidationError) as caught:
        decode_label(message, "fraud-labels[1]@9", kafka_timestamp_ms=T0_MS)
    assert caught.value.record == "fraud-labels[1]@9"
    assert caught.value.reason and not caught.value.reason.startswith(UNEXPECTED)


@pytest.mark.parametrize(
    "field, raw_json, reason",
    [
        ("labelled_at", b'"0001-01-01T00:00:00+01:00"', "must not be before 1970-01-01"),
        ("labelled_at", b'"2100-01-01T00:00:00Z"', "must be before 2100-01-01T00:00:00Z"),
        ("timestamp", b'"9999-12-31T23:59:59-01:00"', "must be before 2100-01-01T00:00:00Z"),
        ("source", b'"' + b"s" * 65 + b'"', "must be at most 64 characters, got 65"),
        ("source", b'"chargeback\\u0000"', "must not contain a control character, got U+0000"),
        ("source", b'"\\ud800"', "must not contain a lone surrogate, got U+D800"),
        ("transaction_id", b'"' + b"t" * 256 + b'"', "must be at most 255 characters, got 256"),
        ("customer_id", b"9" * 5000, "expected a string, got float inf"),
        ("terminal_id", b'"t\\u009fx"', "must not contain a control character, got U+009F"),
        ("is_fraud", b"1" * 5000, "must be 0 or 1, got inf"),
        ("is_fraud", b"NaN", "must be 0 or 1, got nan"),
        ("labelled_at", b"1e400", "expected an ISO-8601 string, got float inf"),
    ],
)
def test_label_fields_keep_the_bounds(field: str, raw_json: bytes, reason: str) -> None:
    with pytest.raises(ValidationError) as caught:
        decode_label(splice(VALID_LABEL, field, raw_json), "fraud-labels[0]@1")
    assert (caught.value.field, caught.value.reason[: len(reason)]) == (field, reason)


def test_a_label_message_has_the_size_and_depth_limits() -> None:
    padded = VALID_LABEL[:-1] + b', "pad": "' + b"x" * spec.MAX_RECORD_BYTES + b'"}'
    with pytest.raises(ValidationError, match="over the 65536-byte limit"):
        decode_label(padded, "l")
    with pytest.raises(ValidationError, match="nested more than 32 levels deep"):
        decode_label(splice(VALID_LABEL, "x", deep(20_000)), "l")
    assert decode_label(splice(VALID_LABEL, "x", deep(31)), "l")["source"] == "chargeback"


def test_nesting_up_to_the_bound_is_accepted_by_both_paths() -> None:
    message = splice(VALID, "extra", deep(31))  # the record is level 1: 32 in all
    expected = decode_transaction(message, "x")
    assert expected == decode_transaction(VALID, "x")
    brackets_in_strings = splice(VALID, "extra", b'"' + b"[{" * 100 + b'\\"]"')
    assert decode_transaction(brackets_in_strings, "x") == expected
    assert_batch_agrees([message, brackets_in_strings] * 2)


def test_huge_integers_in_unknown_fields_are_ignored_by_both_paths() -> None:
    messages = [splice(VALID, "extra", b"9" * 5000), splice(VALID, "extra", b"-" + b"9" * 700)]
    for m in messages:
        assert decode_transaction(m, "x") == decode_transaction(VALID, "x")
    assert_batch_agrees(messages)


def test_duplicate_keys_give_the_same_result_on_both_paths() -> None:
    """Python's json keeps the last value; Arrow refuses the row, so the batch bails out."""
    last_good = splice(VALID, "amount", b"-1")[:-1] + b', "amount": 12.5}'
    assert decode_transaction(last_good, "x")["amount"] == 12.5
    escaped_twin = VALID[:-1] + b', "amou\\u006et": 7}'
    assert decode_transaction(escaped_twin, "x")["amount"] == 7.0
    assert decode_transactions([VALID, last_good]) is None
    assert decode_transactions([VALID, escaped_twin]) is None
    assert_batch_agrees([VALID, last_good, escaped_twin])


def test_values_at_the_bounds_pass_both_paths_unchanged() -> None:
    edges = [
        value(1, transaction_id="x" * 255, customer_id="é" * 255, terminal_id="😀" * 255),
        value(2, merchant_category="m" * 64, country="\u3000c\u3000", channel="\ufeff"),
        value(3, amount=1e9),
        value(4, amount=0.0),
        value(5, timestamp=spec.BOUNDS.earliest),
        value(6, timestamp=spec.BOUNDS.latest - timedelta(microseconds=1)),
        splice(VALID, "amount", b"-0"),
        splice(VALID, "amount", b'"-0.0"'),
        splice(VALID, "timestamp", b'"1970-01-01T01:00:00+01:00"'),
        splice(VALID, "timestamp", b'"2099-12-31 23:59:59.999999"'),
        splice(VALID, "transaction_id", b"-9223372036854775808"),
    ]
    decoded = [decode_transaction(m, "x") for m in edges]
    assert decoded[0]["terminal_id"] == "😀" * 255
    assert decoded[1]["country"] == "c" and decoded[1]["channel"] == "\ufeff"
    assert all(str(r["amount"]) != "-0.0" for r in decoded)
    assert decoded[8]["timestamp"] == spec.BOUNDS.earliest
    assert decoded[10]["transaction_id"] == "-9223372036854775808"
    for r in decoded:  # the canonical record round-trips through the encoder
        assert decode_transaction(encode_transaction(r)[1], "x") == r
    assert_batch_agrees(edges * 30)  # Arrow refuses a column of numbers and strings: None
    assert_batch_agrees(edges[:6] * 50, expect_table=True)
    assert_batch_agrees([e for e in edges[6:] if b'"-0.0"' not in e and b"-92" not in e] * 50,
                        expect_table=True)


def assert_batch_agrees(values: list[bytes], *, expect_table: bool = False,
                        times: list[int] | None = None) -> None:
    """The batch path gives exactly the per-message records, or None."""
    batch = decode_transactions(values, kafka_timestamps_ms=times)
    if expect_table:
        assert batch is not None
    if batch is None:
        return
    one_by_one = [decode_transaction(v, "x", kafka_timestamp_ms=None if times is None else t)
                  for v, t in zip(values, times or [None] * len(values), strict=True)]
    assert batch.equals(records_to_table(one_by_one, labelled=False))


# --- the future-skew bound of live messages ---------------------------------------


def test_an_event_may_be_at_most_a_day_after_its_message() -> None:
    at_limit = value(timestamp=T0 + timedelta(days=1))
    beyond = value(timestamp=T0 + timedelta(days=1, microseconds=1))
    assert decode_transaction(at_limit, "x", kafka_timestamp_ms=T0_MS)["timestamp"] == (
        T0 + timedelta(days=1))
    assert decode_transaction(beyond, "x")["timestamp"] > T0  # no message time: no bound
    with pytest.raises(ValidationError) as caught:
        decode_transaction(beyond, "transactions[0]@3", kafka_timestamp_ms=T0_MS)
    assert caught.value.field == "timestamp"
    assert caught.value.reason == (
        "must be at most 24 h after the message's time 2018-04-01T10:00:31.250000Z, "
        "got 2018-04-02T10:00:31.250001Z")


def test_an_event_in_2099_is_refused_against_todays_message() -> None:
    """One well-formed event dated 2099 would move the scorer's clock and expire its state."""
    now_ms = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp() * 1000)
    future = value(timestamp=datetime(2099, 1, 1, tzinfo=UTC))
    assert decode_transaction(future, "x")["timestamp"].year == 2099
    with pytest.raises(ValidationError, match="field 'timestamp': must be at most 24 h after"):
        decode_transaction(future, "x", kafka_timestamp_ms=now_ms)
    batch = [VALID] * 299 + [future]
    assert decode_transactions(batch) is not None
    assert decode_transactions(batch, kafka_timestamps_ms=[now_ms] * 300) is None
    assert decode_transactions([VALID] * 300, kafka_timestamps_ms=[now_ms] * 300) is not None


@pytest.mark.parametrize("ms", [-1, 0, -(2**63), 2**63 - 1, 2**70, -(2**70)])
def test_any_message_time_is_safe(ms: int) -> None:
    try:
        decode_transaction(VALID, "x", kafka_timestamp_ms=ms)
    except ValidationError as err:
        assert err.field == "timestamp"
    assert_batch_agrees([VALID] * 3, times=[ms] * 3)
    try:
        decode_label(VALID_LABEL, "x", kafka_timestamp_ms=ms)
    except ValidationError as err:
        assert err.field in ("timestamp", "labelled_at")


def test_batch_times_must_match_the_messages() -> None:
    with pytest.raises(ValueError, match="2 timestamps for 3 messages"):
        decode_transactions([VALID] * 3, kafka_timestamps_ms=[T0_MS] * 2)
    times = [T0_MS - DAY_US // 1000 + i for i in range(3)]
    assert_batch_agrees([VALID] * 3, times=times)
    assert decode_transactions([VALID] * 3, kafka_timestamps_ms=times) is not None


def test_label_times_keep_the_skew_bound() -> None:
    late = label_value(labelled_at="2018-04-02T10:00:31.250001Z")
    with pytest.raises(ValidationError) as caught:
        decode_label(late, "fraud-labels[0]@1", kafka_timestamp_ms=T0_MS)
    assert caught.value.field == "labelled_at"
    assert "after the message's time 2018-04-01T10:00:31.250000Z" in caught.value.reason
    future_tx = label_value(timestamp="2099-01-01T00:00:00Z", labelled_at="2018-04-01T00:00:00Z")
    with pytest.raises(ValidationError, match="field 'timestamp': must be at most 24 h"):
        decode_label(future_tx, "l", kafka_timestamp_ms=T0_MS)
    on_time = label_value(labelled_at="2018-04-02T10:00:31.250000Z")
    assert decode_label(on_time, "l", kafka_timestamp_ms=T0_MS)["labelled_at"] == (
        T0 + timedelta(days=1))


# --- the file readers ----------------------------------------------------------------


def _text_cells(raw: dict[str, object]) -> dict[str, str | None]:
    return {k: None if v is None else str(v) for k, v in raw.items()}


TEXT_BAD = [
    pytest.param(changes, field, reason, id=f"{field}-{i}")
    for i, (changes, field, reason) in enumerate(BAD)
    if all(isinstance(v, str) and not any(0xD800 <= ord(c) <= 0xDFFF for c in v)
           for v in changes.values())
]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
@pytest.mark.parametrize("changes, field, reason", TEXT_BAD)
def test_csv_and_parquet_refuse_what_the_record_validator_refuses(
    tmp_path: Path, suffix: str, changes: dict, field: str, reason: str
) -> None:
    """Same field, same reason text, for every textual bad value (CSV cells are text)."""
    bad = with_(**changes)
    table = pa.Table.from_pylist([_text_cells(GOOD), _text_cells(bad)],
                                 schema=pa.schema([(n, pa.string()) for n in GOOD]))
    path = tmp_path / f"x{suffix}"
    if suffix == ".csv":
        pcsv.write_csv(table, path)
    else:
        pq.write_table(table, path)
    with pytest.raises(ValidationError) as from_file:
        read_transactions(path, labelled=True)
    with pytest.raises(ValidationError) as from_record:
        validate_record(bad, "x", labelled=True)
    where = f"line 3 of {path}" if suffix == ".csv" else f"row 2 of {path}"
    assert from_file.value.record == where
    assert (from_file.value.field, from_file.value.reason) == (field, from_record.value.reason)
    assert from_file.value.reason.startswith(reason)


def test_typed_parquet_columns_keep_the_bounds(tmp_path: Path) -> None:
    beyond = datetime(2150, 1, 1, tzinfo=UTC)
    cases = [
        ("amount", pa.array([1.0, 2e9]), with_(amount=2e9)),
        ("amount", pa.array([1, 10**18], pa.int64()), with_(amount=10**18)),
        ("timestamp", pa.array([T0, beyond], pa.timestamp("us", "UTC")), with_(timestamp=beyond)),
        ("timestamp", pa.array([T0, beyond], pa.timestamp("ns", "+02:00")),
         with_(timestamp=beyond)),
        ("timestamp", pa.array([T0, datetime(1969, 12, 31, 23, 59, 59, 999999)],
                               pa.timestamp("ms")),
         with_(timestamp=datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=UTC))),
    ]
    for name, column, bad in cases:
        table = pa.table({**{k: [GOOD[k]] * 2 for k in GOOD if k != name}, name: column})
        pq.write_table(table, tmp_path / "x.parquet")
        with pytest.raises(ValidationError) as from_file:
            read_transactions(tmp_path / "x.parquet", labelled=True)
        with pytest.raises(ValidationError) as from_record:
            validate_record(bad, "x", labelled=True)
        assert (from_file.value.field, from_file.value.reason) == (
            name, from_record.value.reason), name
    huge = pa.array([0, 10**15, -(10**15)], pa.timestamp("s"))  # would overflow in µs
    table = pa.table({**{k: [GOOD[k]] * 3 for k in GOOD if k != "timestamp"}, "timestamp": huge})
    pq.write_table(table, tmp_path / "x.parquet")
    result = read_transactions(tmp_path / "x.parquet", labelled=True, skip_invalid=True)
    assert (result.table.num_rows, result.skipped) == (1, 2)
    assert [e.field for e in result.errors] == ["timestamp", "timestamp"]
    nanos = pa.array([-500, 0], pa.timestamp("ns"))  # -0.5 µs is before the epoch
    table = pa.table({**{k: [GOOD[k]] * 2 for k in GOOD if k != "timestamp"}, "timestamp": nanos})
    pq.write_table(table, tmp_path / "x.parquet")
    result = read_transactions(tmp_path / "x.parquet", labelled=True, skip_invalid=True)
    assert (result.table.num_rows, result.skipped) == (1, 1)


def test_parquet_strings_that_are_not_utf8(tmp_path: Path) -> None:
    """Parquet does not check UTF-8 in string columns; the validator does."""
    raw = pa.array([b"c-1", b"c-\xed\xa0\x80", b"\xff"], pa.binary())
    strings = pa.Array.from_buffers(pa.string(), 3, raw.buffers())
    table = pa.table({**{k: [GOOD[k]] * 3 for k in GOOD if k != "customer_id"},
                      "customer_id": strings})
    pq.write_table(table, tmp_path / "x.parquet")
    result = read_transactions(tmp_path / "x.parquet", labelled=True, skip_invalid=True)
    assert result.table["customer_id"].to_pylist() == ["c-1"]
    assert [(e.field, e.reason) for e in result.errors] == [("customer_id", "invalid UTF-8")] * 2


@pytest.mark.parametrize(
    "name, column, reason",
    [
        ("customer_id", pa.array([{"a": 1}]), "expected a string, got object {'a': 1}"),
        ("terminal_id", pa.array([[1, 2]]), "expected a string, got array [1, 2]"),
        ("timestamp", pa.array([timedelta(seconds=1)]),
         "expected an ISO-8601 string, got timedelta"),
        ("timestamp", pa.array([datetime(2018, 4, 1).date()]),
         "expected an ISO-8601 string, got date"),
        ("amount", pa.array([True]), "expected a number, got boolean True"),
        ("amount", pa.array([1.5], pa.float16()), ""),
    ],
)
def test_unusual_parquet_column_types(tmp_path: Path, name: str, column: pa.Array,
                                      reason: str) -> None:
    table = pa.table({**{k: [GOOD[k]] for k in GOOD if k != name}, name: column})
    try:
        pq.write_table(table, tmp_path / "x.parquet")
    except pa.ArrowException:
        pytest.skip(f"Parquet cannot hold {column.type}")
    try:
        result = read_transactions(tmp_path / "x.parquet", labelled=True, skip_invalid=True)
    except ValidationError as err:  # an unreadable file is the contract's error too
        assert err.field is None
        return
    if result.skipped:
        assert result.errors[0].field == name
        assert result.errors[0].reason.startswith(reason)


@pytest.mark.parametrize(
    "line, field, reason",
    [
        (splice(json.dumps(GOOD).encode(), "x", deep(30_000)), None,
         "invalid JSON: nested more than 32 levels deep"),
        (json.dumps(GOOD).encode() + b"\x00", None, "invalid JSON"),
        (json.dumps(GOOD).encode() * 2, None, "invalid JSON: Extra data"),
        (splice(json.dumps(GOOD).encode(), "customer_id", b'"\\ud800"'), "customer_id",
         "must not contain a lone surrogate"),
        (splice(json.dumps(GOOD).encode(), "amount", b"9" * 5000), "amount",
         "must be finite, got inf"),
    ],
    ids=["deep", "nul", "two objects", "surrogate", "huge int"],
)
def test_jsonl_lines_arrow_reads_otherwise(tmp_path: Path, line: bytes, field: str | None,
                                          reason: str) -> None:
    """Lines Arrow's reader mishandles (or crashes on) go to the record validator."""
    path = tmp_path / "x.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b"\n" + line + b"\n")
    with pytest.raises(ValidationError) as caught:
        read_transactions(path, labelled=True)
    assert caught.value.record == f"line 2 of {path}"
    assert (caught.value.field, caught.value.reason[: len(reason)]) == (field, reason)


def test_jsonl_deep_nesting_hidden_among_blank_lines(tmp_path: Path) -> None:
    """As many blank lines as brackets: a per-file count would let Arrow crash."""
    path = tmp_path / "x.jsonl"
    deep_line = splice(json.dumps(GOOD).encode(), "x", deep(15_000))
    path.write_bytes(json.dumps(GOOD).encode() + b"\n" * 30_001 + deep_line + b"\n")
    with pytest.raises(ValidationError, match=r"^line 30002 of .*nested more than 32 levels"):
        read_transactions(path, labelled=True)


def test_jsonl_reads_like_the_record_validator(tmp_path: Path) -> None:
    """A BOM, integers beyond int64 and whitespace-only lines read as Python reads them."""
    path = tmp_path / "x.jsonl"
    big = splice(json.dumps(with_(transaction_id="t2")).encode(), "customer_id",
                 b"123456789012345678901234567890")
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(GOOD).encode() + b"\n \t \n" + big + b"\n")
    table = read_transactions(path, labelled=True).table
    assert table["customer_id"].to_pylist() == ["c-7", "123456789012345678901234567890"]


def test_unreadable_files_raise_validation_errors(tmp_path: Path) -> None:
    for name, data in [("x.csv", b"transaction_id,timestamp\n\"a\n"),
                       ("x.parquet", b"PAR1 not parquet"),
                       ("y.csv", b"\xff\xfe,x\n1,2\n")]:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValidationError):
            read_transactions(tmp_path / name, labelled=False, skip_invalid=True)


# --- label files (fraud train --labels) ------------------------------------------------


@pytest.mark.parametrize(
    "line, field, reason",
    [
        (splice(VALID_LABEL, "transaction_id", b'"' + b"t" * 256 + b'"'), "transaction_id",
         "must be at most 255 characters"),
        (splice(VALID_LABEL, "labelled_at", b'"2150-01-01T00:00:00Z"'), "labelled_at",
         "must be before 2100-01-01T00:00:00Z"),
        (splice(VALID_LABEL, "labelled_at", b'"0001-01-01T00:00:00+01:00"'), "labelled_at",
         "must not be before 1970-01-01T00:00:00Z"),
        (splice(VALID_LABEL, "source", b'"' + b"s" * 65 + b'"'), "source",
         "must be at most 64 characters"),
        (splice(VALID_LABEL, "terminal_id", b'"\\ud800"'), "terminal_id",
         "must not contain a lone surrogate"),
        (splice(VALID_LABEL, "x", deep(30_000)), None, "invalid JSON: nested more than"),
        (splice(VALID_LABEL, "is_fraud", b"9" * 5000), "is_fraud", "must be 0 or 1"),
        (VALID_LABEL.replace(b"tx-0", b"tx-\xff"), None, "invalid UTF-8 at byte"),
        (b"[1]", None, "expected a JSON object, got array"),
    ],
)
def test_label_files_keep_the_label_bounds(tmp_path: Path, line: bytes, field: str | None,
                                           reason: str) -> None:
    path = tmp_path / "labels.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + VALID_LABEL + b"\n" + line + b"\n")
    with pytest.raises(ValidationError) as caught:
        read_label_files([path])
    assert caught.value.record == f"line 2 of {path}"
    assert (caught.value.field, caught.value.reason[: len(reason)]) == (field, reason)
    path.write_bytes(b"\xef\xbb\xbf" + VALID_LABEL + b"\r\n")
    assert read_label_files([path]).labels == {"tx-0": 1}


def test_label_csv_files_that_are_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    header = b"transaction_id,is_fraud,timestamp,customer_id,terminal_id,labelled_at,source\n"
    row = b"t1,1,2018-05-01T00:00:00Z,c,t,2018-05-02T00:00:00Z,analyst\n"
    path.write_bytes(header + row + row.replace(b"t1", b"t\xff"))
    with pytest.raises(ValidationError, match=rf"^line 3 of {path}: invalid UTF-8 at byte 1$"):
        read_label_files([path])
    path.write_bytes(header + row + row.replace(b"02T", b"02T\x00"))
    with pytest.raises(ValidationError, match=rf"^line 3 of {path}: field 'labelled_at'"):
        read_label_files([path])
    path.write_bytes(header + row + row.replace(b"analyst", b"a" * 65))
    with pytest.raises(ValidationError, match="field 'source': must be at most 64 characters"):
        read_label_files([path])
    path.write_bytes(b"\xef\xbb\xbf" + header + row)
    assert read_label_files([path]).labels == {"t1": 1}


# --- the archiver ----------------------------------------------------------------------


@dataclass
class Message:
    topic: str
    partition: int
    offset: int
    value: bytes | None
    timestamp: int = T0_MS


def _archiver(root: Path) -> Any:
    from ingest.archiver import ArchiveConfig, Archiver
    from ingest.kafka_io import KafkaSettings

    lake.create(root)
    return Archiver(KafkaSettings("127.0.0.1:1"), ArchiveConfig(out=root))


def _rejected(root: Path) -> list[dict]:
    return [json.loads(line) for path in sorted((root / lake.REJECTED).glob("*.jsonl"))
            for line in path.read_text().splitlines()]


def test_the_archiver_rejects_every_hostile_record_and_keeps_the_rest(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    archiver = _archiver(root)
    hostile = [m for _, m in HOSTILE] + [value(99, timestamp=datetime(2099, 1, 1, tzinfo=UTC))]
    good = [value(i) for i in range(3)]
    messages = [Message("transactions", 0, i, v) for i, v in enumerate(good + hostile)]
    archiver._write("transactions", 0, messages)
    assert read_transactions(root, labelled=False).table["transaction_id"].to_pylist() == [
        "tx-0", "tx-1", "tx-2"]
    rejected = _rejected(root)
    assert [r["offset"] for r in rejected] == list(range(3, len(messages)))
    assert all(r["reason"] and not r["reason"].startswith(UNEXPECTED) for r in rejected)
    assert rejected[-1]["field"] == "timestamp"  # the 2099 event: the skew bound
    labels = [Message("fraud-labels", 0, 0, VALID_LABEL),
              Message("fraud-labels", 0, 1, splice(VALID_LABEL, "x", deep(30_000)))]
    archiver._write("fraud-labels", 0, labels)
    assert archiver.stats.as_dict() | {"resumed_from": {}} == {
        "transactions": 3, "labels": 1, "rejected": len(hostile) + 1, "batches": 2,
        "files": 4, "resumed_from": {}, "partitions_added": [], "compactions": 0,
        "files_compacted": 0}


def test_the_archiver_rejects_a_record_whatever_the_decoder_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ingest.archiver as archiver_module

    real = archiver_module.decode_transaction

    def flaky(message_value: bytes | None, where: str, **kwargs: object) -> dict:
        if message_value == b"boom":
            raise KeyError("surprise")
        return real(message_value, where, **kwargs)  # type: ignore[arg-type]

    def broken_batch(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the fast path broke")

    monkeypatch.setattr(archiver_module, "decode_transaction", flaky)
    monkeypatch.setattr(archiver_module, "decode_transactions", broken_batch)
    root = tmp_path / "lake"
    archiver = _archiver(root)
    archiver._write("transactions", 1, [Message("transactions", 1, 0, VALID),
                                        Message("transactions", 1, 1, b"boom"),
                                        Message("transactions", 1, 2, value(2))])
    assert archiver.stats.transactions == 2
    (rejection,) = _rejected(root)
    assert rejection["offset"] == 1 and rejection["field"] is None
    assert rejection["reason"] == "KeyError: 'surprise'"
    assert rejection["value"] == "boom"


def test_a_message_without_a_timestamp_is_bounded_by_the_clock(tmp_path: Path) -> None:
    from ingest.kafka_io import message_time_ms

    assert message_time_ms(Message("t", 0, 0, None, timestamp=-1), 1000) == 1000
    assert message_time_ms(Message("t", 0, 0, None, timestamp=5), 1000) == 5
    assert message_time_ms(Message("t", 0, 0, None, timestamp=2**62), 1000) == 1000
    assert message_time_ms(object(), 1000) == 1000


@pytest.mark.parametrize("drop", ["customer_id", "amount", "timestamp"])
def test_absent_fields_in_a_batch(drop: str) -> None:
    messages = [value(i) for i in range(3)] + [
        json.dumps({k: v for k, v in json.loads(VALID).items() if k != drop}).encode()]
    assert decode_transactions(messages) is None
    assert decode_transactions(messages[:3]) is not None


# --- the nesting bound -------------------------------------------------------------------


def _reference_depth(data: bytes) -> int:
    """A byte-by-byte scanner: a backslash run escapes the quote after it when odd."""
    depth = best = 0
    in_string = escaped = False
    for byte in data:
        if byte == 0x5C:
            escaped = not escaped
            continue
        if byte == 0x22 and not escaped:
            in_string = not in_string
        elif not in_string and byte in b"[{":
            depth += 1
            best = max(best, depth)
        elif not in_string and byte in b"]}":
            depth -= 1
        escaped = False
    return best


def _nesting(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_nesting, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_nesting, value), default=0)
    return 0


def test_json_depth_is_the_nesting_of_the_document() -> None:
    import random

    from ingest.validation import json_depth

    rng = random.Random(7)
    for _ in range(3000):
        data = bytes(rng.choice(b'[]{}"\\ax') for _ in range(rng.randrange(0, 40)))
        assert json_depth(data) == _reference_depth(data), data

    def document(level: int) -> object:
        roll = rng.random()
        if level > 6 or roll < 0.3:
            return rng.choice(['a"[{', "\\", '\\"]', 1, None, "}}]]", "\\\\", ""])
        if roll < 0.65:
            return [document(level + 1) for _ in range(rng.randrange(4))]
        return {rng.choice(["k", '"[', "\\"]) + str(i): document(level + 1)
                for i in range(rng.randrange(4))}

    for _ in range(3000):
        value = document(0)
        assert json_depth(json.dumps(value).encode()) == _nesting(value), value
