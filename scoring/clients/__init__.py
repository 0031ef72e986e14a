"""Model clients behind one Protocol (``base.ModelClient``), chosen by ``make_client``."""

from __future__ import annotations

from pathlib import Path

from features.errors import InputError
from scoring.clients.base import (
    ModelClient,
    ModelError,
    ModelRequestError,
    ModelStatus,
    ModelUnavailable,
    Prediction,
    UnknownLabel,
)

__all__ = [
    "ModelClient",
    "ModelError",
    "ModelRequestError",
    "ModelStatus",
    "ModelUnavailable",
    "Prediction",
    "UnknownLabel",
    "make_client",
]


def make_client(
    url_or_dir: str | Path,
    model_name: str = "fraud",
    *,
    timeout_seconds: float = 10.0,
    poll_seconds: float = 2.0,
    version_label: str | None = None,
) -> ModelClient:
    """``grpc://host:port`` -> TF Serving gRPC client; a directory -> in-process model.

    ``http://host:port`` -> TF Serving REST client. Anything else is an InputError.
    ``version_label``: what the client asks for when a call names no version.
    """
    text = str(url_or_dir)
    if text.startswith("grpc://"):
        from scoring.clients.grpc_client import GrpcModelClient

        target = text.removeprefix("grpc://").rstrip("/")
        if not target:
            raise InputError(f"model server URL has no host:port: {text!r}")
        return GrpcModelClient(target, model_name, timeout_seconds=timeout_seconds,
                               version_label=version_label)
    if text.startswith(("http://", "https://")):
        from scoring.clients.rest_client import RestModelClient

        return RestModelClient(text, model_name, timeout_seconds=timeout_seconds,
                               version_label=version_label)
    path = Path(text.removeprefix("file://"))
    if path.is_dir():
        from scoring.clients.inprocess import InProcessModelClient

        return InProcessModelClient(path, model_name, poll_seconds=poll_seconds,
                                    version_label=version_label)
    raise InputError(
        f"model location must be grpc://HOST:PORT, http://HOST:PORT or a model directory: {text!r}"
    )
