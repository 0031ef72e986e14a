"""Read transaction files (.csv, .parquet, .jsonl) and directories into canonical tables.

A directory means every supported file below it, Hive ``date=YYYY-MM-DD/``
partitions included (pruned by ``start``/``end`` when given). Files are parsed
by Arrow and validated column-wise (:mod:`ingest.table_validation`); JSON Lines
files that Arrow cannot parse as a whole (invalid UTF-8 or JSON, oversized or
mixed-type lines) are read line by line with the record validator, which names
the exact line.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.json as pjson
import pyarrow.parquet as pq

from features.errors import InputError
from features.spec import (
    BOUNDS,
    LABEL_KEY,
    LABELLED_AT,
    MAX_RECORD_BYTES,
    RAW_FIELDS,
    REQUIRED_FIELDS,
    TIMESTAMP,
    arrow_schema,
)
from ingest import lake
from ingest.records import records_to_table
from ingest.table_validation import TableCheck, validate_table
from ingest.validation import ValidationError, decode_json_record

SUFFIXES = (".csv", ".parquet", ".jsonl")
MAX_ERRORS = 10
_PARTITION = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")


@dataclass(frozen=True)
class ReadResult:
    """Valid transactions sorted by event time, and what was skipped."""

    table: pa.Table
    skipped: int
    errors: tuple[ValidationError, ...]
    #: Every label known for the rows, with its time (``ingest.lake.LABELS_SCHEMA``, in
    #: ``labelled_at`` order), when the input keeps labels apart (a lake); else None:
    #: each row's ``is_fraud`` is its one label, known with the transaction.
    labels: pa.Table | None = None


def read_transactions(
    path: str | Path,
    *,
    labelled: bool,
    skip_invalid: bool = False,
    start: date | None = None,
    end: date | None = None,
    labels_known_before: datetime | None = None,
) -> ReadResult:
    """Read, validate and sort (stably, by timestamp) the transactions at ``path``.

    ``labelled`` requires the ``is_fraud`` label and keeps it; otherwise the
    label is ignored. ``start``/``end`` (inclusive, UTC dates) prune
    partitions and keep only rows whose timestamp falls on those days. Bad
    rows raise :class:`~ingest.validation.ValidationError`, or with
    ``skip_invalid`` are dropped and counted.

    A lake's rows get the latest label known (``is_fraud``) and when it became
    known (``labelled_at``), counting only the labels known before
    ``labels_known_before`` when given (a labelled file's labels are known
    with their transactions); :attr:`ReadResult.labels` then holds every
    such label with its time, for point-in-time features.
    """
    if lake.is_lake(path):
        return _read_lake(Path(path), labelled=labelled, skip_invalid=skip_invalid,
                          start=start, end=end, known_before=labels_known_before)
    read = _read_files(list_files(path, start=start, end=end), labelled, skip_invalid)
    return ReadResult(_sort_by_time(_between(read.table, start, end)), read.skipped, read.errors)


def _read_files(files: list[Path], labelled: bool, skip_invalid: bool) -> ReadResult:
    """The files' rows, validated, concatenated in file order (not sorted)."""
    tables: list[pa.Table] = []
    skipped = 0
    errors: list[ValidationError] = []
    for file in files:
        check = read_file(file, labelled=labelled, skip_invalid=skip_invalid)
        tables.append(check.table)
        skipped += check.skipped
        errors.extend(check.errors[: MAX_ERRORS - len(errors)])
    schema = arrow_schema(labelled=labelled)
    table = pa.concat_tables(tables) if tables else schema.empty_table()
    return ReadResult(table, skipped, tuple(errors))


def _read_lake(
    root: Path, *, labelled: bool, skip_invalid: bool, start: date | None, end: date | None,
    known_before: datetime | None = None,
) -> ReadResult:
    """A lake's transactions in ``[start, end]``, each once (:mod:`ingest.lake`).

    With ``labelled``, each gets its latest label known before ``known_before``
    (genuine when it has none) and when it became known; the labels come along.
    """
    files = lake.data_files(root, lake.TRANSACTIONS, start, end)
    read = _read_files(files, labelled=False, skip_invalid=skip_invalid)
    table = lake.drop_repeated_ids(_between(read.table, start, end))
    if not labelled:
        return ReadResult(_sort_by_time(table), read.skipped, read.errors)
    cutoff = None if known_before is None else epoch_us(known_before)
    labels = lake.sort_labels(lake.known_by(lake.read_labels(root, start, end), cutoff))
    table = lake.join_labels(table, labels)
    schema = arrow_schema(labelled=True)
    table = table.select([*schema.names, LABELLED_AT]).cast(
        schema.append(pa.field(LABELLED_AT, pa.timestamp("us", tz="UTC"))))
    return ReadResult(_sort_by_time(table), read.skipped, read.errors, labels)


def epoch_us(moment: datetime) -> int:
    """``moment`` (an aware datetime; naive means UTC) in µs since the Unix epoch."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def list_files(
    path: str | Path, *, start: date | None = None, end: date | None = None
) -> list[Path]:
    """List the supported files at ``path`` (a file or a directory), partitions pruned."""
    root = Path(path)
    if root.is_file():
        if root.suffix.lower() not in SUFFIXES:
            raise InputError(f"{root}: unsupported file type (expected {', '.join(SUFFIXES)})")
        return [root]
    if not root.is_dir():
        raise InputError(f"{root}: no such file or directory")
    files = [
        f
        for f in sorted(root.rglob("*"))
        if f.is_file()
        and f.suffix.lower() in SUFFIXES
        and not any(p.startswith((".", "_")) for p in f.relative_to(root).parts)
    ]
    if not files:
        raise InputError(f"{root}: no {', '.join(SUFFIXES)} files in this directory")
    return [f for f in files if _in_range(_partition_date(f.relative_to(root)), start, end)]


def _partition_date(relative: Path) -> date | None:
    for part in relative.parts[:-1]:
        match = _PARTITION.match(part)
        if match:
            return date.fromisoformat(match.group(1))
    return None


def _in_range(day: date | None, start: date | None, end: date | None) -> bool:
    if day is None:
        return True
    return (start is None or day >= start) and (end is None or day <= end)


def _between(table: pa.Table, start: date | None, end: date | None) -> pa.Table:
    """Rows whose UTC date is within ``[start, end]``."""
    if start is not None:
        low = pa.scalar(datetime.combine(start, time(), UTC), pa.timestamp("us", tz="UTC"))
        table = table.filter(pc.greater_equal(table[TIMESTAMP], low))
    if end is not None:
        after = datetime.combine(end + timedelta(days=1), time(), UTC)
        high = pa.scalar(after, pa.timestamp("us", tz="UTC"))
        table = table.filter(pc.less(table[TIMESTAMP], high))
    return table


def _sort_by_time(table: pa.Table) -> pa.Table:
    """Stable sort by event time (ties keep file order)."""
    return table.take(pc.sort_indices(table, sort_keys=[(TIMESTAMP, "ascending")]))


def read_file(path: Path, *, labelled: bool, skip_invalid: bool) -> TableCheck:
    """Validate one file into the canonical schema (unsorted)."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        raw = _read_csv(path, labelled)
        return _validate(raw, path, labelled, skip_invalid, lambda row: f"line {row + 2} of {path}")
    if suffix == ".parquet":
        raw = _read_parquet(path, labelled)
        return _validate(raw, path, labelled, skip_invalid, lambda row: f"row {row + 1} of {path}")
    return _read_jsonl(path, labelled, skip_invalid)


def _wanted(labelled: bool) -> list[str]:
    return [n for n in RAW_FIELDS if labelled or n != LABEL_KEY]


def _require_columns(path: Path, present: list[str], labelled: bool) -> None:
    required = list(REQUIRED_FIELDS) + ([LABEL_KEY] if labelled else [])
    for name in required:
        if name not in present:
            raise ValidationError(str(path), None, f"missing required column '{name}'")


def _validate(
    raw: pa.Table, path: Path, labelled: bool, skip: bool, row_name: Callable[[int], str]
) -> TableCheck:
    _require_columns(path, raw.column_names, labelled)
    return validate_table(raw, labelled=labelled, row_name=row_name, skip_invalid=skip)


def _read_csv(path: Path, labelled: bool) -> pa.Table:
    """Known columns only, all as bytes: the validator converts and checks them."""
    header = _csv_header(path)
    columns = [n for n in _wanted(labelled) if n in header]
    options = pcsv.ConvertOptions(
        column_types={n: pa.binary() for n in columns},
        include_columns=columns,
        strings_can_be_null=False,
    )
    try:
        return pcsv.read_csv(path, convert_options=options)
    except pa.ArrowException as err:
        raise ValidationError(str(path), None, f"unreadable CSV: {err}") from None


def _csv_header(path: Path) -> list[str]:
    with path.open("rb") as f:
        first = f.readline()
    try:
        line = first.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValidationError(f"line 1 of {path}", None, "invalid UTF-8 in the header") from None
    try:
        return [name.strip() for name in next(csv.reader([line]), [])]
    except csv.Error as err:
        raise ValidationError(f"line 1 of {path}", None, f"unreadable CSV header: {err}") from None


def _read_parquet(path: Path, labelled: bool) -> pa.Table:
    try:
        names = pq.read_schema(path).names
        return pq.read_table(path, columns=[n for n in _wanted(labelled) if n in names])
    except (pa.ArrowException, OSError) as err:
        raise ValidationError(str(path), None, f"unreadable Parquet: {err}") from None


def _read_jsonl(path: Path, labelled: bool, skip: bool) -> TableCheck:
    """Arrow's JSON reader when the file is plainly clean; else the line-by-line validator.

    Arrow's reader reads some lines differently from Python's ``json`` (a NUL
    ends its input, two objects on a line are two rows, deep nesting crashes
    it, integers beyond int64 become floats), so it only gets files where the
    first three cannot happen, its rows must match the lines one to one, and
    every row must be valid: otherwise the line-by-line validator (the
    reference) reads the file and names each bad line.
    """
    data = path.read_bytes()
    if data.startswith(_BOM):
        data = b"   " + data[len(_BOM):]  # a file's byte order mark; byte offsets kept
    lines = _line_bounds(data)
    if _fast_jsonl_ok(data, lines):
        options = pjson.ParseOptions(
            explicit_schema=pa.schema([(TIMESTAMP, pa.string())]),
            unexpected_field_behavior="infer",
        )
        block = max(1 << 20, int((lines[1] - lines[0]).max(initial=0)) + 1)
        try:
            raw = pjson.read_json(
                pa.BufferReader(data),
                read_options=pjson.ReadOptions(block_size=block),
                parse_options=options,
            )
        except pa.ArrowInvalid:
            pass
        else:
            numbers = _nonblank_line_numbers(data, lines)
            if raw.num_rows == 0 and not len(numbers):
                return TableCheck(arrow_schema(labelled=labelled).empty_table(), 0, ())
            if raw.num_rows == len(numbers):
                _require_columns(path, raw.column_names, labelled)
                check = validate_table(raw, labelled=labelled, skip_invalid=True, max_errors=0,
                                       row_name=lambda row: f"line {numbers[row]} of {path}")
                if not check.skipped:
                    return check
                # A bad line: the record validator names it (and reads what Arrow
                # reads otherwise, e.g. integers beyond int64, exactly as Python).
    return _read_jsonl_lines(data, lines, path, labelled, skip)


_BOM = b"\xef\xbb\xbf"


def _line_bounds(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive, without the newline) offsets of every line."""
    newlines = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == ord("\n"))
    starts = np.concatenate(([0], newlines + 1))
    ends = np.concatenate((newlines, [len(data)]))
    return starts, ends


def _fast_jsonl_ok(data: bytes, lines: tuple[np.ndarray, np.ndarray]) -> bool:
    starts, ends = lines
    if len(starts) and int((ends - starts).max()) > MAX_RECORD_BYTES:
        return False
    if b"\x00" in data:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    # No line may hold more brackets than the depth bound (deep nesting crashes Arrow).
    view = np.frombuffer(data, dtype=np.uint8)
    opens = np.flatnonzero(view == ord("{"))
    if b"[" in data:
        opens = np.union1d(opens, np.flatnonzero(view == ord("[")))
    if len(opens) > BOUNDS.max_json_depth:
        first = np.searchsorted(opens, starts)
        per_line = np.diff(np.append(first, len(opens)))
        if int(per_line.max()) > BOUNDS.max_json_depth:
            return False
    return True


def _nonblank_line_numbers(data: bytes, lines: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """1-based numbers of the lines Arrow turns into rows: not only JSON whitespace."""
    starts, ends = lines
    view = np.frombuffer(data, dtype=np.uint8)
    first = view[np.minimum(starts, max(len(view) - 1, 0))] if len(view) else starts * 0
    # Only a line that is empty or starts with whitespace can be blank: look at those.
    maybe = (ends == starts) | np.isin(first, _JSON_SPACE)
    blank = np.zeros(len(starts), dtype=bool)
    for i in np.flatnonzero(maybe):
        blank[i] = not data[starts[i]:ends[i]].strip(b" \t\r")
    return np.flatnonzero(~blank) + 1


_JSON_SPACE = np.frombuffer(b" \t\r\n", dtype=np.uint8)


def _read_jsonl_lines(
    data: bytes, lines: tuple[np.ndarray, np.ndarray], path: Path, labelled: bool, skip: bool
) -> TableCheck:
    records = []
    errors: list[ValidationError] = []
    skipped = 0
    for number, (start, end) in enumerate(zip(*lines, strict=True), start=1):
        line = data[start:end]
        if not line.strip():
            continue
        try:
            records.append(decode_json_record(line, f"line {number} of {path}", labelled=labelled))
        except ValidationError as err:
            if not skip:
                raise
            skipped += 1
            if len(errors) < MAX_ERRORS:
                errors.append(err)
    return TableCheck(records_to_table(records, labelled=labelled), skipped, tuple(errors))
