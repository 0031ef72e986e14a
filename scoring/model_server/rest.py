"""TF Serving's REST API v1 (status, metadata, predict) over a ModelManager.

Routes, as TF Serving serves them:
``GET /v1/models/<name>[/versions/<v>]``, ``GET /v1/models/<name>[/versions/<v>]/metadata``,
``POST /v1/models/<name>[/versions/<v>]:predict`` with the row (``instances``) or the
columnar (``inputs``) request format. Errors are ``{"error": "<message>"}``.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
from google.protobuf import json_format

from scoring.model_server.errors import HTTP_STATUS, ServingError, servable_not_found
from scoring.model_server.grpc_service import model_statuses
from scoring.model_server.manager import ModelManager
from scoring.model_server.servable import Servable, Signature

_ROUTE = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+))?"
    r"(?:(?P<metadata>/metadata)|(?P<verb>:[a-z]+))?/?$"
)


class RestServer(ThreadingHTTPServer):
    """An HTTP server whose handlers answer for one ModelManager."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], manager: ModelManager) -> None:
        super().__init__(address, _Handler)
        self.manager = manager


class _Handler(BaseHTTPRequestHandler):
    server: RestServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Silence per-request access logs (TF Serving does not print them either)."""

    def do_GET(self) -> None:
        """Model status or metadata."""
        self._answer("GET")

    def do_POST(self) -> None:
        """Predict."""
        self._answer("POST")

    def _answer(self, method: str) -> None:
        try:
            body = self._route(method)
            self._send(HTTPStatus.OK, body)
        except ServingError as err:
            self._send(HTTP_STATUS[err.code], {"error": err.message})

    def _route(self, method: str) -> dict[str, Any]:
        match = _ROUTE.match(self.path.split("?", 1)[0])
        if match is None:
            raise ServingError("NOT_FOUND", f"Malformed request: {method} {self.path}")
        name, verb = match["name"], match["verb"]
        version = int(match["version"]) if match["version"] else None
        manager = self.server.manager
        if method == "GET" and verb is None and not match["metadata"]:
            return {"model_version_status": _status_json(manager, name, version)}
        if name != manager.model_name:
            raise servable_not_found(name, version)
        if method == "GET" and match["metadata"]:
            return _metadata_json(manager.get(version))
        if method == "POST" and verb == ":predict":
            return _predict_json(manager.get(version), self._read_json())
        if method == "POST" and verb in (":classify", ":regress"):
            raise ServingError("UNIMPLEMENTED", f"{verb[1:]} is not supported by this server")
        raise ServingError("NOT_FOUND", f"Malformed request: {method} {self.path}")

    def _read_json(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            return json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ServingError("INVALID_ARGUMENT", f"JSON Parse error: {err}") from None

    def _send(self, status: int, body: Mapping[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _status_json(manager: ModelManager, name: str, version: int | None) -> list[dict[str, Any]]:
    return [
        {
            "version": str(s.version),
            "state": s.state.value,
            "status": {"error_code": "UNKNOWN" if s.error else "OK", "error_message": s.error},
        }
        for s in model_statuses(manager, name, version)
    ]


def _metadata_json(servable: Servable) -> dict[str, Any]:
    defs = {
        key: json_format.MessageToDict(sig, preserving_proto_field_name=True)
        for key, sig in servable.signature_defs().items()
    }
    return {
        "model_spec": {
            "name": servable.model_name,
            "signature_name": "",
            "version": str(servable.version),
        },
        "metadata": {"signature_def": {"signature_def": defs}},
    }


def _predict_json(servable: Servable, body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ServingError("INVALID_ARGUMENT", "Request body must be a JSON object")
    sig = servable.signature(str(body.get("signature_name", "")))
    if ("instances" in body) == ("inputs" in body):
        raise ServingError(
            "INVALID_ARGUMENT", "Missing 'inputs' or 'instances' key (exactly one is required)"
        )
    if "instances" in body:
        columns = _rows_to_columns(sig, body["instances"])
    else:
        columns = _columnar(sig, body["inputs"])
    arrays = {alias: _array(alias, values, sig) for alias, values in columns.items()}
    outputs = servable.predict(arrays, sig.name)
    if "instances" in body:
        return {"predictions": _rows(outputs)}
    if len(outputs) == 1:
        return {"outputs": _json_values(next(iter(outputs.values())))}
    return {"outputs": {alias: _json_values(value) for alias, value in outputs.items()}}


def _rows_to_columns(sig: Signature, instances: Any) -> dict[str, list[Any]]:
    if not isinstance(instances, list) or not instances:
        raise ServingError("INVALID_ARGUMENT", "'instances' must be a non-empty JSON list")
    if not all(isinstance(row, dict) for row in instances):
        if len(sig.inputs) != 1:
            raise ServingError(
                "INVALID_ARGUMENT",
                "instances must be JSON objects naming each input of the signature",
            )
        return {next(iter(sig.inputs)): instances}
    columns: dict[str, list[Any]] = {alias: [] for alias in sig.inputs}
    for index, row in enumerate(instances):
        for alias in row:
            if alias not in columns:
                columns[alias] = []
        missing = [alias for alias in sig.inputs if alias not in row]
        if missing:
            raise ServingError(
                "INVALID_ARGUMENT", f"instance {index}: missing input(s) {', '.join(missing)}"
            )
        for alias, value in row.items():
            columns[alias].append(value)
    return columns


def _columnar(sig: Signature, inputs: Any) -> dict[str, Any]:
    if isinstance(inputs, dict):
        return inputs
    if len(sig.inputs) == 1:
        return {next(iter(sig.inputs)): inputs}
    raise ServingError("INVALID_ARGUMENT", "'inputs' must be a JSON object keyed by input name")


def _array(alias: str, values: Any, sig: Signature) -> np.ndarray:
    if not isinstance(values, list):
        raise ServingError("INVALID_ARGUMENT", f"input {alias}: expected a list of values")
    dtype = sig.inputs.get(alias)
    if dtype is not None and dtype.name == "string":
        bad = next((i for i, v in enumerate(values) if not isinstance(v, str)), None)
        if bad is not None:
            raise ServingError(
                "INVALID_ARGUMENT",
                f"input {alias}: expected strings, got {json.dumps(values[bad])} at row {bad}",
            )
        return np.array(values, dtype=object)
    try:
        return np.asarray(values, dtype=np.float32 if dtype is not None else None)
    except (TypeError, ValueError):
        raise ServingError("INVALID_ARGUMENT", f"input {alias}: expected numbers") from None


def _rows(outputs: Mapping[str, np.ndarray]) -> Sequence[Any]:
    if len(outputs) == 1:
        return _json_values(next(iter(outputs.values())))
    columns = {alias: _json_values(value) for alias, value in outputs.items()}
    size = len(next(iter(columns.values())))
    return [{alias: column[i] for alias, column in columns.items()} for i in range(size)]


def _json_values(array: np.ndarray) -> Any:
    """An output as JSON values; strings as text, ``{"b64": ...}`` when not UTF-8 (TF Serving's)."""
    if array.dtype.kind not in "OS":
        return array.tolist()
    return [_json_text(v) for v in array.reshape(-1).tolist()]


def _json_text(value: Any) -> Any:
    if not isinstance(value, bytes):
        return value
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return {"b64": base64.b64encode(value).decode("ascii")}
