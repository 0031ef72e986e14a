"""A TF Serving client over gRPC, using only TF Serving's public API.

Works unchanged against the official ``tensorflow_model_server`` and against
``fraud model-server``. The version that scored a batch is read from the
response's ``model_spec``, so new versions are picked up without a restart.
A version label goes as ``ModelSpec.version_label``; the response's
``model_spec.version`` says which version it points at (the official server
ignores labels in GetModelStatus, so ``status(label)`` asks GetModelMetadata).
"""

from __future__ import annotations

from collections.abc import Mapping

import grpc
import numpy as np
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from features.model_dir import (
    METADATA_OUTPUT,
    METADATA_REQUEST,
    METADATA_SIGNATURE,
    ModelMetadata,
)
from scoring.clients.base import (
    SCORE_OUTPUT,
    SIGNATURE_NAME,
    ModelError,
    ModelRequestError,
    ModelStatus,
    ModelUnavailable,
    Prediction,
    ServedMetadata,
    UnknownLabel,
    says_unknown_label,
)
from scoring.clients.tensors import fill_tensor_proto, float_array

#: Codes that say the request itself is wrong for the model: its rows cannot be
#: scored however often they are sent. Every other code (the server is down,
#: slow, busy, loading the version, or failing internally) is retried: a
#: transient fault must hold the scorer, never send its events to the DLQ.
REJECTED_CODES = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE})
#: Codes a version without the ``fraud_metadata`` signature answers with.
_NO_SIGNATURE_CODES = frozenset(
    {grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.INVALID_ARGUMENT}
)
#: Largest request or response; the model server's default cap (a batch of the
#: scorer's default 2,000 rows is about 1 MiB).
MAX_MESSAGE_BYTES = 32 * 1024 * 1024
_AVAILABLE = get_model_status_pb2.ModelVersionStatus.State.AVAILABLE


class GrpcModelClient:
    """``ModelClient`` for a TF Serving ``PredictionService`` at ``target`` (host:port)."""

    def __init__(
        self,
        target: str,
        model_name: str = "fraud",
        *,
        version: int | None = None,
        version_label: str | None = None,
        timeout_seconds: float = 10.0,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        if version is not None and version_label is not None:
            raise ValueError("pin a version or a label, not both")
        self.target = target
        self.model_name = model_name
        self.version = version
        self.version_label = version_label
        self.timeout_seconds = timeout_seconds
        self._channel = grpc.insecure_channel(
            target,
            options=[
                ("grpc.max_send_message_length", max_message_bytes),
                ("grpc.max_receive_message_length", max_message_bytes),
                # Reconnect quickly after the server comes back (defaults back off to 120 s).
                ("grpc.initial_reconnect_backoff_ms", 200),
                ("grpc.min_reconnect_backoff_ms", 200),
                ("grpc.max_reconnect_backoff_ms", 2000),
            ],
        )
        self._predict = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)

    def predict(
        self, inputs: Mapping[str, np.ndarray], version: int | None = None,
        label: str | None = None,
    ) -> Prediction:
        """Score a batch; ModelUnavailable on transient failures, ModelRequestError otherwise."""
        request = predict_pb2.PredictRequest()
        self._fill_spec(request.model_spec, version, label)
        request.model_spec.signature_name = SIGNATURE_NAME
        request.output_filter.append(SCORE_OUTPUT)
        for name, values in inputs.items():
            fill_tensor_proto(request.inputs[name], name, values)
        response = self._call(request)
        if SCORE_OUTPUT not in response.outputs:
            raise ModelRequestError(f"response of {self.target} has no {SCORE_OUTPUT!r} output")
        return Prediction(
            scores=float_array(response.outputs[SCORE_OUTPUT], SCORE_OUTPUT),
            model_version=int(response.model_spec.version.value),
        )

    def metadata(self, version: int | None = None, label: str | None = None) -> ServedMetadata:
        """Call the ``fraud_metadata`` signature of ``version`` or ``label`` (default: latest)."""
        request = predict_pb2.PredictRequest()
        self._fill_spec(request.model_spec, version, label)
        request.model_spec.signature_name = METADATA_SIGNATURE
        fill_tensor_proto(
            request.inputs[METADATA_REQUEST], METADATA_REQUEST, np.array(["metadata"], object)
        )
        try:
            response = self._predict.Predict(request, timeout=self.timeout_seconds)
        except grpc.RpcError as err:
            if says_unknown_label(str(err.details() or "")):  # type: ignore[attr-defined]
                raise _model_error(err, self.target) from None
            if err.code() in _NO_SIGNATURE_CODES:  # type: ignore[attr-defined]
                asked = _asked(request.model_spec)
                raise ModelRequestError(
                    f"{self.target}: model {self.model_name} {asked} "
                    f"has no {METADATA_SIGNATURE!r} signature ({err.details()}); "  # type: ignore[attr-defined]
                    "it was not exported by this version of fraud train"
                ) from None
            raise _model_error(err, self.target) from None
        served = int(response.model_spec.version.value)
        values = response.outputs[METADATA_OUTPUT].string_val
        if not values:
            raise ModelRequestError(f"{self.target}: version {served} returned no metadata")
        source = f"{self.target} model {self.model_name} version {served}"
        return ServedMetadata(served, ModelMetadata.parse(values[0], source))

    def _call(self, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
        try:
            return self._predict.Predict(request, timeout=self.timeout_seconds)
        except grpc.RpcError as err:
            raise _model_error(err, self.target) from None

    def status(self, label: str | None = None) -> ModelStatus:
        """Report the highest AVAILABLE version (GetModelStatus), or the one ``label`` names.

        A label is resolved with GetModelMetadata, which both servers answer for
        the version the label points at (and only once it is AVAILABLE).
        """
        label = label if label is not None else self.version_label
        if label is not None:
            return self._label_status(label)
        request = get_model_status_pb2.GetModelStatusRequest()
        self._fill_spec(request.model_spec)
        try:
            response = self._models.GetModelStatus(request, timeout=self.timeout_seconds)
        except grpc.RpcError as err:
            return ModelStatus(False, None, f"{err.code().name}: {err.details()}")
        available = [s.version for s in response.model_version_status if s.state == _AVAILABLE]
        if not available:
            states = ", ".join(
                f"{s.version}: {get_model_status_pb2.ModelVersionStatus.State.Name(s.state)}"
                for s in response.model_version_status
            )
            return ModelStatus(False, None, f"no version available ({states})")
        return ModelStatus(True, max(available), "AVAILABLE")

    def _label_status(self, label: str) -> ModelStatus:
        request = get_model_metadata_pb2.GetModelMetadataRequest()
        request.model_spec.name = self.model_name
        request.model_spec.version_label = label
        request.metadata_field.append("signature_def")
        try:
            response = self._predict.GetModelMetadata(request, timeout=self.timeout_seconds)
        except grpc.RpcError as err:
            details = str(err.details() or "")  # type: ignore[attr-defined]
            return ModelStatus(False, None, f"{err.code().name}: {details}",  # type: ignore[attr-defined]
                               unknown_label=says_unknown_label(details))
        return ModelStatus(True, int(response.model_spec.version.value), "AVAILABLE")

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def _fill_spec(
        self, spec: model_pb2.ModelSpec, version: int | None = None, label: str | None = None
    ) -> None:
        """Name, then the version asked: ``version``, ``label``, else the client's own pin."""
        spec.name = self.model_name
        if version is not None:
            spec.version.value = version
        elif label is not None:
            spec.version_label = label
        elif self.version is not None:
            spec.version.value = self.version
        elif self.version_label is not None:
            spec.version_label = self.version_label


def _asked(spec: model_pb2.ModelSpec) -> str:
    choice = spec.WhichOneof("version_choice")
    if choice == "version":
        return f"version {spec.version.value}"
    if choice == "version_label":
        return f"label {spec.version_label!r}"
    return "version latest"


def _model_error(err: grpc.RpcError, target: str) -> ModelError:
    code = err.code()  # type: ignore[attr-defined]
    details = str(err.details() or "")  # type: ignore[attr-defined]
    message = f"{target}: {code.name}: {details}"
    if says_unknown_label(details):
        return UnknownLabel(message)
    if code in REJECTED_CODES or _too_large(code, details):
        return ModelRequestError(message)
    return ModelUnavailable(message)


def _too_large(code: grpc.StatusCode, details: str) -> bool:
    """RESOURCE_EXHAUSTED for a message over the size cap: this request never fits.

    (The same code for a busy server is transient; the scorer splits a request
    rejected as too large, so its halves fit.)
    """
    return code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in details
