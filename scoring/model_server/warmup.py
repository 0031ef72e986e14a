"""SavedModel warmup records (``assets.extra/tf_serving_warmup_requests``), as in TF Serving.

The file is a TFRecord of ``PredictionLog`` protos; TF Serving replays them when it
loads a version so the first real request does not pay for graph tracing.
A failing warmup request fails the load, as in TF Serving.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from features.model_dir import ASSETS_EXTRA, WARMUP_FILE
from scoring.model_server.protos import predict
from scoring.model_server.servable import DEFAULT_SIGNATURE, Servable

#: TF Serving reads at most this many warmup records.
MAX_WARMUP_RECORDS = 1000


def write_warmup_requests(
    version_dir: str | Path,
    batches: Sequence[Mapping[str, np.ndarray]],
    model_name: str = "fraud",
    signature_name: str = DEFAULT_SIGNATURE,
) -> Path:
    """Write one PredictLog per batch into ``version_dir/assets.extra``; return the file."""
    path = Path(version_dir) / ASSETS_EXTRA / WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for batch in batches:
            request = predict_pb2.PredictRequest()
            request.model_spec.name = model_name
            request.model_spec.signature_name = signature_name
            for alias, value in batch.items():
                request.inputs[alias].CopyFrom(tf.make_tensor_proto(value))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(log.SerializeToString())
    return path


def read_warmup_requests(version_dir: str | Path) -> list[predict_pb2.PredictRequest]:
    """Read the Predict requests of a version's warmup file; none without a file."""
    path = Path(version_dir) / ASSETS_EXTRA / WARMUP_FILE
    if not path.is_file():
        return []
    requests = []
    for record in tf.data.TFRecordDataset(str(path)).take(MAX_WARMUP_RECORDS):
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        kind = log.WhichOneof("log_type")
        if kind != "predict_log":
            raise ValueError(f"{path}: unsupported warmup record type {kind!r}")
        requests.append(log.predict_log.request)
    return requests


def run_warmup(servable: Servable) -> int:
    """Replay the version's warmup requests; return how many ran. Errors propagate."""
    requests = read_warmup_requests(servable.path)
    for request in requests:
        predict(servable, request)
    return len(requests)
