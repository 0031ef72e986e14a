"""The TFT ``preprocessing_fn``: every stateless transform of the model's inputs, once.

Training runs it in Beam (``tft_beam.AnalyzeAndTransformDataset``); the export
embeds the same graph in the SavedModel's ``serving_default`` signature, so TF
Serving applies exactly these transforms to raw inputs. Nothing in ``scoring/``
re-implements any of them.

What each model input becomes is declared in one mapping, :data:`TRANSFORMS`,
built from :mod:`features.spec` by name rules; a feature added to the spec
without a rule fails at import rather than being silently dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import tensorflow as tf
import tensorflow_transform as tft

from features import spec


@dataclass(frozen=True)
class Numeric:
    """A real number: clipped, optionally ``log1p``-ed, then (optionally) z-scored.

    ``log1p`` tames heavy-tailed amounts and counts; the z-score uses the mean
    and variance of the training split, analysed once by TFT. ``source`` names
    the raw input when the output is a second view of it.
    """

    log1p: bool = False
    clip: tuple[float, float] | None = None
    zscore: bool = True
    source: str | None = None


@dataclass(frozen=True)
class Categorical:
    """A string mapped to an integer id through a vocabulary learnt in training.

    Values unseen in training fall into one of ``num_oov_buckets`` extra ids, so
    a new merchant category at serving time is scored, not rejected.
    """

    num_oov_buckets: int = 1
    top_k: int | None = None


@dataclass(frozen=True)
class Bucketized:
    """An integer-valued number in ``[0, num_buckets)`` used as a category id."""

    num_buckets: int


@dataclass(frozen=True)
class Flag:
    """A 0/1 indicator passed through as float32."""


@dataclass(frozen=True)
class AboveGenuineMax:
    """1.0 when the input is above every value it took on a genuine training transaction.

    A novelty flag whose threshold a TFT analyzer learns from the labelled
    training split: the label is read there only, and the export holds the
    threshold as a constant, so serving needs no label. It hands the network
    the one sharp split a tree finds at once — "larger than any genuine amount
    seen" — which a network smooths away when few frauds show it
    (``docs/quality.md``, "How the model got there").
    """

    source: str


Transform = Numeric | Categorical | Bucketized | Flag | AboveGenuineMax

#: Raw fields the model deliberately ignores: identifiers (memorising ids does
#: not generalise to new cards/terminals; their behaviour is in the behavioural
#: features) and the raw timestamp (its calendar parts are behavioural features).
UNUSED_INPUTS: tuple[str, ...] = (
    spec.TRANSACTION_ID,
    spec.TIMESTAMP,
    spec.CUSTOMER_ID,
    spec.TERMINAL_ID,
)

_LOG_Z = Numeric(log1p=True)

#: Name rules, first match wins: (exact name or prefix, transform).
_RULES: tuple[tuple[str, Transform], ...] = (
    (spec.AMOUNT, _LOG_Z),
    ("customer_nb_tx_", _LOG_Z),
    ("customer_avg_amount_", _LOG_Z),
    ("customer_amount_ratio_", Numeric(log1p=True, clip=(0.0, 100.0))),
    ("customer_seconds_since_prev_tx", _LOG_Z),
    ("customer_terminal_seen_", Flag()),
    ("customer_merchant_category_seen_", Flag()),
    ("terminal_nb_tx_", _LOG_Z),
    ("terminal_fraud_streak", _LOG_Z),
    # Shares of known frauds are already in [0, 1] and mostly 0: a z-score would
    # only blow up the rare positive values.
    ("terminal_risk_", Numeric(clip=(0.0, 1.0), zscore=False)),
    ("tx_hour", Bucketized(24)),
    ("tx_is_", Flag()),
    *((name, Categorical()) for name in spec.CATEGORICAL_FIELDS),
)


def _rule_for(name: str) -> Transform:
    for pattern, transform in _RULES:
        if name == pattern or (pattern.endswith("_") and name.startswith(pattern)):
            return transform
    raise LookupError(f"no preprocessing rule for model input {name!r}")


#: Second views of an input, by output name. A linear amount keeps the large
#: amounts far apart (the log squeezes them), so the network can learn sharp
#: amount thresholds from few examples.
_EXTRA_OUTPUTS: dict[str, Transform] = {
    f"{spec.AMOUNT}_linear": Numeric(clip=(0.0, 10_000.0), source=spec.AMOUNT),
    f"{spec.AMOUNT}_above_genuine_max": AboveGenuineMax(source=spec.AMOUNT),
}

#: What the model sees, by output name: each used model input under its own
#: name, plus the extra views (their raw input in ``source``).
TRANSFORMS: Mapping[str, Transform] = {
    **{name: _rule_for(name) for name in spec.MODEL_INPUTS if name not in UNUSED_INPUTS},
    **_EXTRA_OUTPUTS,
}


def source_of(name: str) -> str:
    """The raw input an output is computed from."""
    transform = TRANSFORMS[name]
    source = transform.source if isinstance(transform, Numeric | AboveGenuineMax) else None
    return source or name


def vocabulary_name(feature: str) -> str:
    """File name of a categorical feature's vocabulary in the transform output."""
    return f"vocab_{feature}"


def raw_feature_spec(*, labelled: bool) -> dict[str, tf.io.FixedLenFeature]:
    """The ``tf.io`` spec of the raw model inputs (plus the label when ``labelled``).

    Derived from :func:`features.spec.model_input_dtypes`; it is the TFT input
    schema and, without the label, exactly the serving signature.
    """
    feature_spec = {
        name: tf.io.FixedLenFeature([], tf.as_dtype(dtype))
        for name, dtype in spec.model_input_dtypes().items()
    }
    if labelled:
        feature_spec[spec.LABEL_KEY] = tf.io.FixedLenFeature([], tf.int64)
    return feature_spec


def _numeric(x: tf.Tensor, transform: Numeric) -> tf.Tensor:
    x = tf.cast(x, tf.float32)
    if transform.clip is not None:
        x = tf.clip_by_value(x, *transform.clip)
    if transform.log1p:
        x = tf.math.log1p(tf.maximum(x, 0.0))
    if transform.zscore:
        x = tft.scale_to_z_score(x)
    return x


def _above_genuine_max(x: tf.Tensor, label: tf.Tensor | None) -> tf.Tensor:
    if label is None:
        raise ValueError("the genuine maximum is analysed on labelled data: the label is missing")
    x = tf.cast(x, tf.float32)
    genuine = tf.equal(tf.cast(label, tf.int64), 0)
    genuine_max = tft.max(tf.where(genuine, x, tf.fill(tf.shape(x), float("-inf"))))
    return tf.cast(x > genuine_max, tf.float32)


def _apply(name: str, x: tf.Tensor, transform: Transform, label: tf.Tensor | None) -> tf.Tensor:
    if isinstance(transform, AboveGenuineMax):
        return _above_genuine_max(x, label)
    if isinstance(transform, Numeric):
        return _numeric(x, transform)
    if isinstance(transform, Categorical):
        return tft.compute_and_apply_vocabulary(
            x,
            top_k=transform.top_k,
            num_oov_buckets=transform.num_oov_buckets,
            vocab_filename=vocabulary_name(name),
        )
    if isinstance(transform, Bucketized):
        ids = tf.cast(tf.math.floor(x), tf.int64)
        return tf.clip_by_value(ids, 0, transform.num_buckets - 1)
    return tf.cast(x, tf.float32)


def preprocessing_fn(inputs: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """Raw model inputs -> model features (TFT); the label, when present, passes through.

    Analysis needs the label (:class:`AboveGenuineMax`); the saved transform
    then serves unlabelled inputs, TFT pruning the label's branch.
    """
    label = inputs.get(spec.LABEL_KEY)
    outputs = {
        name: _apply(name, inputs[source_of(name)], t, label) for name, t in TRANSFORMS.items()
    }
    if spec.LABEL_KEY in inputs:
        outputs[spec.LABEL_KEY] = tf.cast(inputs[spec.LABEL_KEY], tf.int64)
    return outputs


def categorical_sizes(vocabulary_sizes: Mapping[str, int]) -> dict[str, int]:
    """Number of distinct ids of each categorical/bucketised output.

    ``vocabulary_sizes`` gives the learnt vocabulary size of each categorical
    feature (from the transform output); OOV buckets are added here.
    """
    sizes: dict[str, int] = {}
    for name, transform in TRANSFORMS.items():
        if isinstance(transform, Categorical):
            sizes[name] = vocabulary_sizes[name] + transform.num_oov_buckets
        elif isinstance(transform, Bucketized):
            sizes[name] = transform.num_buckets
    return sizes


def dense_features() -> tuple[str, ...]:
    """Names of the real-valued outputs (numeric and flags), in a fixed order."""
    return tuple(
        n for n, t in TRANSFORMS.items() if isinstance(t, Numeric | Flag | AboveGenuineMax)
    )
