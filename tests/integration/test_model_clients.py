"""Model clients against the real model server (gRPC, REST) and real SavedModels."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from features import spec
from features.errors import InputError
from scoring.clients import ModelRequestError, ModelUnavailable, make_client
from scoring.clients.grpc_client import GrpcModelClient
from scoring.clients.inprocess import InProcessModelClient
from scoring.clients.rest_client import RestModelClient
from scoring.model_server.server import ModelServer, ServerConfig
from tests.fixtures.model_server import add_cached_version, toy_inputs, toy_scores

pytestmark = pytest.mark.integration


def wait_for(check: Callable[[], bool], seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


@pytest.fixture
def grpc_client(model_server: ModelServer) -> Iterator[GrpcModelClient]:
    client = GrpcModelClient(f"127.0.0.1:{model_server.grpc_port}", timeout_seconds=5)
    yield client
    client.close()


def test_grpc_client_scores_and_reports_version(grpc_client: GrpcModelClient) -> None:
    inputs = toy_inputs(1000, seed=4)
    prediction = grpc_client.predict(inputs)
    assert prediction.model_version == 1
    assert prediction.scores.dtype == np.float32
    np.testing.assert_allclose(prediction.scores, toy_scores(inputs, 0.5), atol=1e-6)
    status = grpc_client.status()
    assert (status.ready, status.version) == (True, 1)


def test_grpc_client_picks_up_a_new_version(
    grpc_client: GrpcModelClient, toy_model_dir: Path, toy_model_cache: Path
) -> None:
    inputs = toy_inputs(100, seed=5)
    add_cached_version(toy_model_cache, toy_model_dir, 2)
    wait_for(lambda: grpc_client.predict(inputs).model_version == 2)
    np.testing.assert_allclose(
        grpc_client.predict(inputs).scores, toy_scores(inputs, 1.5), atol=1e-6
    )
    assert grpc_client.status().version == 2


def test_grpc_client_error_kinds(model_server: ModelServer, grpc_client: GrpcModelClient) -> None:
    inputs = toy_inputs(3)
    inputs[spec.AMOUNT] = np.array(["1", "2", "3"], dtype=object)
    with pytest.raises(ModelRequestError, match=r"INVALID_ARGUMENT.*amount"):
        grpc_client.predict(inputs)

    other = GrpcModelClient(f"127.0.0.1:{model_server.grpc_port}", "foo")
    with pytest.raises(ModelUnavailable, match=r"NOT_FOUND.*Latest\(foo\)"):
        other.predict(toy_inputs(3))
    status = other.status()
    assert not status.ready
    assert "Could not find any versions of model foo" in status.message
    other.close()


def test_grpc_client_survives_a_server_restart(toy_model_dir: Path) -> None:
    config = ServerConfig(model_dir=toy_model_dir, grpc_port=0, rest_port=0, poll_seconds=0.2)
    server = ModelServer(config)
    server.start()
    port = server.grpc_port
    client = GrpcModelClient(f"127.0.0.1:{port}", timeout_seconds=2)
    inputs = toy_inputs(10)
    try:
        assert client.predict(inputs).model_version == 1
        server.stop(grace_seconds=0.5)
        with pytest.raises(ModelUnavailable, match="UNAVAILABLE"):
            client.predict(inputs)
        assert not client.status().ready

        server = ModelServer(
            ServerConfig(model_dir=toy_model_dir, grpc_port=port, rest_port=0, poll_seconds=0.2)
        )
        server.start()
        deadline = time.monotonic() + 15
        while True:
            try:
                prediction = client.predict(inputs)
                break
            except ModelUnavailable:
                assert time.monotonic() < deadline, "client did not reconnect"
                time.sleep(0.2)
        np.testing.assert_allclose(prediction.scores, toy_scores(inputs, 0.5), atol=1e-6)
    finally:
        client.close()
        server.stop(grace_seconds=0.5)


def test_grpc_client_times_out_on_a_silent_server() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted: list[socket.socket] = []
    thread = threading.Thread(target=lambda: accepted.append(listener.accept()[0]), daemon=True)
    thread.start()
    client = GrpcModelClient(f"127.0.0.1:{listener.getsockname()[1]}", timeout_seconds=0.5)
    started = time.monotonic()
    try:
        with pytest.raises(ModelUnavailable, match=r"DEADLINE_EXCEEDED|UNAVAILABLE"):
            client.predict(toy_inputs(3))
        assert time.monotonic() - started < 5
    finally:
        client.close()
        for conn in accepted:
            conn.close()
        listener.close()


def test_inprocess_client_scores_and_picks_up_a_new_version(
    toy_model_dir: Path, toy_model_cache: Path
) -> None:
    client = InProcessModelClient(toy_model_dir, poll_seconds=0.2)
    inputs = toy_inputs(500, seed=6)
    try:
        prediction = client.predict(inputs)
        assert prediction.model_version == 1
        np.testing.assert_allclose(prediction.scores, toy_scores(inputs, 0.5), atol=1e-6)
        assert client.status().version == 1

        add_cached_version(toy_model_cache, toy_model_dir, 2)
        wait_for(lambda: client.predict(inputs).model_version == 2)
        np.testing.assert_allclose(
            client.predict(inputs).scores, toy_scores(inputs, 1.5), atol=1e-6
        )
        bad = dict(inputs)
        bad.pop(spec.COUNTRY)
        with pytest.raises(ModelRequestError, match="country"):
            client.predict(bad)
    finally:
        client.close()


def test_inprocess_client_waits_for_a_first_version(tmp_path: Path, toy_model_cache: Path) -> None:
    model_dir = tmp_path / "empty"
    model_dir.mkdir()
    client = InProcessModelClient(model_dir, poll_seconds=0.2)
    try:
        with pytest.raises(ModelUnavailable, match=r"Latest\(fraud\)"):
            client.predict(toy_inputs(2))
        assert not client.status().ready
        add_cached_version(toy_model_cache, model_dir, 2)
        wait_for(lambda: client.status().ready)
        assert client.predict(toy_inputs(2)).model_version == 2
    finally:
        client.close()


def test_inprocess_and_grpc_scores_agree(grpc_client: GrpcModelClient, toy_model_dir: Path) -> None:
    inputs = toy_inputs(200, seed=7)
    local = InProcessModelClient(toy_model_dir)
    try:
        np.testing.assert_array_equal(
            local.predict(inputs).scores, grpc_client.predict(inputs).scores
        )
    finally:
        local.close()


def test_rest_client_scores_and_follows_versions(
    model_server: ModelServer, toy_model_dir: Path, toy_model_cache: Path
) -> None:
    client = RestModelClient(f"http://127.0.0.1:{model_server.rest_port}", refresh_seconds=0.1)
    inputs = toy_inputs(50, seed=8)
    prediction = client.predict(inputs)
    assert prediction.model_version == 1
    np.testing.assert_allclose(prediction.scores, toy_scores(inputs, 0.5), atol=1e-6)
    add_cached_version(toy_model_cache, toy_model_dir, 2)
    wait_for(lambda: client.predict(inputs).model_version == 2)
    np.testing.assert_allclose(client.predict(inputs).scores, toy_scores(inputs, 1.5), atol=1e-6)
    inputs.pop(spec.AMOUNT)
    with pytest.raises(ModelRequestError, match="amount"):
        client.predict(inputs)


def test_make_client_picks_the_backend(model_server: ModelServer, toy_model_dir: Path) -> None:
    clients = [
        make_client(f"grpc://127.0.0.1:{model_server.grpc_port}"),
        make_client(f"http://127.0.0.1:{model_server.rest_port}"),
        make_client(toy_model_dir, poll_seconds=0.5),
    ]
    assert [type(c) for c in clients] == [GrpcModelClient, RestModelClient, InProcessModelClient]
    inputs = toy_inputs(20)
    for client in clients:
        assert client.predict(inputs).model_version == 1
        client.close()
    with pytest.raises(InputError, match="grpc://HOST:PORT"):
        make_client(toy_model_dir / "missing")
    with pytest.raises(InputError, match="no host:port"):
        make_client("grpc://")


def test_every_client_reads_a_versions_metadata_through_the_serving_api(
    model_server: ModelServer, tmp_path: Path
) -> None:
    """Threshold and behavioural config come through TF Serving's Predict, no model directory."""
    from tests.fixtures.model_server import export_toy_model

    export_toy_model(model_server.config.model_dir, 7, 0.5, threshold=0.37, delay_days=3)
    clients = [
        GrpcModelClient(f"127.0.0.1:{model_server.grpc_port}", timeout_seconds=5),
        RestModelClient(f"http://127.0.0.1:{model_server.rest_port}"),
        InProcessModelClient(model_server.config.model_dir, poll_seconds=0.2),
    ]
    try:
        for client in clients:
            wait_for(lambda c=client: c.status().version == 7)
            served = client.metadata(7)
            assert served.version == 7
            assert served.metadata.threshold == 0.37
            assert served.metadata.behaviour.delay_days == 3
            assert served.metadata.details["toy_weight"] == 0.5
            pinned = client.predict(toy_inputs(5), version=7)
            assert pinned.model_version == 7
    finally:
        for client in clients:
            client.close()


def test_a_version_without_the_metadata_signature_is_a_rejection_not_an_outage(
    model_server: ModelServer,
) -> None:
    import tensorflow as tf

    path = model_server.config.model_dir / "9"
    staging = model_server.config.model_dir / ".tmp-9"
    module = tf.Module()
    module.f = tf.function(lambda x: {"score": x}, input_signature=[tf.TensorSpec([None])])
    tf.saved_model.save(module, str(staging), signatures={"serving_default": module.f})
    staging.rename(path)
    client = GrpcModelClient(f"127.0.0.1:{model_server.grpc_port}", timeout_seconds=5)
    try:
        wait_for(lambda: client.status().version == 9)
        with pytest.raises(ModelRequestError, match="fraud_metadata"):
            client.metadata(9)
    finally:
        client.close()


def test_internal_and_unknown_server_errors_are_transient() -> None:
    """A model server failing internally must be retried, never dead-letter the batch."""
    from concurrent import futures

    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    codes = [grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.INVALID_ARGUMENT]

    class Failing(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):  # noqa: N802
            context.abort(codes.pop(0), "model fault")

    server = grpc.server(futures.ThreadPoolExecutor(2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Failing(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    client = GrpcModelClient(f"127.0.0.1:{port}", timeout_seconds=5)
    try:
        with pytest.raises(ModelUnavailable, match="INTERNAL"):
            client.predict(toy_inputs(2))
        with pytest.raises(ModelUnavailable, match="UNKNOWN"):
            client.predict(toy_inputs(2))
        with pytest.raises(ModelRequestError, match="INVALID_ARGUMENT"):
            client.predict(toy_inputs(2))
    finally:
        client.close()
        server.stop(0)
