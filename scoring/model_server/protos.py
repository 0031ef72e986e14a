"""TF Serving's Predict over a Servable: TensorProtos in, TensorProtos out.

Request tensors are decoded here, not with ``tf.make_ndarray``: that function
trusts the declared shape (a 30-byte TensorProto declaring 10^9 rows becomes a
4 GB array of zeros, a string one a list of 10^9 references). Every declared
shape is checked against the row cap and against the values actually present
before anything the size of the shape is allocated.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import model_pb2, predict_pb2

from scoring.model_server.errors import ServingError
from scoring.model_server.limits import Limits
from scoring.model_server.servable import Servable, Signature, check_input_aliases

#: Default row cap of one input tensor (Limits.max_batch_rows).
MAX_BATCH_ROWS = Limits.max_batch_rows

#: Fixed-size dtypes this server decodes: numpy dtype (little-endian, as TF writes
#: ``tensor_content``) and the repeated field holding the values otherwise.
_FIXED: dict[int, tuple[np.dtype[Any], str]] = {
    types_pb2.DT_FLOAT: (np.dtype("<f4"), "float_val"),
    types_pb2.DT_DOUBLE: (np.dtype("<f8"), "double_val"),
    types_pb2.DT_INT32: (np.dtype("<i4"), "int_val"),
    types_pb2.DT_INT64: (np.dtype("<i8"), "int64_val"),
    types_pb2.DT_BOOL: (np.dtype("?"), "bool_val"),
}
#: At most this many dimensions are quoted back in an error message.
_SHOWN_DIMS = 8


def requested(spec: model_pb2.ModelSpec) -> tuple[int | None, str | None]:
    """The version and the label a ModelSpec asks for (both None: the latest)."""
    choice = spec.WhichOneof("version_choice")
    if choice == "version_label":
        return None, spec.version_label
    return (spec.version.value if choice == "version" else None), None


def predict(
    servable: Servable,
    request: predict_pb2.PredictRequest,
    max_rows: int = MAX_BATCH_ROWS,
) -> predict_pb2.PredictResponse:
    """Answer ``request`` with ``servable`` exactly as TF Serving's Predict does."""
    sig = servable.signature(request.model_spec.signature_name)
    arrays = request_arrays(sig, request, max_rows)
    outputs = servable.predict(arrays, sig.name, list(request.output_filter))
    response = predict_pb2.PredictResponse()
    response.model_spec.name = servable.model_name
    response.model_spec.version.value = servable.version
    response.model_spec.signature_name = sig.name
    for alias, value in outputs.items():
        response.outputs[alias].CopyFrom(tf.make_tensor_proto(value))
    return response


def request_arrays(
    sig: Signature, request: predict_pb2.PredictRequest, max_rows: int = MAX_BATCH_ROWS
) -> dict[str, np.ndarray]:
    """Decode the request's tensors; a dtype other than the signature's is refused.

    Every tensor is checked (shape, row cap, values present) before any is decoded.
    """
    inputs = check_input_aliases(sig, request.inputs)
    rows: dict[str, int] = {}
    for alias, proto in inputs.items():
        expected = sig.inputs[alias]
        if proto.dtype != expected.as_datatype_enum:
            raise ServingError(
                "INVALID_ARGUMENT",
                f"Expects arg {alias} to be {expected.name} but {dtype_name(proto.dtype)} "
                "is provided",
            )
        rows[alias] = check_tensor(alias, proto, max_rows)
    return {alias: decode_tensor(alias, inputs[alias], rows[alias]) for alias in inputs}


def dtype_name(enum: int) -> str:
    """The TF name of a DataType enum value; "invalid" for values TF does not define."""
    try:
        return str(tf.dtypes.as_dtype(enum).name)
    except (TypeError, ValueError):
        return "invalid"


def check_tensor(alias: str, proto: tensor_pb2.TensorProto, max_rows: int) -> int:
    """Return the rows of a 1-D tensor once its shape and contents agree; else refuse.

    Cheap: reads only the shape and the lengths of the value fields.
    """
    shape = proto.tensor_shape
    if shape.unknown_rank:
        raise ServingError("INVALID_ARGUMENT", f"input {alias}: the tensor shape has no rank")
    dims = [d.size for d in shape.dim]
    shown = dims[:_SHOWN_DIMS] + (["..."] if len(dims) > _SHOWN_DIMS else [])
    if any(size < 0 for size in dims):
        raise ServingError(
            "INVALID_ARGUMENT", f"input {alias}: negative dimension in shape {shown}"
        )
    elements = 1
    for size in dims:  # Python ints: the product cannot overflow; stop once over the cap
        elements *= size
        if elements > max_rows:
            raise ServingError(
                "INVALID_ARGUMENT",
                f"input {alias}: shape {shown} exceeds the limit of {max_rows} rows per batch",
            )
    if len(dims) != 1:
        raise ServingError(
            "INVALID_ARGUMENT", f"input {alias}: expected a 1-D batch, got shape {shown}"
        )
    rows = dims[0]
    if proto.dtype == types_pb2.DT_STRING:
        if proto.tensor_content:
            raise ServingError(
                "INVALID_ARGUMENT", f"input {alias}: string tensors must use string_val"
            )
        _check_count(alias, rows, len(proto.string_val))
        return rows
    fixed = _FIXED.get(proto.dtype)
    if fixed is None:
        raise ServingError(
            "INVALID_ARGUMENT",
            f"input {alias}: dtype {dtype_name(proto.dtype)} is not supported by this server",
        )
    dtype, field = fixed
    if proto.tensor_content:
        needed = rows * dtype.itemsize
        if len(proto.tensor_content) != needed:
            raise ServingError(
                "INVALID_ARGUMENT",
                f"input {alias}: shape [{rows}] of {dtype_name(proto.dtype)} needs {needed} "
                f"bytes of tensor_content, got {len(proto.tensor_content)}",
            )
        return rows
    _check_count(alias, rows, len(getattr(proto, field)))
    return rows


def _check_count(alias: str, rows: int, count: int) -> None:
    # One value per row; a single value stands for every row (TF packs constants so).
    if count == rows or (count == 1 and rows > 0):
        return
    raise ServingError(
        "INVALID_ARGUMENT", f"input {alias}: shape [{rows}] needs {rows} values, got {count}"
    )


def decode_tensor(alias: str, proto: tensor_pb2.TensorProto, rows: int) -> np.ndarray:
    """Decode a tensor ``check_tensor`` accepted into a 1-D array of ``rows`` values."""
    if proto.dtype == types_pb2.DT_STRING:
        values = proto.string_val
        if len(values) == rows:
            return np.array(list(values), dtype=object).reshape(rows)
        return np.full(rows, values[0], dtype=object)
    dtype, field = _FIXED[proto.dtype]
    if proto.tensor_content:
        return np.frombuffer(proto.tensor_content, dtype=dtype, count=rows)
    repeated = getattr(proto, field)
    if len(repeated) == rows:
        return np.fromiter(repeated, dtype=dtype, count=rows)
    return np.full(rows, repeated[0], dtype=dtype)
