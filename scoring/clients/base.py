"""The model-client boundary: one Protocol, one module per backend.

The scorer calls ``predict`` with named, batched model inputs (the names and
dtypes of ``features.spec.MODEL_INPUTS``) and gets one score per row plus the
model version that produced them. Failures come in two kinds the caller
treats differently: ``ModelUnavailable`` (retry with backoff, do not commit)
and ``ModelRequestError`` (the request itself is wrong; retrying cannot help).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

#: The output of the serving signature that holds the fraud probability.
SCORE_OUTPUT = "score"
#: The signature every client calls.
SIGNATURE_NAME = "serving_default"


@dataclass(frozen=True)
class Prediction:
    """Scores (float32, one per input row) and the model version that computed them."""

    scores: np.ndarray
    model_version: int


@dataclass(frozen=True)
class ModelStatus:
    """Whether a model version is ready to answer, which one, and why not if it is not."""

    ready: bool
    version: int | None
    message: str = ""


class ModelError(Exception):
    """Base of the model clients' errors."""


class ModelUnavailable(ModelError):  # noqa: N818 - the name says what the caller must handle
    """Transient: server down, timeout, model (version) not loaded yet. Retry with backoff."""


class ModelRequestError(ModelError):
    """Permanent: the request is invalid for the model (missing input, wrong dtype, ...)."""


class ModelClient(Protocol):
    """Scores batches with the served model; implementations pick up new versions."""

    def predict(self, inputs: Mapping[str, np.ndarray]) -> Prediction:
        """Score one batch of named 1-D input arrays of equal length."""
        ...

    def status(self) -> ModelStatus:
        """Readiness of the model; never raises for an unreachable server."""
        ...

    def close(self) -> None:
        """Release connections and threads."""
        ...
