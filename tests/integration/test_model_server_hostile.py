"""Hostile clients against a real `fraud model-server` process, over real sockets.

One server process (tight limits, see ``SERVER_FLAGS``) serves the whole module;
each test leaves it as it found it (no connection left open). The server's
threads and memory are read from /proc/<pid>/status.
"""

from __future__ import annotations

import http.client
import inspect
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from features import spec
from scoring.model_server.process import start
from tests.fixtures.model_server import toy_inputs, toy_scores

pytestmark = pytest.mark.integration

MAX_CONNECTIONS = 4
READ_TIMEOUT = 1.5
REQUEST_TIMEOUT = 4.0
MAX_BODY = 1024 * 1024
MAX_ROWS = 1000
MAX_RPCS = 2
SERVER_FLAGS = [
    "--poll-seconds",
    "0.5",
    "--settle-seconds",
    "0",
    "--rest-max-connections",
    str(MAX_CONNECTIONS),
    "--rest-read-timeout",
    str(READ_TIMEOUT),
    "--rest-request-timeout",
    str(REQUEST_TIMEOUT),
    "--rest-max-body-bytes",
    str(MAX_BODY),
    "--max-batch-rows",
    str(MAX_ROWS),
    "--grpc-max-concurrent-rpcs",
    str(MAX_RPCS),
]
#: Text that must never appear in an answer: it would describe the server's insides.
LEAKS = (
    "Traceback",
    'File "',
    ".py",
    "site-packages",
    "Errno",
    "/tmp",
    "/work",
    "Exception calling application",
)


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    rest_port: int
    grpc_port: int
    model_dir: Path
    log: Path

    def status_field(self, name: str) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(f"{name}:"):
                return int(line.split()[1])
        raise AssertionError(f"no {name} in /proc/{self.process.pid}/status")

    def threads(self) -> int:
        return self.status_field("Threads")

    def rss_kib(self) -> int:
        return self.status_field("VmRSS")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, toy_model_cache: Path) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("hostile")
    model_dir = root / "models"
    model_dir.mkdir()
    shutil.copytree(toy_model_cache / "1", model_dir / "1")
    log = root / "server.log"
    with log.open("wb") as stderr:
        started = start(model_dir, *SERVER_FLAGS, stderr=stderr)
    try:
        assert started.ready["version"] == 1, log.read_text()
        yield Server(started.process, started.rest_port, started.grpc_port, model_dir, log)
    finally:
        started.stop()


@pytest.fixture
def alive(server: Server) -> Iterator[Server]:
    """The server, checked to answer REST and gRPC correctly after the test."""
    yield server
    assert server.process.poll() is None, "the server died"
    assert get(server, "/v1/models/fraud")[0] == 200
    inputs = toy_inputs(5)
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        response = stub(channel).Predict(make_request(inputs), timeout=10)
    np.testing.assert_allclose(
        tf.make_ndarray(response.outputs["score"]), toy_scores(inputs, 0.5), atol=1e-6
    )


# --- helpers -------------------------------------------------------------------------


def connect(server: Server, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.rest_port), timeout=timeout)


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], Any]:
    """Read one HTTP response from ``sock``: status, headers (lower-case names), JSON body."""
    response = http.client.HTTPResponse(sock)
    response.begin()
    data = response.read()
    headers = {k.lower(): v for k, v in response.getheaders()}
    assert headers.get("content-type") == "application/json", (response.status, data)
    return response.status, headers, json.loads(data)


def is_closed(sock: socket.socket, timeout: float) -> bool:
    """Whether the server closed ``sock`` within ``timeout`` (reads and drops any data)."""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not sock.recv(65536):
                return True
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return False


def exchange(server: Server, data: bytes) -> tuple[int, dict[str, str], Any, bool]:
    """Send raw bytes on a new connection; return the response and whether it then closed.

    "Closed" means at once (the server's own idle timeout would close it later).
    """
    with connect(server) as sock:
        sock.sendall(data)
        status, headers, body = read_response(sock)
        return status, headers, body, is_closed(sock, 0.5)


def get(server: Server, path: str) -> tuple[int, Any]:
    """GET on a new connection; a 503 is retried for a moment, because a connection
    just closed by a client keeps its slot until its server thread notices."""
    deadline = time.monotonic() + 3.0
    while True:
        conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=10)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            status, body = response.status, json.loads(response.read())
        finally:
            conn.close()
        if status != 503 or time.monotonic() > deadline:
            return status, body
        time.sleep(0.05)


def predict_body(rows: int = 3) -> bytes:
    columns = {k: v.tolist() for k, v in toy_inputs(rows).items()}
    return json.dumps({"inputs": columns}).encode()


def post_head(
    length: int | None, *, path: str = "/v1/models/fraud:predict", extra: str = ""
) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
    if length is not None:
        head += f"Content-Length: {length}\r\n"
    return (head + extra + "\r\n").encode()


def post(body: bytes, path: str = "/v1/models/fraud:predict") -> bytes:
    return post_head(len(body), path=path) + body


def assert_no_leak(text: str, server: Server | None = None) -> None:
    for leak in LEAKS:
        assert leak not in text, f"{leak!r} in {text!r}"
    if server is not None:
        assert str(server.model_dir) not in text


def stub(channel: grpc.Channel) -> prediction_service_pb2_grpc.PredictionServiceStub:
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


def make_request(inputs: dict[str, np.ndarray]) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "fraud"
    for alias, value in inputs.items():
        request.inputs[alias].CopyFrom(tf.make_tensor_proto(value))
    return request


# --- REST ---------------------------------------------------------------------------


def test_oversized_body_is_413_and_the_server_still_answers(alive: Server) -> None:
    with connect(alive) as sock:
        sock.sendall(post_head(MAX_BODY + 1) + b"[" * 256 * 1024)  # the client keeps sending
        status, headers, body = read_response(sock)
        assert status == 413
        assert headers["connection"] == "close"
        assert body == {
            "error": f"Request body of {MAX_BODY + 1} bytes exceeds the limit of {MAX_BODY} bytes"
        }
        assert is_closed(sock, 5.0)
    # Expect: 100-continue: refused before the client sends the body
    status, _, body, closed = exchange(alive, post_head(10**12, extra="Expect: 100-continue\r\n"))
    assert (status, closed) == (413, True)
    # a body just under the limit is read and answered
    padded = predict_body(3)
    padded += b" " * (MAX_BODY - len(padded))
    conn = http.client.HTTPConnection("127.0.0.1", alive.rest_port, timeout=10)
    conn.request("POST", "/v1/models/fraud:predict", body=padded)
    assert conn.getresponse().status == 200
    conn.close()


@pytest.mark.parametrize(
    ("head", "status", "message"),
    [
        (post_head(None), 411, "Content-Length required"),
        (post_head(None, extra="Transfer-Encoding: chunked\r\n"), 411, "Transfer-Encoding"),
        (post_head(5, extra="Transfer-Encoding: chunked\r\n"), 411, "Transfer-Encoding"),
        (post_head(None, extra="Content-Length: -5\r\n"), 400, "Invalid Content-Length"),
        (post_head(None, extra="Content-Length: abc\r\n"), 400, "Invalid Content-Length"),
        (post_head(None, extra="Content-Length: +5\r\n"), 400, "Invalid Content-Length"),
        (post_head(None, extra="Content-Length: 1e3\r\n"), 400, "Invalid Content-Length"),
        (post_head(None, extra="Content-Length: \r\n"), 400, "Invalid Content-Length"),
        (post_head(5, extra="Content-Length: 6\r\n"), 400, "Conflicting Content-Length"),
        (post_head(None, extra="Content-Length: 5, 6\r\n"), 400, "Conflicting Content-Length"),
    ],
)
def test_content_length_is_validated(alive: Server, head: bytes, status: int, message: str) -> None:
    got, headers, body, closed = exchange(alive, head + b"hello")
    assert got == status
    assert message in body["error"]
    assert headers["connection"] == "close" and closed  # framing unknown: never reused


def test_repeated_equal_content_length_is_accepted(alive: Server) -> None:
    body = predict_body(2)
    head = post_head(len(body), extra=f"Content-Length: {len(body)}\r\n")
    assert exchange(alive, head + body)[0] == 200


class Wire:
    """One keep-alive connection read through one buffer, so no response can be lost.

    (http.client reads each response through a new buffer: a response nobody asked
    for could vanish in the buffer of the one before it.)
    """

    def __init__(self, server: Server) -> None:
        self.sock = connect(server)
        self.file = self.sock.makefile("rb")

    def ask(self, method: str, path: str, body: bytes = b"") -> tuple[int, dict[str, str], Any]:
        head = f"{method} {path} HTTP/1.1\r\nHost: test\r\n"
        if body or method == "POST":
            head += f"Content-Length: {len(body)}\r\n"
        self.sock.sendall(head.encode() + b"\r\n" + body)
        status = int(self.file.readline().split()[1])
        headers = {}
        while (line := self.file.readline()) not in (b"\r\n", b""):
            name, value = line.decode().split(":", 1)
            headers[name.strip().lower()] = value.strip()
        return status, headers, json.loads(self.file.read(int(headers["content-length"])))

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def test_keep_alive_after_errors_stays_in_step(alive: Server) -> None:
    # Each error below comes with a body that is itself an HTTP request: if the server
    # left it unread, it would answer it as the next request on the connection.
    smuggled = b"GET /v1/models/fraud/versions/9 HTTP/1.1\r\nHost: test\r\n\r\n"
    wire = Wire(alive)
    try:
        for method, path, expected in [
            ("POST", "/v1/models/foo:predict", 404),  # unknown model, refused before parsing
            ("POST", "/v1/models/fraud/versions/7:predict", 404),  # version not loaded
            ("POST", "/v1/models/fraud:classify", 501),
            ("POST", "/v1/models/fraud:predict", 400),  # the body is not JSON
            ("POST", "/nowhere", 404),
            ("GET", "/v1/models/fraud", 200),  # a GET with a body
            ("GET", "/v1/models/fraud/metadata", 200),
        ]:
            status, headers, answer = wire.ask(method, path, smuggled)
            assert status == expected, (method, path, answer)
            assert "connection" not in headers  # kept alive
            status, _, answer = wire.ask("GET", "/v1/models/fraud")
            assert status == 200, (method, path, answer)
            assert answer["model_version_status"][0]["version"] == "1"
        status, _, answer = wire.ask("POST", "/v1/models/fraud:predict", predict_body(4))
        assert status == 200 and len(answer["outputs"]) == 4
        wire.sock.settimeout(0.3)  # and nothing else is buffered or on its way
        with pytest.raises(TimeoutError):
            wire.file.peek(1)
    finally:
        wire.close()


def test_a_stalled_client_does_not_block_others_and_is_dropped(alive: Server) -> None:
    stalled_head = connect(alive)
    stalled_head.sendall(b"POST /v1/models/fraud:predict HTTP/1.1\r\nHost: te")
    stalled_body = connect(alive)
    stalled_body.sendall(post_head(1000) + b'{"inputs": ')
    idle = connect(alive)  # connects and sends nothing
    started = time.monotonic()
    other = Wire(alive)
    try:
        for _ in range(3):  # another client is answered meanwhile, at once
            before = time.monotonic()
            assert other.ask("GET", "/v1/models/fraud")[0] == 200
            assert time.monotonic() - before < 1.0
        other.close()
        # the stalled body gets a 408, then all three are closed after the read timeout
        status, _, body = read_response(stalled_body)
        assert status == 408 and body == {"error": "Request not received in time"}
        for sock in (stalled_body, stalled_head, idle):
            assert is_closed(sock, READ_TIMEOUT + 3.0)
        elapsed = time.monotonic() - started
        assert READ_TIMEOUT - 0.2 < elapsed < READ_TIMEOUT + 3.0
    finally:
        other.close()
        for sock in (stalled_head, stalled_body, idle):
            sock.close()


def test_a_dribbling_client_is_dropped_at_the_request_deadline(alive: Server) -> None:
    request = post_head(100_000) + b"x" * 100_000
    started = time.monotonic()
    with connect(alive) as sock:
        sent = 0
        try:
            while sent < len(request):  # one byte every 0.3 s: never a read timeout
                sock.sendall(request[sent : sent + 1])
                sent += 1
                time.sleep(0.3)
                assert time.monotonic() - started < REQUEST_TIMEOUT + 5, "never dropped"
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert is_closed(sock, 5.0)
    elapsed = time.monotonic() - started
    assert REQUEST_TIMEOUT - 0.5 < elapsed < REQUEST_TIMEOUT + 3.0


def test_connections_beyond_the_cap_get_503_and_threads_stay_bounded(alive: Server) -> None:
    assert get(alive, "/v1/models/fraud")[0] == 200
    time.sleep(0.2)  # its connection's thread ends
    baseline = alive.threads()
    holders = [connect(alive) for _ in range(MAX_CONNECTIONS)]
    extra: list[socket.socket] = []
    try:
        for sock in holders:
            sock.sendall(b"GET /v1/models/fraud HTTP/1.1\r\n")  # a request that never ends
        refused = 0
        for _ in range(3 * MAX_CONNECTIONS):
            sock = connect(alive)
            extra.append(sock)
            sock.sendall(b"GET /v1/models/fraud HTTP/1.1\r\nHost: test\r\n\r\n")
            status, headers, body = read_response(sock)
            assert status == 503, body
            assert headers["retry-after"] == "1" and headers["connection"] == "close"
            refused += 1
            sock.close()
            for holder in holders:  # keep the holders busy, well within their deadline
                holder.sendall(b"X: y\r\n")
        assert refused == 3 * MAX_CONNECTIONS
        during = alive.threads()
        assert during <= baseline + MAX_CONNECTIONS, (baseline, during)
    finally:
        for sock in holders + extra:
            sock.close()
    assert get(alive, "/v1/models/fraud")[0] == 200  # once the holders are gone


def test_many_concurrent_requests_share_the_slots(alive: Server) -> None:
    """A burst of legitimate clients: each is answered 200 or 503, none hangs or errs."""
    body = predict_body(20)
    results: list[int] = []

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", alive.rest_port, timeout=10)
        try:
            conn.request("POST", "/v1/models/fraud:predict", body=body)
            results.append(conn.getresponse().status)
        finally:
            conn.close()

    threads = [threading.Thread(target=client) for _ in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(results) == 24
    assert set(results) <= {200, 503}
    assert 200 in results


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (post(b"not json!"), 400),
        (post(b"[" * 200_000), 400),  # nested too deeply
        (post(b"1" * 6000), 400),  # an integer Python will not parse
        (post(b"\xff\xfe\xfa\xfb"), 400),
        (post(b"[]"), 400),
        (post(b'{"instances": [1, 2, "x"]}'), 400),
        (post(b'{"inputs": {"amount": [[1], [1, 2]]}}'), 400),
        (post(b'{"inputs": {"amount": 5}, "extra": []}'), 400),
        (post(b'{"inputs": {"x": [1]}, "signature_name": "' + b"s" * 5000 + b'"}'), 400),
        (post(b"junk", path="/v1/models/fraud/metadata"), 404),  # not a POST route
        (post(b"{}{}", path="/v1/models/" + "x" * 5000 + ":predict"), 404),
        (b"PUT /v1/models/fraud HTTP/1.1\r\nHost: t\r\n\r\n", 501),
        (b"BREW /coffee HTCPCP/1.0\r\n\r\n", 400),
        (b"GET /v1/models/fraud\r\n\r\n", 400),  # HTTP/0.9
        (b"GET /v1/models/fraud HTTP/1.1\r\n" + b"X: y\r\n" * 150 + b"\r\n", 431),
        (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", 414),
    ],
)
def test_error_bodies_are_json_without_internals(alive: Server, data: bytes, status: int) -> None:
    got, headers, body, _ = exchange(alive, data)
    assert got == status, body
    assert headers["server"] == "fraud-model-server"
    assert set(body) == {"error"} and isinstance(body["error"], str)
    assert len(body["error"]) < 1000
    assert_no_leak(body["error"], alive)


def test_too_many_rows_over_rest_are_refused(alive: Server) -> None:
    assert exchange(alive, post(predict_body(MAX_ROWS)))[0] == 200
    status, _, answer, closed = exchange(alive, post(predict_body(MAX_ROWS + 1)))
    assert status == 400 and not closed
    assert answer["error"].endswith(
        f": {MAX_ROWS + 1} rows exceed the limit of {MAX_ROWS} rows per batch"
    )


# --- gRPC ---------------------------------------------------------------------------


def _hostile(alias: str, tensor: tensor_pb2.TensorProto) -> predict_pb2.PredictRequest:
    request = make_request(toy_inputs(5))
    request.inputs[alias].CopyFrom(tensor)
    return request


def _tensor(dtype: int, dims: list[int], **values: Any) -> tensor_pb2.TensorProto:
    tensor = tensor_pb2.TensorProto(dtype=dtype, **values)
    for size in dims:
        tensor.tensor_shape.dim.add().size = size
    return tensor


HOSTILE_TENSORS: list[tuple[str, str, tensor_pb2.TensorProto, str]] = [
    ("1e9 float rows", spec.AMOUNT, _tensor(types_pb2.DT_FLOAT, [10**9]), "exceeds the limit"),
    ("1e9 string rows", spec.CHANNEL, _tensor(types_pb2.DT_STRING, [10**9]), "exceeds the limit"),
    (
        "1e9 rows, one value",
        spec.AMOUNT,
        _tensor(types_pb2.DT_FLOAT, [10**9], float_val=[1.0]),
        "exceeds the limit",
    ),
    (
        "1e9 rows, 8 bytes",
        spec.AMOUNT,
        _tensor(types_pb2.DT_FLOAT, [10**9], tensor_content=b"\0" * 8),
        "exceeds the limit",
    ),
    ("int64 max", spec.AMOUNT, _tensor(types_pb2.DT_FLOAT, [2**63 - 1]), "exceeds the limit"),
    ("negative", spec.AMOUNT, _tensor(types_pb2.DT_FLOAT, [-1]), "negative dimension"),
    ("overflow", spec.AMOUNT, _tensor(types_pb2.DT_FLOAT, [2**62, 2**62, 4]), "exceeds the limit"),
    ("zero x huge", spec.AMOUNT, _tensor(types_pb2.DT_FLOAT, [0, 2**62]), "expected a 1-D batch"),
    ("scalar", spec.AMOUNT, _tensor(types_pb2.DT_FLOAT, [], float_val=[1.0]), "1-D batch"),
    ("no values", spec.AMOUNT, _tensor(types_pb2.DT_FLOAT, [5]), "needs 5 values, got 0"),
    (
        "too few values",
        spec.AMOUNT,
        _tensor(types_pb2.DT_FLOAT, [5], float_val=[1.0, 2.0]),
        "needs 5 values, got 2",
    ),
    (
        "short content",
        spec.AMOUNT,
        _tensor(types_pb2.DT_FLOAT, [5], tensor_content=b"\0" * 12),
        "needs 20 bytes of tensor_content, got 12",
    ),
    (
        "string content",
        spec.CHANNEL,
        _tensor(types_pb2.DT_STRING, [2], tensor_content=b"ab"),
        "string tensors must use string_val",
    ),
    ("wrong dtype", spec.AMOUNT, _tensor(types_pb2.DT_INT64, [5]), "to be float32 but int64"),
    ("bad dtype", spec.AMOUNT, _tensor(9999, [5]), "but invalid is provided"),
]


def test_hostile_tensor_shapes_are_refused_without_allocating(alive: Server) -> None:
    assert len(HOSTILE_TENSORS[0][2].SerializeToString()) <= 30
    with grpc.insecure_channel(f"127.0.0.1:{alive.grpc_port}") as channel:
        predict = stub(channel).Predict
        predict(make_request(toy_inputs(5)), timeout=10)  # warm
        rss_before = alive.rss_kib()
        for name, alias, tensor, expected in HOSTILE_TENSORS:
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as err:
                predict(_hostile(alias, tensor), timeout=10)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name
            assert expected in err.value.details(), (name, err.value.details())
            assert_no_leak(err.value.details(), alive)
            assert time.monotonic() - started < 1.0, name
        rss_after = alive.rss_kib()
    assert rss_after - rss_before < 50 * 1024, (rss_before, rss_after)


def test_too_many_rows_over_grpc_are_refused(alive: Server) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{alive.grpc_port}") as channel:
        predict = stub(channel).Predict
        assert predict(make_request(toy_inputs(MAX_ROWS)), timeout=10).outputs["score"]
        with pytest.raises(grpc.RpcError) as err:
            predict(make_request(toy_inputs(MAX_ROWS + 1)), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"exceeds the limit of {MAX_ROWS} rows" in err.value.details()


def test_concurrent_rpcs_beyond_the_cap_are_resource_exhausted(alive: Server) -> None:
    """RPCs held open (the message not sent yet) fill the slots; the next is refused."""
    release = threading.Event()
    request = make_request(toy_inputs(3))

    def held() -> Iterator[predict_pb2.PredictRequest]:
        release.wait(20)
        yield request

    with grpc.insecure_channel(f"127.0.0.1:{alive.grpc_port}") as channel:
        open_call = channel.stream_stream(
            "/tensorflow.serving.PredictionService/Predict",
            request_serializer=predict_pb2.PredictRequest.SerializeToString,
            response_deserializer=predict_pb2.PredictResponse.FromString,
        )
        calls = [open_call(held(), timeout=30) for _ in range(MAX_RPCS)]
        predict = stub(channel).Predict
        deadline = time.monotonic() + 10
        try:
            while True:  # until the server has seen both held calls
                try:
                    predict(request, timeout=5)
                except grpc.RpcError as err:
                    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.details()
                    assert_no_leak(err.details())
                    break
                assert time.monotonic() < deadline, "the cap never refused a call"
                time.sleep(0.05)
        finally:
            release.set()
        for call in calls:  # the held calls complete normally once they send their message
            responses = list(call)
            assert len(responses) == 1 and responses[0].model_spec.version.value == 1
        predict(request, timeout=5)


def test_grpc_errors_do_not_leak(alive: Server) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{alive.grpc_port}") as channel:
        predictions = stub(channel)
        details = []
        for request in [
            make_request({"amount": np.zeros(3, np.float32)}),
            _hostile("x" * 10_000, _tensor(types_pb2.DT_FLOAT, [5])),
        ]:
            with pytest.raises(grpc.RpcError) as err:
                predictions.Predict(request, timeout=10)
            details.append(err.value.details())
        metadata = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["y" * 10_000])
        metadata.model_spec.name = "fraud"
        with pytest.raises(grpc.RpcError) as err:
            predictions.GetModelMetadata(metadata, timeout=10)
        details.append(err.value.details())
        garbage = channel.unary_unary(
            "/tensorflow.serving.PredictionService/Predict",
            request_serializer=lambda raw: raw,
            response_deserializer=lambda raw: raw,
        )
        with pytest.raises(grpc.RpcError) as err:
            garbage(b"\xff\xff\xff\xff not a protobuf", timeout=10)
        details.append(err.value.details())
    for text in details:
        assert text and len(text) < 1000
        assert_no_leak(text, alive)


# --- the CLI's defaults ---------------------------------------------------------------


def test_cli_defaults_are_the_limits_defaults() -> None:
    from fraud.cli.model_server import model_server
    from scoring.model_server.limits import Limits

    parameters = inspect.signature(model_server).parameters
    for field in fields(Limits):
        assert parameters[field.name].default == getattr(Limits(), field.name), field.name


def test_cli_refuses_bad_limits(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("fraud")),
            "model-server",
            "--model-dir",
            str(tmp_path),
            "--rest-max-connections",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "--rest-max-connections must be > 0, got 0" in result.stderr
