"""Train the fraud model under a ``tf.distribute`` strategy, with one training loop.

Strategies (:func:`make_strategy`):

- ``TF_CONFIG`` names a cluster (:mod:`training.cluster`):
  ``MultiWorkerMirroredStrategy`` over every worker's GPUs, or its CPU;
- else all local GPUs, else every logical CPU device (one by default;
  :func:`configure_logical_cpus` makes more, which is how the multi-replica
  path is exercised on machines without GPUs): ``MirroredStrategy``.

The global batch is the per-replica batch times the number of replicas.

**One loop for 1 replica, N local replicas and N workers.** Keras 3's
``model.fit`` does not run under ``MultiWorkerMirroredStrategy`` since TF 2.16
(keras-team/keras#20585), so training is a custom loop over ``strategy.run``
for every strategy. Every input pipeline reads the same files and shuffles them
with the same seed, so it sees the same sequence of global batches; it splits
each global batch into ``replicas`` contiguous parts and keeps those of its own
replicas (:func:`_replica_batches`). Each replica's loss is its rows' weighted
sum divided by the *global* batch's rows, and the optimizer sums the replicas'
gradients: a step is the gradient of the mean loss over the global batch,
whatever the layout of the replicas — the arithmetic ``model.fit`` did before
(Keras divides each replica's mean loss by the replica count).

Every worker scores the whole validation split with the same weights and the
early-stopping decision uses the workers' mean (one figure, so every worker
stops at the same epoch: the collectives need them in lock-step).

Class imbalance: frauds are ~1% of rows and carry a weight of
``positive_weight`` (genuine rows 1). The loss of a global batch is the
arithmetic ``model.fit`` applied to these weights with Keras's
``BinaryCrossentropy`` on 1-D labels, kept exactly so the model does not
change with the loop: Keras averages the cross-entropy over the batch *before*
it applies the weights, so the loss is ``mean(cross-entropy) x mean(weight)``
— the weights scale each batch's loss by its fraud share rather than weigh
each fraud row (per-row weighting was measured to lower validation AP on the
test bank: see ``docs/deployment.md``). The export still subtracts
``log(positive_weight)`` from the logit (:func:`training.model.fraud_probability`).
Early stopping watches the validation average precision (area under the PR
curve, Keras's ``AUC(curve="PR")``), the metric that matters when positives
are rare, and restores the best weights.
"""

from __future__ import annotations

import glob
import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from features import spec
from training.cluster import Cluster, current_cluster
from training.model import build_model_from_transform
from training.settings import TrainConfig

#: Name of the validation metric early stopping monitors.
VALIDATION_AP = "val_average_precision"

_STRATEGY: tf.distribute.Strategy | None = None


@dataclass(frozen=True)
class TrainResult:
    """The trained model and how the training went."""

    model: keras.Model
    replicas: int
    global_batch_size: int
    epochs_run: int
    best_epoch: int
    validation_average_precision: float
    #: Training examples each replica (of every worker) processed in the last epoch.
    examples_per_replica: tuple[int, ...]
    history: Mapping[str, list[float]]
    #: Processes that trained together (1 unless ``TF_CONFIG`` names a cluster).
    workers: int = 1
    #: Whether this process exports (always, unless it is a non-chief worker).
    is_chief: bool = True
    #: Training steps of the last epoch (the same on every worker).
    steps_per_epoch: int = 0
    cluster: Cluster | None = field(default=None, repr=False)


def configure_logical_cpus(count: int) -> None:
    """Split the CPU into ``count`` logical devices; must run before any TF op."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
    )


def make_strategy() -> tf.distribute.Strategy:
    """The process's strategy, created once (call it before any TF op in a cluster).

    ``MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` names a cluster; else
    mirror over all local GPUs, else over all logical CPU devices.
    """
    global _STRATEGY
    if _STRATEGY is None:
        cluster = current_cluster()
        if cluster is not None:
            _STRATEGY = _multi_worker_strategy(cluster)
        elif tf.config.list_logical_devices("GPU"):
            _STRATEGY = tf.distribute.MirroredStrategy()
        else:
            cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
            _STRATEGY = tf.distribute.MirroredStrategy(devices=cpus)
    return _STRATEGY


def _multi_worker_strategy(cluster: Cluster) -> tf.distribute.Strategy:
    # Collective ops of N workers block inter-op threads while they wait for the
    # others: fewer than workers + 1 can deadlock a small machine.
    try:
        threads = tf.config.threading.get_inter_op_parallelism_threads() or os.cpu_count() or 1
        tf.config.threading.set_inter_op_parallelism_threads(max(threads, cluster.workers + 1))
    except RuntimeError:  # the context already exists; the strategy below will say so
        pass
    return tf.distribute.MultiWorkerMirroredStrategy()


def _files(pattern: str) -> list[str]:
    files = sorted(glob.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no transformed examples match {pattern}")
    return files


def _parser(
    feature_spec: Mapping[str, tf.io.FixedLenFeature], positive_weight: float
) -> Callable[[tf.Tensor], tuple[dict[str, tf.Tensor], tf.Tensor, tf.Tensor]]:
    def parse(serialized: tf.Tensor) -> tuple[dict[str, tf.Tensor], tf.Tensor, tf.Tensor]:
        features = tf.io.parse_example(serialized, feature_spec)
        label = tf.cast(features.pop(spec.LABEL_KEY), tf.float32)
        weight = 1.0 + (positive_weight - 1.0) * label
        return features, label, weight

    return parse


def _replica_batches(
    pattern: str,
    feature_spec: Mapping[str, tf.io.FixedLenFeature],
    global_batch: int,
    replicas: int,
    positive_weight: float,
    seed: int,
    context: tf.distribute.InputContext,
) -> tf.data.Dataset:
    """One input pipeline's share of every global batch: one element per local replica.

    Every pipeline shuffles the same records with the same seed, so all see the
    same global batches; global batch ``b`` of ``n`` rows is cut at
    ``n * r // replicas`` and replica ``r`` gets rows ``[cut_r, cut_r+1)``.
    Elements come out in replica order, one global batch after the other: the
    strategy hands consecutive elements to its local replicas, so the parts
    of one global batch make one step. The last, partial, global batch is cut
    the same way (a replica may get no rows). Each element carries the global
    batch's row count and weight sum (the loss's global factors).
    """
    local = replicas // context.num_input_pipelines
    first = context.input_pipeline_id * local
    records = tf.data.TFRecordDataset(_files(pattern)).cache()
    records = records.shuffle(200_000, seed=seed, reshuffle_each_iteration=True)
    parse = _parser(feature_spec, positive_weight)

    label_spec = {spec.LABEL_KEY: feature_spec[spec.LABEL_KEY]}

    def parts(serialized: tf.Tensor) -> tf.data.Dataset:
        rows = tf.shape(serialized, out_type=tf.int64)[0]
        labels = tf.cast(tf.io.parse_example(serialized, label_spec)[spec.LABEL_KEY], tf.float32)
        weights = tf.reduce_sum(1.0 + (positive_weight - 1.0) * labels)

        def part(replica: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
            low, high = rows * replica // replicas, rows * (replica + 1) // replicas
            return serialized[low:high], rows, weights

        return tf.data.Dataset.range(first, first + local).map(part)

    def parsed(serialized: tf.Tensor, rows: tf.Tensor, weights: tf.Tensor) -> tuple[Any, ...]:
        features, label, _ = parse(serialized)
        return features, label, rows, weights

    return (
        records.batch(global_batch)
        .flat_map(parts)
        .map(parsed, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(2 * local)
    )


def _validation_batches(
    pattern: str, feature_spec: Mapping[str, tf.io.FixedLenFeature], batch: int,
    positive_weight: float,
) -> tf.data.Dataset:
    records = tf.data.TFRecordDataset(_files(pattern)).cache()
    parse = _parser(feature_spec, positive_weight)
    return records.batch(batch).map(parse, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)


def _new_model(config: TrainConfig, tft_output: Any, fraud_rate: float) -> keras.Model:
    return build_model_from_transform(
        tft_output,
        hidden_units=config.hidden_units,
        dropout=config.dropout,
        fraud_rate=min(max(fraud_rate * config.positive_weight, 1e-4), 0.5),
    )


def data_fingerprint(train_pattern: str, validation_pattern: str, tft_output: Any) -> np.ndarray:
    """What every worker must agree on before training: the data's shape.

    Bytes of the transformed train and validation files, and each vocabulary's
    size (the embeddings' shapes: workers with other vocabularies would
    all-reduce tensors of other shapes). A CRC of the vocabularies, too.
    """
    from training.model import _vocabulary_sizes

    sizes = _vocabulary_sizes(tft_output)
    digest = hashlib.sha256()
    vocabularies = Path(tft_output.transform_savedmodel_dir) / "assets"
    for path in sorted(vocabularies.glob("*")) if vocabularies.is_dir() else []:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    figures = [
        sum(os.path.getsize(f) for f in _files(train_pattern)),
        sum(os.path.getsize(f) for f in _files(validation_pattern)),
        *(sizes[name] for name in sorted(sizes)),
        int.from_bytes(digest.digest()[:6], "big"),  # exact in float64
    ]
    return np.asarray(figures, dtype=np.float64)


def _check_workers_agree(strategy: tf.distribute.Strategy, figures: np.ndarray) -> None:
    """Fail, on every worker, unless all workers computed the same ``figures``."""
    value = tf.constant(figures[None, :])
    per_replica = strategy.experimental_distribute_values_from_function(lambda _: value)
    every = strategy.gather(per_replica, axis=0).numpy()
    if not (every == every[0]).all():
        raise RuntimeError(
            "the workers do not train on the same data (transformed file sizes, "
            f"vocabulary sizes, vocabulary digest, one row per replica): {every.tolist()}; "
            "give every worker the same --input, window and options"
        )


def _mean_over_workers(strategy: tf.distribute.Strategy, value: float) -> float:
    per_replica = strategy.experimental_distribute_values_from_function(
        lambda _: tf.constant(value, tf.float64)
    )
    return float(strategy.reduce(tf.distribute.ReduceOp.MEAN, per_replica, axis=None).numpy())


def train(
    config: TrainConfig,
    tft_output: Any,
    train_pattern: str,
    validation_pattern: str,
    fraud_rate: float,
) -> TrainResult:
    """Fit the model on the transformed training split, early-stopped on validation AP."""
    keras.utils.set_random_seed(config.seed)
    strategy = make_strategy()
    cluster = current_cluster()
    is_chief = cluster is None or cluster.is_chief
    mixed = config.mixed_precision and bool(tf.config.list_physical_devices("GPU"))
    if mixed:
        keras.mixed_precision.set_global_policy("mixed_float16")
    replicas = strategy.num_replicas_in_sync
    global_batch = config.batch_size * replicas
    feature_spec = tft_output.transformed_feature_spec()
    _check_workers_agree(strategy, data_fingerprint(train_pattern, validation_pattern, tft_output))

    with strategy.scope():
        model = _new_model(config, tft_output, fraud_rate)
        optimizer: Any = keras.optimizers.Adam(config.learning_rate)
        if mixed:
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(model.trainable_variables)
    names = [t.name for t in model.inputs]

    batches = strategy.distribute_datasets_from_function(
        partial(_replica_batches, train_pattern, feature_spec, global_batch, replicas,
                config.positive_weight, config.seed)
    )
    validation = _validation_batches(validation_pattern, feature_spec, global_batch,
                                     config.positive_weight)

    def replica_step(features: Mapping[str, tf.Tensor], label: tf.Tensor, rows: tf.Tensor,
                     weights: tf.Tensor) -> tf.Tensor:
        # The global batch's mean(cross-entropy) x mean(weight), this replica's share:
        # the replicas' gradients are summed.
        rows = tf.cast(rows, tf.float32)
        with tf.GradientTape() as tape:
            logits = tf.cast(model({n: features[n] for n in names}, training=True), tf.float32)
            losses = tf.nn.sigmoid_cross_entropy_with_logits(labels=label, logits=logits)
            loss = tf.reduce_sum(losses) / rows * (weights / rows)
            scaled = optimizer.scale_loss(loss)  # the loss itself unless mixed precision
        gradients = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
        # This replica's rows and its part of the batch loss x rows, as a [1, 2] row.
        return tf.stack([tf.cast(tf.shape(label)[0], tf.float32), loss * rows])[None, :]

    @tf.function(reduce_retracing=True)
    def train_step(batch: Any) -> Any:
        return strategy.run(replica_step, args=batch)

    @tf.function
    def validation_logits(features: Mapping[str, tf.Tensor]) -> tf.Tensor:
        return tf.cast(model({n: features[n] for n in names}, training=False), tf.float32)

    writers = _summary_writers(config.logs_dir if is_chief else None)
    history: dict[str, list[float]] = {
        "loss": [], "examples_seen": [], "val_loss": [], VALIDATION_AP: []
    }
    best_ap, best_epoch, best_weights, waited = -1.0, 0, model.get_weights(), 0
    per_replica_rows: tuple[int, ...] = ()
    steps = 0
    for epoch in range(config.epochs):
        outputs = []
        for batch in batches:
            outputs.append(train_step(batch))
        steps = len(outputs)
        totals = _gather_totals(strategy, outputs, replicas)
        per_replica_rows = tuple(int(v) for v in totals[:, 0])
        rows = max(int(totals[:, 0].sum()), 1)
        history["loss"].append(float(totals[:, 1].sum()) / rows)
        history["examples_seen"].append(float(totals[:, 0].sum()))
        average_precision, val_loss = _validate(validation, validation_logits)
        history["val_loss"].append(_mean_over_workers(strategy, val_loss))
        history[VALIDATION_AP].append(_mean_over_workers(strategy, average_precision))
        _write_summaries(writers, epoch, history)
        if history[VALIDATION_AP][-1] > best_ap:
            best_ap, best_epoch, best_weights, waited = (
                history[VALIDATION_AP][-1], epoch + 1, model.get_weights(), 0)
        else:
            waited += 1
            if waited >= config.patience:  # as keras.callbacks.EarlyStopping
                break
    model.set_weights(best_weights)
    return TrainResult(
        model=model,
        replicas=replicas,
        global_batch_size=global_batch,
        epochs_run=len(history[VALIDATION_AP]),
        best_epoch=best_epoch,
        validation_average_precision=best_ap,
        examples_per_replica=per_replica_rows,
        history=history,
        workers=1 if cluster is None else cluster.workers,
        is_chief=is_chief,
        steps_per_epoch=steps,
        cluster=cluster,
    )


def _gather_totals(strategy: tf.distribute.Strategy, outputs: list[Any],
                   replicas: int) -> np.ndarray:
    """``[replicas, 2]``: rows and weighted loss sum of every replica of every worker."""
    if not outputs:
        return np.zeros((replicas, 2))
    local = [tf.add_n(list(parts)) for parts in
             zip(*(strategy.experimental_local_results(o) for o in outputs), strict=True)]
    per_replica = strategy.experimental_distribute_values_from_function(
        lambda context: local[context.replica_id_in_sync_group - _first_local_replica(strategy)]
    )
    return np.asarray(strategy.gather(per_replica, axis=0).numpy(), dtype=np.float64)


def _first_local_replica(strategy: tf.distribute.Strategy) -> int:
    """Global id of this worker's first replica (its replicas are numbered consecutively)."""
    local = len(strategy.extended.worker_devices)
    cluster = current_cluster()
    return 0 if cluster is None else cluster.rank * local


def _validate(validation: tf.data.Dataset,
              logits_of: Callable[[Mapping[str, tf.Tensor]], tf.Tensor]) -> tuple[float, float]:
    """Validation AP (Keras's PR AUC, as ``model.fit`` reported it) and loss (as in training)."""
    metric = keras.metrics.AUC(curve="PR", from_logits=True, name="average_precision")
    loss_sum, weight_sum, rows = 0.0, 0.0, 0
    for features, label, weight in validation:
        logits = logits_of(features)
        metric.update_state(label, logits)
        losses = tf.nn.sigmoid_cross_entropy_with_logits(labels=label, logits=logits)
        loss_sum += float(tf.reduce_sum(losses))
        weight_sum += float(tf.reduce_sum(weight))
        rows += int(tf.shape(label)[0])
    rows = max(rows, 1)
    return float(metric.result()), loss_sum / rows * (weight_sum / rows)


def _summary_writers(logs_dir: Path | None) -> dict[str, Any]:
    if logs_dir is None:
        return {}
    return {split: tf.summary.create_file_writer(str(Path(logs_dir) / split))
            for split in ("train", "validation")}


def _write_summaries(writers: Mapping[str, Any], epoch: int,
                     history: Mapping[str, list[float]]) -> None:
    if not writers:
        return
    with writers["train"].as_default():
        tf.summary.scalar("epoch_loss", history["loss"][-1], step=epoch)
        tf.summary.scalar("epoch_examples_seen", history["examples_seen"][-1], step=epoch)
    with writers["validation"].as_default():
        tf.summary.scalar("epoch_loss", history["val_loss"][-1], step=epoch)
        tf.summary.scalar("epoch_average_precision", history[VALIDATION_AP][-1], step=epoch)
    for writer in writers.values():
        writer.flush()
