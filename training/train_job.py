"""``fraud train``: the batch retraining job, from a request to an exported version.

1. check the request and the data (every input error before any work);
2. read labelled transactions of the history and the window, nothing after
   ``train_end``, and apply the analysts' decisions from label files
   (:mod:`ingest.label_files`); only labels known before the end of
   ``train_end`` plus ``delay_days`` count (:meth:`TrainJobConfig.labels_cutoff`),
   for the targets and the features alike (docs/labels.md);
3. the Beam pipeline (:mod:`training.pipeline`): behavioural features, TFT;
4. training (:mod:`training.trainer`): ``MirroredStrategy`` on one machine,
   ``MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` names a cluster;
5. the export (:mod:`training.export`) with its metadata: the alert threshold
   is chosen on the validation days' scores from the exported model itself.

In a cluster every worker runs steps 1-3 on its own copy of the input (the
pipeline is deterministic; the trainer checks that every worker got the same
data) and step 5 too, but only the chief's export goes to ``model_dir``: the
others export to a scratch folder that is deleted, so that every worker
takes part in whatever a save does across the cluster.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from features import spec
from features.behaviour import BehaviourConfig, lookback_days
from features.errors import InputError
from features.model_dir import ModelMetadata, read_metadata
from features.progress import Progress, silent
from ingest.label_files import (
    LabelsApplied,
    apply_label_files,
    check_label_files,
    label_history,
    read_label_files,
)
from training.cluster import current_cluster
from training.pipeline import TRAIN, VALIDATION, PipelineConfig, window_rows
from training.settings import TrainConfig


@dataclass(frozen=True)
class TrainJobConfig:
    """Everything ``fraud train`` was asked to do."""

    input_path: Path
    train_start: date
    train_end: date
    model_dir: Path
    delay_days: int = spec.DEFAULT_DELAY_DAYS
    runner: str = "DirectRunner"
    beam_options: tuple[str, ...] = ()
    replicas: int | None = None
    work_dir: Path | None = None
    logs_dir: Path | None = None
    alerts_per_day: int = 100
    validation_fraction: float = 0.2
    #: Days of history replayed before the window; default: all the features can use.
    history_days: int | None = None
    #: ``fraud-labels`` files (``fraud labels export``) whose decisions override the input's.
    label_files: tuple[Path, ...] = ()
    train: TrainConfig = field(default_factory=TrainConfig)

    @property
    def window_days(self) -> int:
        """Days of the training window, both ends included."""
        return (self.train_end - self.train_start).days + 1

    @property
    def validation_days(self) -> int:
        """The last days of the window held out for validation (at least one)."""
        return max(1, round(self.validation_fraction * self.window_days))

    @property
    def labels_cutoff(self) -> datetime:
        """Labels known before this count: the end of ``train_end`` plus ``delay_days``.

        The Handbook's protocol: a model trained on a window goes live
        ``delay`` days after it, when the window's labels are as known as
        they will be for its features; a label known later (a chargeback
        weeks late) is not used, as it would not have been in a bank.
        """
        end = self.train_end + timedelta(days=1 + self.delay_days)
        return datetime.combine(end, datetime.min.time(), UTC)

    @property
    def read_from(self) -> date:
        """First day read: the window start minus the history."""
        days = self.history_days
        if days is None:
            days = lookback_days(self.delay_days)
        return self.train_start - timedelta(days=days)


@dataclass(frozen=True)
class TrainJobResult:
    """The exported version and the figures of the run."""

    export_path: Path
    metadata: ModelMetadata
    #: Wall time of each stage (seconds) and rows read.
    timings: dict[str, float]
    #: The trained Keras model, in memory (the export wraps it with the TFT graph).
    model: Any = None
    #: False on a non-chief worker of a cluster: its export was scratch, now deleted.
    exported: bool = True


# --- checks -----------------------------------------------------------------


def check_request(config: TrainJobConfig) -> None:
    """Reject a bad request before anything is read (:class:`InputError`)."""
    if config.train_start > config.train_end:
        raise InputError(
            f"--train-start {config.train_start} is after --train-end {config.train_end}"
        )
    if config.window_days < 2:
        raise InputError(
            "the training window must span at least 2 days: its last days are the validation split"
        )
    if config.validation_days >= config.window_days:
        raise InputError("the validation split would leave no training days")
    if not Path(config.input_path).exists():
        raise InputError(f"input not found: {config.input_path}")
    if config.delay_days < 0:
        raise InputError(f"--delay-days must be >= 0, got {config.delay_days}")
    if config.replicas is not None and config.replicas < 1:
        raise InputError(f"--replicas must be >= 1, got {config.replicas}")
    if config.replicas is not None and current_cluster() is not None:
        raise InputError(
            "--replicas splits the CPU of a single-process run; under TF_CONFIG each "
            "worker trains one replica per GPU (or one on its CPU)"
        )
    if config.alerts_per_day < 1:
        raise InputError(f"--alerts-per-day must be >= 1, got {config.alerts_per_day}")
    if config.history_days is not None and config.history_days < 0:
        raise InputError(f"--history-days must be >= 0, got {config.history_days}")
    check_label_files(config.label_files)
    check_runner(config.runner)
    for option in config.beam_options:
        if "=" not in option or option.startswith("="):
            raise InputError(f"--beam-option must be KEY=VALUE, got {option!r}")


def check_runner(runner: str) -> None:
    """The runner must be one Beam knows (by name or dotted path) and can import."""
    from apache_beam.options.pipeline_options import StandardOptions
    from apache_beam.runners.runner import create_runner

    try:
        create_runner(runner)
    except ImportError as err:
        raise InputError(f"Beam runner {runner!r} is not available here: {err}") from None
    except (ValueError, AttributeError):
        known = ", ".join(StandardOptions.KNOWN_RUNNER_NAMES)
        raise InputError(f"unknown Beam runner {runner!r}; known runners: {known}") from None


def _split_counts(transactions: pa.Table, config: PipelineConfig) -> dict[str, dict[str, int]]:
    """Rows and frauds of each split (the same masks the pipeline uses)."""
    inside = window_rows(transactions, config)
    boundary = datetime.combine(config.validation_start, datetime.min.time(), UTC)
    times = transactions.column(spec.TIMESTAMP)
    valid = np.asarray(
        pc.greater_equal(times, pa.scalar(boundary, times.type)).to_numpy(zero_copy_only=False)
    )
    labels = np.asarray(transactions.column(spec.LABEL_KEY).to_numpy(zero_copy_only=False))
    counts = {}
    for split, mask in ((TRAIN, inside & ~valid), (VALIDATION, inside & valid)):
        counts[split] = {"rows": int(mask.sum()), "frauds": int(labels[mask].sum())}
    return counts


def check_data(counts: Mapping[str, Mapping[str, int]], config: TrainJobConfig,
               pipeline: PipelineConfig) -> None:
    """The window must have rows, and each split frauds to learn and to validate on."""
    total = sum(c["rows"] for c in counts.values())
    if total == 0:
        raise InputError(
            f"no transactions between {config.train_start} and {config.train_end} "
            f"in {config.input_path}"
        )
    spans = {
        TRAIN: (config.train_start, pipeline.validation_start - timedelta(days=1)),
        VALIDATION: (pipeline.validation_start, config.train_end),
    }
    for split, (first, last) in spans.items():
        if counts[split]["rows"] == 0:
            raise InputError(f"no transactions in the {split} split ({first} to {last})")
        if counts[split]["frauds"] == 0:
            raise InputError(
                f"no frauds in the {split} split ({first} to {last}): "
                "the model needs labelled frauds to learn from and to validate on"
            )


def fingerprint(table: pa.Table) -> str:
    """SHA-256 of the rows read (Arrow IPC stream of the canonical table)."""
    digest = hashlib.sha256()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table.combine_chunks())
    digest.update(sink.getvalue())
    return f"sha256:{digest.hexdigest()}"


# --- the run ----------------------------------------------------------------


@contextmanager
def _stage(name: str, timings: dict[str, float], say: Progress) -> Iterator[None]:
    say(f"{name} ...")
    start = time.perf_counter()
    yield
    timings[name] = round(time.perf_counter() - start, 3)
    say(f"{name} done in {timings[name]:.1f} s")


def choose_threshold(scores: np.ndarray, days: int, alerts_per_day: int) -> float:
    """The score above which the validation days yield ``alerts_per_day`` alerts a day.

    The daily alert budget is what an investigation team can handle; the
    threshold is the budget-th highest validation score.
    """
    ranked = np.sort(scores)[::-1]
    budget = alerts_per_day * days
    return float(ranked[min(budget, ranked.size) - 1])


def _validation_figures(
    scores: np.ndarray, labels: np.ndarray, threshold: float, days: int
) -> dict[str, float]:
    from training import evaluation as ev

    at = ev.threshold_metrics(labels, scores, threshold)
    return {
        "auc_roc": round(ev.roc_auc(labels, scores), 6),
        "average_precision": round(ev.average_precision(labels, scores), 6),
        "alerts_per_day": round(at.alerts / days, 2),
        "precision_at_threshold": round(at.precision, 6),
        "recall_at_threshold": round(at.recall, 6),
    }


def _library_versions() -> dict[str, str]:
    import apache_beam
    import keras
    import tensorflow as tf
    import tensorflow_transform as tft

    return {"tensorflow": tf.__version__, "tensorflow_transform": tft.__version__,
            "keras": keras.__version__, "apache_beam": apache_beam.__version__}


def run(config: TrainJobConfig, progress: Progress | None = None) -> TrainJobResult:
    """Run the whole job; return the export path and figures."""
    say = progress or silent
    check_request(config)
    if config.replicas is not None:
        from training.trainer import configure_logical_cpus

        configure_logical_cpus(config.replicas)  # before any TensorFlow op runs
    if current_cluster() is not None:
        from training.trainer import make_strategy

        make_strategy()  # a cluster's collectives are set up before any TensorFlow op runs
    timings: dict[str, float] = {}
    work_dir = config.work_dir or Path(tempfile.mkdtemp(prefix="fraud-train-"))
    try:
        return _run(config, work_dir, timings, say)
    finally:
        if config.work_dir is None:
            shutil.rmtree(work_dir, ignore_errors=True)


def _apply_decisions(
    table: pa.Table, labels: pa.Table | None, paths: tuple[Path, ...], cutoff: datetime,
    say: Progress,
) -> tuple[pa.Table, pa.Table, LabelsApplied]:
    from ingest.readers import epoch_us

    files = read_label_files(paths)
    history = label_history(table, labels, files, epoch_us(cutoff))
    table, applied = apply_label_files(table, files, history)
    say(f"label files: {files.records} decisions on {applied.labelled} transactions, "
        f"{applied.matched} of them in the rows read; {applied.to_fraud} became fraud, "
        f"{applied.to_genuine} genuine")
    return table, history, applied


def _run(config: TrainJobConfig, work_dir: Path, timings: dict[str, float],
         say: Progress) -> TrainJobResult:
    from ingest.readers import read_transactions

    pipeline_config = PipelineConfig(
        train_start=config.train_start,
        train_end=config.train_end,
        validation_days=config.validation_days,
        work_dir=work_dir,
        delay_days=config.delay_days,
    )
    with _stage(f"read {config.input_path} from {config.read_from} to {config.train_end}",
                timings, say):
        read = read_transactions(
            config.input_path, labelled=True, start=config.read_from, end=config.train_end,
            labels_known_before=config.labels_cutoff,
        )
        table, labels = read.table, read.labels
        applied = None
        if config.label_files:
            table, labels, applied = _apply_decisions(
                table, labels, config.label_files, config.labels_cutoff, say)
        counts = _split_counts(table, pipeline_config)
        check_data(counts, config, pipeline_config)
        data_fingerprint = fingerprint(table)
    timings["rows_read"] = table.num_rows
    with _stage(f"features + TFT on the {config.runner}", timings, say):
        from training import pipeline

        counters = pipeline.run(
            pipeline_config,
            table,
            pipeline.pipeline_options(config.runner, config.beam_options),
            labels,
        )
    if pipeline.FEATURES_MS in counters:
        timings["behavioural_features (in the pipeline)"] = counters[pipeline.FEATURES_MS] / 1000
    del table, labels
    with _stage("training", timings, say):
        import tensorflow_transform as tft

        from training import trainer

        tft_output = tft.TFTransformOutput(str(pipeline_config.transform_fn_dir))
        train_counts = counts[TRAIN]
        logs_dir = config.logs_dir or config.model_dir / "logs"
        result = trainer.train(
            replace(config.train, logs_dir=logs_dir),
            tft_output,
            pipeline_config.transformed_pattern(TRAIN),
            pipeline_config.transformed_pattern(VALIDATION),
            fraud_rate=train_counts["frauds"] / train_counts["rows"],
        )
    across = f" across {result.workers} workers" if result.workers > 1 else ""
    role = "" if result.cluster is None else (
        f" as {result.cluster.task_type} {result.cluster.task_index}"
        f"{' (chief)' if result.is_chief else ''}")
    say(f"trained {result.epochs_run} epochs on {result.replicas} replica(s){across}{role}, "
        f"best epoch {result.best_epoch} (validation AP "
        f"{result.validation_average_precision:.3f}); rows per replica in the last epoch: "
        f"{list(result.examples_per_replica)}")
    with _stage("export", timings, say):
        from features.input_groups import baseline_of
        from training.export import export, serving_module

        validation = pq.read_table(pipeline_config.validation_inputs_path)
        inputs = {n: validation.column(n).to_numpy() for n in spec.MODEL_INPUTS}
        labels = validation.column(spec.LABEL_KEY).to_numpy()
        details = {
            "input": str(config.input_path),
            "rows": {"read": timings["rows_read"], **counts},
            "training": {
                **{k: (list(v) if isinstance(v, tuple) else v)
                   for k, v in asdict(config.train).items() if k != "logs_dir"},
                "replicas": result.replicas,
                "workers": result.workers,
                "examples_per_replica": list(result.examples_per_replica),
                "global_batch_size": result.global_batch_size,
                "epochs_run": result.epochs_run,
                "best_epoch": result.best_epoch,
                "class_imbalance": f"frauds weighted {config.train.positive_weight}x in the "
                                   "loss; scores corrected back to probabilities",
            },
            "label_files": None if applied is None else {
                "files": [str(p) for p in config.label_files], **applied.as_dict()},
            "runner": config.runner,
            "versions": _library_versions(),
        }

        def finish(score: Callable[[Mapping[str, np.ndarray]], np.ndarray]) -> ModelMetadata:
            scores = score(inputs)
            threshold = choose_threshold(scores, config.validation_days, config.alerts_per_day)
            return ModelMetadata(
                threshold=threshold,
                behaviour=BehaviourConfig(delay_days=config.delay_days),
                model_inputs=spec.MODEL_INPUTS,
                train_start=config.train_start,
                train_end=config.train_end,
                validation_start=pipeline_config.validation_start,
                history_start=config.read_from,
                data_fingerprint=data_fingerprint,
                created_at=datetime.now(UTC).isoformat(timespec="seconds"),
                details={
                    **details,
                    "threshold_rule": (
                        f"daily alert budget: the "
                        f"{config.alerts_per_day * config.validation_days}-th highest score "
                        f"of the {config.validation_days} validation day(s), "
                        f"i.e. ~{config.alerts_per_day} alerts per day"
                    ),
                    "alerts_per_day_budget": config.alerts_per_day,
                    "validation_metrics": _validation_figures(
                        scores, labels, threshold, config.validation_days
                    ),
                    # Reason codes (scoring/reasons.py) occlude input groups with this:
                    # medians / modes of the genuine rows of the window's validation days,
                    # the window's rows whose raw model inputs the job holds.
                    "baseline": baseline_of(inputs, labels == 0),
                    "baseline_rows": "genuine rows of the validation days",
                },
            )

        module = serving_module(result.model, tft_output, config.train.positive_weight)
        warmup = {n: v[:5] for n, v in inputs.items()}
        if result.is_chief:
            path = export(module, config.model_dir, warmup, finish)
            metadata = read_metadata(config.model_dir, int(path.name))
            return TrainJobResult(path, metadata, timings, result.model)
        # A non-chief worker exports like the chief, to a scratch folder it then deletes.
        scratch = Path(tempfile.mkdtemp(prefix="fraud-worker-export-", dir=work_dir))
        try:
            path = export(module, scratch, warmup, finish)
            metadata = read_metadata(scratch, int(path.name))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return TrainJobResult(path, metadata, timings, result.model, exported=False)
