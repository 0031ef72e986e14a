"""The model builder from plain values, the probability correction, the alert threshold."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from features.preprocessing import categorical_sizes, dense_features
from training.model import build_model, embedding_dim, fraud_probability
from training.train_job import choose_threshold


def _inputs(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "amount": rng.normal(size=n).astype(np.float32),
        "risk": rng.uniform(size=n).astype(np.float32),
        "channel": rng.integers(0, 4, size=n).astype(np.int64),
    }


def test_build_model_embeds_categoricals_and_returns_one_logit_per_row():
    model = build_model({"channel": 4}, ["amount", "risk"], hidden_units=(8,), fraud_rate=0.02)
    embedding = model.get_layer("channel_embedding")
    assert embedding.input_dim == 4
    assert embedding.output_dim == embedding_dim(4)
    assert {t.name for t in model.inputs} == {"amount", "risk", "channel"}
    logits = model(_inputs(5, np.random.default_rng(0)))
    assert tuple(logits.shape) == (5,)
    # The output bias starts at the prior log-odds.
    bias = model.get_layer("logit").bias.numpy()
    assert bias[0] == pytest.approx(math.log(0.02 / 0.98), rel=1e-6)


def test_model_learns_a_rule_from_numeric_and_categorical_inputs():
    rng = np.random.default_rng(1)
    x = _inputs(4000, rng)
    y = ((x["amount"] > 1.0) | (x["channel"] == 3)).astype(np.float32)
    keras.utils.set_random_seed(0)
    model = build_model({"channel": 4}, ["amount", "risk"], hidden_units=(16,), dropout=0.0,
                        fraud_rate=float(y.mean()))
    model.compile(optimizer=keras.optimizers.Adam(0.01),
                  loss=keras.losses.BinaryCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=256, epochs=8, verbose=0)
    predicted = np.asarray(model.predict(x, verbose=0)) > 0
    assert (predicted == (y > 0.5)).mean() > 0.97


def test_fraud_probability_undoes_the_positive_weight():
    # A model trained with frauds weighted w learns odds w times the data's odds.
    data_odds = np.array([0.001, 0.01, 0.5, 2.0])
    w = 5.0
    learnt_logits = np.log(data_odds * w).astype(np.float32)
    p = fraud_probability(tf.constant(learnt_logits), w).numpy()
    np.testing.assert_allclose(p / (1 - p), data_odds, rtol=1e-4)
    assert fraud_probability(tf.constant([0.0]), 1.0).numpy()[0] == pytest.approx(0.5)


def test_embedding_dim_grows_slowly_and_is_bounded():
    dims = [embedding_dim(n) for n in (2, 10, 100, 10_000)]
    assert dims == sorted(dims)
    assert dims[0] >= 2 and dims[-1] == 16


def test_model_sizes_come_from_the_preprocessing_mapping():
    sizes = categorical_sizes({"merchant_category": 10, "country": 3, "channel": 4})
    assert sizes == {"merchant_category": 11, "country": 4, "channel": 5, "tx_hour": 24}
    assert "amount" in dense_features() and "tx_hour" not in dense_features()


def test_threshold_meets_the_daily_alert_budget():
    scores = np.linspace(0.0, 1.0, 1001)
    threshold = choose_threshold(scores, days=2, alerts_per_day=100)
    assert (scores >= threshold).sum() == 200
    # A budget larger than the rows alerts on everything.
    assert choose_threshold(scores[:10], days=1, alerts_per_day=100) == 0.0
