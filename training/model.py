"""The fraud model: a small feed-forward network over the TFT outputs.

:func:`build_model` takes plain values (vocabulary sizes, feature names, layer
widths) so tests call it directly; :func:`build_model_from_transform` reads
those values from the TFT transform output.

The network returns a *logit*. Training weighs frauds ``positive_weight``
times (see :mod:`training.trainer`); :func:`fraud_probability` turns the logit
into a probability and undoes the weighting's shift of the prior odds, so the
exported score stays an estimate of P(fraud).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import tensorflow as tf

from features.preprocessing import categorical_sizes, dense_features


def embedding_dim(cardinality: int) -> int:
    """Embedding width for a categorical feature: grows slowly with its cardinality."""
    return max(2, min(16, round(1.6 * cardinality**0.56)))


def build_model(
    vocab_sizes: Mapping[str, int],
    numeric_features: Sequence[str],
    hidden_units: Sequence[int] = (128, 64),
    dropout: float = 0.1,
    fraud_rate: float = 0.01,
) -> keras.Model:
    """A Keras model over named scalar inputs, returning one logit per row.

    ``vocab_sizes``: number of ids of each categorical input (OOV included),
    embedded; ``numeric_features``: real-valued inputs, concatenated.
    ``fraud_rate`` initialises the output bias at the prior log-odds so
    training does not spend its first steps learning the base rate.
    """
    inputs: dict[str, keras.KerasTensor] = {}
    parts = []
    for name in numeric_features:
        inputs[name] = keras.Input(shape=(), dtype="float32", name=name)
    if numeric_features:
        parts.append(keras.ops.stack([inputs[n] for n in numeric_features], axis=-1))
    for name, size in vocab_sizes.items():
        inputs[name] = keras.Input(shape=(), dtype="int64", name=name)
        embedded = keras.layers.Embedding(size, embedding_dim(size), name=f"{name}_embedding")
        parts.append(embedded(inputs[name]))
    x = keras.layers.Concatenate(name="features")(parts) if len(parts) > 1 else parts[0]
    for i, units in enumerate(hidden_units):
        x = keras.layers.Dense(units, activation="relu", name=f"hidden_{i}")(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"dropout_{i}")(x)
    prior = math.log(fraud_rate / (1.0 - fraud_rate))
    logit = keras.layers.Dense(
        1,
        name="logit",
        dtype="float32",
        bias_initializer=keras.initializers.Constant(prior),
    )(x)
    return keras.Model(inputs=inputs, outputs=keras.ops.squeeze(logit, axis=-1), name="fraud")


def build_model_from_transform(tft_output: Any, **kwargs: Any) -> keras.Model:
    """:func:`build_model` with vocabulary sizes read from a ``TFTransformOutput``."""
    vocabulary_sizes = _vocabulary_sizes(tft_output)
    return build_model(categorical_sizes(vocabulary_sizes), dense_features(), **kwargs)


def _vocabulary_sizes(tft_output: Any) -> dict[str, int]:
    from features.preprocessing import TRANSFORMS, Categorical, vocabulary_name

    return {
        name: int(tft_output.vocabulary_size_by_name(vocabulary_name(name)))
        for name, transform in TRANSFORMS.items()
        if isinstance(transform, Categorical)
    }


def fraud_probability(logits: tf.Tensor, positive_weight: float) -> tf.Tensor:
    """P(fraud) from the logits of a model trained with frauds weighted ``positive_weight``.

    Weighting positives by ``w`` multiplies the learnt odds by ``w``;
    subtracting ``log w`` from the logit restores the data's odds.
    """
    logits = tf.cast(logits, tf.float32)
    return tf.sigmoid(logits - math.log(positive_weight))
