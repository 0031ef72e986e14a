"""The model's raw input tensors, built one way for every path.

Batch training, batch scoring and the streaming scorer all turn
(transactions, behavioural features) into the serving signature's inputs here,
so the tensors a transaction is scored with never depend on the path it took.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features import spec

#: Timestamps enter the model as ISO-8601 UTC strings with microseconds.
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # Arrow's %S on µs timestamps prints SS.ffffff

_ARROW_INPUT_TYPES = {"string": pa.string(), "float32": pa.float32()}


def format_timestamps(timestamps: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Event times -> ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` strings (UTC)."""
    as_us = pc.cast(timestamps, pa.timestamp("us", tz="UTC"))
    formatted = pc.strftime(as_us, format=TIMESTAMP_FORMAT)
    if isinstance(formatted, pa.ChunkedArray):
        return formatted.combine_chunks()
    return formatted


def _column(table: pa.Table, name: str) -> pa.Array:
    column = table.column(name)
    return column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)


def model_input_columns(transactions: pa.Table, features: pa.Table) -> dict[str, pa.Array]:
    """Arrow columns of every serving input, typed as ``spec.model_input_dtypes()``.

    ``transactions`` is in the canonical schema, ``features`` holds the
    behavioural features row-aligned with it. Missing optional strings get the
    spec's default, exactly as the validator would fill them.
    """
    if transactions.num_rows != features.num_rows:
        raise ValueError(
            f"{transactions.num_rows} transactions but {features.num_rows} feature rows"
        )
    columns: dict[str, pa.Array] = {}
    for name, dtype in spec.model_input_dtypes().items():
        source = transactions if name in spec.RAW_FIELDS else features
        if name not in source.column_names:
            raise ValueError(f"column {name!r} is missing")
        if name == spec.TIMESTAMP:
            columns[name] = format_timestamps(_column(source, name))
            continue
        column = _column(source, name).cast(_ARROW_INPUT_TYPES[dtype])
        default = spec.RAW_FIELDS[name].default if name in spec.RAW_FIELDS else None
        if default is not None and column.null_count:
            column = pc.fill_null(column, default)
        columns[name] = column
    return columns


def to_model_inputs(transactions: pa.Table, features: pa.Table) -> dict[str, np.ndarray]:
    """Numpy inputs of the ``serving_default`` signature: str objects or float32, 1-D."""
    return {
        name: column.to_numpy(zero_copy_only=False)
        for name, column in model_input_columns(transactions, features).items()
    }
