"""The model in the scorer's own process: the SavedModels of a model directory.

Uses the model server's own ModelManager, so versions are found, loaded,
warmed up and swapped exactly as ``fraud model-server`` does it: a background
thread polls the directory and switches atomically once a new version loaded.
When the directory holds a model config (``models.config``, written by
``fraud models`` / ``fraud retrain``), its versions and labels are served as
``fraud model-server --model-config`` would (its base path is ignored: the
directory given is the one served).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from features.model_config import config_path
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
    UnknownLabel,
)
from scoring.model_server.errors import ServingError
from scoring.model_server.manager import ModelManager, VersionState
from scoring.model_server.servable import Servable


class InProcessModelClient:
    """``ModelClient`` over a SavedModel directory loaded in this process."""

    def __init__(
        self,
        model_dir: str | Path,
        model_name: str = "fraud",
        *,
        poll_seconds: float = 2.0,
        version_label: str | None = None,
    ) -> None:
        root = require_model_dir(model_dir)
        config = config_path(root)
        self.version_label = version_label
        self._manager = ModelManager(
            model_name, root, poll_seconds,
            config_file=config if config.is_file() else None,
        )
        self._manager.start()

    def predict(
        self, inputs: Mapping[str, np.ndarray], version: int | None = None,
        label: str | None = None,
    ) -> Prediction:
        """Score a batch with ``version`` or ``label`` (default: the client's label, or latest)."""
        servable, outputs = self._run(version, label, inputs, SIGNATURE_NAME, SCORE_OUTPUT)
        scores = np.asarray(outputs[SCORE_OUTPUT], dtype=np.float32).reshape(-1)
        return Prediction(scores=scores, model_version=servable.version)

    def metadata(self, version: int | None = None, label: str | None = None) -> ServedMetadata:
        """Call the ``fraud_metadata`` signature of ``version`` or ``label`` (default: latest)."""
        request = {METADATA_REQUEST: np.array(["metadata"], dtype=object)}
        servable, outputs = self._run(version, label, request, METADATA_SIGNATURE,
                                      METADATA_OUTPUT)
        text = outputs[METADATA_OUTPUT][0]
        source = f"{self._manager.model_dir} version {servable.version}"
        return ServedMetadata(servable.version, ModelMetadata.parse(text, source))

    def _run(
        self, version: int | None, label: str | None, inputs: Mapping[str, np.ndarray],
        signature: str, output: str,
    ) -> tuple[Servable, dict[str, np.ndarray]]:
        """Run ``signature``; NOT_FOUND and internal errors are transient, the rest a rejection."""
        if version is None and label is None:
            label = self.version_label
        try:
            servable = self._manager.get(version, label)
            return servable, servable.predict(inputs, signature, (output,))
        except ServingError as err:
            if err.message.startswith("Unrecognized servable version label"):
                raise UnknownLabel(err.message) from None
            if err.code in ("INVALID_ARGUMENT", "FAILED_PRECONDITION"):
                raise ModelRequestError(err.message) from None
            raise ModelUnavailable(err.message) from None

    def status(self, label: str | None = None) -> ModelStatus:
        """Ready once a version is loaded (the one ``label`` names); else why not."""
        label = label if label is not None else self.version_label
        if label is not None:
            try:
                labelled = self._manager.get(None, label).version
            except ServingError as err:
                unknown = err.message.startswith("Unrecognized servable version label")
                return ModelStatus(False, None, err.message, unknown_label=unknown)
            return ModelStatus(True, labelled, VersionState.AVAILABLE.value)
        version = self._manager.serving_version
        if version is not None:
            return ModelStatus(True, version, VersionState.AVAILABLE.value)
        errors = [s.error for s in self._manager.statuses() if s.error]
        reason = errors[0] if errors else f"no version found in {self._manager.model_dir}"
        return ModelStatus(False, None, reason)

    def close(self) -> None:
        """Stop polling and drop the model."""
        self._manager.stop()
