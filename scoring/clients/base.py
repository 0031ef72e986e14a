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

Versions can be asked for by number or by TF Serving version label
(``ModelSpec.version_label``, REST ``/labels/<label>``): a label the server
does not know raises :class:`UnknownLabel`, and ``status(label=...)`` reports
the version a label points at (``unknown_label`` set when it points nowhere).
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
    """Scores (float32, one per input row) and the model version that computed them.

    ``row_versions`` is set when rows were scored by different versions (a
    canary split): the version of each row.
    """

    scores: np.ndarray
    model_version: int
    row_versions: np.ndarray | None = None

    def versions(self) -> np.ndarray:
        """The version that scored each row (int64, one per score)."""
        if self.row_versions is not None:
            return np.asarray(self.row_versions, dtype=np.int64)
        return np.full(len(self.scores), self.model_version, dtype=np.int64)


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
    #: The label asked for is not configured on the server (or labels are not allowed).
    unknown_label: bool = False


class ModelError(Exception):
    """Base of the model clients' errors."""


class ModelUnavailable(ModelError):  # noqa: N818 - the name says what the caller must handle
    """Transient: server down, timeout, version not loaded, internal fault. Retry with backoff."""


class ModelRequestError(ModelError):
    """Permanent: the request is invalid for the model (missing input, wrong dtype, ...)."""


class UnknownLabel(ModelRequestError):  # noqa: N818 - what the server said
    """The server has no version label of that name (TF Serving's INVALID_ARGUMENT)."""


#: How TF Serving (and fraud model-server) words a label it does not know, or labels off.
UNKNOWN_LABEL_TEXTS = ("Unrecognized servable version label", "version labels are not")


def says_unknown_label(message: str) -> bool:
    """Whether a server's error message is TF Serving's "no such label"."""
    lowered = message.lower()
    return any(text.lower() in lowered for text in UNKNOWN_LABEL_TEXTS)


class ModelClient(Protocol):
    """Scores batches with the served model; implementations pick up new versions."""

    def predict(
        self, inputs: Mapping[str, np.ndarray], version: int | None = None,
        label: str | None = None,
    ) -> Prediction:
        """Score one batch of named 1-D input arrays of equal length.

        ``version`` pins the request to that version, ``label`` to the version
        that label points at (default: the client's label, else the latest served).
        """
        ...

    def metadata(self, version: int | None = None, label: str | None = None) -> ServedMetadata:
        """Read a version's metadata (by number or label; default as for ``predict``).

        ``ModelRequestError`` when the version has no ``fraud_metadata``
        signature; :class:`~features.model_dir.MetadataError` when what it
        returns is not valid metadata (no threshold, bad configuration);
        :class:`UnknownLabel` when the server has no such label.
        """
        ...

    def status(self, label: str | None = None) -> ModelStatus:
        """Readiness of the model (of the version ``label`` points at); never raises."""
        ...

    def close(self) -> None:
        """Release connections and threads."""
        ...
