"""TF Serving's model config served: version policies, labels over gRPC and REST, reloads.

The paths and fields are the official server's: ``ModelSpec.version_label``,
``/v1/models/<name>/labels/<label>[:predict|/metadata]``; a label resolves to
the version whose number the answers carry. The clients ask by label.
"""

from __future__ import annotations

import json
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

from features import model_config as configs
from scoring.model_server.server import ModelServer, ServerConfig
from tests.fixtures.model_server import toy_inputs, toy_scores

pytestmark = pytest.mark.integration

WEIGHTS = {1: 0.5, 2: 1.5}
AVAILABLE = get_model_status_pb2.ModelVersionStatus.State.AVAILABLE


def wait_for(check: Callable[[], bool], seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


@pytest.fixture
def model_dir(tmp_path: Path, toy_model_cache: Path) -> Path:
    root = tmp_path / "models"
    root.mkdir()
    for version in (1, 2):
        shutil.copytree(toy_model_cache / str(version), root / str(version))
    return root


def write_config(model_dir: Path, versions: list[int], labels: dict[str, int]) -> Path:
    path = model_dir / "models.config"
    configs.write(path, configs.ModelConfig(
        "fraud", str(model_dir), configs.VersionPolicy("specific", versions=tuple(versions)),
        labels))
    return path


@pytest.fixture
def server(model_dir: Path) -> Iterator[ModelServer]:
    config = write_config(model_dir, [1, 2], {"stable": 1, "canary": 2})
    served = ModelServer(ServerConfig(model_config=config, grpc_port=0, rest_port=0,
                                      poll_seconds=0.2))
    served.start()
    yield served
    served.stop(grace_seconds=1.0)


def rest(server: ModelServer, path: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{server.rest_port}{path}", data=data)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


def _request(inputs: dict[str, np.ndarray], label: str | None = None,
             version: int | None = None) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "fraud"
    if label is not None:
        request.model_spec.version_label = label
    if version is not None:
        request.model_spec.version.value = version
    for alias, value in inputs.items():
        request.inputs[alias].CopyFrom(tf.make_tensor_proto(value))
    return request


def test_labels_over_grpc_resolve_to_their_versions(server: ModelServer) -> None:
    inputs = toy_inputs(50, seed=4)
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        predict = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        models = model_service_pb2_grpc.ModelServiceStub(channel)
        for label, version in (("stable", 1), ("canary", 2)):
            response = predict.Predict(_request(inputs, label=label), timeout=10)
            assert response.model_spec.version.value == version
            np.testing.assert_allclose(tf.make_ndarray(response.outputs["score"]),
                                       toy_scores(inputs, WEIGHTS[version]), atol=1e-6)
        latest = predict.Predict(_request(inputs), timeout=10)
        assert latest.model_spec.version.value == 2  # "latest" is the newest served version

        metadata = get_model_metadata_pb2.GetModelMetadataRequest()
        metadata.model_spec.name = "fraud"
        metadata.model_spec.version_label = "stable"
        metadata.metadata_field.append("signature_def")
        assert predict.GetModelMetadata(metadata, timeout=10).model_spec.version.value == 1

        status = get_model_status_pb2.GetModelStatusRequest()
        status.model_spec.name = "fraud"
        assert {(s.version, s.state) for s in
                models.GetModelStatus(status, timeout=10).model_version_status} == {
            (1, AVAILABLE), (2, AVAILABLE)}
        status.model_spec.version_label = "canary"
        assert [s.version for s in
                models.GetModelStatus(status, timeout=10).model_version_status] == [2]

        with pytest.raises(grpc.RpcError) as err:
            predict.Predict(_request(inputs, label="nope"), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details() == "Unrecognized servable version label: nope"


def test_labels_over_rest_use_tf_servings_paths(server: ModelServer) -> None:
    inputs = toy_inputs(20, seed=5)
    body = {"inputs": {k: v.tolist() for k, v in inputs.items()}}
    for label, version in (("stable", 1), ("canary", 2)):
        code, answer = rest(server, f"/v1/models/fraud/labels/{label}:predict", body)
        assert code == 200
        np.testing.assert_allclose(answer["outputs"], toy_scores(inputs, WEIGHTS[version]),
                                   atol=1e-6)
        code, meta = rest(server, f"/v1/models/fraud/labels/{label}/metadata")
        assert code == 200 and meta["model_spec"]["version"] == str(version)
        code, status = rest(server, f"/v1/models/fraud/labels/{label}")
        assert code == 200 and [s["version"] for s in status["model_version_status"]] == [
            str(version)]
    code, answer = rest(server, "/v1/models/fraud/labels/nope:predict", body)
    assert code == 400 and answer == {"error": "Unrecognized servable version label: nope"}
    code, _ = rest(server, "/v1/models/fraud/versions/2:predict", body)
    assert code == 200


def test_a_config_change_moves_labels_and_unloads_versions_no_longer_listed(
    server: ModelServer, model_dir: Path
) -> None:
    assert server.manager.labels == {"stable": 1, "canary": 2}
    write_config(model_dir, [2], {"stable": 2})
    wait_for(lambda: server.manager.labels == {"stable": 2})
    wait_for(lambda: server.manager.serving_versions == [2])
    code, meta = rest(server, "/v1/models/fraud/labels/stable/metadata")
    assert meta["model_spec"]["version"] == "2"
    code, answer = rest(server, "/v1/models/fraud/labels/canary/metadata")
    assert code == 400 and "Unrecognized servable version label: canary" in answer["error"]

    (model_dir / "models.config").write_text("model_config_list { config { name: ")
    wait_for(lambda: "not a TF Serving model config" in server.manager.config_error)
    assert server.manager.labels == {"stable": 2}  # the previous config stays in force
    write_config(model_dir, [1, 2], {"stable": 1})
    wait_for(lambda: server.manager.labels == {"stable": 1} and not server.manager.config_error)


def test_a_label_waits_for_its_version_to_load_and_never_points_at_nothing(
    server: ModelServer, model_dir: Path, toy_model_cache: Path
) -> None:
    write_config(model_dir, [1, 2, 3], {"stable": 3})
    time.sleep(1.0)  # polled several times: version 3 is not on disk yet
    assert server.manager.labels == {"stable": 1}
    assert rest(server, "/v1/models/fraud/labels/stable/metadata")[1]["model_spec"][
        "version"] == "1"
    staging = model_dir / ".tmp-3"
    shutil.copytree(toy_model_cache / "2", staging)
    staging.rename(model_dir / "3")
    wait_for(lambda: server.manager.labels == {"stable": 3})
    assert server.manager.serving_versions == [1, 2, 3]


def test_the_clients_ask_by_label(server: ModelServer, model_dir: Path) -> None:
    from scoring.clients import UnknownLabel, make_client

    inputs = toy_inputs(10, seed=6)
    for url in (f"grpc://127.0.0.1:{server.grpc_port}", f"http://127.0.0.1:{server.rest_port}",
                str(model_dir)):
        client = make_client(url, version_label="stable", poll_seconds=0.2)
        try:
            assert client.status().version == 1
            assert client.status(label="canary").version == 2
            assert client.metadata().version == 1
            assert client.metadata(label="canary").metadata.details["toy_weight"] == 1.5
            prediction = client.predict(inputs)
            assert prediction.model_version == 1
            np.testing.assert_allclose(prediction.scores, toy_scores(inputs, 0.5), atol=1e-6)
            assert client.predict(inputs, label="canary").model_version == 2
            assert client.predict(inputs, version=2).model_version == 2
            missing = client.status(label="nope")
            assert not missing.ready and missing.unknown_label, url
            with pytest.raises(UnknownLabel):
                client.metadata(label="nope")
        finally:
            client.close()


def test_a_label_move_for_the_official_server_loads_the_version_first(
    server: ModelServer, model_dir: Path, toy_model_cache: Path
) -> None:
    """TF Serving refuses to move a label to a version not AVAILABLE: two config changes."""
    from features import model_registry as registry
    from features.errors import InputError
    from scoring.clients.wait import version_state, waiter

    registry.set_canary(model_dir, None)  # stable 1 alone
    wait_for(lambda: server.manager.serving_versions == [1])
    shutil.copytree(toy_model_cache / "2", model_dir / ".tmp-3")
    (model_dir / ".tmp-3").rename(model_dir / "3")
    grpc_url = f"grpc://127.0.0.1:{server.grpc_port}"
    wait = waiter([grpc_url, f"http://127.0.0.1:{server.rest_port}"], "fraud", 30)
    seen: list[tuple[dict[str, int], tuple[int, ...], str]] = []

    def spy(version: int) -> None:
        during = configs.read(model_dir / "models.config")
        wait(version)
        seen.append((dict(during.labels), during.served_versions,
                     version_state(grpc_url, "fraud", version)))

    change = registry.promote(model_dir, 3, wait=spy)
    assert seen == [({"stable": 1}, (1, 3), "AVAILABLE")]  # the label moved only afterwards
    assert change.config.labels == {"stable": 3} and change.config.served_versions == (1, 3)
    wait_for(lambda: server.manager.labels == {"stable": 3})

    (model_dir / ".tmp-4").mkdir()
    (model_dir / ".tmp-4" / "saved_model.pb").write_bytes(b"not a graph")
    (model_dir / ".tmp-4").rename(model_dir / "4")
    with pytest.raises(InputError, match="did not serve version 4 within 1 s"):
        registry.promote(model_dir, 4, wait=waiter([grpc_url], "fraud", 1))
    config = configs.read(model_dir / "models.config")
    assert config.labels == {"stable": 3} and 4 in config.served_versions
    assert registry.read_decisions(model_dir)[-1]["action"] == "label_move_abandoned"
    assert server.manager.labels == {"stable": 3}


def test_the_command_refuses_a_bad_config_before_loading_anything(tmp_path: Path) -> None:
    import subprocess
    import sys

    fraud = str(Path(sys.executable).with_name("fraud"))
    bad = tmp_path / "models.config"
    bad.write_text("model_config_list { config { name: 'fraud' base_path: '/nowhere' } }")
    done = subprocess.run([fraud, "model-server", "--model-config", str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "model_platform" in done.stderr
    both = subprocess.run([fraud, "model-server", "--model-config", str(bad), "--model-dir",
                           str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert both.returncode == 2 and "either --model-dir DIR or --model-config FILE" in both.stderr
