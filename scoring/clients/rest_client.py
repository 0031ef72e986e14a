"""A TF Serving client over the REST API (``/v1/models/<name>``), stdlib only.

TF Serving's REST predict response does not say which version answered, so
the client asks for the latest AVAILABLE version and sends each request to
that version explicitly (``/versions/<v>:predict``); when the server has moved
on (404), it looks the version up again and retries once.
"""

from __future__ import annotations

import json
import time
import urllib.error
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
    ModelRequestError,
    ModelStatus,
    ModelUnavailable,
    Prediction,
    ServedMetadata,
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
    ) -> None:
        self.model_url = f"{base_url.rstrip('/')}/v1/models/{model_name}"
        self.timeout_seconds = timeout_seconds
        self.refresh_seconds = refresh_seconds
        self._version: int | None = None
        self._checked_at = 0.0

    def predict(self, inputs: Mapping[str, np.ndarray], version: int | None = None) -> Prediction:
        """Score a batch (columnar ``inputs`` format) with ``version``, default the latest."""
        body = {
            "signature_name": SIGNATURE_NAME,
            "inputs": {name: np.asarray(values).tolist() for name, values in inputs.items()},
        }
        served, answer = self._predict_on(version, body)
        scores = np.asarray(answer["outputs"], dtype=np.float32).reshape(-1)
        return Prediction(scores=scores, model_version=served)

    def metadata(self, version: int | None = None) -> ServedMetadata:
        """Call the ``fraud_metadata`` signature of ``version`` (default: the latest)."""
        body = {"signature_name": METADATA_SIGNATURE, "inputs": {METADATA_REQUEST: ["metadata"]}}
        try:
            served, answer = self._predict_on(version, body)
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
        self, version: int | None, body: Mapping[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        """POST ``body`` to ``version``'s predict; the latest (looked up again once) if None."""
        if version is not None:
            try:
                return version, self._call(f"{self.model_url}/versions/{version}:predict", body)
            except _NotFoundError as err:
                raise ModelUnavailable(str(err)) from None
        for attempt in range(2):
            latest = self._latest(force=attempt > 0)
            try:
                return latest, self._call(f"{self.model_url}/versions/{latest}:predict", body)
            except _NotFoundError:
                continue
        raise ModelUnavailable(f"{self.model_url}: the served version keeps changing")

    def status(self) -> ModelStatus:
        """Report the highest AVAILABLE version, from ``GET /v1/models/<name>``."""
        try:
            version = self._latest(force=True)
        except ModelUnavailable as err:
            return ModelStatus(False, None, str(err))
        return ModelStatus(True, version, "AVAILABLE")

    def close(self) -> None:
        """Nothing to release: each request opens its own connection."""

    def _latest(self, *, force: bool) -> int:
        now = time.monotonic()
        if force or self._version is None or now - self._checked_at > self.refresh_seconds:
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
            self._version, self._checked_at = max(available), now
        assert self._version is not None
        return self._version

    def _call(self, url: str, body: Mapping[str, Any] | None) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            url, data=data, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:
                return dict(json.load(response))
        except urllib.error.HTTPError as err:
            message = f"{url}: HTTP {err.code}: {_error_text(err)}"
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
