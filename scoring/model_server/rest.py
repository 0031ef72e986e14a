"""TF Serving's REST API v1 (status, metadata, predict) over a ModelManager.

Routes, as TF Serving serves them:
``GET /v1/models/<name>[/versions/<v>|/labels/<label>]``, the same followed by
``/metadata``, and ``POST /v1/models/<name>[/versions/<v>|/labels/<label>]:predict``
with the row (``instances``) or the columnar (``inputs``) request format. Errors
are ``{"error": "<message>"}``.

Hostile clients are bounded (``Limits``, docs/model-server.md): at most
``rest_max_connections`` connections get a handler thread (the next ones get 503);
every read waits at most ``rest_read_timeout`` and a whole request must arrive
within ``rest_request_timeout`` of its first byte; bodies need a valid
``Content-Length`` of at most ``rest_max_body_bytes``; at most ``rest_workers``
requests decode JSON and predict at once. A request whose framing cannot be
trusted (bad or missing ``Content-Length``, ``Transfer-Encoding``, too large) is
answered and its connection closed, after reading and discarding what the client
still sends for a moment (so that it sees the answer instead of a reset); every
other request has its body read in full, so keep-alive stays in step.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import queue
import re
import socket
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import numpy as np
from google.protobuf import json_format

from scoring.model_server.errors import HTTP_STATUS, ServingError, servable_not_found, shorten
from scoring.model_server.grpc_service import INTERNAL_MESSAGE, log_internal_error, model_statuses
from scoring.model_server.limits import Limits
from scoring.model_server.manager import ModelManager
from scoring.model_server.servable import Servable, Signature, check_input_aliases

log = logging.getLogger(__name__)

_ROUTE = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
    r"(?:(?P<metadata>/metadata)|(?P<verb>:[a-z]+))?/?$"
)
_CONTENT_LENGTH = re.compile(r"[0-9]{1,19}")
#: How long, and how much, a closing connection is drained so the client reads our answer.
LINGER_SECONDS = 2.0
LINGER_BYTES = 64 * 1024 * 1024
#: Connections refused (503) waiting for the refusing thread; beyond, closed at once.
_REFUSALS_QUEUED = 64


def _canned(status: HTTPStatus, message: str) -> bytes:
    body = json.dumps({"error": message}).encode()
    head = (
        f"HTTP/1.1 {status.value} {status.phrase}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


_BUSY = _canned(HTTPStatus.SERVICE_UNAVAILABLE, "Too many connections; retry later")


class _HttpError(Exception):
    """An HTTP-level refusal (framing, size, overload) with its status."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class RestServer(HTTPServer):
    """An HTTP server whose handlers answer for one ModelManager, within ``limits``.

    One daemon thread per connection, at most ``rest_max_connections`` of them; a
    connection beyond that is answered 503 by one refusing thread and closed.
    """

    request_queue_size = 128

    def __init__(
        self, address: tuple[str, int], manager: ModelManager, limits: Limits | None = None
    ) -> None:
        self.manager = manager
        self.limits = limits or Limits()
        self._slots = threading.BoundedSemaphore(self.limits.rest_max_connections)
        self._workers = threading.BoundedSemaphore(self.limits.rest_workers)
        self._active: set[socket.socket] = set()
        self._active_lock = threading.Lock()
        self._refusals: queue.Queue[socket.socket | None] = queue.Queue(_REFUSALS_QUEUED)
        self._closing = False
        super().__init__(address, _Handler)
        self._refuser = threading.Thread(target=self._refuse_loop, name="rest-refuse", daemon=True)
        self._refuser.start()

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve the connection in its own thread if a slot is free, else refuse it (503)."""
        if not self._slots.acquire(blocking=False):
            self._refuse(request)
            return
        with self._active_lock:
            self._active.add(request)
        thread = threading.Thread(
            target=self._serve_connection, args=(request, client_address), daemon=True
        )
        try:
            thread.start()
        except RuntimeError:  # no more threads: the process is at its limit
            with self._active_lock:
                self._active.discard(request)
            self._slots.release()
            self._refuse(request)

    def _serve_connection(self, request: socket.socket, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception as err:  # a handler bug must not kill the server
            log_internal_error("REST connection", err)
        finally:
            with self._active_lock:
                self._active.discard(request)
            self.shutdown_request(request)
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Log without the traceback text socketserver would print on stderr."""
        log.error("REST connection failed")

    def _refuse(self, sock: socket.socket) -> None:
        try:
            self._refusals.put_nowait(sock)
        except queue.Full:
            self.shutdown_request(sock)

    def _refuse_loop(self) -> None:
        while not self._closing and (sock := self._refusals.get()) is not None:
            try:
                sock.settimeout(1.0)
                sock.sendall(_BUSY)
                linger(sock, 0.5)
            except OSError:
                pass
            finally:
                sock.close()

    @contextmanager
    def worker(self, timeout: float) -> Iterator[None]:
        """Hold one of the ``rest_workers`` slots; 503 when none frees up in ``timeout``."""
        if not self._workers.acquire(timeout=max(0.0, timeout)):
            raise _HttpError(HTTPStatus.SERVICE_UNAVAILABLE, "Server busy; retry later")
        try:
            yield
        finally:
            self._workers.release()

    def server_close(self) -> None:
        """Stop listening, then end idle connections; requests in flight still answer."""
        super().server_close()
        self._closing = True
        with suppress(queue.Full):
            self._refusals.put_nowait(None)
        with self._active_lock:
            active = list(self._active)
        for sock in active:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RD)


def linger(sock: socket.socket, seconds: float = LINGER_SECONDS) -> None:
    """Half-close ``sock`` and discard what the client still sends, for a while.

    Closing a socket with unread data makes the kernel send a reset, and the client
    may then lose the answer it has not read yet.
    """
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        return
    deadline = time.monotonic() + seconds
    drained = 0
    while drained < LINGER_BYTES:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        try:
            sock.settimeout(left)
            data = sock.recv(65536)
        except OSError:
            return
        if not data:
            return
        drained += len(data)


class _DeadlineReader(io.RawIOBase):
    """Socket reads that wait at most ``read_timeout`` each and end at a request deadline.

    The deadline is armed by the first byte received for a request (``restart``
    forgets it between requests), so a client dribbling one byte just before every
    read timeout still has to finish within ``request_timeout``.
    """

    def __init__(self, sock: socket.socket, read_timeout: float, request_timeout: float) -> None:
        super().__init__()
        self._sock = sock
        self._read_timeout = read_timeout
        self._request_timeout = request_timeout
        self.deadline: float | None = None

    def restart(self) -> None:
        """A new request begins: its deadline starts with its first byte."""
        self.deadline = None

    def remaining(self) -> float:
        """Seconds left for the current request (the whole timeout before it started)."""
        if self.deadline is None:
            return self._request_timeout
        return self.deadline - time.monotonic()

    def readable(self) -> bool:
        """Say that this stream can be read."""
        return True

    def readinto(self, buffer: Any) -> int:
        """Receive into ``buffer``; TimeoutError on a stall or past the deadline."""
        timeout = self._read_timeout
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("request deadline passed")
            timeout = min(timeout, left)
        self._sock.settimeout(timeout)
        count = self._sock.recv_into(buffer)
        if count and self.deadline is None:
            self.deadline = time.monotonic() + self._request_timeout
        return count


class _Handler(BaseHTTPRequestHandler):
    server: RestServer
    protocol_version = "HTTP/1.1"
    _reader: _DeadlineReader
    _linger = False

    def version_string(self) -> str:
        """The Server header: no Python or library versions."""
        return "fraud-model-server"

    def log_message(self, format: str, *args: Any) -> None:
        """Silence per-request access logs (TF Serving does not print them either)."""

    def setup(self) -> None:
        """Read through a _DeadlineReader instead of a plain socket file."""
        super().setup()
        self.rfile.close()
        limits = self.server.limits
        self._reader = _DeadlineReader(
            self.connection, limits.rest_read_timeout, limits.rest_request_timeout
        )
        self.rfile = io.BufferedReader(self._reader)

    def finish(self) -> None:
        """Flush the answer; drain the connection first if it closes on unread data."""
        try:
            super().finish()
        finally:
            if self._linger:
                linger(self.connection)

    def handle_one_request(self) -> None:
        """As BaseHTTPRequestHandler's, with time limits and JSON errors."""
        self._reader.restart()
        self.raw_requestline = b""
        try:
            self.raw_requestline = self.rfile.readline(65537)
            if len(self.raw_requestline) > 65536:
                self.requestline = self.request_version = self.command = ""
                self._fail(HTTPStatus.REQUEST_URI_TOO_LONG, "Request line too long")
                return
            if not self.raw_requestline:
                self.close_connection = True
                return
            if not self.parse_request():
                return
            if self.request_version == "HTTP/0.9":
                self._fail(HTTPStatus.BAD_REQUEST, "HTTP/0.9 is not supported")
                return
            if self.command not in ("GET", "POST"):
                self._fail(
                    HTTPStatus.NOT_IMPLEMENTED, f"Unsupported method {shorten(self.command)}"
                )
                return
            self._answer(self.command)
            self.wfile.flush()
        except TimeoutError:
            # A stalled or dribbling client: drop it; say why if a request had begun.
            self.close_connection = True
            if self.raw_requestline:
                self._fail(HTTPStatus.REQUEST_TIMEOUT, "Request not received in time", drain=False)
        except OSError:  # the client went away
            self.close_connection = True

    def handle_expect_100(self) -> bool:
        """Refuse a body we would refuse anyway before the client sends it."""
        try:
            self._body_length()
        except _HttpError as err:
            self._fail(err.status, err.message)
            return False
        return super().handle_expect_100()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Errors of the request line or headers (BaseHTTPRequestHandler's), as JSON."""
        status = HTTPStatus(code)
        self._fail(status, shorten(message) if message else status.phrase)

    def _answer(self, method: str) -> None:
        try:
            length = self._body_length()
        except _HttpError as err:
            self._fail(err.status, err.message)
            return
        raw = self.rfile.read(length) if length else b""
        if len(raw) < length:  # the client closed before sending its whole body
            self.close_connection = True
            return
        try:
            body = self._route(method, raw)
            self._send(HTTPStatus.OK, body)
        except ServingError as err:
            self._send(HTTP_STATUS[err.code], {"error": err.message})
        except _HttpError as err:
            self._send(err.status, {"error": err.message})
        except Exception as err:  # nothing of it may reach the client
            log_internal_error(f"REST {method}", err)
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": INTERNAL_MESSAGE})

    def _body_length(self) -> int:
        """The validated Content-Length (0 for a GET without one); _HttpError otherwise."""
        if self.headers.get_all("Transfer-Encoding"):
            raise _HttpError(
                HTTPStatus.LENGTH_REQUIRED,
                "Transfer-Encoding is not supported; send the body with a Content-Length",
            )
        values = self.headers.get_all("Content-Length") or []
        parts = [part.strip() for value in values for part in value.split(",")]
        if not parts:
            if self.command == "POST":
                raise _HttpError(HTTPStatus.LENGTH_REQUIRED, "Content-Length required")
            return 0
        if not all(_CONTENT_LENGTH.fullmatch(part) for part in parts):
            raise _HttpError(HTTPStatus.BAD_REQUEST, "Invalid Content-Length")
        if len({int(part) for part in parts}) > 1:
            raise _HttpError(HTTPStatus.BAD_REQUEST, "Conflicting Content-Length values")
        length = int(parts[0])
        limit = self.server.limits.rest_max_body_bytes
        if length > limit:
            raise _HttpError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"Request body of {length} bytes exceeds the limit of {limit} bytes",
            )
        return length

    def _route(self, method: str, raw: bytes) -> dict[str, Any]:
        match = _ROUTE.match(self.path.split("?", 1)[0])
        if match is None:
            raise ServingError("NOT_FOUND", f"Malformed request: {method} {shorten(self.path)}")
        name, verb, label = match["name"], match["verb"], match["label"]
        version = int(match["version"]) if match["version"] else None
        manager = self.server.manager
        if method == "GET" and verb is None and not match["metadata"]:
            return {"model_version_status": _status_json(manager, name, version, label)}
        if name != manager.model_name:
            raise servable_not_found(name, version)
        if method == "GET" and match["metadata"]:
            return _metadata_json(manager.get(version, label))
        if method == "POST" and verb == ":predict":
            servable = manager.get(version, label)
            with self.server.worker(self._reader.remaining()):
                return _predict_json(servable, _parse_json(raw), self.server.limits.max_batch_rows)
        if method == "POST" and verb in (":classify", ":regress"):
            raise ServingError("UNIMPLEMENTED", f"{verb[1:]} is not supported by this server")
        raise ServingError("NOT_FOUND", f"Malformed request: {method} {shorten(self.path)}")

    def _send(self, status: int, body: Mapping[str, Any], *, close: bool = False) -> None:
        data = json.dumps(body).encode()
        try:
            self.connection.settimeout(self.server.limits.rest_read_timeout)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if close:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)
        except OSError:  # the client went away or does not read
            self.close_connection = True

    def _fail(self, status: HTTPStatus, message: str, *, drain: bool = True) -> None:
        """Answer ``status`` and close: the rest of this connection cannot be trusted."""
        self.close_connection = True
        self._linger = drain
        if self.request_version == "HTTP/0.9":  # a request line too broken to tell: answer 1.x
            self.request_version = "HTTP/1.0"
        self._send(status, {"error": message}, close=True)


def _parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError as err:
        message = f"JSON Parse error: {err.msg} at offset {err.pos}"
    except UnicodeDecodeError:
        message = "JSON Parse error: the body is not UTF-8 text"
    except RecursionError:
        message = "JSON Parse error: nested too deeply"
    except ValueError:  # e.g. an integer of more than 4300 digits
        message = "JSON Parse error: a value cannot be represented"
    raise ServingError("INVALID_ARGUMENT", message)


def _status_json(
    manager: ModelManager, name: str, version: int | None, label: str | None
) -> list[dict[str, Any]]:
    return [
        {
            "version": str(s.version),
            "state": s.state.value,
            "status": {"error_code": "UNKNOWN" if s.error else "OK", "error_message": s.error},
        }
        for s in model_statuses(manager, name, version, label)
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


def _predict_json(servable: Servable, body: Any, max_rows: int) -> dict[str, Any]:
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
    check_input_aliases(sig, columns)
    arrays = {alias: _array(alias, values, sig, max_rows) for alias, values in columns.items()}
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


def _array(alias: str, values: Any, sig: Signature, max_rows: int) -> np.ndarray:
    if not isinstance(values, list):
        raise ServingError("INVALID_ARGUMENT", f"input {alias}: expected a list of values")
    if len(values) > max_rows:
        raise ServingError(
            "INVALID_ARGUMENT",
            f"input {alias}: {len(values)} rows exceed the limit of {max_rows} rows per batch",
        )
    dtype = sig.inputs[alias]
    if dtype.name == "string":
        bad = next((i for i, v in enumerate(values) if not isinstance(v, str)), None)
        if bad is not None:
            raise ServingError(
                "INVALID_ARGUMENT",
                f"input {alias}: expected strings, got {shorten(json.dumps(values[bad]))} "
                f"at row {bad}",
            )
        return np.array(values, dtype=object)
    try:
        return np.asarray(values, dtype=dtype.as_numpy_dtype)
    except (TypeError, ValueError, OverflowError):
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
