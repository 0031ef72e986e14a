"""TF Serving's Predict over a Servable: TensorProtos in, TensorProtos out."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2

from scoring.model_server.errors import ServingError
from scoring.model_server.servable import Servable, Signature, check_input_aliases


def requested_version(spec: model_pb2.ModelSpec) -> int | None:
    """Return the version a ModelSpec asks for (None: latest); no labels are configured."""
    if spec.WhichOneof("version_choice") == "version_label":
        raise ServingError(
            "INVALID_ARGUMENT", f"Unrecognized servable version label: {spec.version_label}"
        )
    return spec.version.value if spec.HasField("version") else None


def predict(servable: Servable, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
    """Answer ``request`` with ``servable`` exactly as TF Serving's Predict does."""
    sig = servable.signature(request.model_spec.signature_name)
    arrays = request_arrays(sig, request)
    outputs = servable.predict(arrays, sig.name, list(request.output_filter))
    response = predict_pb2.PredictResponse()
    response.model_spec.name = servable.model_name
    response.model_spec.version.value = servable.version
    response.model_spec.signature_name = sig.name
    for alias, value in outputs.items():
        response.outputs[alias].CopyFrom(tf.make_tensor_proto(value))
    return response


def request_arrays(sig: Signature, request: predict_pb2.PredictRequest) -> dict[str, np.ndarray]:
    """Decode the request's tensors; a dtype other than the signature's is refused."""
    inputs = check_input_aliases(sig, request.inputs)
    arrays: dict[str, np.ndarray] = {}
    for alias, proto in inputs.items():
        expected = sig.inputs[alias]
        if proto.dtype != expected.as_datatype_enum:
            got = tf.dtypes.as_dtype(proto.dtype).name if proto.dtype else "invalid"
            raise ServingError(
                "INVALID_ARGUMENT",
                f"Expects arg {alias} to be {expected.name} but {got} is provided",
            )
        try:
            arrays[alias] = tf.make_ndarray(proto)
        except (TypeError, ValueError) as err:
            message = f"tensor parsing error: {alias}: {err}"
            raise ServingError("INVALID_ARGUMENT", message) from None
    return arrays
