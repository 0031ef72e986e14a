"""TF Serving's gRPC ``PredictionService`` and ``ModelService`` over a ModelManager."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from typing import TypeVar

import grpc
from google.protobuf import any_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    status_pb2,
)

from scoring.model_server import protos
from scoring.model_server.errors import ServingError, servable_not_found, shorten
from scoring.model_server.manager import ModelManager, VersionStatus

T = TypeVar("T")

log = logging.getLogger(__name__)

#: What a client is told when the server itself failed; the details go to the log.
INTERNAL_MESSAGE = "Internal error; see the model server's log"

#: tensorflow.error.Code UNKNOWN: the code TF Serving reports for a failed load.
_UNKNOWN = (
    status_pb2.StatusProto.DESCRIPTOR.fields_by_name["error_code"]
    .enum_type.values_by_name["UNKNOWN"]
    .number
)


def _serve(context: grpc.ServicerContext, call: Callable[[], T]) -> T:
    """Run ``call``; a ServingError aborts the RPC with its status code and message.

    Any other exception is the server's own failure: INTERNAL with a generic message,
    logged here with its stack (code locations only, not its text, which may quote
    the request).
    """
    try:
        return call()
    except ServingError as err:
        code, message = grpc.StatusCode[err.code], err.message
    except Exception as err:  # nothing of it may reach the client
        log_internal_error("gRPC request", err)
        code, message = grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE
    context.abort(code, message)
    raise AssertionError("unreachable: abort raises")


def log_internal_error(what: str, err: BaseException) -> None:
    """Log an unexpected failure: its type and stack, not its message (it may quote data)."""
    stack = "".join(traceback.format_tb(err.__traceback__))
    log.error("%s failed with %s; stack:\n%s", what, type(err).__name__, stack.rstrip())


def _check_name(manager: ModelManager, name: str, version: int | None) -> None:
    if name != manager.model_name:
        raise servable_not_found(name, version)


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict and GetModelMetadata; Classify/Regress/MultiInference stay UNIMPLEMENTED."""

    def __init__(self, manager: ModelManager, max_rows: int = protos.MAX_BATCH_ROWS) -> None:
        self._manager = manager
        self._max_rows = max_rows

    def Predict(  # noqa: N802 - the gRPC method name
        self, request: predict_pb2.PredictRequest, context: grpc.ServicerContext
    ) -> predict_pb2.PredictResponse:
        """Score a batch with the requested version or label (default: the latest)."""

        def call() -> predict_pb2.PredictResponse:
            version, label = protos.requested(request.model_spec)
            _check_name(self._manager, request.model_spec.name, version)
            return protos.predict(self._manager.get(version, label), request, self._max_rows)

        return _serve(context, call)

    def GetModelMetadata(  # noqa: N802 - the gRPC method name
        self,
        request: get_model_metadata_pb2.GetModelMetadataRequest,
        context: grpc.ServicerContext,
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        """Return the SignatureDefs of the requested version (field ``signature_def``)."""

        def call() -> get_model_metadata_pb2.GetModelMetadataResponse:
            version, label = protos.requested(request.model_spec)
            _check_name(self._manager, request.model_spec.name, version)
            servable = self._manager.get(version, label)
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name = servable.model_name
            response.model_spec.version.value = servable.version
            for field in request.metadata_field:
                if field != "signature_def":
                    raise ServingError(
                        "INVALID_ARGUMENT", f"Metadata field {shorten(field)} is not supported"
                    )
                defs = get_model_metadata_pb2.SignatureDefMap()
                for key, sig in servable.signature_defs().items():
                    defs.signature_def[key].CopyFrom(sig)
                packed = any_pb2.Any()
                packed.Pack(defs)
                response.metadata[field].CopyFrom(packed)
            return response

        return _serve(context, call)


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    """GetModelStatus: the state of each version seen in the model directory."""

    def __init__(self, manager: ModelManager) -> None:
        self._manager = manager

    def GetModelStatus(  # noqa: N802 - the gRPC method name
        self,
        request: get_model_status_pb2.GetModelStatusRequest,
        context: grpc.ServicerContext,
    ) -> get_model_status_pb2.GetModelStatusResponse:
        """Status of every version, or of the requested one; NOT_FOUND as TF Serving.

        A label asks for the status of the version it points at (the official
        server ignores the label here and answers for every version).
        """

        def call() -> get_model_status_pb2.GetModelStatusResponse:
            version, label = protos.requested(request.model_spec)
            statuses = model_statuses(self._manager, request.model_spec.name, version, label)
            response = get_model_status_pb2.GetModelStatusResponse()
            for status in statuses:
                item = response.model_version_status.add()
                item.version = status.version
                item.state = get_model_status_pb2.ModelVersionStatus.State.Value(status.state.value)
                if status.error:
                    item.status.error_code = _UNKNOWN
                    item.status.error_message = status.error
            return response

        return _serve(context, call)


def model_statuses(
    manager: ModelManager, name: str, version: int | None, label: str | None = None
) -> list[VersionStatus]:
    """List the statuses GetModelStatus reports; NOT_FOUND with TF Serving's messages.

    ``label``: the status of the version it points at (INVALID_ARGUMENT if unknown).
    """
    statuses = manager.statuses() if name == manager.model_name else []
    if label is not None and name == manager.model_name:
        version = manager.label_target(label)
        if version is None:
            raise ServingError(
                "INVALID_ARGUMENT", f"Unrecognized servable version label: {shorten(label)}"
            )
    if version is not None:
        statuses = [s for s in statuses if s.version == version]
        if not statuses:
            raise ServingError(
                "NOT_FOUND", f"Could not find version {version} of model {shorten(name)}"
            )
    if not statuses:
        raise ServingError("NOT_FOUND", f"Could not find any versions of model {shorten(name)}")
    return statuses
