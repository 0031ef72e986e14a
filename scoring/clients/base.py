"""The model-client boundary: one Protocol, one module per backend.

The scorer calls ``predict`` with named, batched model inputs (the names and
dtypes of ``features.spec.MODEL_INPUTS``) and gets one score per row plus the
model version that produced them; ``metadata`` reads a version's
:class:`~features.model_dir.ModelMetadata` through the ``fraud_metadata``
signature (TF Serving's Predict API, so it works against the official server).
Failures come in two kinds the caller treats differently: ``ModelUnavailable``
(retry with backoff, do not commit: the server is down, loading, or failing
internally) and ``ModelRequestError`` (the server rejected the request's
contents as invalid; retrying cannot help).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from features.model_dir import ModelMetadata

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
class ServedMetadata:
    """A served version and what its ``fraud_metadata`` signature says about it."""

    version: int
    metadata: ModelMetadata


@dataclass(frozen=True)
class ModelStatus:
    """Whether a model version is ready to answer, which one, and why not if it is not."""

    ready: bool
    version: int | None
    message: str = ""


class ModelError(Exception):
    """Base of the model clients' errors."""


class ModelUnavailable(ModelError):  # noqa: N818 - the name says what the caller must handle
    """Transient: server down, timeout, version not loaded, internal fault. Retry with backoff."""


class ModelRequestError(ModelError):
    """Permanent: the request is invalid for the model (missing input, wrong dtype, ...)."""


class ModelClient(Protocol):
    """Scores batches with the served model; implementations pick up new versions."""

    def predict(self, inputs: Mapping[str, np.ndarray], version: int | None = None) -> Prediction:
        """Score one batch of named 1-D input arrays of equal length.

        ``version`` pins the request to that version (default: the latest served).
        """
        ...

    def metadata(self, version: int | None = None) -> ServedMetadata:
        """Read a version's metadata (default: the latest served).

        ``ModelRequestError`` when the version has no ``fraud_metadata``
        signature; :class:`~features.model_dir.MetadataError` when what it
        returns is not valid metadata (no threshold, bad configuration).
        """
        ...

    def status(self) -> ModelStatus:
        """Readiness of the model; never raises for an unreachable server."""
        ...

    def close(self) -> None:
        """Release connections and threads."""
        ...
