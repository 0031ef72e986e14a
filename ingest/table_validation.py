"""Vectorised validation of a whole Arrow table against the transaction contract.

The column-wise twin of :func:`ingest.validation.validate_record`: same rules,
same bounds (:data:`features.spec.BOUNDS`), same reason texts, but computed
with ``pyarrow.compute`` over whole columns so a file of millions of rows
validates in about a second. Each field yields its canonical column plus a
list of checks (a boolean mask and a function giving the reason at a row),
added in the order the record validator checks; the first flagged row is
reported, or every flagged row is dropped and counted.

Whatever the column holds, the only exception raised is
:class:`~ingest.validation.ValidationError`: a column of a type no rule
covers is flagged row by row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features.spec import BOUNDS, RAW_FIELDS, UNKNOWN, Kind, arrow_schema
from ingest.validation import (
    BAD_CHAR_PATTERN,
    EARLIEST_US,
    LATEST_US,
    MISSING,
    NUMBER_PATTERN,
    WHITESPACE,
    ValidationError,
    amount_reason,
    char_reason,
    format_epoch_us,
    label_reason,
    length_reason,
    number_reason,
    parse_iso_us,
    range_reason,
    show,
    timestamp_reason,
    wrong_type,
)

Reason = Callable[[int], str]
_TS = pa.timestamp("us", tz="UTC")
#: Timestamps Arrow's parser reads exactly as Python's ``datetime.fromisoformat``
#: does (tested): years 1970-2099, valid field ranges, up to 6 decimals, ``Z``,
#: ``±HH:MM`` or no offset. Anything else is parsed by Python, value by value.
_STRICT_TIMESTAMP = (
    r"^(?:19[7-9][0-9]|20[0-9][0-9])-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
    r"[T ](?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?"
    r"(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])?$"
)
_HAS_OFFSET = r"(?:Z|[+-][0-9][0-9]:[0-9][0-9])$"
_NS_PER_UNIT = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}


@dataclass
class Column:
    """A canonical column and the checks that flag its bad rows (first check wins)."""

    values: pa.Array
    checks: list[tuple[np.ndarray, Reason]] = field(default_factory=list)

    def add(self, mask: pa.Array | np.ndarray, reason: Reason) -> None:
        """Record a check; ``mask`` is true on bad rows (nulls count as good)."""
        if isinstance(mask, pa.Array | pa.ChunkedArray):
            if not pc.any(mask).as_py():  # the usual case, at the cost of one call
                return
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
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        try:
            arr.validate(full=True)  # Parquet and Arrow's JSON reader do not check UTF-8
            return arr.cast(pa.string())
        except pa.ArrowInvalid:
            arr = arr.cast(pa.large_binary() if pa.types.is_large_string(arr.type)
                           else pa.binary())
    try:
        return arr.cast(pa.string())
    except pa.ArrowInvalid:
        ok = [v is None or _utf8(v) for v in arr.to_pylist()]
        bad = ~np.array(ok, dtype=bool)
        col.add(bad, lambda row: "invalid UTF-8")
        return pc.if_else(pa.array(bad), None, arr).cast(pa.string())


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


def _strip(text: pa.Array) -> pa.Array:
    """Strip exactly what Python's ``str.strip()`` strips."""
    return pc.utf8_trim(text, characters=WHITESPACE)


def _blank(text: pa.Array) -> pa.Array:
    """Flag strings that are null or empty after stripping."""
    return pc.fill_null(pc.equal(text, ""), True)


def _py(arr: pa.Array, row: int) -> object:
    """A value of ``arr`` as Python, for a reason text (never raises)."""
    try:
        return arr[row].as_py()
    except Exception:  # e.g. a timestamp beyond Python's datetime
        return arr[row]


def _string_column(arr: pa.Array, required: bool, max_length: int) -> Column:
    col = Column(pa.nulls(len(arr), pa.string()))
    if _is_text(arr):
        text = _strip(_texts(arr, col))
    elif pa.types.is_integer(arr.type):
        text = arr.cast(pa.string())
    elif pa.types.is_null(arr.type):
        text = pa.nulls(len(arr), pa.string())
    else:
        col.add(arr.is_valid(), lambda row: wrong_type("a string", _py(arr, row)))
        text = pa.nulls(len(arr), pa.string())
    blank = _blank(text)
    if required:
        col.values = text
        col.add(pc.and_(blank, pc.invert(_flagged(col, len(arr)))) if col.checks else blank,
                lambda row: MISSING)
    else:
        col.values = pc.if_else(blank, UNKNOWN, text)
    longest, suspicious = _byte_profile(text)
    if longest > max_length:  # in bytes: the characters are checked only then
        length = pc.utf8_length(text)
        col.add(pc.greater(length, max_length),
                lambda row: length_reason(max_length, length[row].as_py()))
    if suspicious:
        col.add(pc.match_substring_regex(text, BAD_CHAR_PATTERN),
                lambda row: char_reason(text[row].as_py()) or "")
    return col


def _byte_profile(text: pa.Array) -> tuple[int, bool]:
    """The longest value in bytes, and whether a byte could start a control character.

    Cheap bounds from the raw buffers (an upper bound on the characters; a
    C0 byte, DEL, or the lead byte 0xC2 of U+0080-U+00BF) that spare the
    exact checks in the usual clean column.
    """
    if not pa.types.is_string(text.type) or text.null_count == len(text):
        return (0, False) if text.null_count == len(text) else (1 << 62, True)
    _, offsets_buffer, data_buffer = text.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=np.int32)[text.offset:text.offset + len(text) + 1]
    longest = int(np.diff(offsets).max(initial=0))
    if data_buffer is None:
        return longest, False
    data = np.frombuffer(data_buffer, dtype=np.uint8)[offsets[0]:offsets[-1]]
    suspicious = bool(((data < 0x20) | (data == 0x7F) | (data == 0xC2)).any())
    return longest, suspicious


def _flagged(col: Column, n: int) -> pa.Array:
    mask = np.zeros(n, dtype=bool)
    for m, _ in col.checks:
        mask |= m
    return pa.array(mask)


def _timestamp_column(arr: pa.Array) -> Column:
    col = Column(pa.nulls(len(arr), _TS))
    n = len(arr)
    if pa.types.is_timestamp(arr.type):
        us = _typed_epoch_us(arr)
        col.add(_out_of_range(us), lambda row: range_reason(
            int(us[row]), format_epoch_us(int(us[row]))) or "")
    elif _is_text(arr):
        original = _texts(arr, col)
        us = _parse_timestamps(_strip(original), original, col)
        col.add(_out_of_range(us), lambda row: range_reason(
            int(us[row]), show(original[row].as_py())) or "")
    else:
        if not pa.types.is_null(arr.type):
            col.add(arr.is_valid(),
                    lambda row: wrong_type("an ISO-8601 string", _py(arr, row)))
        us = np.full(n, _NO_TIME, dtype=np.int64)
    present = us != _NO_TIME
    flagged = _flagged(col, n).to_numpy(zero_copy_only=False)
    col.add(~present & ~flagged, lambda row: MISSING)
    good = present & ~flagged
    col.values = pa.array(np.where(good, us, 0), pa.int64(), mask=~good).cast(_TS)
    return col


#: Marks a row without a time in an int64 array of epoch microseconds.
_NO_TIME = np.iinfo(np.int64).min


def _out_of_range(us: np.ndarray) -> np.ndarray:
    return (us != _NO_TIME) & ((us < EARLIEST_US) | (us >= LATEST_US))


def _typed_epoch_us(arr: pa.Array) -> np.ndarray:
    """Epoch microseconds (floored) of a timestamp column of any unit; nulls are ``_NO_TIME``.

    Computed in the column's own unit first, so no value overflows on the way.
    """
    raw = arr.cast(pa.int64()).to_numpy(zero_copy_only=False)
    nulls = arr.is_null().to_numpy(zero_copy_only=False)
    raw = np.where(nulls, 0, raw).astype(np.int64)
    per_unit = _NS_PER_UNIT[arr.type.unit]
    if per_unit >= 1_000:  # s, ms, us: an exact multiple of a microsecond
        factor = per_unit // 1_000
        # Clip far outside the bounds first: no overflow, still out of range.
        limit = (np.iinfo(np.int64).max // 2) // factor
        us = np.clip(raw, -limit, limit) * factor
    else:  # ns: floor to the microsecond
        us = np.floor_divide(raw, 1_000)
    return np.where(nulls, _NO_TIME, us)


def _parse_timestamps(text: pa.Array, original: pa.Array, col: Column) -> np.ndarray:
    """ISO-8601 strings (stripped) to epoch microseconds (``_NO_TIME`` where none).

    Arrow parses the strictly formatted ones at once; Python parses the others
    (and all of them if Arrow refuses one), so the result is always what
    :func:`ingest.validation.parse_timestamp` gives. Blank strings are missing.
    """
    n = len(text)
    us = np.full(n, _NO_TIME, dtype=np.int64)
    strict = pc.fill_null(pc.match_substring_regex(text, _STRICT_TIMESTAMP), False)
    strict_np = strict.to_numpy(zero_copy_only=False)
    if strict_np.any():
        chosen = text if strict_np.all() else pc.if_else(strict, text, None)
        parsed = _cast_times(chosen)
        if parsed is None:  # e.g. 2018-02-30: Python names it
            strict_np = np.zeros(n, dtype=bool)
        else:
            us = np.where(strict_np, parsed, us)
    rest = np.flatnonzero(~strict_np & text.is_valid().to_numpy(zero_copy_only=False))
    if len(rest):
        bad = np.zeros(n, dtype=bool)
        values = text.take(pa.array(rest)).to_pylist()
        for row, value in zip(rest, values, strict=True):
            if not value:
                continue  # blank: missing
            try:
                us[row] = parse_iso_us(value)
            except ValueError:
                bad[row] = True
        col.add(bad, lambda row: timestamp_reason(original[row].as_py()))
    return us


def _cast_times(text: pa.Array) -> np.ndarray | None:
    """Strictly formatted timestamps to epoch µs by Arrow (no offset: UTC); None if it refuses."""
    try:
        return text.cast(_TS).cast(pa.int64()).to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid:  # some have no offset (or a date does not exist)
        pass
    zoned = pc.if_else(pc.match_substring_regex(text, _HAS_OFFSET), text,
                       pc.binary_join_element_wise(text, "Z", ""))
    try:
        return zoned.cast(_TS).cast(pa.int64()).to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid:
        return None


def _amount_column(arr: pa.Array) -> Column:
    col = Column(pa.nulls(len(arr), pa.float64()))
    if (
        pa.types.is_integer(arr.type)
        or pa.types.is_floating(arr.type)
        or pa.types.is_decimal(arr.type)
    ):
        values = arr.cast(pa.float64(), safe=False)
    elif _is_text(arr):
        original = _texts(arr, col)
        text = _strip(original)
        text = pc.if_else(_blank(text), None, text)
        number = pc.match_substring_regex(text, NUMBER_PATTERN)
        col.add(pc.invert(number), lambda row: number_reason(original[row].as_py()))
        values = _to_float(pc.if_else(number, text, None))
    elif pa.types.is_null(arr.type):
        values = pa.nulls(len(arr), pa.float64())
    else:
        col.add(arr.is_valid(), lambda row: wrong_type("a number", _py(arr, row)))
        return col
    col.values = pc.add(values, 0.0)  # -0.0 becomes 0.0, as in the record validator
    col.add(pc.and_(values.is_null(), pc.invert(_flagged(col, len(arr)))), lambda row: MISSING)
    bad = pc.or_(pc.or_(pc.invert(pc.is_finite(values)), pc.less(values, 0.0)),
                 pc.greater(values, BOUNDS.max_amount))
    col.add(bad, lambda row: amount_reason(values[row].as_py()) or "")
    return col


def _to_float(text: pa.Array) -> pa.Array:
    """Decimal strings to float64, as Python's ``float`` reads them."""
    try:
        return text.cast(pa.float64())
    except pa.ArrowInvalid:
        return pa.array([None if v is None else float(v) for v in text.to_pylist()],
                        pa.float64())


def _label_column(arr: pa.Array) -> Column:
    col = Column(pa.nulls(len(arr), pa.int8()))
    if pa.types.is_boolean(arr.type):
        col.values = arr.cast(pa.int8())
    elif pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type):
        ok = pc.is_in(arr, value_set=pa.array([0, 1], arr.type))
        col.add(pc.and_(arr.is_valid(), pc.invert(ok)), lambda row: label_reason(_py(arr, row)))
        col.values = pc.if_else(ok, arr, None).cast(pa.int8())
    elif _is_text(arr):
        original = _texts(arr, col)
        text = _strip(original)
        ok = pc.is_in(text, value_set=pa.array(["0", "1"]))
        bad = pc.and_(pc.invert(_blank(text)), pc.invert(ok))
        col.add(bad, lambda row: label_reason(original[row].as_py()))
        col.values = pc.if_else(ok, text, None).cast(pa.int8())
    elif not pa.types.is_null(arr.type):
        col.add(arr.is_valid(), lambda row: label_reason(_py(arr, row)))
        return col
    col.add(pc.and_(col.values.is_null(), pc.invert(_flagged(col, len(arr)))), lambda row: MISSING)
    return col


def canonical_column(name: str, arr: pa.Array) -> Column:
    """Validate and convert one raw column of the contract field ``name``.

    A column Arrow cannot convert (an exotic type) has every row flagged.
    """
    spec = RAW_FIELDS[name]
    try:
        if spec.kind is Kind.STRING:
            return _string_column(arr, spec.required, spec.max_length or 0)
        if spec.kind is Kind.TIMESTAMP:
            return _timestamp_column(arr)
        if spec.kind is Kind.AMOUNT:
            return _amount_column(arr)
        return _label_column(arr)
    except pa.ArrowException:
        col = Column(pa.nulls(len(arr), arrow_schema(labelled=True).field(name).type))
        col.add(np.ones(len(arr), dtype=bool), lambda row: f"unsupported column type {arr.type}")
        return col


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
