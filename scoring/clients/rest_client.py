"""A TF Serving client over the REST API (``/v1/models/<name>``), stdlib only.

TF Serving's REST predict response does not say which version answered, so
the client asks for the latest AVAILABLE version and sends each request to
that version explicitly (``/versions/<v>:predict``); when the server has moved
on (404), it looks the version up again and retries once. A label is looked up
the same way, with ``GET /v1/models/<name>/labels/<label>/metadata`` (whose
``model_spec.version`` both servers fill in), then the request goes to that
version.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

import numpy as np

from features.model_dir import (
    METADATA_OUTPUT,
    METADATA_REQUEST,
    METADATA_SIGNATURE,
    ModelMetadata,
)
from scoring.clients.base import (
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


class RestModelClient:
    """``ModelClient`` for a TF Serving REST endpoint at ``base_url`` (http://host:port)."""

    def __init__(
        self,
        base_url: str,
        model_name: str = "fraud",
        *,
        timeout_seconds: float = 10.0,
        refresh_seconds: float = 2.0,
        version_label: str | None = None,
    ) -> None:
        self.model_url = f"{base_url.rstrip('/')}/v1/models/{model_name}"
        self.timeout_seconds = timeout_seconds
        self.refresh_seconds = refresh_seconds
        self.version_label = version_label
        #: The version "latest" (key None) or each label points at, and when it was read.
        self._resolved: dict[str | None, tuple[int, float]] = {}

    def predict(
        self, inputs: Mapping[str, np.ndarray], version: int | None = None,
        label: str | None = None,
    ) -> Prediction:
        """Score a batch (columnar ``inputs`` format) with ``version`` or ``label``."""
        body = {
            "signature_name": SIGNATURE_NAME,
            "inputs": {name: np.asarray(values).tolist() for name, values in inputs.items()},
        }
        served, answer = self._predict_on(version, label, body)
        scores = np.asarray(answer["outputs"], dtype=np.float32).reshape(-1)
        return Prediction(scores=scores, model_version=served)

    def metadata(self, version: int | None = None, label: str | None = None) -> ServedMetadata:
        """Call the ``fraud_metadata`` signature of ``version`` or ``label`` (default: latest)."""
        body = {"signature_name": METADATA_SIGNATURE, "inputs": {METADATA_REQUEST: ["metadata"]}}
        try:
            served, answer = self._predict_on(version, label, body)
        except UnknownLabel:
            raise
        except ModelRequestError as err:
            raise ModelRequestError(
                f"{err} (no {METADATA_SIGNATURE!r} signature: not exported by this fraud train?)"
            ) from None
        outputs = answer.get("outputs")
        values = outputs.get(METADATA_OUTPUT) if isinstance(outputs, dict) else outputs
        if not isinstance(values, list) or not values:
            raise ModelRequestError(f"{self.model_url}: version {served} returned no metadata")
        source = f"{self.model_url} version {served}"
        return ServedMetadata(served, ModelMetadata.parse(str(values[0]), source))

    def _predict_on(
        self, version: int | None, label: str | None, body: Mapping[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        """POST ``body`` to ``version``'s predict; else the one ``label`` (or latest) names.

        A looked-up version that is gone (404) is looked up again once.
        """
        if version is not None:
            try:
                return version, self._call(f"{self.model_url}/versions/{version}:predict", body)
            except _NotFoundError as err:
                raise ModelUnavailable(str(err)) from None
        label = label if label is not None else self.version_label
        for attempt in range(2):
            resolved = self._resolve(label, force=attempt > 0)
            try:
                return resolved, self._call(f"{self.model_url}/versions/{resolved}:predict", body)
            except _NotFoundError:
                continue
        raise ModelUnavailable(f"{self.model_url}: the served version keeps changing")

    def status(self, label: str | None = None) -> ModelStatus:
        """The highest AVAILABLE version (``GET /v1/models/<name>``), or the one ``label`` names."""
        label = label if label is not None else self.version_label
        try:
            version = self._resolve(label, force=True)
        except UnknownLabel as err:
            return ModelStatus(False, None, str(err), unknown_label=True)
        except ModelError as err:
            return ModelStatus(False, None, str(err))
        return ModelStatus(True, version, "AVAILABLE")

    def close(self) -> None:
        """Nothing to release: each request opens its own connection."""

    def _resolve(self, label: str | None, *, force: bool) -> int:
        """The version ``label`` (None: latest) points at, looked up every ``refresh_seconds``."""
        now = time.monotonic()
        cached = self._resolved.get(label)
        if not force and cached is not None and now - cached[1] <= self.refresh_seconds:
            return cached[0]
        version = self._latest() if label is None else self._label_version(label)
        self._resolved[label] = (version, now)
        return version

    def _latest(self) -> int:
        try:
            answer = self._call(self.model_url, None)
        except _NotFoundError as err:
            raise ModelUnavailable(str(err)) from None
        available = [
            int(s["version"])
            for s in answer.get("model_version_status", [])
            if s.get("state") == "AVAILABLE"
        ]
        if not available:
            raise ModelUnavailable(f"{self.model_url}: no version available")
        return max(available)

    def _label_version(self, label: str) -> int:
        url = f"{self.model_url}/labels/{urllib.parse.quote(label, safe='')}/metadata"
        try:
            answer = self._call(url, None)
        except _NotFoundError as err:
            raise ModelUnavailable(str(err)) from None
        try:
            return int(answer["model_spec"]["version"])
        except (KeyError, TypeError, ValueError):
            raise ModelUnavailable(f"{url}: the answer names no version") from None

    def _call(self, url: str, body: Mapping[str, Any] | None) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            url, data=data, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:
                return dict(json.load(response))
        except urllib.error.HTTPError as err:
            text = _error_text(err)
            message = f"{url}: HTTP {err.code}: {text}"
            if says_unknown_label(text):
                raise UnknownLabel(message) from None
            if err.code == 404:
                raise _NotFoundError(message) from None
            if err.code == 400:  # the request is wrong for the model: retrying cannot help
                raise ModelRequestError(message) from None
            raise ModelUnavailable(message) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
            raise ModelUnavailable(f"{url}: {err}") from None


class _NotFoundError(Exception):
    """HTTP 404: the model or version is not (or no longer) loaded."""


def _error_text(err: urllib.error.HTTPError) -> str:
    try:
        return str(json.load(err).get("error", ""))
    except (ValueError, AttributeError):
        return err.reason if isinstance(err.reason, str) else ""
