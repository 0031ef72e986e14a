"""Export the model as a self-contained SavedModel in TF Serving's layout.

``<model_dir>/<version>/``: ``serving_default`` takes exactly
``features.spec.MODEL_INPUTS`` (1-D batched, dtypes from
``model_input_dtypes()``), applies the TFT graph (its vocabularies travel as
assets) and the network, and returns ``{"score": float32 [None]}``.
``fraud_metadata`` takes ``request`` (any strings) and returns the version's
:class:`~features.model_dir.ModelMetadata` as JSON, one copy per row, read
from a SavedModel asset: a scorer learns the threshold and the behavioural
configuration through TF Serving's API alone. ``assets.extra/`` holds warm-up
requests and ``metadata.json`` (the same JSON).

The version is written under a hidden ``.tmp-*`` folder and renamed into place
in one step, so a server polling the directory never sees half a model.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from features import spec
from features.model_dir import (
    ASSETS_EXTRA,
    METADATA_ASSET,
    METADATA_OUTPUT,
    METADATA_REQUEST,
    METADATA_SIGNATURE,
    WARMUP_FILE,
    ModelMetadata,
    write_metadata,
)
from training.model import fraud_probability

#: Model name written in the warm-up requests (TF Serving's ``--model_name``).
MODEL_NAME = "fraud"
SIGNATURE = "serving_default"

Inputs = Mapping[str, np.ndarray]


def serving_signature() -> dict[str, tf.TensorSpec]:
    """The raw inputs of ``serving_default``: one batched 1-D tensor per model input."""
    return {
        name: tf.TensorSpec([None], tf.as_dtype(dtype), name=name)
        for name, dtype in spec.model_input_dtypes().items()
    }


def serving_module(model: Any, tft_output: Any, positive_weight: float) -> tf.Module:
    """A ``tf.Module`` whose ``serve`` function scores raw inputs (TFT graph + network).

    ``serve`` is a closure, not a method: a ``tf.function`` method with ``self``
    fails signature checking in TF 2.21 (``docs/training.md``).
    """
    module = tf.Module()
    module.model = model
    module.transform = tft_output.transform_features_layer()
    names = [t.name for t in model.inputs]

    @tf.function(input_signature=[serving_signature()])
    def serve(inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        transformed = module.transform(inputs)
        logits = module.model({name: transformed[name] for name in names}, training=False)
        return {"score": tf.reshape(fraud_probability(logits, positive_weight), [-1])}

    module.serve = serve
    return module


def attach_metadata_signature(module: tf.Module, scratch_dir: Path) -> None:
    """Give ``module`` the ``fraud_metadata`` signature, reading the metadata asset.

    The asset is a placeholder at save time; :func:`export` overwrites the
    saved copy with the real metadata before the version is published (the
    threshold is only known once the exported model has scored the
    validation days). The function reads the file when called, so it always
    returns what the published version holds.
    """
    placeholder = scratch_dir / METADATA_ASSET
    placeholder.write_text("{}", encoding="utf-8")
    module.metadata_asset = tf.saved_model.Asset(str(placeholder))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=METADATA_REQUEST)])
    def metadata(request: tf.Tensor) -> dict[str, tf.Tensor]:
        text = tf.io.read_file(module.metadata_asset.asset_path)
        return {METADATA_OUTPUT: tf.fill(tf.shape(request), text)}

    module.metadata = metadata


def signatures_of(module: tf.Module) -> dict[str, Any]:
    """The signatures to save: ``serving_default`` and, when attached, ``fraud_metadata``."""
    signatures = {SIGNATURE: module.serve}
    if hasattr(module, "metadata"):
        signatures[METADATA_SIGNATURE] = module.metadata
    return signatures


def next_version(model_dir: Path) -> int:
    """One more than the largest integer-named folder in ``model_dir`` (1 when none)."""
    versions = [int(p.name) for p in model_dir.iterdir() if p.name.isdigit()]
    return max(versions, default=0) + 1


def _warmup_requests(rows: Inputs, path: Path) -> None:
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    request = predict_pb2.PredictRequest(
        model_spec=model_pb2.ModelSpec(name=MODEL_NAME, signature_name=SIGNATURE)
    )
    for name, values in rows.items():
        request.inputs[name].CopyFrom(
            tf.make_tensor_proto(values, dtype=tf.as_dtype(spec.model_input_dtypes()[name]))
        )
    log = prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request)
    )
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(log.SerializeToString())


def load_scorer(path: str | Path) -> Callable[[Inputs], np.ndarray]:
    """Load an export's ``serving_default`` as a function: model inputs -> scores."""
    loaded = tf.saved_model.load(str(path))
    fn = loaded.signatures[SIGNATURE]

    def score(inputs: Inputs) -> np.ndarray:
        tensors = {n: tf.constant(inputs[n]) for n in spec.MODEL_INPUTS}
        return np.asarray(fn(**tensors)["score"].numpy(), dtype=np.float32)

    score.loaded = loaded  # type: ignore[attr-defined]  # keep the model alive with the closure
    return score


def export(
    module: tf.Module,
    model_dir: Path,
    warmup_rows: Inputs,
    finish_metadata: Callable[[Callable[[Inputs], np.ndarray]], ModelMetadata],
) -> Path:
    """Write ``module`` as the next version of ``model_dir`` and return its path.

    ``finish_metadata`` is called with the *exported* model's scorer (loaded
    back from the temporary folder) so figures in the metadata, such as the
    alert threshold, come from exactly what will be served.
    """
    model_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=model_dir))
    try:
        with tempfile.TemporaryDirectory() as scratch:
            attach_metadata_signature(module, Path(scratch))
            tf.saved_model.save(module, str(staging), signatures=signatures_of(module))
        extra = staging / ASSETS_EXTRA
        extra.mkdir()
        _warmup_requests(warmup_rows, extra / WARMUP_FILE)
        write_metadata(staging, finish_metadata(load_scorer(staging)))
        return publish(staging, model_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def publish(staging: Path, model_dir: Path) -> Path:
    """Rename ``staging`` to the next free version; retry if another writer took it.

    ``staging`` must be on the same file system (a folder inside ``model_dir``).
    """
    for _ in range(100):
        target = model_dir / str(next_version(model_dir))
        try:
            os.rename(staging, target)  # fails if a non-empty target appeared meanwhile
        except OSError:
            continue
        return target
    raise RuntimeError(f"could not publish a new version in {model_dir}")
