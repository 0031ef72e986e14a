"""Version loading of the model server: incomplete copies, load retries, generic errors.

In-process servers over real files and real sockets; the manager's own clock
(polls, settle time, retry interval) is shortened per test.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

import scoring.model_server.manager as manager_module
from scoring.model_server.manager import ModelManager, VersionState
from scoring.model_server.servable import Servable
from scoring.model_server.server import ModelServer, ServerConfig
from tests.fixtures.model_server import toy_inputs, toy_scores

pytestmark = pytest.mark.integration


def wait_for(check: Callable[[], bool], seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def status_of(manager: ModelManager, version: int) -> Any:
    return next((s for s in manager.statuses() if s.version == version), None)


def rest(server: ModelServer, path: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{server.rest_port}{path}", data=data)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


def make_request(inputs: dict[str, np.ndarray]) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "fraud"
    for alias, value in inputs.items():
        request.inputs[alias].CopyFrom(tf.make_tensor_proto(value))
    return request


@pytest.fixture
def started() -> Iterator[Callable[..., ModelServer]]:
    servers: list[ModelServer] = []

    def start(model_dir: Path, **settings: Any) -> ModelServer:
        server = ModelServer(
            ServerConfig(model_dir=model_dir, grpc_port=0, rest_port=0, **settings)
        )
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop(grace_seconds=1.0)


def slow_copy(source: Path, target: Path, during: Callable[[], None]) -> None:
    """Copy a SavedModel the way ``cp -a`` does, slowly: graph first, each file in pieces.

    Every piece is followed by a short pause, ``during()`` and a reset of the file's
    mtime to the source's (so only ctime says the copy is fresh).
    """
    order = sorted(
        (p for p in source.rglob("*") if p.is_file()), key=lambda p: p.name != "saved_model.pb"
    )
    for path in order:
        destination = target / path.relative_to(source)
        destination.parent.mkdir(parents=True, exist_ok=True)
        data = path.read_bytes()
        stat = path.stat()
        pieces = 6
        with destination.open("wb") as out:
            for index in range(pieces):
                out.write(data[index * len(data) // pieces : (index + 1) * len(data) // pieces])
                out.flush()
                os.utime(destination, ns=(stat.st_atime_ns, stat.st_mtime_ns))
                time.sleep(0.05)
                during()


def test_a_version_being_copied_is_not_loaded_until_complete(
    started: Callable[..., ModelServer],
    toy_model_dir: Path,
    toy_model_cache: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = started(toy_model_dir, poll_seconds=0.1, settle_seconds=1.0)
    assert server.manager.serving_version == 1
    seen: set[str] = set()

    def check() -> None:
        status = status_of(server.manager, 2)
        if status is not None:
            seen.add(status.state.value)
            assert status.state is VersionState.START and not status.error, status
        assert server.manager.serving_version == 1

    with caplog.at_level(logging.INFO, logger="scoring.model_server.manager"):
        slow_copy(toy_model_cache / "2", toy_model_dir / "2", check)
        assert seen == {"START"}  # seen, and waiting for the copy to end
        wait_for(lambda: server.manager.serving_version == 2)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    inputs = toy_inputs(20)
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
            make_request(inputs), timeout=10
        )
    np.testing.assert_allclose(
        tf.make_ndarray(response.outputs["score"]), toy_scores(inputs, 1.5), atol=1e-6
    )


def test_a_version_copied_at_startup_is_waited_for(
    tmp_path: Path, toy_model_cache: Path, started: Callable[..., ModelServer]
) -> None:
    model_dir = tmp_path / "models"
    shutil.copytree(toy_model_cache / "1", model_dir / "1")  # fresh: ctime is now
    before = time.monotonic()
    server = started(model_dir, poll_seconds=5.0, settle_seconds=0.5)
    assert server.manager.serving_version == 1  # start() waited for it to settle
    assert 0.3 < time.monotonic() - before < 5.0


def test_a_corrupt_version_fixed_later_is_loaded(
    started: Callable[..., ModelServer],
    toy_model_dir: Path,
    toy_model_cache: Path,
) -> None:
    server = started(toy_model_dir, poll_seconds=0.1, settle_seconds=0.2)
    staging = toy_model_dir / ".tmp-2"
    shutil.copytree(toy_model_cache / "2", staging)
    graph = (staging / "saved_model.pb").read_bytes()
    (staging / "saved_model.pb").write_bytes(b"not a graph")
    staging.rename(toy_model_dir / "2")

    wait_for(lambda: bool(getattr(status_of(server.manager, 2), "error", "")))
    status = status_of(server.manager, 2)
    expected = (
        "Loading servable: {name: fraud version: 2} failed: the SavedModel could not be "
        "loaded (details in the server log) (attempt 1 of 6, retrying in 60 s)"
    )
    assert (status.state, status.error) == (VersionState.END, expected)
    code, body = rest(server, "/v1/models/fraud")
    assert code == 200
    assert body["model_version_status"][0] == {
        "version": "2",
        "state": "END",
        "status": {"error_code": "UNKNOWN", "error_message": expected},
    }
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = "fraud"
        request.model_spec.version.value = 2
        answer = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request)
    assert answer.model_version_status[0].status.error_message == expected
    assert str(toy_model_dir) not in json.dumps(body)

    time.sleep(1.5)  # fifteen polls: no retry before the interval, and no giving up
    assert status_of(server.manager, 2).error == expected
    assert server.manager.serving_version == 1

    (toy_model_dir / "2" / "saved_model.pb").write_bytes(graph)  # the writer fixes it
    wait_for(lambda: server.manager.serving_version == 2)
    assert status_of(server.manager, 2).error == ""


class _Flaky:
    """Stands in for Servable: fails while ``failing`` says so, then loads for real."""

    def __init__(self, failing: Callable[[int], bool]) -> None:
        self.calls: list[float] = []
        self.failing = failing

    def __call__(self, model_name: str, version: int, path: Path) -> Servable:
        self.calls.append(time.monotonic())
        if self.failing(len(self.calls)):
            raise OSError(f"{path}/variables: Resource temporarily unavailable")
        return Servable(model_name, version, path)


def test_a_transient_load_failure_is_retried_after_the_interval(
    toy_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flaky = _Flaky(lambda call: call <= 2)
    monkeypatch.setattr(manager_module, "Servable", flaky)
    manager = ModelManager(
        "fraud",
        toy_model_dir,
        poll_seconds=0.05,
        settle_seconds=0,
        max_load_retries=3,
        load_retry_interval=0.4,
    )
    manager.start()
    try:
        status = status_of(manager, 1)
        assert status.state is VersionState.END
        assert status.error.endswith("(attempt 1 of 4, retrying in 0.4 s)")
        assert str(toy_model_dir) not in status.error and "Resource" not in status.error
        wait_for(lambda: manager.serving_version == 1)
    finally:
        manager.stop()
    assert len(flaky.calls) == 3
    gaps = np.diff(flaky.calls)
    assert (gaps >= 0.4).all(), gaps


def test_a_version_that_keeps_failing_is_given_up_until_its_files_change(
    toy_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = True
    flaky = _Flaky(lambda call: broken)
    monkeypatch.setattr(manager_module, "Servable", flaky)
    manager = ModelManager(
        "fraud",
        toy_model_dir,
        poll_seconds=0.05,
        settle_seconds=0,
        max_load_retries=2,
        load_retry_interval=0.1,
    )
    manager.start()
    try:
        wait_for(lambda: len(flaky.calls) == 3)
        time.sleep(1.0)  # twenty polls: no fourth attempt
        assert len(flaky.calls) == 3
        assert status_of(manager, 1).error.endswith(
            "(attempt 3 of 3, not retried unless its files change)"
        )
        assert manager.serving_version is None

        broken = False
        (toy_model_dir / "1" / "assets.extra" / "note.txt").write_text("re-exported")
        wait_for(lambda: manager.serving_version == 1)
        assert len(flaky.calls) == 4
    finally:
        manager.stop()


def test_internal_failures_are_generic_and_logged_without_their_text(
    model_server: ModelServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    text = "/srv/secret/path/model.py line 7: customer 4111111111111111"

    def broken(self: Servable, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(text)

    monkeypatch.setattr(Servable, "predict", broken)
    inputs = toy_inputs(3)
    generic = "Internal error; see the model server's log"
    columns = {k: v.tolist() for k, v in inputs.items()}
    caplog.set_level(logging.ERROR)
    with grpc.insecure_channel(f"127.0.0.1:{model_server.grpc_port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.Predict(make_request(inputs), timeout=10)
    assert (err.value.code(), err.value.details()) == (grpc.StatusCode.INTERNAL, generic)
    code, body = rest(model_server, "/v1/models/fraud:predict", {"inputs": columns})
    assert (code, body) == (500, {"error": generic})
    assert rest(model_server, "/v1/models/fraud")[0] == 200  # still serving
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "failed with RuntimeError" in logged and "broken" in logged  # type and stack
    assert "/srv/secret" not in logged and "4111" not in logged


def test_metadata_is_answered_after_the_version_files_are_gone(
    model_server: ModelServer, toy_model_dir: Path
) -> None:
    (toy_model_dir / "1" / "saved_model.pb").unlink()
    (toy_model_dir / "1" / "saved_model.pbtxt").write_text("")  # still a version folder
    time.sleep(0.5)
    assert model_server.manager.serving_version == 1
    with grpc.insecure_channel(f"127.0.0.1:{model_server.grpc_port}") as channel:
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        request.model_spec.name = "fraud"
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).GetModelMetadata(
            request, timeout=10
        )
    defs = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(defs)
    assert "serving_default" in defs.signature_def
    code, body = rest(model_server, "/v1/models/fraud/metadata")
    assert code == 200 and "serving_default" in json.dumps(body)
