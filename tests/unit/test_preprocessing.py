"""preprocessing_fn on a three-row dataset against hand-computed outputs.

In the style of tensorflow/transform's ``examples/simple_example_test.py``, but
fed the way training feeds it: Arrow record batches through TFXIO.
"""

from __future__ import annotations

import json
import math

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
import tensorflow_transform.beam as tft_beam

from features import spec
from features.preprocessing import TRANSFORMS, Flag, Numeric, raw_feature_spec, source_of

AMOUNTS = [10.0, 1000.0, 100.0]  # the fraud (label 1) is the largest amount
SERVED_AMOUNT = 150.0  # above every genuine training amount (100)
CATEGORIES = ["food", "travel", "food"]
CHANNELS = ["pos", "pos", "ecom"]
HOURS = [0.0, 13.0, 23.0]
RISK_7D = [0.0, 0.5, 2.0]  # 2.0 is out of range: clipped to 1
NB_TX_1D = [0.0, 1.0, 3.0]


def _columns(n: int) -> dict[str, pa.Array]:
    columns: dict[str, pa.Array] = {}
    for name, dtype in spec.model_input_dtypes().items():
        if dtype == "string":
            columns[name] = pa.array([f"{name}-{i}" for i in range(n)])
        else:
            columns[name] = pa.array(np.ones(n, dtype=np.float32))
    return columns


def _dataset() -> dict[str, pa.Array]:
    columns = _columns(3)
    columns[spec.AMOUNT] = pa.array(AMOUNTS, pa.float32())
    columns[spec.MERCHANT_CATEGORY] = pa.array(CATEGORIES)
    columns[spec.COUNTRY] = pa.array(["BE", "BE", "BE"])
    columns[spec.CHANNEL] = pa.array(CHANNELS)
    columns["tx_hour"] = pa.array(HOURS, pa.float32())
    columns["terminal_risk_7d"] = pa.array(RISK_7D, pa.float32())
    columns["customer_nb_tx_1d"] = pa.array(NB_TX_1D, pa.float32())
    columns["tx_is_night"] = pa.array([1.0, 0.0, 0.0], pa.float32())
    return columns


def _zscore(values: list[float]) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    return (x - x.mean()) / x.std()  # TFT uses the population variance


def _run(tmp_path, unseen_category: str) -> tuple[dict[str, list], dict[str, list]]:
    from features.preprocessing import preprocessing_fn
    from training.record_batches import tensor_adapter_config, to_record_batches

    labels = pa.array([0, 1, 0], pa.int64())
    train = to_record_batches(_dataset(), labels, batch_size=2)
    extra = _columns(1)
    extra[spec.MERCHANT_CATEGORY] = pa.array([unseen_category])
    extra[spec.CHANNEL] = pa.array(["pos"])
    extra[spec.COUNTRY] = pa.array(["BE"])
    extra[spec.AMOUNT] = pa.array([SERVED_AMOUNT], pa.float32())
    serve = to_record_batches(extra, None, batch_size=10)
    def collect(path):
        # Beam pickles functions: results travel back through a file, not a closure.
        def _collect(batches):
            merged: dict[str, list] = {}
            for record_batch, _ in batches:
                for name, values in record_batch.to_pydict().items():
                    merged.setdefault(name, []).extend(v[0] for v in values)
            path.write_text(json.dumps(merged))

        return _collect

    with beam.Pipeline() as pipeline, tft_beam.Context(temp_dir=str(tmp_path / "tft")):
        data = pipeline | "CreateTrain" >> beam.Create(train)
        (transformed, _), transform_fn = (
            data,
            tensor_adapter_config(labelled=True),
        ) | "AnalyzeAndTransform" >> tft_beam.AnalyzeAndTransformDataset(
            preprocessing_fn, output_record_batches=True
        )
        serving = pipeline | "CreateServing" >> beam.Create(serve)
        (served, _) = (
            (serving, tensor_adapter_config(labelled=False)),
            transform_fn,
        ) | "Transform" >> tft_beam.TransformDataset(
            exclude_outputs=[spec.LABEL_KEY], output_record_batches=True
        )
        _ = transformed | "CollectTrain" >> beam.combiners.ToList() | "WriteTrain" >> beam.Map(
            collect(tmp_path / "train.json")
        )
        _ = served | "CollectServing" >> beam.combiners.ToList() | "WriteServing" >> beam.Map(
            collect(tmp_path / "serve.json")
        )
    return (
        json.loads((tmp_path / "train.json").read_text()),
        json.loads((tmp_path / "serve.json").read_text()),
    )


def test_preprocessing_fn_on_three_rows(tmp_path):
    train, serve = _run(tmp_path, unseen_category="never-seen")

    np.testing.assert_allclose(
        train[spec.AMOUNT], _zscore([math.log1p(a) for a in AMOUNTS]), rtol=1e-5
    )
    np.testing.assert_allclose(
        train["customer_nb_tx_1d"], _zscore([math.log1p(a) for a in NB_TX_1D]), rtol=1e-5
    )
    np.testing.assert_allclose(train["amount_linear"], _zscore(AMOUNTS), rtol=1e-5)
    # Risk: clipped to [0, 1], not rescaled.
    assert train["terminal_risk_7d"] == pytest.approx([0.0, 0.5, 1.0])
    # Vocabulary ids by decreasing frequency; the single country gets id 0.
    assert train[spec.MERCHANT_CATEGORY] == [0, 1, 0]
    assert train[spec.CHANNEL] == [0, 0, 1]
    assert train[spec.COUNTRY] == [0, 0, 0]
    # Hour of day becomes a bucket id.
    assert train["tx_hour"] == [0, 13, 23]
    assert train["tx_is_night"] == [1.0, 0.0, 0.0]
    assert train[spec.LABEL_KEY] == [0, 1, 0]
    # Above every genuine amount of the training data (10 and 100): the fraud's 1000.
    assert train["amount_above_genuine_max"] == [0.0, 1.0, 0.0]
    # Identifiers and the raw timestamp are not model features.
    for unused in (spec.TRANSACTION_ID, spec.CUSTOMER_ID, spec.TERMINAL_ID, spec.TIMESTAMP):
        assert unused not in train

    # At serving time an unseen category falls into the OOV bucket (id = vocab size),
    # and the analysed mean/variance of the training data are reused.
    assert serve[spec.MERCHANT_CATEGORY] == [2]
    assert spec.LABEL_KEY not in serve
    mean = np.mean([math.log1p(a) for a in AMOUNTS])
    std = np.std([math.log1p(a) for a in AMOUNTS])
    expected = (math.log1p(SERVED_AMOUNT) - mean) / std
    assert serve[spec.AMOUNT][0] == pytest.approx(expected, rel=1e-5)
    # The genuine maximum was analysed with the label; serving needs none.
    assert serve["amount_above_genuine_max"] == [1.0]


def test_every_model_input_is_transformed_or_deliberately_unused():
    used = {source_of(name) for name in TRANSFORMS}
    assert used | {spec.TRANSACTION_ID, spec.CUSTOMER_ID, spec.TERMINAL_ID, spec.TIMESTAMP} == set(
        spec.MODEL_INPUTS
    )
    assert isinstance(TRANSFORMS["tx_is_weekend"], Flag)
    assert TRANSFORMS[spec.AMOUNT] == Numeric(log1p=True)


def test_raw_feature_spec_is_the_serving_signature_plus_label():
    unlabelled = raw_feature_spec(labelled=False)
    labelled = raw_feature_spec(labelled=True)
    assert tuple(unlabelled) == spec.MODEL_INPUTS
    assert set(labelled) - set(unlabelled) == {spec.LABEL_KEY}
    assert {n: f.dtype.name for n, f in unlabelled.items()} == spec.model_input_dtypes()
