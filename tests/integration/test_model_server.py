"""The model server speaks TF Serving's gRPC and REST APIs, over real TCP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
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

from features import spec
from scoring.model_server.server import ModelServer
from tests.fixtures.model_server import (
    add_cached_version,
    export_toy_model,
    toy_inputs,
    toy_scores,
)

pytestmark = pytest.mark.integration

State = get_model_status_pb2.ModelVersionStatus.State


@pytest.fixture
def channel(model_server: ModelServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{model_server.grpc_port}") as chan:
        yield chan


@pytest.fixture
def predict(channel: grpc.Channel) -> Callable[..., predict_pb2.PredictResponse]:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

    def call(request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
        return stub.Predict(request, timeout=10)

    return call


def make_request(
    inputs: dict[str, np.ndarray], name: str = "fraud", version: int | None = None
) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = version
    for alias, value in inputs.items():
        request.inputs[alias].CopyFrom(tf.make_tensor_proto(value))
    return request


def scores_of(response: predict_pb2.PredictResponse) -> np.ndarray:
    return tf.make_ndarray(response.outputs["score"])


def wait_for(check: Callable[[], bool], seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def rest(server: ModelServer, path: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{server.rest_port}{path}", data=data)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


def test_predict_equals_calling_the_savedmodel(predict, toy_model_dir: Path) -> None:
    inputs = toy_inputs(300, seed=1)
    response = predict(make_request(inputs))

    loaded = tf.saved_model.load(str(toy_model_dir / "1"))
    direct = loaded.signatures["serving_default"](
        **{k: tf.constant(v, dtype=spec.model_input_dtypes()[k]) for k, v in inputs.items()}
    )["score"].numpy()
    served = scores_of(response)
    assert served.dtype == np.float32
    assert served.shape == (300,)
    np.testing.assert_allclose(served, direct, rtol=0, atol=1e-7)
    np.testing.assert_allclose(served, toy_scores(inputs, 0.5), atol=1e-6)
    assert response.model_spec.name == "fraud"
    assert response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"


def test_new_version_is_loaded_and_served(
    predict, model_server: ModelServer, toy_model_dir: Path, toy_model_cache: Path
) -> None:
    inputs = toy_inputs(50, seed=2)
    assert predict(make_request(inputs)).model_spec.version.value == 1

    add_cached_version(toy_model_cache, toy_model_dir, 2)
    wait_for(lambda: predict(make_request(inputs)).model_spec.version.value == 2)

    response = predict(make_request(inputs))
    np.testing.assert_allclose(scores_of(response), toy_scores(inputs, 1.5), atol=1e-6)
    states = {s.version: s.state for s in model_server.manager.statuses()}
    assert states == {2: "AVAILABLE", 1: "END"}
    with pytest.raises(grpc.RpcError) as err:
        predict(make_request(inputs, version=1))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_specific_version(predict) -> None:
    inputs = toy_inputs(5)
    assert predict(make_request(inputs, version=1)).model_spec.version.value == 1
    with pytest.raises(grpc.RpcError) as err:
        predict(make_request(inputs, version=7))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert err.value.details() == "Servable not found for request: Specific(fraud, 7)"


def test_unknown_model_is_not_found(predict) -> None:
    with pytest.raises(grpc.RpcError) as err:
        predict(make_request(toy_inputs(5), name="foo"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert err.value.details() == "Servable not found for request: Latest(foo)"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda x: x.pop(spec.AMOUNT), "missing inputs: amount"),
        (lambda x: x.update(bogus=np.zeros(len(x[spec.AMOUNT]), np.float32)), "alias not found"),
        (lambda x: x.update(amount=x[spec.AMOUNT].astype(np.float64)), "arg amount to be float"),
        (lambda x: x.update(country=np.zeros(len(x[spec.AMOUNT]), np.float32)), "arg country"),
        (lambda x: x.update(amount=np.zeros((len(x[spec.AMOUNT]), 2), np.float32)), "1-D"),
        (lambda x: x.update(amount=x[spec.AMOUNT][:2]), "different batch sizes"),
    ],
)
def test_bad_input_is_invalid_argument(predict, change, expected: str) -> None:
    inputs = toy_inputs(5)
    change(inputs)
    with pytest.raises(grpc.RpcError) as err:
        predict(make_request(inputs))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert expected in err.value.details()


def test_unknown_signature_is_refused(predict) -> None:
    request = make_request(toy_inputs(3))
    request.model_spec.signature_name = "nope"
    with pytest.raises(grpc.RpcError) as err:
        predict(request)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert '"nope" not found' in err.value.details()


def test_get_model_status(channel: grpc.Channel) -> None:
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "fraud"
    response = stub.GetModelStatus(request, timeout=10)
    assert [(s.version, s.state) for s in response.model_version_status] == [(1, State.AVAILABLE)]

    request.model_spec.name = "foo"
    with pytest.raises(grpc.RpcError) as err:
        stub.GetModelStatus(request, timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "Could not find any versions of model foo" in err.value.details()


def test_get_model_metadata(channel: grpc.Channel) -> None:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "fraud"
    response = stub.GetModelMetadata(request, timeout=10)
    defs = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(defs)
    sig = defs.signature_def["serving_default"]
    assert set(sig.inputs) == set(spec.MODEL_INPUTS)
    assert set(sig.outputs) == {"score"}
    assert response.model_spec.version.value == 1


def test_partial_temp_and_broken_versions_are_not_served(
    predict, model_server: ModelServer, toy_model_dir: Path, toy_model_cache: Path
) -> None:
    inputs = toy_inputs(5)
    (toy_model_dir / "3" / "variables").mkdir(parents=True)  # export still running
    tmp = toy_model_dir / ".tmp-4"
    add_cached_version(toy_model_cache, toy_model_dir, 2).rename(tmp)  # complete, not renamed
    time.sleep(1.0)  # five polls
    assert predict(make_request(inputs)).model_spec.version.value == 1

    broken = toy_model_dir / "5"
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"not a graph")
    wait_for(lambda: any(s.version == 5 and s.error for s in model_server.manager.statuses()))
    assert predict(make_request(inputs)).model_spec.version.value == 1

    tmp.rename(toy_model_dir / "6")  # the writer finishes: the version appears atomically
    wait_for(lambda: predict(make_request(inputs)).model_spec.version.value == 6)


def test_failing_warmup_fails_the_load(
    predict, model_server: ModelServer, toy_model_dir: Path, tmp_path: Path
) -> None:
    from scoring.model_server.warmup import write_warmup_requests

    staging = tmp_path / "staging"
    staging.mkdir()
    path = export_toy_model(staging, 2, 1.5, warmup=False)
    bad = toy_inputs(3)
    bad.pop(spec.AMOUNT)
    write_warmup_requests(path, [bad])
    path.rename(toy_model_dir / "2")

    wait_for(lambda: any(s.version == 2 and s.error for s in model_server.manager.statuses()))
    status = next(s for s in model_server.manager.statuses() if s.version == 2)
    assert "missing inputs: amount" in status.error
    assert predict(make_request(toy_inputs(3))).model_spec.version.value == 1


def test_rest_status_and_metadata(model_server: ModelServer) -> None:
    code, body = rest(model_server, "/v1/models/fraud")
    assert code == 200
    assert body == {
        "model_version_status": [
            {
                "version": "1",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }
    assert rest(model_server, "/v1/models/fraud/versions/1")[1] == body
    code, body = rest(model_server, "/v1/models/fraud/versions/9")
    assert code == 404
    assert body == {"error": "Could not find version 9 of model fraud"}

    code, body = rest(model_server, "/v1/models/fraud/metadata")
    assert code == 200
    assert body["model_spec"] == {"name": "fraud", "signature_name": "", "version": "1"}
    serving = body["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert set(serving["inputs"]) == set(spec.MODEL_INPUTS)


def test_rest_predict_row_and_columnar_formats(model_server: ModelServer) -> None:
    inputs = toy_inputs(20, seed=3)
    expected = toy_scores(inputs, 0.5)
    columns = {k: v.tolist() for k, v in inputs.items()}
    rows = [{k: columns[k][i] for k in columns} for i in range(20)]

    code, body = rest(model_server, "/v1/models/fraud:predict", {"instances": rows})
    assert code == 200
    np.testing.assert_allclose(body["predictions"], expected, atol=1e-6)

    code, body = rest(model_server, "/v1/models/fraud/versions/1:predict", {"inputs": columns})
    assert code == 200
    np.testing.assert_allclose(body["outputs"], expected, atol=1e-6)


def test_rest_errors(model_server: ModelServer) -> None:
    rows = [{k: v.tolist()[0] for k, v in toy_inputs(1).items()}]
    code, body = rest(model_server, "/v1/models/foo:predict", {"instances": rows})
    assert (code, body) == (404, {"error": "Servable not found for request: Latest(foo)"})

    del rows[0]["country"]
    code, body = rest(model_server, "/v1/models/fraud:predict", {"instances": rows})
    assert code == 400
    assert "country" in body["error"]

    columns = {k: v.tolist() for k, v in toy_inputs(2).items()}
    columns["amount"] = ["ten", "eleven"]
    code, body = rest(model_server, "/v1/models/fraud:predict", {"inputs": columns})
    assert code == 400
    assert "amount" in body["error"]

    code, body = rest(model_server, "/v1/models/fraud:predict", {"nothing": 1})
    assert code == 400
    assert "instances" in body["error"]


def test_cli_serves_on_free_ports_and_stops_on_sigterm(
    toy_model_dir: Path, toy_model_cache: Path
) -> None:
    from scoring.clients.grpc_client import GrpcModelClient

    command = [
        str(Path(sys.executable).with_name("fraud")),
        "model-server",
        "--model-dir",
        str(toy_model_dir),
        "--grpc-port",
        "0",
        "--rest-port",
        "0",
        "--poll-seconds",
        "0.2",
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        assert process.stdout is not None
        ready = json.loads(process.stdout.readline())
        assert ready["version"] == 1
        assert ready["grpc_port"] > 0 and ready["rest_port"] > 0
        client = GrpcModelClient(f"127.0.0.1:{ready['grpc_port']}")
        inputs = toy_inputs(10)
        prediction = client.predict(inputs)
        assert prediction.model_version == 1
        np.testing.assert_allclose(prediction.scores, toy_scores(inputs, 0.5), atol=1e-6)
        add_cached_version(toy_model_cache, toy_model_dir, 2)
        wait_for(lambda: client.predict(inputs).model_version == 2)
        client.close()
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert f"serving model fraud version 1 on grpc :{ready['grpc_port']}" in stderr


def test_cli_rejects_a_missing_model_dir(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("fraud")),
            "model-server",
            "--model-dir",
            str(tmp_path / "none"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().endswith(f"model directory not found: {tmp_path / 'none'}")


def test_removed_latest_version_falls_back_to_the_previous_one(
    predict, toy_model_dir: Path, toy_model_cache: Path
) -> None:
    import shutil

    inputs = toy_inputs(5)
    add_cached_version(toy_model_cache, toy_model_dir, 2)
    wait_for(lambda: predict(make_request(inputs)).model_spec.version.value == 2)
    shutil.rmtree(toy_model_dir / "2")
    wait_for(lambda: predict(make_request(inputs)).model_spec.version.value == 1)
    np.testing.assert_allclose(
        scores_of(predict(make_request(inputs))), toy_scores(inputs, 0.5), atol=1e-6
    )
