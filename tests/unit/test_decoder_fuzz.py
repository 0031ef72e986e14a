"""Property-based fuzzing of the Kafka decoders (issue #11), by direct calls (no broker).

Hypothesis draws pools of field values — valid ones, values at and beyond every
bound, hostile strings (control characters, lone surrogates, whitespace of all
kinds), edge timestamps with offsets, huge and non-finite numbers, wrong types,
deep nesting, duplicate keys — and a seed; each example then combines them
into a few hundred messages (most valid but for a field or two) and mutates
bytes of valid messages, so the decoders see some 300,000 messages in all in
well under a minute. For every message, as a transaction and as a label:

* the only exception is ``ValidationError``, naming the message, with a
  reason (and never the catch-all's: a bug would show here);
* an accepted record keeps every bound (id and category lengths, characters,
  amount range, time range, future skew) and round-trips through the encoder;
* the batch path (``decode_transactions``) gives exactly the per-message
  records, or None.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings

from features import spec
from features.spec import BOUNDS
from ingest.kafka_io import (
    decode_label,
    decode_transaction,
    decode_transactions,
    encode_label,
    encode_transaction,
)
from ingest.readers import read_transactions
from ingest.records import records_to_table
from ingest.validation import UNEXPECTED, ValidationError, decode_json_record, validate_record

T0 = datetime(2018, 4, 1, 10, 0, 31, tzinfo=UTC)
T0_MS = int(T0.timestamp() * 1000)
BAD_CHAR = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
SETTINGS = settings(
    deadline=None,
    database=None,  # nothing written into the working tree
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
#: How many messages each example builds (structured) and mutates, and examples per
#: property (``FUZZ_EXAMPLES=2000 pytest tests/unit/test_decoder_fuzz.py`` fuzzes longer).
MESSAGES_PER_EXAMPLE = 500
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "120"))

STATS: dict[str, int] = {}


def count(name: str, n: int = 1) -> None:
    STATS[name] = STATS.get(name, 0) + n


class Raw(str):
    """JSON text to put as is (a huge integer literal, NaN, deep nesting, a bad escape)."""


# --- values ----------------------------------------------------------------------------

ANY_CHAR = st.characters(exclude_categories=())  # surrogates included
EDGE_CHARS = ["\x00", "\t", "\n", "\x1c", "\x7f", "\x85", "\x9f", "\xa0", "\u2028", "\u3000",
              "\ufeff", "\ud800", "\udfff", "é", "😀", "\\", '"', " "]
texts = st.one_of(
    st.text(ANY_CHAR, max_size=12),
    st.text(st.sampled_from([*EDGE_CHARS, "a", "1"]), max_size=8),
    st.builds(lambda c, n, pad: pad + c * n + pad,
              st.sampled_from(["x", "é", "😀", "7"]),
              st.sampled_from([1, 2, 63, 64, 65, 254, 255, 256, 300]),
              st.sampled_from(["", " ", "\t", "\u3000", "\x85"])),
)
huge_ints = st.sampled_from([10**19, -(2**63), 2**64, 10**254, 10**255, 10**300, 10**400,
                             -(10**400), 10**640])
raw_numbers = st.sampled_from([Raw("9" * 641), Raw("9" * 5000), Raw("-" + "1" * 4400),
                               Raw("1e400"), Raw("-1e400"), Raw("NaN"), Raw("Infinity"),
                               Raw("-Infinity"), Raw("1E5"), Raw("-0"), Raw("0.0e-400")])
wrong_types = st.one_of(st.booleans(), st.none(), st.just([]), st.just({"a": [1]}),
                        st.floats(allow_nan=True, allow_infinity=True))
ids = st.one_of(texts, st.integers(-(10**20), 10**20), huge_ints, raw_numbers, wrong_types,
                st.from_regex(r"\A[a-z]{1,3}-[0-9]{1,6}\Z"))
amounts = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=0, max_value=2e9),
    st.integers(-(10**12), 10**12), huge_ints, raw_numbers,
    st.sampled_from(["12.50", " 7 ", "-0", "+5", "5.", ".5", "1e400", "1000000000",
                     "1000000000.0000001", "٣", "1_000", "0x10", "nan", "inf", "", "1e9"]),
    st.from_regex(r"\A[+-]?[0-9]{0,12}\.?[0-9]{0,8}([eE][+-]?[0-9]{1,3})?\Z"),
    wrong_types, texts,
)
labels = st.one_of(st.sampled_from([0, 1, "0", "1", " 1 ", True, False, 0.0, 1.0, 2, -1, 0.5,
                                    "yes", "", None, 10**400]), raw_numbers, wrong_types)

EDGE_TIMES = [datetime(1, 1, 1), datetime(1969, 12, 31, 23, 59, 59, 999999), datetime(1970, 1, 1),
              datetime(1970, 1, 1, 0, 59), datetime(2018, 4, 1, 10, 0, 31),
              datetime(2018, 2, 28, 23, 59, 59), datetime(2099, 12, 31, 23, 59, 59, 999999),
              datetime(2099, 12, 31, 23), datetime(2100, 1, 1), datetime(9999, 12, 31, 23, 59, 59)]


def iso(moment: datetime, offset_minutes: int | None, style: int) -> str:
    """An ISO-8601 spelling of a naive time with an offset (None: no offset)."""
    text = moment.isoformat(sep=" " if style % 3 == 1 else "T",
                            timespec=["auto", "seconds", "microseconds", "minutes"][style % 4])
    if offset_minutes is None:
        return text
    if offset_minutes == 0 and style % 2:
        return text + "Z"
    sign = "+" if offset_minutes >= 0 else "-"
    hours, minutes = divmod(abs(offset_minutes), 60)
    return f"{text}{sign}{hours:02d}:{minutes:02d}"


offsets = st.one_of(st.none(), st.just(0), st.integers(-(23 * 60 + 59), 23 * 60 + 59),
                    st.sampled_from([60, -60, 24 * 60]))
timestamps = st.one_of(
    st.builds(iso, st.sampled_from(EDGE_TIMES), offsets, st.integers(0, 11)),
    st.builds(iso, st.datetimes(min_value=datetime(1960, 1, 1), max_value=datetime(2110, 1, 1)),
              offsets, st.integers(0, 11)),
    st.builds(iso, st.datetimes(), offsets, st.integers(0, 11)),
    st.sampled_from(["2018-02-29T00:00:00Z", "2018-04-01T24:00:00Z", "2018-04-01T23:59:60Z",
                     "2018-04-01T10:00:31.1234567Z", "2018-04-01T10:00:31." + "9" * 400,
                     "20180401T100031Z", "2018-04-01", "2018-04-01T10", "2018-04-01t10:00:31Z",
                     "2018-04-01T10:00:31\x00", "2018-04-01\x0010:00:31", "2018-W13-7",
                     "0000-01-01T00:00:00Z", "+2018-04-01T10:00:31Z", " 2018-04-01T10:00:31Z ",
                     "2018-04-01T10:00:31+24:00", "2018-04-01T10:00:31+0200", "٢٠١٨-04-01"]),
    texts, st.integers(0, 2**40), wrong_types,
)
extras = st.one_of(
    st.none(),
    st.sampled_from([Raw("[" * 31 + "]" * 31), Raw("[" * 32 + "]" * 32),
                     Raw("[" * 20_000 + "]" * 20_000), Raw("{" * 40), Raw('"\\ud800"'),
                     Raw('"\\x41"'), Raw("9" * 5000), Raw('{"a": {"b": [1, {"c": null}]}}'),
                     Raw('"' + "[{" * 40 + '"')]),
    st.recursive(st.one_of(st.integers(), texts, st.floats()),
                 lambda inner: st.lists(inner, max_size=3)
                 | st.dictionaries(st.text(max_size=3), inner, max_size=3), max_leaves=6),
)

TRANSACTION_POOLS = {
    "transaction_id": ids, "customer_id": ids, "terminal_id": ids, "timestamp": timestamps,
    "amount": amounts, "merchant_category": ids, "country": ids, "channel": ids,
    "extra": extras,
}
LABEL_POOLS = {
    "transaction_id": ids, "is_fraud": labels, "timestamp": timestamps, "customer_id": ids,
    "terminal_id": ids, "labelled_at": timestamps, "source": ids, "extra": extras,
}
pools = st.fixed_dictionaries(
    {name: st.lists(s, min_size=4, max_size=12)
     for name, s in {**TRANSACTION_POOLS, **LABEL_POOLS}.items()})
message_times = st.sampled_from([None, T0_MS, T0_MS - 86_400_000, T0_MS + 10**9, 0, -1,
                                 2**63 - 1, -(2**63), 4_102_444_800_000])


# --- messages --------------------------------------------------------------------------


def encode_value(value: Any, rng: random.Random) -> str:
    if isinstance(value, Raw):
        return str(value)
    return json.dumps(value, ensure_ascii=rng.random() < 0.5, allow_nan=True)


def valid_transaction(rng: random.Random, i: int) -> dict[str, Any]:
    return {"transaction_id": f"tx-{i}", "timestamp": iso(
                datetime(2018, 4, 1) + timedelta(seconds=rng.randrange(10**6)), 0, 2),
            "customer_id": rng.choice(["c-1", 4711, "é-2"]), "terminal_id": "t-3",
            "amount": rng.choice([57.16, 0, 12, "12.50", 1e9]),
            "merchant_category": "5411", "country": "BE", "channel": "pos"}


def valid_label(rng: random.Random, i: int) -> dict[str, Any]:
    moment = iso(datetime(2018, 4, 1) + timedelta(seconds=rng.randrange(10**6)), 0, 2)
    return {"transaction_id": f"tx-{i}", "is_fraud": rng.choice([0, 1]), "timestamp": moment,
            "customer_id": "c-1", "terminal_id": "t-3", "labelled_at": moment,
            "source": "chargeback"}


def build(base: dict[str, Any], pool: dict[str, list[Any]], rng: random.Random) -> bytes:
    """A JSON object from ``base`` with some fields swapped, dropped or duplicated."""
    fields = dict(base)
    for name in rng.sample(sorted(pool), k=rng.choice([0, 1, 1, 2, 3, len(pool)])):
        fields[name] = rng.choice(pool[name])
    if fields.get("extra", 0) is None:
        del fields["extra"]
    pairs = [(k, encode_value(v, rng)) for k, v in fields.items()]
    if rng.random() < 0.1 and pairs:
        del pairs[rng.randrange(len(pairs))]
    if rng.random() < 0.1 and pairs:  # a duplicate key, with another value
        key = rng.choice(pairs)[0]
        pairs.insert(rng.randrange(len(pairs) + 1),
                     (key, encode_value(rng.choice(pool.get(key, [1])), rng)))
    if rng.random() < 0.2:
        rng.shuffle(pairs)
    separator = rng.choice([",", ", ", ",\t", " ,\r "])
    text = "{" + separator.join(f"{json.dumps(k)}:{v}" for k, v in pairs) + "}"
    return text.encode("utf-8", errors="surrogatepass")  # a raw surrogate: invalid UTF-8


TOKENS = [b"\x00", b"\n", b"\r\n", b"\xef\xbb\xbf", b"\xff", b"\xed\xa0\x80", b"\xc0\xaf",
          b'"', b"\\", b"\\u0000", b"\\ud800", b"{", b"}", b"[", b"]", b",", b":", b"NaN",
          b"9" * 5000, b"[" * 40, b"[" * 20_000, b"-", b"e999", b"null", b"\x85", b" "]


def mutate(data: bytes, rng: random.Random) -> bytes:
    """A few random edits: flips, insertions (of bytes that matter), deletions, splices."""
    out = bytearray(data)
    for _ in range(rng.choice([1, 1, 2, 3, 5])):
        at = rng.randrange(len(out) + 1)
        kind = rng.randrange(6)
        if kind == 0 and out:
            out[min(at, len(out) - 1)] ^= 1 << rng.randrange(8)
        elif kind == 1:
            out[at:at] = rng.choice(TOKENS)
        elif kind == 2:
            del out[at:at + rng.randrange(1, 8)]
        elif kind == 3:
            out[at:at] = bytes([rng.randrange(256)])
        elif kind == 4:
            start = rng.randrange(len(out) + 1)
            out[at:at] = out[start:start + rng.randrange(1, 40)]
        else:
            out = out[:at]
    return bytes(out)


# --- checks ----------------------------------------------------------------------------


def check_string(value: object, limit: int) -> None:
    assert isinstance(value, str) and 0 < len(value) <= limit
    assert value == value.strip()
    assert BAD_CHAR.search(value) is None
    value.encode("utf-8")  # storable


def check_time(moment: object, message_ms: int | None) -> None:
    assert isinstance(moment, datetime) and moment.tzinfo is UTC
    assert BOUNDS.earliest <= moment < BOUNDS.latest
    if message_ms is not None:
        limit_us = message_ms * 1000 + BOUNDS.max_future_skew_us
        us = (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
        assert us <= limit_us


def check_transaction(record: dict[str, Any], message_ms: int | None) -> None:
    assert list(record) == list(spec.TRANSACTION_FIELDS)
    for name in spec.TRANSACTION_FIELDS:
        field = spec.RAW_FIELDS[name]
        if field.kind is spec.Kind.STRING:
            check_string(record[name], field.max_length or 0)
    check_time(record["timestamp"], message_ms)
    amount = record["amount"]
    assert isinstance(amount, float) and math.isfinite(amount)
    assert 0 <= amount <= BOUNDS.max_amount and math.copysign(1, amount) == 1
    assert decode_transaction(encode_transaction(record)[1], "round trip") == record


def check_label(record: dict[str, Any], message_ms: int | None) -> None:
    for name in ("transaction_id", "customer_id", "terminal_id"):
        check_string(record[name], BOUNDS.max_id_length)
    check_string(record["source"], spec.LABEL_SOURCE_MAX_LENGTH)
    assert record["is_fraud"] in (0, 1)
    check_time(record["timestamp"], message_ms)
    check_time(record["labelled_at"], message_ms)
    _, again = encode_label(record, labelled_at=record["labelled_at"], source=record["source"])
    assert decode_label(again, "round trip") == record


def refused(error: ValidationError, where: str) -> None:
    assert error.record == where
    assert error.reason and not error.reason.startswith(UNEXPECTED), str(error)


def decode_all(messages: list[bytes], message_ms: int | None) -> None:
    """Every check above, for each message as a transaction and as a label, then the batch."""
    decoded: list[dict[str, Any] | None] = []
    for i, m in enumerate(messages):
        where = f"transactions[0]@{i}"
        try:
            record = decode_transaction(m, where, kafka_timestamp_ms=message_ms)
        except ValidationError as err:
            refused(err, where)
            decoded.append(None)
        else:
            check_transaction(record, message_ms)
            decoded.append(record)
        try:
            label = decode_label(m, "fraud-labels[0]@1", kafka_timestamp_ms=message_ms)
        except ValidationError as err:
            refused(err, "fraud-labels[0]@1")
        else:
            check_label(label, message_ms)
            count("labels accepted")
    count("decoder calls", 2 * len(messages) + 1)
    accepted = [r for r in decoded if r is not None]
    count("transactions accepted", len(accepted))
    times = None if message_ms is None else [message_ms] * len(messages)
    batch = decode_transactions(messages, kafka_timestamps_ms=times)
    if batch is not None:
        assert len(accepted) == len(messages)  # never accepts what one by one refuses
        assert batch.equals(records_to_table(accepted, labelled=False))
        count("batches compared")
    # The accepted messages again, grouped by JSON shape (Arrow refuses a column
    # that mixes types), so the batch path's accepted tables are compared too.
    groups: dict[object, list[tuple[bytes, dict[str, Any]]]] = {}
    for m, r in zip(messages, decoded, strict=True):
        if r is not None:
            key = shape(m)
            if key is not None:
                groups.setdefault(key, []).append((m, r))
    for group in sorted(groups.values(), key=len, reverse=True)[:2]:  # ~1 ms a call
        if len(group) < 5:
            continue
        times = None if message_ms is None else [message_ms] * len(group)
        batch = decode_transactions([m for m, _ in group], kafka_timestamps_ms=times)
        count("decoder calls")
        if batch is not None:
            assert batch.equals(records_to_table([r for _, r in group], labelled=False))
            count("batches compared")
            count("batch rows compared", batch.num_rows)


def shape(message: bytes) -> object:
    """The JSON types of a message's fields, as Arrow's reader infers columns (roughly).

    None with a duplicate key (Arrow refuses those; they are compared elsewhere).
    """
    pairs = _PAIRS.decode(message.decode("utf-8"))

    def kind(value: object) -> str:
        if isinstance(value, bool):
            return "bool"
        if isinstance(value, int | float):
            return "number"
        return type(value).__name__

    if len({k for k, _ in pairs}) != len(pairs):
        return None
    return tuple(sorted((k, kind(v)) for k, v in pairs))


_PAIRS = json.JSONDecoder(object_pairs_hook=lambda pairs: pairs, parse_int=float)


# --- the properties ---------------------------------------------------------------------


@settings(SETTINGS, max_examples=EXAMPLES)
@given(pools=pools, seed=st.integers(0, 2**32), message_ms=message_times)
def fuzz_structured(pools: dict[str, list[Any]], seed: int, message_ms: int | None) -> None:
    rng = random.Random(seed)
    transaction_pool = {k: pools[k] for k in TRANSACTION_POOLS}
    label_pool = {k: pools[k] for k in LABEL_POOLS}
    messages = []
    for i in range(MESSAGES_PER_EXAMPLE):
        if rng.random() < 0.7:
            messages.append(build(valid_transaction(rng, i), transaction_pool, rng))
        else:
            messages.append(build(valid_label(rng, i), label_pool, rng))
    decode_all(messages, message_ms)
    # Clean batches of one shape, so the batch path's accepted tables are compared too.
    clean = [build(valid_transaction(rng, i) | {"customer_id": "c-1", "amount": 57.16},
                   {k: v for k, v in transaction_pool.items()
                    if k in ("timestamp", "merchant_category", "country", "channel")}, rng)
             for i in range(300)]
    decode_all(clean, message_ms)


@settings(SETTINGS, max_examples=EXAMPLES)
@given(seed=st.integers(0, 2**32), message_ms=message_times)
def fuzz_mutated(seed: int, message_ms: int | None) -> None:
    rng = random.Random(seed)
    bases = [json.dumps(valid_transaction(rng, i)).encode() for i in range(20)]
    bases += [json.dumps(valid_label(rng, i)).encode() for i in range(20)]
    messages = [mutate(rng.choice(bases), rng) for _ in range(MESSAGES_PER_EXAMPLE)]
    decode_all(messages, message_ms)
    decode_all([mutate(bases[0], rng) if rng.random() < 0.02 else bases[0]
                for _ in range(300)], message_ms)


def test_decoders_under_fuzzing() -> None:
    STATS.clear()
    fuzz_structured()
    fuzz_mutated()
    scale = EXAMPLES / 120
    assert STATS["decoder calls"] >= 300_000 * scale, STATS
    # The interesting outcomes all happened: accepted records and batches compared.
    assert STATS["transactions accepted"] > 10_000 * scale, STATS
    assert STATS["labels accepted"] > 1_000 * scale, STATS
    assert STATS["batches compared"] > 100 * scale, STATS
    assert STATS["batch rows compared"] > 10_000 * scale, STATS


# --- the file readers against the record validator --------------------------------------


def _expected(rows: list[object]) -> tuple[list[dict[str, Any]], int]:
    """What the record validator keeps of ``rows`` (dicts or JSON lines), sorted stably by time."""
    kept = []
    for row in rows:
        try:
            if isinstance(row, bytes):
                kept.append(decode_json_record(row, "x"))
            else:
                kept.append(validate_record(row, "x"))  # type: ignore[arg-type]
        except ValidationError:
            continue
    kept.sort(key=lambda r: r["timestamp"])
    return kept, len(rows) - len(kept)


def _cell(value: object) -> str:
    return value if isinstance(value, str) else encode_value(value, random.Random(0))


@settings(SETTINGS, max_examples=max(1, EXAMPLES // 6))
@given(pools=pools, seed=st.integers(0, 2**32))
def fuzz_files(pools: dict[str, list[Any]], seed: int) -> None:
    rng = random.Random(seed)
    pool = {k: pools[k] for k in TRANSACTION_POOLS if k != "extra"}
    lines = [build(valid_transaction(rng, i), pool, rng) for i in range(200)]
    lines = [line for line in lines if b"\n" not in line]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.jsonl"
        path.write_bytes(b"\n".join(lines) + b"\n")
        check_read(path, _expected(lines))
        # CSV and Parquet cells are text: the same values as strings.
        rows = []
        for i in range(200):
            row = valid_transaction(rng, i)
            for name in rng.sample(sorted(pool), k=rng.choice([0, 1, 2])):
                row[name] = rng.choice(pool[name])
            # Text files hold no lone surrogate: it is invalid UTF-8 there.
            rows.append({k: _cell(v).encode("utf-8", "replace").decode() for k, v in row.items()})
        cells = rows
        table = pa.Table.from_pylist(cells, schema=pa.schema([(n, pa.string()) for n in cells[0]]))
        pcsv.write_csv(table, Path(tmp) / "x.csv")
        pq.write_table(table, Path(tmp) / "x.parquet")
        expected = _expected(cells)  # type: ignore[arg-type]
        check_read(Path(tmp) / "x.csv", expected)
        check_read(Path(tmp) / "x.parquet", expected)


def check_read(path: Path, expected: tuple[list[dict[str, Any]], int]) -> None:
    try:
        result = read_transactions(path, labelled=False, skip_invalid=True)
    except ValidationError as err:
        assert err.reason and not err.reason.startswith(UNEXPECTED)
        return  # a file-level error (e.g. a column absent from every row)
    kept, skipped = expected
    assert result.table.to_pylist() == kept, path.suffix
    assert result.skipped == skipped
    count("file rows compared", len(kept) + skipped)


def test_file_readers_under_fuzzing() -> None:
    STATS.clear()
    fuzz_files()
    assert STATS["file rows compared"] >= 5_000 * EXAMPLES / 120, STATS
