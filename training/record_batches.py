"""Arrow record batches in the layout TFXIO feeds to TFT.

TFT reads Arrow ``RecordBatch``es through a ``TensorAdapterConfig`` about ten
times faster than Python dicts (``docs/benchmarks.md``, Training). TFXIO's dense-tensor
handler wants every column as a list array of one value per row; the columns
themselves come from :func:`features.model_inputs.model_input_columns`, the same
builder the serving paths use.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pyarrow as pa
from tensorflow_transform.tf_metadata import schema_utils
from tfx_bsl.tfxio import tensor_adapter, tensor_representation_util

from features import spec
from features.preprocessing import raw_feature_spec

_ARROW_VALUE_TYPES = {"string": pa.large_binary(), "float32": pa.float32(), "int64": pa.int64()}


def _arrow_schema(*, labelled: bool) -> pa.Schema:
    fields = [
        pa.field(name, pa.large_list(_ARROW_VALUE_TYPES[feature.dtype.name]))
        for name, feature in raw_feature_spec(labelled=labelled).items()
    ]
    return pa.schema(fields)


def tensor_adapter_config(*, labelled: bool) -> tensor_adapter.TensorAdapterConfig:
    """The TFXIO config describing :func:`to_record_batches` output to TFT."""
    schema = schema_utils.schema_from_feature_spec(raw_feature_spec(labelled=labelled))
    representations = tensor_representation_util.InferTensorRepresentationsFromSchema(schema)
    return tensor_adapter.TensorAdapterConfig(_arrow_schema(labelled=labelled), representations)


def _one_per_row(values: pa.Array, value_type: pa.DataType) -> pa.LargeListArray:
    offsets = pa.array(np.arange(len(values) + 1, dtype=np.int64))
    return pa.LargeListArray.from_arrays(offsets, values.cast(value_type))


def to_record_batches(
    columns: Mapping[str, pa.Array], labels: pa.Array | None, batch_size: int
) -> list[pa.RecordBatch]:
    """Model-input columns (+ labels) -> TFXIO record batches of ``batch_size`` rows."""
    schema = _arrow_schema(labelled=labels is not None)
    source = dict(columns)
    if labels is not None:
        source[spec.LABEL_KEY] = labels
    arrays = [_one_per_row(source[f.name], f.type.value_type) for f in schema]
    whole = pa.RecordBatch.from_arrays(arrays, schema=schema)
    return [whole.slice(i, batch_size) for i in range(0, max(whole.num_rows, 1), batch_size)]
