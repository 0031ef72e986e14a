"""The model in the scorer's own process: the latest SavedModel of a model directory.

Uses the model server's own ModelManager, so versions are found, loaded,
warmed up and swapped exactly as ``fraud model-server`` does it: a background
thread polls the directory and switches atomically once a new version loaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from scoring.clients.base import (
    SCORE_OUTPUT,
    SIGNATURE_NAME,
    ModelRequestError,
    ModelStatus,
    ModelUnavailable,
    Prediction,
)
from scoring.model_server.errors import ServingError
from scoring.model_server.manager import ModelManager, VersionState
from scoring.model_store import require_model_dir


class InProcessModelClient:
    """``ModelClient`` over a SavedModel directory loaded in this process."""

    def __init__(
        self, model_dir: str | Path, model_name: str = "fraud", *, poll_seconds: float = 2.0
    ) -> None:
        self._manager = ModelManager(model_name, require_model_dir(model_dir), poll_seconds)
        self._manager.start()

    def predict(self, inputs: Mapping[str, np.ndarray]) -> Prediction:
        """Score a batch with the version loaded now; ModelUnavailable before any loaded."""
        try:
            servable = self._manager.get()
            outputs = servable.predict(inputs, SIGNATURE_NAME, (SCORE_OUTPUT,))
        except ServingError as err:
            if err.code == "NOT_FOUND":
                raise ModelUnavailable(err.message) from None
            raise ModelRequestError(err.message) from None
        scores = np.asarray(outputs[SCORE_OUTPUT], dtype=np.float32).reshape(-1)
        return Prediction(scores=scores, model_version=servable.version)

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
