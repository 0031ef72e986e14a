"""File readers: every format, directories and partitions, errors naming file, line and field."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from features.errors import InputError
from features.spec import arrow_schema
from ingest.readers import list_files, read_transactions
from ingest.validation import ValidationError, validate_record
from tests.unit.test_validation import BAD, DROP, GOOD, with_

T0 = datetime(2018, 4, 1, tzinfo=UTC)


def rows(n: int = 6) -> list[dict]:
    """Raw rows in deliberately unsorted event time, with a timestamp tie (rows 0 and 3)."""
    hours = [5, 1, 30, 5, 0, 49][:n]
    return [
        {
            "transaction_id": f"tx-{i}",
            "timestamp": (T0 + timedelta(hours=h)).strftime("%Y-%m-%dT%H:%M:%S"),
            "customer_id": f"c-{i % 2}",
            "terminal_id": f"t-{i % 3}",
            "amount": 10.0 + i,
            "merchant_category": "5411",
            "country": "FR",
            "channel": "pos",
            "is_fraud": i % 2,
            "unexpected": "extra column",
        }
        for i, h in enumerate(hours)
    ]


def write(path: Path, records: list[dict]) -> Path:
    """Write records as .csv, .parquet or .jsonl by suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    elif path.suffix == ".csv":
        pcsv.write_csv(pa.Table.from_pylist(records), path)
    else:
        pq.write_table(pa.Table.from_pylist(records), path)
    return path


def expected_ids(records: list[dict]) -> list[str]:
    return [r["transaction_id"] for r in sorted(records, key=lambda r: r["timestamp"])]


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
@pytest.mark.parametrize("labelled", [True, False])
def test_every_format_reads_sorted_canonical(tmp_path: Path, suffix: str, labelled: bool) -> None:
    records = rows()
    result = read_transactions(write(tmp_path / f"x{suffix}", records), labelled=labelled)
    assert result.table.schema == arrow_schema(labelled=labelled)
    assert result.skipped == 0
    assert result.table["transaction_id"].to_pylist() == expected_ids(records)
    expected = [validate_record(r, "", labelled=labelled) for r in records]
    expected.sort(key=lambda r: r["timestamp"])
    assert result.table.to_pylist() == expected


def test_ties_keep_file_order(tmp_path: Path) -> None:
    records = [dict(r, timestamp="2018-04-01T00:00:00") for r in rows()]
    table = read_transactions(write(tmp_path / "x.parquet", records), labelled=False).table
    assert table["transaction_id"].to_pylist() == [r["transaction_id"] for r in records]


def test_typed_parquet_columns(tmp_path: Path) -> None:
    table = pa.table(
        {
            "transaction_id": pa.array([2, 1], pa.int64()),
            "timestamp": pa.array([T0 + timedelta(seconds=1), T0], pa.timestamp("ns", "+02:00")),
            "customer_id": pa.array([7, 8], pa.int32()),
            "terminal_id": pa.array(["a", "b"]).dictionary_encode(),
            "amount": pa.array([1, 2], pa.int64()),
            "is_fraud": pa.array([True, False]),
        }
    )
    pq.write_table(table, tmp_path / "x.parquet")
    out = read_transactions(tmp_path / "x.parquet", labelled=True).table
    assert out.schema == arrow_schema(labelled=True)
    assert out.to_pydict()["transaction_id"] == ["1", "2"]
    assert out.to_pydict()["customer_id"] == ["8", "7"]
    assert out.to_pydict()["timestamp"] == [T0, T0 + timedelta(seconds=1)]
    assert out.to_pydict()["is_fraud"] == [0, 1]
    assert out.to_pydict()["country"] == ["unknown", "unknown"]


def test_mixed_timestamp_offsets_in_one_file(tmp_path: Path) -> None:
    records = rows(3)
    records[0]["timestamp"] = "2018-04-01T02:00:00+02:00"
    records[1]["timestamp"] = "2018-04-01T00:30:00Z"
    records[2]["timestamp"] = "2018-04-01 01:00:00"
    table = read_transactions(write(tmp_path / "x.csv", records), labelled=False).table
    assert table["timestamp"].to_pylist() == [
        T0,
        T0 + timedelta(minutes=30),
        T0 + timedelta(hours=1),
    ]


def test_directory_with_partitions_and_pruning(tmp_path: Path) -> None:
    day = [
        dict(r, timestamp=f"2018-04-0{d}T12:00:00") for d, r in zip((1, 2, 3), rows(3), strict=True)
    ]
    write(tmp_path / "lake" / "date=2018-04-01" / "part-0.parquet", [day[0]])
    write(tmp_path / "lake" / "date=2018-04-02" / "part-0.jsonl", [day[1]])
    write(tmp_path / "lake" / "date=2018-04-03" / "part-0.csv", [day[2]])
    write(tmp_path / "lake" / "_tmp" / "ignored.parquet", [day[0]])
    write(tmp_path / "lake" / ".hidden.csv", [day[0]])
    (tmp_path / "lake" / "notes.txt").write_text("not data")
    lake = tmp_path / "lake"
    assert read_transactions(lake, labelled=True).table["transaction_id"].to_pylist() == [
        "tx-0",
        "tx-1",
        "tx-2",
    ]
    pruned = list_files(lake, start=date(2018, 4, 2), end=date(2018, 4, 2))
    assert [p.parent.name for p in pruned] == ["date=2018-04-02"]
    table = read_transactions(lake, labelled=True, start=date(2018, 4, 2)).table
    assert table["transaction_id"].to_pylist() == ["tx-1", "tx-2"]


def test_start_end_filter_rows_of_flat_files(tmp_path: Path) -> None:
    records = rows()  # hours 0..49 -> 2018-04-01, 2018-04-02 (hour 30), 2018-04-03 (hour 49)
    path = write(tmp_path / "x.jsonl", records)
    table = read_transactions(path, labelled=False, start=date(2018, 4, 2), end=date(2018, 4, 2))
    assert table.table["transaction_id"].to_pylist() == ["tx-2"]
    table = read_transactions(path, labelled=False, end=date(2018, 4, 1))
    assert table.table["transaction_id"].to_pylist() == ["tx-4", "tx-1", "tx-0", "tx-3"]


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_missing_required_column_names_file_and_column(tmp_path: Path, suffix: str) -> None:
    records = [{k: v for k, v in r.items() if k != "terminal_id"} for r in rows()]
    path = write(tmp_path / f"x{suffix}", records)
    with pytest.raises(InputError, match=f"{path}: missing required column 'terminal_id'"):
        read_transactions(path, labelled=False, skip_invalid=True)


def test_missing_label_column_only_matters_when_labelled(tmp_path: Path) -> None:
    path = write(
        tmp_path / "x.csv", [{k: v for k, v in r.items() if k != "is_fraud"} for r in rows()]
    )
    assert read_transactions(path, labelled=False).table.num_rows == 6
    with pytest.raises(InputError, match="missing required column 'is_fraud'"):
        read_transactions(path, labelled=True)


@pytest.mark.parametrize(
    "suffix, first_line, bad_line",
    [(".csv", "line 3", "line 5"), (".parquet", "row 2", "row 4"), (".jsonl", "line 2", "line 4")],
)
def test_skip_invalid_drops_and_counts(
    tmp_path: Path, suffix: str, first_line: str, bad_line: str
) -> None:
    records = rows()
    records[1]["amount"] = -3.5
    records[3]["amount"] = -1.0
    path = write(tmp_path / f"x{suffix}", records)
    with pytest.raises(ValidationError) as caught:
        read_transactions(path, labelled=True)
    assert str(caught.value) == f"{first_line} of {path}: field 'amount': must be >= 0, got -3.5"
    result = read_transactions(path, labelled=True, skip_invalid=True)
    assert result.skipped == 2
    assert result.table["transaction_id"].to_pylist() == ["tx-4", "tx-0", "tx-2", "tx-5"]
    assert [e.record for e in result.errors] == [f"{first_line} of {path}", f"{bad_line} of {path}"]


PARITY = [
    pytest.param(changes, field, reason, alone, id=f"{field}-{i}-{'alone' if alone else 'second'}")
    for i, (changes, field, reason) in enumerate(BAD)
    for alone in (True, False)
    # A field absent from every line is a missing column (tested above), not a bad record.
    if not (alone and DROP in changes.values())
]


@pytest.mark.parametrize("changes, field, reason, alone", PARITY)
def test_jsonl_matches_record_validator(
    tmp_path: Path, changes: dict, field: str, reason: str, alone: bool
) -> None:
    """The vectorised path and the record validator give the same field and reason."""
    bad = with_(**changes)
    lines = [bad] if alone else [GOOD, bad]
    path = tmp_path / "x.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    with pytest.raises(ValidationError) as from_file:
        read_transactions(path, labelled=True)
    assert from_file.value.record == f"line {len(lines)} of {path}"
    assert (from_file.value.field, from_file.value.reason[: len(reason)]) == (field, reason)
    with pytest.raises(ValidationError) as from_record:
        validate_record(bad, "x", labelled=True)
    assert from_file.value.reason == from_record.value.reason


def test_jsonl_line_numbers_count_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps(GOOD) + "\n\n\r\n" + json.dumps(with_(amount=-1)) + "\n")
    with pytest.raises(ValidationError, match=rf"^line 4 of {path}: field 'amount'"):
        read_transactions(path, labelled=False)


@pytest.mark.parametrize(
    "bad_line, reason",
    [
        (b'{"transaction_id": "tx-\xff"}', "invalid UTF-8 at byte"),
        (b'{"transaction_id": ', "invalid JSON"),
        (b"[]", "expected a JSON object, got array"),
        (b'{"pad": "' + b"x" * 70_000 + b'"}', "record is 70011 bytes, over the 65536-byte limit"),
    ],
)
def test_jsonl_bad_lines(tmp_path: Path, bad_line: bytes, reason: str) -> None:
    path = tmp_path / "x.jsonl"
    good = json.dumps(GOOD).encode()
    path.write_bytes(good + b"\n" + bad_line + b"\n" + good.replace(b"tx-1", b"tx-2") + b"\n")
    with pytest.raises(ValidationError) as caught:
        read_transactions(path, labelled=True)
    assert caught.value.record == f"line 2 of {path}"
    assert caught.value.field is None
    assert caught.value.reason.startswith(reason)
    result = read_transactions(path, labelled=True, skip_invalid=True)
    assert (result.skipped, result.table.num_rows) == (1, 2)


def test_csv_cell_errors_name_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    header = b"transaction_id,timestamp,customer_id,terminal_id,amount\n"
    good = b"1,2018-04-01T00:00:00,c1,t1,5\n"
    path.write_bytes(header + good + b"2,2018-04-01T00:00:00,c\xff,t1,5\n")
    with pytest.raises(
        ValidationError, match=rf"^line 3 of {path}: field 'customer_id': invalid UTF-8"
    ):
        read_transactions(path, labelled=False)
    path.write_bytes(header + good + b"2,2018-04-01T00:00:00,c1,t1,abc\n")
    with pytest.raises(ValidationError, match=r"line 3 .*field 'amount': not a number: 'abc'"):
        read_transactions(path, labelled=False)
    path.write_bytes(header + good + b"2,not-a-time,c1,t1,1\n")
    with pytest.raises(ValidationError, match=r"line 3 .*'timestamp': not an ISO-8601 timestamp"):
        read_transactions(path, labelled=False)
    path.write_bytes(header + good + b"2,2018-04-01T00:00:00,,t1,1\n")
    with pytest.raises(ValidationError, match=r"line 3 .*'customer_id': required field is missing"):
        read_transactions(path, labelled=False)


def test_bad_paths(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file or directory"):
        read_transactions(tmp_path / "nope.csv", labelled=False)
    (tmp_path / "x.txt").write_text("a")
    with pytest.raises(InputError, match="unsupported file type"):
        read_transactions(tmp_path / "x.txt", labelled=False)
    with pytest.raises(InputError, match=r"no \.csv, \.parquet, \.jsonl files"):
        read_transactions(tmp_path, labelled=False)


def test_empty_jsonl(tmp_path: Path) -> None:
    (tmp_path / "x.jsonl").write_text("\n")
    assert read_transactions(tmp_path / "x.jsonl", labelled=True).table.num_rows == 0
