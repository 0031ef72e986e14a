"""Vectorised validation of a whole Arrow table against the transaction contract.

The column-wise twin of :func:`ingest.validation.validate_record`: same rules,
same reason texts, but computed with ``pyarrow.compute`` over whole columns so a
file of millions of rows validates in about a second. Each field yields its
canonical column plus a list of checks (a boolean mask and a function giving
the reason at a row); the first flagged row is reported, or every flagged row
is dropped and counted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features.spec import RAW_FIELDS, UNKNOWN, Kind, arrow_schema
from ingest.validation import (
    MISSING,
    NUMBER_PATTERN,
    ValidationError,
    amount_reason,
    label_reason,
    number_reason,
    parse_timestamp,
    timestamp_reason,
    wrong_type,
)

Reason = Callable[[int], str]
_TS = pa.timestamp("us", tz="UTC")


@dataclass
class Column:
    """A canonical column and the checks that flag its bad rows (first check wins)."""

    values: pa.Array
    checks: list[tuple[np.ndarray, Reason]] = field(default_factory=list)

    def add(self, mask: pa.Array | np.ndarray, reason: Reason) -> None:
        """Record a check; ``mask`` is true on bad rows (nulls count as good)."""
        if isinstance(mask, pa.Array | pa.ChunkedArray):
            mask = pc.fill_null(mask, False).to_numpy(zero_copy_only=False)
        if mask.any():
            self.checks.append((mask, reason))

    def reason_at(self, row: int) -> str | None:
        """Return the reason of the first check flagging ``row``, if any."""
        return next((why(row) for mask, why in self.checks if mask[row]), None)


def _texts(arr: pa.Array, col: Column) -> pa.Array:
    """Convert a string/binary column to strings; invalid UTF-8 flagged and nulled."""
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if pa.types.is_binary(arr.type) or pa.types.is_large_binary(arr.type):
        try:
            return arr.cast(pa.string())
        except pa.ArrowInvalid:
            ok = [v is None or _utf8(v) for v in arr.to_pylist()]
            bad = ~np.array(ok, dtype=bool)
            col.add(bad, lambda row: "invalid UTF-8")
            return pc.if_else(pa.array(bad), None, arr).cast(pa.string())
    return arr.cast(pa.string())


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _is_text(arr: pa.Array) -> bool:
    t = arr.type.value_type if pa.types.is_dictionary(arr.type) else arr.type
    return bool(
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
    )


def _blank(text: pa.Array) -> pa.Array:
    """Flag strings that are null or empty after stripping."""
    return pc.fill_null(pc.equal(text, ""), True)


def _string_column(arr: pa.Array, required: bool) -> Column:
    col = Column(pa.nulls(len(arr), pa.string()))
    if _is_text(arr):
        text = pc.utf8_trim_whitespace(_texts(arr, col))
    elif pa.types.is_integer(arr.type):
        text = arr.cast(pa.string())
    elif pa.types.is_null(arr.type):
        text = pa.nulls(len(arr), pa.string())
    else:
        col.add(arr.is_valid(), lambda row: wrong_type("a string", arr[row].as_py()))
        text = pa.nulls(len(arr), pa.string())
    blank = _blank(text)
    if required:
        col.values = text
        col.add(pc.and_(blank, pc.invert(_flagged(col, len(arr)))), lambda row: MISSING)
    else:
        col.values = pc.if_else(blank, UNKNOWN, text)
    return col


def _flagged(col: Column, n: int) -> pa.Array:
    mask = np.zeros(n, dtype=bool)
    for m, _ in col.checks:
        mask |= m
    return pa.array(mask)


def _timestamp_column(arr: pa.Array) -> Column:
    col = Column(pa.nulls(len(arr), _TS))
    if pa.types.is_timestamp(arr.type):
        col.values = arr.cast(_TS, safe=False)
    elif _is_text(arr):
        original = _texts(arr, col)
        text = pc.utf8_trim_whitespace(original)
        col.values = _parse_timestamps(text, original, col)
    elif not pa.types.is_null(arr.type):
        col.add(arr.is_valid(), lambda row: wrong_type("an ISO-8601 string", arr[row].as_py()))
        return col
    missing = pc.invert(_flagged(col, len(arr)))
    col.add(pc.and_(col.values.is_null(), missing), lambda row: MISSING)
    return col


def _parse_timestamps(text: pa.Array, original: pa.Array, col: Column) -> pa.Array:
    """ISO-8601 strings to UTC timestamps: Arrow's parser, Python's on mixed input."""
    text = pc.if_else(_blank(text), None, text)
    for target in (_TS, pa.timestamp("us")):
        try:
            return text.cast(target).cast(_TS)
        except pa.ArrowInvalid:
            continue
    parsed: list[object] = []
    bad = np.zeros(len(text), dtype=bool)
    for row, value in enumerate(text.to_pylist()):
        try:
            parsed.append(None if value is None else parse_timestamp(value, ""))
        except ValidationError:
            parsed.append(None)
            bad[row] = True
    col.add(bad, lambda row: timestamp_reason(original[row].as_py()))
    return pa.array(parsed, type=_TS)


def _amount_column(arr: pa.Array) -> Column:
    col = Column(pa.nulls(len(arr), pa.float64()))
    if (
        pa.types.is_integer(arr.type)
        or pa.types.is_floating(arr.type)
        or pa.types.is_decimal(arr.type)
    ):
        values = arr.cast(pa.float64())
    elif _is_text(arr):
        original = _texts(arr, col)
        text = pc.utf8_trim_whitespace(original)
        text = pc.if_else(_blank(text), None, text)
        number = pc.match_substring_regex(text, NUMBER_PATTERN)
        col.add(pc.invert(number), lambda row: number_reason(original[row].as_py()))
        values = pc.if_else(number, text, None).cast(pa.float64())
    elif pa.types.is_null(arr.type):
        values = pa.nulls(len(arr), pa.float64())
    else:
        col.add(arr.is_valid(), lambda row: wrong_type("a number", arr[row].as_py()))
        return col
    col.values = values
    col.add(pc.and_(values.is_null(), pc.invert(_flagged(col, len(arr)))), lambda row: MISSING)
    bad = pc.or_(pc.invert(pc.is_finite(values)), pc.less(values, 0.0))
    col.add(bad, lambda row: amount_reason(values[row].as_py()) or "")
    return col


def _label_column(arr: pa.Array) -> Column:
    col = Column(pa.nulls(len(arr), pa.int8()))
    if pa.types.is_boolean(arr.type):
        col.values = arr.cast(pa.int8())
    elif pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type):
        ok = pc.is_in(arr, value_set=pa.array([0, 1], arr.type))
        col.add(pc.and_(arr.is_valid(), pc.invert(ok)), lambda row: label_reason(arr[row].as_py()))
        col.values = pc.if_else(ok, arr, None).cast(pa.int8())
    elif _is_text(arr):
        original = _texts(arr, col)
        text = pc.utf8_trim_whitespace(original)
        ok = pc.is_in(text, value_set=pa.array(["0", "1"]))
        bad = pc.and_(pc.invert(_blank(text)), pc.invert(ok))
        col.add(bad, lambda row: label_reason(original[row].as_py()))
        col.values = pc.if_else(ok, text, None).cast(pa.int8())
    elif not pa.types.is_null(arr.type):
        col.add(arr.is_valid(), lambda row: label_reason(arr[row].as_py()))
        return col
    col.add(pc.and_(col.values.is_null(), pc.invert(_flagged(col, len(arr)))), lambda row: MISSING)
    return col


def canonical_column(name: str, arr: pa.Array) -> Column:
    """Validate and convert one raw column of the contract field ``name``."""
    spec = RAW_FIELDS[name]
    if spec.kind is Kind.STRING:
        return _string_column(arr, spec.required)
    if spec.kind is Kind.TIMESTAMP:
        return _timestamp_column(arr)
    if spec.kind is Kind.AMOUNT:
        return _amount_column(arr)
    return _label_column(arr)


@dataclass(frozen=True)
class TableCheck:
    """A canonical table plus its invalid rows (already removed from ``table``)."""

    table: pa.Table
    skipped: int
    errors: tuple[ValidationError, ...]


def validate_table(
    raw: pa.Table,
    *,
    labelled: bool,
    row_name: Callable[[int], str],
    skip_invalid: bool,
    max_errors: int = 10,
) -> TableCheck:
    """Validate ``raw`` column-wise into ``arrow_schema(labelled=...)``.

    Absent optional columns take their default; absent required columns must be
    checked by the caller (they are a file-level error). Raises the first bad
    row's :class:`ValidationError` unless ``skip_invalid``, which drops and
    counts bad rows instead, keeping the first ``max_errors`` errors.
    """
    schema = arrow_schema(labelled=labelled)
    n = raw.num_rows
    columns: dict[str, Column] = {}
    for name in schema.names:
        if name in raw.column_names:
            columns[name] = canonical_column(name, raw.column(name).combine_chunks())
        else:
            columns[name] = canonical_column(name, pa.nulls(n))
    bad = np.zeros(n, dtype=bool)
    for col in columns.values():
        for mask, _ in col.checks:
            bad |= mask
    bad_rows = np.flatnonzero(bad)
    errors = tuple(_error(columns, int(r), row_name) for r in bad_rows[:max_errors])
    if errors and not skip_invalid:
        raise errors[0]
    arrays = [columns[name].values for name in schema.names]
    table = pa.Table.from_arrays(arrays, schema=schema)
    if len(bad_rows):
        table = table.filter(pa.array(~bad))
    return TableCheck(table, len(bad_rows), errors)


def _error(columns: dict[str, Column], row: int, row_name: Callable[[int], str]) -> ValidationError:
    for name, col in columns.items():
        reason = col.reason_at(row)
        if reason is not None:
            return ValidationError(row_name(row), name, reason)
    raise AssertionError(f"row {row} flagged without a reason")
