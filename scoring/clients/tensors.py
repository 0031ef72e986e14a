"""numpy <-> TensorProto for model clients, fast for batches of thousands of rows.

Numbers go as float32 ``tensor_content`` bytes (one copy, no per-element
protobuf fields); text goes as ``string_val`` (UTF-8). The model inputs of the
contract are only strings and float32 (``features.spec.model_input_dtypes``).
"""

from __future__ import annotations

import numpy as np
from tensorflow.core.framework import tensor_pb2, types_pb2

from scoring.clients.base import ModelRequestError

_FROM_CONTENT: dict[int, np.dtype] = {
    types_pb2.DT_FLOAT: np.dtype("<f4"),
    types_pb2.DT_DOUBLE: np.dtype("<f8"),
}


def fill_tensor_proto(tensor: tensor_pb2.TensorProto, name: str, values: np.ndarray) -> None:
    """Write the 1-D batch ``values`` into ``tensor`` (strings, or numbers as float32)."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise ModelRequestError(f"input {name}: expected a 1-D batch, got shape {array.shape}")
    tensor.tensor_shape.dim.add().size = array.shape[0]
    kind = array.dtype.kind
    if kind in "fiub":
        tensor.dtype = types_pb2.DT_FLOAT
        tensor.tensor_content = np.ascontiguousarray(array, dtype="<f4").tobytes()
    elif kind in "OUS":
        tensor.dtype = types_pb2.DT_STRING
        try:
            tensor.string_val.extend(
                [v if isinstance(v, bytes) else v.encode("utf-8") for v in array.tolist()]
            )
        except AttributeError:
            bad = next(v for v in array.tolist() if not isinstance(v, str | bytes))
            raise ModelRequestError(f"input {name}: expected strings, got {bad!r}") from None
    else:
        raise ModelRequestError(f"input {name}: unsupported dtype {array.dtype}")


def float_array(tensor: tensor_pb2.TensorProto, name: str) -> np.ndarray:
    """Decode a float TensorProto (``tensor_content`` or ``float_val``) to float32."""
    dtype = _FROM_CONTENT.get(tensor.dtype)
    if dtype is None:
        raise ModelRequestError(f"output {name}: expected a float tensor, got dtype {tensor.dtype}")
    if tensor.tensor_content:
        array = np.frombuffer(tensor.tensor_content, dtype=dtype)
    elif tensor.dtype == types_pb2.DT_FLOAT:
        array = np.array(tensor.float_val, dtype=np.float32)
    else:
        array = np.array(tensor.double_val, dtype=np.float64)
    size = int(np.prod([d.size for d in tensor.tensor_shape.dim])) if tensor.tensor_shape.dim else 1
    if array.size == 1 and size > 1:  # TF packs a constant tensor as a single value
        array = np.repeat(array, size)
    return array.astype(np.float32, copy=False).reshape(-1)
