"""The model in the scorer's own process: the latest SavedModel of a model directory.

Uses the model server's own ModelManager, so versions are found, loaded,
warmed up and swapped exactly as ``fraud model-server`` does it: a background
thread polls the directory and switches atomically once a new version loaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from features.model_dir import (
    METADATA_OUTPUT,
    METADATA_REQUEST,
    METADATA_SIGNATURE,
    ModelMetadata,
    require_model_dir,
)
from scoring.clients.base import (
    SCORE_OUTPUT,
    SIGNATURE_NAME,
    ModelRequestError,
    ModelStatus,
    ModelUnavailable,
    Prediction,
    ServedMetadata,
)
from scoring.model_server.errors import ServingError
from scoring.model_server.manager import ModelManager, VersionState
from scoring.model_server.servable import Servable


class InProcessModelClient:
    """``ModelClient`` over a SavedModel directory loaded in this process."""

    def __init__(
        self, model_dir: str | Path, model_name: str = "fraud", *, poll_seconds: float = 2.0
    ) -> None:
        self._manager = ModelManager(model_name, require_model_dir(model_dir), poll_seconds)
        self._manager.start()

    def predict(self, inputs: Mapping[str, np.ndarray], version: int | None = None) -> Prediction:
        """Score a batch with ``version`` (default: the one loaded now)."""
        servable, outputs = self._run(version, inputs, SIGNATURE_NAME, SCORE_OUTPUT)
        scores = np.asarray(outputs[SCORE_OUTPUT], dtype=np.float32).reshape(-1)
        return Prediction(scores=scores, model_version=servable.version)

    def metadata(self, version: int | None = None) -> ServedMetadata:
        """Call the ``fraud_metadata`` signature of ``version`` (default: the latest)."""
        request = {METADATA_REQUEST: np.array(["metadata"], dtype=object)}
        servable, outputs = self._run(version, request, METADATA_SIGNATURE, METADATA_OUTPUT)
        text = outputs[METADATA_OUTPUT][0]
        source = f"{self._manager.model_dir} version {servable.version}"
        return ServedMetadata(servable.version, ModelMetadata.parse(text, source))

    def _run(
        self, version: int | None, inputs: Mapping[str, np.ndarray], signature: str, output: str
    ) -> tuple[Servable, dict[str, np.ndarray]]:
        """Run ``signature``; NOT_FOUND and internal errors are transient, the rest a rejection."""
        try:
            servable = self._manager.get(version)
            return servable, servable.predict(inputs, signature, (output,))
        except ServingError as err:
            if err.code in ("INVALID_ARGUMENT", "FAILED_PRECONDITION"):
                raise ModelRequestError(err.message) from None
            raise ModelUnavailable(err.message) from None

    def status(self) -> ModelStatus:
        """Ready once a version is loaded; otherwise the last load error, if any."""
        version = self._manager.serving_version
        if version is not None:
            return ModelStatus(True, version, VersionState.AVAILABLE.value)
        errors = [s.error for s in self._manager.statuses() if s.error]
        reason = errors[0] if errors else f"no version found in {self._manager.model_dir}"
        return ModelStatus(False, None, reason)

    def close(self) -> None:
        """Stop polling and drop the model."""
        self._manager.stop()
