"""Write transaction tables in the formats the system reads (docs/contracts.md §1).

The format follows the path: ``.csv``, ``.parquet`` or ``.jsonl`` files; any other path is
a directory that gets Hive date partitions ``DIR/date=YYYY-MM-DD/part-0.parquet``.
Timestamps are written as ISO-8601 UTC strings with a ``Z`` in CSV and JSON Lines.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from enum import Enum
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from features import spec
from features.errors import InputError
from ingest.atomic import write_atomically

_MICROS_PER_DAY = 86_400 * 1_000_000
PARTITION_FILE = "part-0.parquet"
_JSONL_BATCH_ROWS = 100_000


class Format(Enum):
    """Output formats, chosen by the path's extension."""

    CSV = ".csv"
    PARQUET = ".parquet"
    JSONL = ".jsonl"
    PARTITIONED = ""


#: Extensions of data files this writer does not produce: such a path is a mistake, not a
#: directory name.
_OTHER_FILE_SUFFIXES = frozenset({".json", ".ndjson", ".txt", ".tsv", ".gz", ".zip", ".pq"})


def output_format(path: Path) -> Format:
    """Tell the format a path asks for: its extension, or date-partitioned Parquet."""
    suffix = path.suffix.lower()
    for fmt in Format:
        if fmt.value and suffix == fmt.value:
            return fmt
    if suffix in _OTHER_FILE_SUFFIXES and not path.is_dir():
        raise InputError(
            f"{path}: cannot write {suffix} files; use .csv, .parquet or .jsonl, "
            "or a path without extension for a directory of date partitions"
        )
    return Format.PARTITIONED


def conform(table: pa.Table) -> pa.Table:
    """Keep the contract's columns of ``table``, in canonical order and types.

    Extra columns are dropped, missing optional ones become nulls; the result is labelled
    if the table has the label column. A missing required column is an error.
    """
    labelled = spec.LABEL_KEY in table.column_names
    schema = spec.arrow_schema(labelled=labelled)
    columns = []
    for field in schema:
        if field.name in table.column_names:
            column = table.column(field.name)
            try:
                columns.append(column.cast(field.type))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
                raise InputError(
                    f"column {field.name!r} cannot be written as {field.type}: {err}"
                ) from None
        elif field.nullable:
            columns.append(pa.nulls(table.num_rows, field.type))
        else:
            raise InputError(f"cannot write transactions: required column {field.name!r} missing")
    return pa.Table.from_arrays(columns, schema=schema)


def iso_timestamps(column: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """Format timestamps as ISO-8601 UTC ``2018-04-01T08:30:00Z``, with a fraction if needed."""
    micros = pc.cast(column, pa.int64())
    seconds = pc.divide(micros, 1_000_000)
    # Formatting naive UTC values is several times faster than strftime or zoned casts.
    if pc.all(pc.equal(pc.multiply(seconds, 1_000_000), micros)).as_py() is not False:
        naive = pc.cast(seconds, pa.timestamp("s"))
    else:
        naive = pc.cast(micros, pa.timestamp("us"))
    text = pc.replace_substring(pc.cast(naive, pa.string()), " ", "T", max_replacements=1)
    return pc.binary_join_element_wise(text, "Z", "")


def _with_iso_timestamps(table: pa.Table) -> pa.Table:
    index = table.schema.get_field_index(spec.TIMESTAMP)
    return table.set_column(index, spec.TIMESTAMP, iso_timestamps(table.column(index)))


def _write_csv(table: pa.Table, path: Path) -> None:
    pa_csv.write_csv(_with_iso_timestamps(table), path)


_NEEDS_ESCAPE = r'["\\\x00-\x1f]'


def _json_strings(column: pa.Array) -> pa.Array:
    """Encode a string column as JSON string literals (``null`` for nulls)."""
    encoded = pc.binary_join_element_wise('"', column, '"', "")
    needs_escape = pc.fill_null(pc.match_substring_regex(column, _NEEDS_ESCAPE), False)
    if pc.any(needs_escape).as_py():
        rows = np.flatnonzero(needs_escape.to_numpy(zero_copy_only=False))
        values = column.take(rows).to_pylist()
        escaped = pa.array([json.dumps(v, ensure_ascii=False) for v in values])
        encoded = pc.replace_with_mask(encoded, needs_escape, escaped)
    return pc.fill_null(encoded, "null")


def _json_values(column: pa.Array) -> pa.Array:
    """Encode a column as JSON literals: strings quoted, numbers exact, non-finite as null."""
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return _json_strings(column)
    if pa.types.is_floating(column.type):
        column = pc.if_else(pc.is_finite(column), column, pa.scalar(None, column.type))
    return pc.fill_null(pc.cast(column, pa.string()), "null")


def _json_lines(batch: pa.RecordBatch) -> pa.Array:
    """Render each row of ``batch`` as one JSON object followed by a newline."""
    parts: list[pa.Array | str] = []
    for i, name in enumerate(batch.schema.names):
        parts.append(("{" if i == 0 else ",") + json.dumps(name) + ":")
        parts.append(_json_values(batch.column(i)))
    parts.append("}\n")
    return pc.binary_join_element_wise(*parts, "")


def _write_jsonl(table: pa.Table, path: Path) -> None:
    table = _with_iso_timestamps(table)
    with path.open("wb") as out:
        for batch in table.to_batches(max_chunksize=_JSONL_BATCH_ROWS):
            lines = _json_lines(batch)
            offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)
            first, last = offsets[lines.offset], offsets[lines.offset + len(lines)]
            out.write(memoryview(lines.buffers()[2])[first:last])


def _write_parquet(table: pa.Table, path: Path) -> None:
    pq.write_table(table, path, compression="snappy")


_FILE_WRITERS: dict[Format, Callable[[pa.Table, Path], None]] = {
    Format.CSV: _write_csv,
    Format.JSONL: _write_jsonl,
    Format.PARQUET: _write_parquet,
}


def _write_file(table: pa.Table, path: Path, fmt: Format) -> list[Path]:
    """Write ``path`` atomically (no half files)."""
    write_atomically(path, lambda temporary: _FILE_WRITERS[fmt](table, temporary))
    return [path]


def partition_bounds(table: pa.Table) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    """Sort the table by UTC day (stably); return it, its days and the row bounds of each."""
    micros = pc.cast(table.column(spec.TIMESTAMP), pa.int64()).to_numpy()
    day = np.floor_divide(micros, _MICROS_PER_DAY)
    if np.any(np.diff(day) < 0):
        order = np.argsort(day, kind="stable")
        table, day = table.take(pa.array(order)), day[order]
    starts = np.flatnonzero(np.diff(day, prepend=day[:1] - 1))
    return table, day[starts], np.append(starts, len(day))


def _write_partitions(table: pa.Table, directory: Path) -> list[Path]:
    """Write one ``date=YYYY-MM-DD/part-0.parquet`` per UTC day.

    The partitions are written beside ``directory`` first, then moved in.
    """
    table, days, bounds = partition_bounds(table)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    written = []
    try:
        for i, day in enumerate(days):
            name = f"date={np.datetime64(int(day), 'D')}"
            (staging / name).mkdir()
            part = table.slice(bounds[i], bounds[i + 1] - bounds[i])
            _write_parquet(part, staging / name / PARTITION_FILE)
            written.append(directory / name / PARTITION_FILE)
        directory.mkdir(exist_ok=True)
        for entry in sorted(staging.iterdir()):
            entry.rename(directory / entry.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return written


def check_target(path: str | os.PathLike[str], *, overwrite: bool = False) -> Format:
    """Check that ``path`` can be written (before any work is done); return its format.

    Existing output is an error unless ``overwrite``.
    """
    target = Path(path)
    fmt = output_format(target)
    if fmt is not Format.PARTITIONED:
        if target.is_dir():
            raise InputError(f"{target} is a directory, not a {fmt.value} file")
        if target.exists() and not overwrite:
            raise InputError(f"{target} already exists (overwrite it with --overwrite)")
    elif target.exists() and not target.is_dir():
        raise InputError(f"{target} is a file; a path without .csv/.parquet/.jsonl is a directory")
    elif target.is_dir() and any(target.iterdir()) and not overwrite:
        raise InputError(f"directory {target} is not empty (overwrite it with --overwrite)")
    return fmt


def write_transactions(
    table: pa.Table, path: str | os.PathLike[str], *, overwrite: bool = False
) -> list[Path]:
    """Write ``table`` (contract columns) to ``path``; return the files written.

    The format follows the extension (``.csv``, ``.parquet``, ``.jsonl``); any other path is
    a directory of Hive date partitions. Existing output is an error unless ``overwrite``,
    which replaces the file, or the directory's ``date=*`` partitions.
    """
    target = Path(path)
    fmt = check_target(target, overwrite=overwrite)
    table = conform(table)
    if fmt is not Format.PARTITIONED:
        return _write_file(table, target, fmt)
    if target.is_dir():
        for partition in target.glob("date=*"):
            if partition.is_dir():
                shutil.rmtree(partition)
    return _write_partitions(table, target)
