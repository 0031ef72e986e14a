"""The Beam pipeline of the retraining job: behavioural features, then TFT.

``build(pipeline, config, transactions)`` says what the pipeline is; the
runner (:func:`run`) says how it runs (DirectRunner by default, any Beam runner
through ``--runner``/``--beam-option``). Steps, all named:

1. ``ComputeBehaviouralFeatures``: replay the whole history (before and inside
   the training window) through :func:`features.behaviour.compute_features`.
   The replay needs every event in time order, so it is one step over one
   table; history before the window only feeds the state.
2. ``SelectTrainingWindow``: keep rows of ``[train_start, train_end]`` and
   build the model inputs with :mod:`features.model_inputs` (the serving
   paths use the same builder).
3. ``TrainBatches`` / ``ValidationBatches``: split *by time* (the last days
   of the window validate), as TFXIO record batches.
4. ``AnalyzeAndTransformTrain`` on the training split only, then
   ``TransformValidation`` with the same transform function.
5. ``Write*``: transformed examples as TFRecords, the transform function, and
   the validation rows' raw inputs (warm-up requests, threshold choice).
"""

from __future__ import annotations

import time as time_module
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.options.pipeline_options import PipelineOptions

from features import spec
from features.behaviour import BehaviourConfig, compute_features
from features.model_inputs import model_input_columns

#: Split names, in time order.
TRAIN, VALIDATION = "train", "validation"
#: Beam counters of the behavioural-feature step (namespace, names).
METRICS_NAMESPACE = "fraud_train"
FEATURES_MS, FEATURE_ROWS = "behavioural_features_ms", "behavioural_feature_rows"


@dataclass(frozen=True)
class PipelineConfig:
    """What the pipeline computes and where it writes.

    The window ``[train_start, train_end]`` is inclusive; its last
    ``validation_days`` days form the validation split.
    """

    train_start: date
    train_end: date
    validation_days: int
    work_dir: Path
    delay_days: int = spec.DEFAULT_DELAY_DAYS
    batch_rows: int = 8192

    def __post_init__(self) -> None:
        if self.train_start > self.train_end:
            raise ValueError(f"train_start {self.train_start} is after train_end {self.train_end}")
        if not 0 < self.validation_days < self.window_days:
            last = self.window_days - 1
            raise ValueError(f"validation_days must be in [1, {last}], got {self.validation_days}")

    @property
    def window_days(self) -> int:
        """Days in the training window, both ends included."""
        return (self.train_end - self.train_start).days + 1

    @property
    def validation_start(self) -> date:
        """First day of the validation split."""
        return self.train_end - timedelta(days=self.validation_days - 1)

    @property
    def transformed_dir(self) -> Path:
        """Directory of the transformed TFRecords."""
        return self.work_dir / "transformed"

    @property
    def transform_fn_dir(self) -> Path:
        """Directory of the TFT transform output (``TFTransformOutput``)."""
        return self.work_dir / "transform_fn"

    @property
    def validation_inputs_path(self) -> Path:
        """Parquet file of the validation split's raw model inputs and labels."""
        return self.work_dir / "validation_inputs.parquet"

    def transformed_pattern(self, split: str) -> str:
        """Glob of one split's transformed TFRecord files."""
        return str(self.transformed_dir / f"{split}-*.tfrecord")


def day_start(day: date) -> datetime:
    """Midnight UTC at the start of ``day``."""
    return datetime.combine(day, time(), UTC)


def _split_of(timestamps: pa.ChunkedArray, config: PipelineConfig) -> np.ndarray:
    """Split name per row: validation from ``validation_start`` on, train before."""
    boundary = pa.scalar(day_start(config.validation_start), pa.timestamp("us", tz="UTC"))
    is_valid = pc.greater_equal(timestamps, boundary).to_numpy(zero_copy_only=False)
    return np.where(is_valid, VALIDATION, TRAIN)


def window_rows(transactions: pa.Table, config: PipelineConfig) -> np.ndarray:
    """Boolean mask of the rows inside the training window."""
    low = pa.scalar(day_start(config.train_start), pa.timestamp("us", tz="UTC"))
    high = pa.scalar(day_start(config.train_end + timedelta(days=1)), pa.timestamp("us", tz="UTC"))
    ts = transactions.column(spec.TIMESTAMP)
    inside = pc.and_(pc.greater_equal(ts, low), pc.less(ts, high))
    return np.asarray(inside.to_numpy(zero_copy_only=False), dtype=bool)


def _behavioural_features(
    transactions: pa.Table, delay_days: int, labels: pa.Table | None = None
) -> tuple[pa.Table, pa.Table]:
    start = time_module.perf_counter()
    features = compute_features(transactions, BehaviourConfig(delay_days=delay_days),
                                labels=labels)
    elapsed_ms = int(1000 * (time_module.perf_counter() - start))
    beam.metrics.Metrics.counter(METRICS_NAMESPACE, FEATURES_MS).inc(elapsed_ms)
    beam.metrics.Metrics.counter(METRICS_NAMESPACE, FEATURE_ROWS).inc(transactions.num_rows)
    return transactions, features


def _training_window(tables: tuple[pa.Table, pa.Table], config: PipelineConfig) -> pa.Table:
    """Model inputs + label + split of the window's rows (history rows dropped)."""
    transactions, features = tables
    mask = pa.array(window_rows(transactions, config))
    transactions, features = transactions.filter(mask), features.filter(mask)
    columns = model_input_columns(transactions, features)
    columns[spec.LABEL_KEY] = transactions.column(spec.LABEL_KEY).combine_chunks().cast(pa.int64())
    columns["split"] = pa.array(_split_of(transactions.column(spec.TIMESTAMP), config))
    return pa.table(columns)


def _record_batches(window: pa.Table, split: str, batch_rows: int) -> Iterable[pa.RecordBatch]:
    from training.record_batches import to_record_batches

    part = window.filter(pc.equal(window.column("split"), split))
    columns = {name: part.column(name).combine_chunks() for name in spec.MODEL_INPUTS}
    labels = part.column(spec.LABEL_KEY).combine_chunks()
    return to_record_batches(columns, labels, batch_rows)


def _write_validation_inputs(window: pa.Table, path: str) -> None:
    part = window.filter(pc.equal(window.column("split"), VALIDATION))
    pq.write_table(part.drop_columns(["split"]), path)


def _to_examples(transformed: tuple[pa.RecordBatch, dict]) -> list[bytes]:
    from tfx_bsl.coders import example_coder

    record_batch, _ = transformed
    return list(example_coder.RecordBatchToExamples(record_batch))


def build(
    pipeline: beam.Pipeline,
    config: PipelineConfig,
    transactions: pa.Table,
    labels: pa.Table | None = None,
) -> None:
    """Add the retraining job's steps to ``pipeline``.

    ``transactions``: labelled, canonical, sorted by time, covering the history
    and the window, nothing after ``train_end``. ``labels``: every label with
    its time when they come apart (see :func:`features.behaviour.compute_features`).
    """
    import tensorflow_transform.beam as tft_beam

    from features.preprocessing import preprocessing_fn
    from training.record_batches import tensor_adapter_config

    window = (
        pipeline
        | "CreateTransactions" >> beam.Create([transactions])
        | "ComputeBehaviouralFeatures" >> beam.Map(_behavioural_features, config.delay_days,
                                                    labels)
        | "SelectTrainingWindow" >> beam.Map(_training_window, config)
    )
    _ = window | "WriteValidationInputs" >> beam.Map(
        _write_validation_inputs, str(config.validation_inputs_path)
    )
    batches = {
        split: window
        | f"{split.capitalize()}Batches" >> beam.FlatMap(_record_batches, split, config.batch_rows)
        for split in (TRAIN, VALIDATION)
    }
    with tft_beam.Context(temp_dir=str(config.work_dir / "tft_tmp")):
        raw = tensor_adapter_config(labelled=True)
        (train, _), transform_fn = (
            batches[TRAIN],
            raw,
        ) | "AnalyzeAndTransformTrain" >> tft_beam.AnalyzeAndTransformDataset(
            preprocessing_fn, output_record_batches=True
        )
        (validation, _) = (
            (batches[VALIDATION], raw),
            transform_fn,
        ) | "TransformValidation" >> tft_beam.TransformDataset(output_record_batches=True)
        _ = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(
            str(config.transform_fn_dir)
        )
    for split, data in ((TRAIN, train), (VALIDATION, validation)):
        label = split.capitalize()
        _ = (
            data
            | f"Encode{label}Examples" >> beam.FlatMap(_to_examples)
            | f"Write{label}Examples"
            >> beam.io.WriteToTFRecord(
                str(config.transformed_dir / split), file_name_suffix=".tfrecord"
            )
        )


def pipeline_options(runner: str, beam_options: Sequence[str]) -> PipelineOptions:
    """Beam options from ``--runner`` and ``K=V`` pairs, passed through unchanged."""
    flags = [f"--runner={runner}"]
    flags += [f"--{option}" for option in beam_options]
    return PipelineOptions(flags)


def run(
    config: PipelineConfig,
    transactions: pa.Table,
    options: PipelineOptions,
    labels: pa.Table | None = None,
) -> dict[str, int]:
    """Run the pipeline to completion with ``options``; return its counters (by name).

    Counters are what the runner reports; a runner that reports none gives ``{}``.
    """
    config.work_dir.mkdir(parents=True, exist_ok=True)
    pipeline = beam.Pipeline(options=options)
    build(pipeline, config, transactions, labels)
    result = pipeline.run()
    result.wait_until_finish()
    query = result.metrics().query(beam.metrics.MetricsFilter().with_namespace(METRICS_NAMESPACE))
    return {c.key.metric.name: int(c.committed or c.attempted or 0) for c in query["counters"]}
