"""Train the fraud model under ``tf.distribute.MirroredStrategy``.

All local GPUs are used when there are any; otherwise every logical CPU device
(one by default; :func:`configure_logical_cpus` makes more, which is how the
multi-replica path is exercised on machines without GPUs). The global batch is
the per-replica batch times the number of replicas.

Class imbalance: frauds are ~1% of rows. They are weighted ``positive_weight``
times in the loss (per-example sample weights), a moderate weight rather than
full balancing: it gives the rare class more gradient without the noisy,
over-confident fit that a 100x weight produces, and keeps every genuine row
(no undersampling of data that is cheap to train on). The export undoes the
weight's shift of the odds (:func:`training.model.fraud_probability`).
Early stopping watches the validation average precision (area under the PR
curve), the metric that matters when positives are rare, and restores the best
weights.
"""

from __future__ import annotations

import glob
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from features import spec
from training.model import build_model_from_transform
from training.settings import TrainConfig

#: Name of the validation metric early stopping monitors.
VALIDATION_AP = "val_average_precision"


@dataclass(frozen=True)
class TrainResult:
    """The trained model and how the training went."""

    model: keras.Model
    replicas: int
    global_batch_size: int
    epochs_run: int
    best_epoch: int
    validation_average_precision: float
    #: Training examples each replica processed in the last epoch.
    examples_per_replica: tuple[int, ...]
    history: Mapping[str, list[float]]


def configure_logical_cpus(count: int) -> None:
    """Split the CPU into ``count`` logical devices; must run before any TF op."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
    )


def make_strategy() -> tf.distribute.MirroredStrategy:
    """Mirror over all local GPUs, else over all logical CPU devices."""
    if tf.config.list_logical_devices("GPU"):
        return tf.distribute.MirroredStrategy()
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices=cpus)


class ExamplesSeen(keras.metrics.Metric):
    """Counts training examples; under a strategy each replica keeps its own count."""

    def __init__(self, name: str = "examples_seen", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.count = self.add_variable(shape=(), initializer="zeros", name="count",
                                       aggregation="sum")

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        """Add the batch's number of rows."""
        self.count.assign_add(keras.ops.cast(keras.ops.shape(y_true)[0], self.dtype))

    def result(self) -> Any:
        """The total over replicas (reading the variable sums the replicas' copies)."""
        return keras.ops.convert_to_tensor(self.count)

    def per_replica(self, strategy: tf.distribute.Strategy) -> tuple[int, ...]:
        """The count of each replica, read from the replicas' own variable copies."""
        values = strategy.experimental_local_results(self.count.value)
        return tuple(int(v.numpy()) for v in values)


class _TrainingCounts(keras.callbacks.Callback):
    """Snapshots :class:`ExamplesSeen` per replica when validation starts.

    Validation resets the metrics, so the training counts of an epoch are only
    readable between its last training step and the start of its validation.
    """

    def __init__(self, metric: ExamplesSeen, strategy: tf.distribute.Strategy) -> None:
        super().__init__()
        self.metric = metric
        self.strategy = strategy
        self.last: tuple[int, ...] = ()

    def on_test_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        """Record the epoch's per-replica training counts."""
        self.last = self.metric.per_replica(self.strategy)


def _dataset(
    pattern: str,
    feature_spec: Mapping[str, tf.io.FixedLenFeature],
    batch_size: int,
    positive_weight: float,
    shuffle_seed: int | None,
) -> tf.data.Dataset:
    files = sorted(glob.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no transformed examples match {pattern}")
    records = tf.data.TFRecordDataset(files).cache()
    if shuffle_seed is not None:
        records = records.shuffle(200_000, seed=shuffle_seed, reshuffle_each_iteration=True)

    def parse(serialized: tf.Tensor) -> tuple[dict[str, tf.Tensor], tf.Tensor, tf.Tensor]:
        features = tf.io.parse_example(serialized, feature_spec)
        label = tf.cast(features.pop(spec.LABEL_KEY), tf.float32)
        weight = 1.0 + (positive_weight - 1.0) * label
        return features, label, weight

    return records.batch(batch_size).map(parse, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)


def _compiled_model(
    config: TrainConfig, tft_output: Any, fraud_rate: float, examples: ExamplesSeen
) -> keras.Model:
    """A fresh model, compiled; call inside the strategy's scope."""
    model = build_model_from_transform(
        tft_output,
        hidden_units=config.hidden_units,
        dropout=config.dropout,
        fraud_rate=min(max(fraud_rate * config.positive_weight, 1e-4), 0.5),
    )
    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
        metrics=[
            keras.metrics.AUC(curve="PR", from_logits=True, name="average_precision"),
            examples,
        ],
    )
    return model


def train(
    config: TrainConfig,
    tft_output: Any,
    train_pattern: str,
    validation_pattern: str,
    fraud_rate: float,
) -> TrainResult:
    """Fit the model on the transformed training split, early-stopped on validation AP."""
    keras.utils.set_random_seed(config.seed)
    if config.mixed_precision and tf.config.list_physical_devices("GPU"):
        keras.mixed_precision.set_global_policy("mixed_float16")
    strategy = make_strategy()
    replicas = strategy.num_replicas_in_sync
    global_batch = config.batch_size * replicas
    feature_spec = tft_output.transformed_feature_spec()

    def data(pattern: str, shuffle: bool) -> tf.data.Dataset:
        seed = config.seed if shuffle else None
        return _dataset(pattern, feature_spec, global_batch, config.positive_weight, seed)

    with strategy.scope():
        examples = ExamplesSeen()
        model = _compiled_model(config, tft_output, fraud_rate, examples)
    counts = _TrainingCounts(examples, strategy)
    callbacks: list[keras.callbacks.Callback] = [
        counts,
        keras.callbacks.EarlyStopping(
            monitor=VALIDATION_AP, mode="max", patience=config.patience, restore_best_weights=True
        ),
    ]
    if config.logs_dir is not None:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(config.logs_dir)))
    fit = model.fit(
        data(train_pattern, shuffle=True),
        validation_data=data(validation_pattern, shuffle=False),
        epochs=config.epochs,
        callbacks=callbacks,
        shuffle=False,  # the dataset reshuffles itself each epoch
        verbose=0,
    )
    history = {k: [float(v) for v in values] for k, values in fit.history.items()}
    scores = history.get(VALIDATION_AP, [0.0])
    best = int(np.argmax(scores))
    return TrainResult(
        model=model,
        replicas=replicas,
        global_batch_size=global_batch,
        epochs_run=len(scores),
        best_epoch=best + 1,
        validation_average_precision=scores[best],
        examples_per_replica=counts.last,
        history=history,
    )
