"""`fraud train` end to end on a tiny simulated bank: pipeline, training, export.

One training run (module fixture, 1 epoch) feeds most tests; the CLI test runs
the command once more as a user would; the multi-replica test trains again in
a subprocess on the fixture's transformed data.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from features import spec
from features.errors import InputError

pytestmark = pytest.mark.integration

TRAIN_START, TRAIN_END = date(2018, 5, 1), date(2018, 5, 8)
FRAUD = str(Path(sys.executable).parent / "fraud")


@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    """A small simulated bank as a date-partitioned lake, and its table."""
    from ingest.simulator import SimulationConfig, simulate
    from ingest.writers import write_transactions

    table = simulate(SimulationConfig(customers=400, terminals=800, days=45, seed=3)).table
    lake = tmp_path_factory.mktemp("bank") / "lake"
    write_transactions(table, lake)
    # A day after --train-end that cannot be parsed: training must never read it.
    (lake / "date=2018-05-12" / "part-0.parquet").write_bytes(b"not parquet at all")
    return lake, table


def _config(lake: Path, model_dir: Path, **kwargs):
    from training.settings import TrainConfig
    from training.train_job import TrainJobConfig

    defaults = dict(
        input_path=lake, train_start=TRAIN_START, train_end=TRAIN_END, model_dir=model_dir,
        train=TrainConfig(epochs=1, batch_size=256),
    )
    return TrainJobConfig(**{**defaults, **kwargs})


@pytest.fixture(scope="module")
def trained(bank, tmp_path_factory):
    from training.train_job import run

    lake, _ = bank
    root = tmp_path_factory.mktemp("trained")
    config = _config(lake, root / "models", work_dir=root / "work")
    return config, run(config)


def _rows_between(table: pa.Table, first: date, last: date) -> pa.Table:
    days = table.column(spec.TIMESTAMP).to_numpy().astype("datetime64[D]")
    keep = (days >= np.datetime64(first)) & (days <= np.datetime64(last))
    return table.filter(pa.array(keep))


def test_export_layout_and_metadata(trained, bank):
    from features.model_dir import list_versions
    from training.train_job import fingerprint

    config, result = trained
    _, table = bank
    assert result.export_path == config.model_dir / "1"
    assert list_versions(config.model_dir) == [1]
    assert (result.export_path / "saved_model.pb").is_file()
    assert not [p for p in config.model_dir.iterdir() if p.name.startswith(".tmp-")]
    vocabularies = {p.name for p in (result.export_path / "assets").iterdir()}
    assert {f"vocab_{c}" for c in spec.CATEGORICAL_FIELDS} <= vocabularies

    meta = json.loads((result.export_path / "assets.extra" / "metadata.json").read_text())
    read = _rows_between(table, date.fromisoformat(meta["history_start"]), TRAIN_END)
    assert meta["rows"]["read"] == read.num_rows
    assert meta["data_fingerprint"] == fingerprint(read)
    window = _rows_between(table, TRAIN_START, TRAIN_END)
    assert meta["rows"]["train"]["rows"] + meta["rows"]["validation"]["rows"] == window.num_rows
    valid = _rows_between(table, date(2018, 5, 7), TRAIN_END)  # last 20% of 8 days = 2 days
    assert meta["validation_start"] == "2018-05-07"
    assert meta["rows"]["validation"] == {
        "rows": valid.num_rows, "frauds": int(np.sum(valid.column(spec.LABEL_KEY)))
    }
    assert meta["train_start"] == "2018-05-01" and meta["train_end"] == "2018-05-08"
    assert meta["delay_days"] == 7
    assert meta["model_inputs"] == list(spec.MODEL_INPUTS)
    assert 0.0 < meta["threshold"] < 1.0
    assert "alert budget" in meta["threshold_rule"]
    assert meta["validation_metrics"]["alerts_per_day"] == pytest.approx(100, abs=5)
    assert set(meta["versions"]) >= {"tensorflow", "tensorflow_transform"}
    assert meta["training"]["replicas"] == 1
    assert (config.logs_dir or config.model_dir / "logs").is_dir()


def test_warmup_requests_are_real_rows_of_every_input(trained):
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    _, result = trained
    path = result.export_path / "assets.extra" / "tf_serving_warmup_requests"
    logs = [prediction_log_pb2.PredictionLog.FromString(r.numpy())
            for r in tf.data.TFRecordDataset(str(path))]
    assert len(logs) == 1
    request = logs[0].predict_log.request
    assert request.model_spec.signature_name == "serving_default"
    assert set(request.inputs) == set(spec.MODEL_INPUTS)
    amounts = tf.make_ndarray(request.inputs[spec.AMOUNT])
    assert amounts.shape == (5,) and (amounts > 0).all()
    stamps = tf.make_ndarray(request.inputs[spec.TIMESTAMP])
    assert stamps[0].decode().startswith("2018-05-07T") and stamps[0].decode().endswith("Z")


def test_serving_signature_is_the_model_inputs(trained):
    import tensorflow as tf

    _, result = trained
    fn = tf.saved_model.load(str(result.export_path)).signatures["serving_default"]
    _, inputs = fn.structured_input_signature
    assert set(inputs) == set(spec.MODEL_INPUTS)
    for name, dtype in spec.model_input_dtypes().items():
        assert inputs[name].dtype.name == dtype
        assert inputs[name].shape.as_list() == [None]
    assert {k: (v.dtype.name, v.shape.as_list()) for k, v in fn.structured_outputs.items()} == {
        "score": ("float32", [None])
    }


def test_export_is_self_contained_and_scores_like_the_model(trained, bank):
    import tensorflow as tf
    import tensorflow_transform as tft

    from training.export import load_scorer
    from training.model import fraud_probability

    config, result = trained
    work = config.work_dir
    validation = pq.read_table(work / "validation_inputs.parquet")
    raw = {n: validation.column(n).to_numpy(zero_copy_only=False) for n in spec.MODEL_INPUTS}

    tft_output = tft.TFTransformOutput(str(work / "transform_fn"))
    transformed = tft_output.transform_raw_features({n: tf.constant(v) for n, v in raw.items()})
    names = [t.name for t in result.model.inputs]
    logits = result.model({n: transformed[n] for n in names}, training=False)
    in_memory = fraud_probability(logits, config.train.positive_weight).numpy()

    # The export must not need the transform output: move it away while scoring.
    hidden = work / "transform_fn.moved"
    (work / "transform_fn").rename(hidden)
    try:
        exported = load_scorer(result.export_path)(raw)
        batch = _batch_scores(bank, result)
    finally:
        hidden.rename(work / "transform_fn")
    np.testing.assert_allclose(exported, in_memory, rtol=1e-6, atol=1e-7)
    assert exported.std() > 0

    # The batch scoring path (transactions + features -> to_model_inputs -> export)
    # builds the very inputs training used: same scores for the same rows.
    expected = dict(zip(raw[spec.TRANSACTION_ID], exported, strict=True))
    assert batch.keys() == expected.keys()
    np.testing.assert_allclose([batch[k] for k in expected], list(expected.values()), rtol=1e-6)


def _batch_scores(bank, result) -> dict[str, float]:
    """Validation-day scores through ``score_table``, by transaction id."""
    from features.behaviour import compute_features
    from training.batch_scoring import score_table

    _, table = bank
    read = _rows_between(table, result.metadata.history_start, TRAIN_END)
    features = compute_features(read)
    days = read.column(spec.TIMESTAMP).to_numpy().astype("datetime64[D]")
    valid = pa.array(days >= np.datetime64("2018-05-07"))
    scores = score_table(result.export_path, read.filter(valid), features.filter(valid))
    ids = read.filter(valid).column(spec.TRANSACTION_ID).to_pylist()
    return dict(zip(ids, scores, strict=True))


_REPLICA_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from training.settings import TrainConfig
    from training.trainer import configure_logical_cpus, make_strategy, train
    configure_logical_cpus(2)
    import pyarrow.parquet as pq
    import tensorflow as tf
    import tensorflow_transform as tft
    from features import spec
    from training.model import fraud_probability
    work, scores_out, fraud_rate = sys.argv[1], sys.argv[2], float(sys.argv[3])
    output = tft.TFTransformOutput(work + "/transform_fn")
    result = train(TrainConfig(epochs=1, batch_size=64), output,
                   work + "/transformed/train-*.tfrecord",
                   work + "/transformed/validation-*.tfrecord", fraud_rate=fraud_rate)
    validation = pq.read_table(work + "/validation_inputs.parquet")
    raw = {n: tf.constant(validation.column(n).to_numpy(zero_copy_only=False))
           for n in spec.MODEL_INPUTS}
    transformed = output.transform_raw_features(raw)
    logits = result.model({t.name: transformed[t.name] for t in result.model.inputs},
                          training=False)
    np.save(scores_out, fraud_probability(logits, TrainConfig().positive_weight).numpy())
    print(json.dumps({
        "replicas": result.replicas,
        "devices": list(make_strategy().extended.worker_devices),
        "global_batch_size": result.global_batch_size,
        "examples_per_replica": list(result.examples_per_replica),
        "history": result.history,
    }))
    """
)


@pytest.fixture(scope="module")
def two_replicas(trained, tmp_path_factory):
    """1 epoch on 2 logical CPU replicas (batch 64 each) in one process, on the
    fixture's transformed data: its figures and its validation-day scores."""
    config, result = trained
    root = tmp_path_factory.mktemp("two-replicas")
    work = root / "work"
    shutil.copytree(config.work_dir, work)
    train = result.metadata.details["rows"]["train"]  # the fraud rate `fraud train` uses
    done = subprocess.run(
        [sys.executable, "-c", _REPLICA_SCRIPT, str(work), str(root / "scores.npy"),
         repr(train["frauds"] / train["rows"])],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    return figures, np.load(root / "scores.npy")


def test_two_replicas_share_the_training_work(trained, two_replicas):
    _, result = trained
    figures, _ = two_replicas
    assert figures["replicas"] == 2
    assert len(figures["devices"]) == 2 and figures["devices"][0] != figures["devices"][1]
    assert figures["global_batch_size"] == 128
    per_replica = figures["examples_per_replica"]
    train_rows = result.metadata.details["rows"]["train"]["rows"]
    # Each replica processed its own half of every global batch.
    assert len(per_replica) == 2 and sum(per_replica) == train_rows
    assert abs(per_replica[0] - per_replica[1]) <= 64
    assert min(per_replica) > 0


def _free_ports(count: int) -> list[int]:
    import socket

    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def test_two_workers_train_one_model_and_the_chief_alone_exports(
    trained, bank, two_replicas, tmp_path
):
    """`fraud train` as two worker processes (MultiWorkerMirroredStrategy over loopback).

    Same data, seed and global batch (2 replicas x 64) as the single-process
    2-replica run of ``two_replicas``: the same sequence of global batches,
    each cut the same way, the two replicas' gradients summed. A sum of two
    floats does not depend on its order, so the only difference left would be
    kernel-level nondeterminism (oneDNN may pick other kernels on other CPUs):
    scores agree to 1e-5, far below an alert threshold's scale (~1e-2).
    Measured here: identical (largest difference 0.0).
    """
    from features.model_dir import list_versions
    from training.export import load_scorer

    config, single = trained
    lake, _ = bank
    models = tmp_path / "models"
    addresses = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    workers = []
    for index in range(2):
        tf_config = {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}
        workers.append(subprocess.Popen(
            [FRAUD, "train", "--input", str(lake), "--train-start", "2018-05-01",
             "--train-end", "2018-05-08", "--model-dir", str(models), "--epochs", "1",
             "--batch-size", "64", "--work-dir", str(tmp_path / f"work-{index}")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_CONFIG": json.dumps(tf_config)},
        ))
    outputs = []
    try:
        for worker in workers:
            out, err = worker.communicate(timeout=400)
            assert worker.returncode == 0, err[-3000:]
            outputs.append((out.strip().splitlines()[-1], err))
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    (chief_line, chief_log), (worker_line, worker_log) = outputs
    # Both took part: each trained as its own task of a 2-worker cluster, and each
    # replica (one per worker) processed half of every global batch.
    assert "across 2 workers as worker 0 (chief)" in " ".join(chief_log.split())
    assert "across 2 workers as worker 1" in " ".join(worker_log.split())
    summary = json.loads(worker_line)
    assert summary["exported"] is None and summary["workers"] == 2
    train_rows = single.metadata.details["rows"]["train"]["rows"]
    per_replica = summary["examples_per_replica"]
    assert len(per_replica) == 2 and sum(per_replica) == train_rows and min(per_replica) > 0
    # The chief alone exported, once; the other worker's scratch export is gone.
    assert Path(chief_line) == models / "1" and list_versions(models) == [1]
    assert (tmp_path / "work-1" / "transform_fn").is_dir()
    assert not list((tmp_path / "work-1").glob("fraud-worker-export-*"))
    meta = json.loads((models / "1" / "assets.extra" / "metadata.json").read_text())
    assert meta["training"]["workers"] == 2 and meta["training"]["replicas"] == 2
    assert meta["training"]["examples_per_replica"] == per_replica
    assert meta["data_fingerprint"] == single.metadata.data_fingerprint

    # ... and it scores like the single-process run with the same global batch.
    figures, reference = two_replicas
    assert figures["examples_per_replica"] == per_replica
    validation = pq.read_table(config.work_dir / "validation_inputs.parquet")
    raw = {n: validation.column(n).to_numpy(zero_copy_only=False) for n in spec.MODEL_INPUTS}
    scores = load_scorer(models / "1")(raw)
    np.testing.assert_allclose(scores, reference, rtol=0, atol=1e-5)
    assert scores.std() > 0


def _analyst_labels(table: pa.Table, path: Path) -> tuple[int, int]:
    """Write decisions flipping 3 frauds and 5 genuine rows of the train split, as
    ``fraud labels export`` would; return the train split's new fraud count change."""
    from datetime import UTC, datetime

    from scoring.db.export import write_labels
    from scoring.db.repository import ReviewedLabel

    train = _rows_between(table, TRAIN_START, date(2018, 5, 6)).to_pylist()
    frauds = [r for r in train if r[spec.LABEL_KEY] == 1][:3]
    genuine = [r for r in train if r[spec.LABEL_KEY] == 0][:5]
    reviewed = datetime(2018, 5, 9, tzinfo=UTC)
    decisions = [
        ReviewedLabel(r[spec.TRANSACTION_ID], r[spec.CUSTOMER_ID], r[spec.TERMINAL_ID],
                      r[spec.TIMESTAMP], 1 - r[spec.LABEL_KEY], reviewed)
        for r in frauds + genuine
    ]
    write_labels(decisions, path)
    return len(genuine) - len(frauds), len(decisions)


def test_cli_trains_the_next_version_with_analyst_labels(trained, bank, tmp_path):
    config, first = trained
    lake, table = bank
    labels = tmp_path / "analyst-labels.jsonl"
    fraud_change, decided = _analyst_labels(table, labels)
    done = subprocess.run(
        [FRAUD, "train", "--input", str(lake), "--train-start", "2018-05-01",
         "--train-end", "2018-05-08", "--model-dir", str(config.model_dir), "--epochs", "1",
         "--alerts-per-day", "20", "--runner", "DirectRunner",
         "--beam-option", "direct_running_mode=in_memory", "--labels", str(labels)],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    assert Path(last) == config.model_dir / "2"
    meta = json.loads((Path(last) / "assets.extra" / "metadata.json").read_text())
    assert meta["alerts_per_day_budget"] == 20
    for stage in ("read", "features + TFT", "training", "export"):
        assert stage in done.stderr
    # The analysts' decisions replaced the input's labels before anything was learnt.
    assert meta["label_files"] == {"files": [str(labels)], "labelled": decided,
                                   "matched": decided, "to_fraud": 5, "to_genuine": 3}
    before = first.metadata.details["rows"]["train"]["frauds"]
    assert meta["rows"]["train"]["frauds"] == before + fraud_change
    assert meta["data_fingerprint"] != first.metadata.data_fingerprint
    assert first.metadata.details["label_files"] is None


def test_cli_rejects_unknown_runner_and_reversed_dates(bank, tmp_path, capsys):
    from tests.cli_support import fraud_in_process

    def _cli_error(*args: str) -> str:
        code, _, err = fraud_in_process(capsys, "train", *args)
        assert code == 2, err[-2000:]
        assert "Traceback" not in err
        return err.strip().splitlines()[-1]

    lake, _ = bank
    common = ["--input", str(lake), "--model-dir", str(tmp_path / "models")]
    line = _cli_error(*common, "--train-start", "2018-05-01", "--train-end", "2018-05-08",
                      "--runner", "NoSuchRunner")
    assert line.startswith("error: unknown Beam runner 'NoSuchRunner'")
    line = _cli_error(*common, "--train-start", "2018-05-08", "--train-end", "2018-05-01")
    assert line == "error: --train-start 2018-05-08 is after --train-end 2018-05-01"
    line = _cli_error(*common, "--train-start", "2018-05-01", "--train-end", "2018-05-08",
                      "--labels", str(tmp_path / "missing.jsonl"))
    assert line == f"error: labels file not found: {tmp_path / 'missing.jsonl'}"
    assert not (tmp_path / "models").exists()


@pytest.mark.parametrize(
    ("window", "message"),
    [
        ((date(2019, 1, 1), date(2019, 1, 7)), "no transactions between 2019-01-01 and 2019-01-07"),
        ((date(2018, 5, 14), date(2018, 5, 20)), "no transactions in the validation split"),
    ],
)
def test_empty_periods_are_rejected_before_any_work(bank, tmp_path, window, message):
    from training.train_job import run

    _, table = bank
    clean = tmp_path / "bank.parquet"
    pq.write_table(table, clean)
    config = _config(clean, tmp_path / "models", train_start=window[0], train_end=window[1],
                     work_dir=tmp_path / "work")
    with pytest.raises(InputError, match=message):
        run(config)
    assert not (tmp_path / "work").exists() or not any((tmp_path / "work").iterdir())
    assert not (tmp_path / "models").exists()


def test_no_frauds_is_rejected(bank, tmp_path):
    from training.train_job import run

    _, table = bank
    genuine = table.set_column(
        table.schema.get_field_index(spec.LABEL_KEY), spec.LABEL_KEY,
        pa.array(np.zeros(table.num_rows, np.int8)),
    )
    path = tmp_path / "genuine.parquet"
    pq.write_table(genuine, path)
    expected = r"no frauds in the train split \(2018-05-01 to 2018-05-06\)"
    with pytest.raises(InputError, match=expected):
        run(_config(path, tmp_path / "models"))


def test_missing_column_is_rejected(bank, tmp_path):
    from training.train_job import run

    _, table = bank
    path = tmp_path / "no-amount.parquet"
    pq.write_table(table.drop_columns([spec.AMOUNT]), path)
    with pytest.raises(InputError, match="amount"):
        run(_config(path, tmp_path / "models"))


def test_export_records_a_reason_code_baseline_the_real_model_explains_with(trained):
    from scoring.reasons import input_groups, reason_codes
    from training.export import load_scorer

    config, result = trained
    baseline = result.metadata.details["baseline"]
    assert set(baseline) == {n for cols in input_groups().values() for n in cols}
    assert isinstance(baseline[spec.MERCHANT_CATEGORY], str)
    assert isinstance(baseline[spec.AMOUNT], float) and baseline[spec.AMOUNT] > 0
    assert len(json.dumps(baseline)) < 4000  # small: one value per input

    validation = pq.read_table(config.work_dir / "validation_inputs.parquet")
    inputs = {n: validation.column(n).to_numpy(zero_copy_only=False) for n in spec.MODEL_INPUTS}
    score = load_scorer(result.export_path)
    top = np.argsort(-score(inputs))[:20]
    alerts = {n: v[top] for n, v in inputs.items()}
    calls = []

    def predict(batch):
        calls.append(len(batch[spec.AMOUNT]))
        return score(batch)

    reasons = reason_codes(predict, alerts, baseline, top_k=3)
    assert calls == [20 * (len(input_groups()) + 1)]
    assert sum(1 for r in reasons if r) >= 15
    for row, found in enumerate(reasons):
        values = [r["contribution"] for r in found]
        assert values == sorted(values, reverse=True) and all(v > 0 for v in values)
        assert all(r["text"] for r in found)
        if found:  # the contribution is the score drop with that group at the baseline
            group = input_groups()[found[0]["group"]]
            one = {n: v[row:row + 1].copy() for n, v in alerts.items()}
            occluded = {n: (np.array([baseline[n]], dtype=v.dtype) if n in group else v)
                        for n, v in one.items()}
            drop = float(score(one)[0]) - float(score(occluded)[0])
            assert found[0]["contribution"] == pytest.approx(drop, abs=2e-4)


def _decoded_rows(work: Path, split: str, feature_spec) -> np.ndarray:
    """A split's transformed examples as a matrix, rows in a canonical order."""
    import tensorflow as tf

    files = sorted(str(p) for p in (work / "transformed").glob(f"{split}-*.tfrecord"))
    parsed = next(iter(tf.data.TFRecordDataset(files).batch(1_000_000)
                       .map(lambda s: tf.io.parse_example(s, feature_spec))))
    matrix = np.stack([parsed[k].numpy().astype(np.float64) for k in sorted(parsed)], axis=1)
    return matrix[np.lexsort(matrix.T[::-1])]


def test_pipeline_runs_unchanged_on_the_multi_processing_direct_runner(trained, tmp_path):
    """Beam's local parallel mode (2 worker processes): the same transform and data."""
    import tensorflow as tf
    import tensorflow_transform as tft

    from ingest.readers import read_transactions
    from training import pipeline
    from training.pipeline import PipelineConfig

    config, result = trained
    table = read_transactions(config.input_path, labelled=True, start=config.read_from,
                              end=config.train_end).table
    parallel = PipelineConfig(train_start=config.train_start, train_end=config.train_end,
                              validation_days=config.validation_days, work_dir=tmp_path / "work")
    options = pipeline.pipeline_options(
        "DirectRunner", ["direct_running_mode=multi_processing", "direct_num_workers=2"])
    assert options.get_all_options()["direct_running_mode"] == "multi_processing"
    counters = pipeline.run(parallel, table, options)
    assert counters[pipeline.FEATURE_ROWS] == result.timings["rows_read"]

    serial, multi = config.work_dir, parallel.work_dir
    vocabularies = sorted((serial / "transform_fn" / "transform_fn" / "assets").iterdir())
    assert vocabularies
    for path in vocabularies:
        assert (multi / "transform_fn" / "transform_fn" / "assets" / path.name).read_bytes() \
            == path.read_bytes()
    validation = pq.read_table(serial / "validation_inputs.parquet")
    assert pq.read_table(multi / "validation_inputs.parquet").equals(validation)
    raw = {n: tf.constant(validation.column(n).to_numpy(zero_copy_only=False))
           for n in spec.MODEL_INPUTS}
    one, two = (tft.TFTransformOutput(str(w / "transform_fn")) for w in (serial, multi))
    for name, values in one.transform_raw_features(raw).items():
        np.testing.assert_array_equal(two.transform_raw_features(raw)[name].numpy(),
                                      values.numpy(), err_msg=name)
    # The examples themselves: the same rows (the runners write them in other orders).
    for split in ("train", "validation"):
        np.testing.assert_array_equal(
            _decoded_rows(multi, split, one.transformed_feature_spec()),
            _decoded_rows(serial, split, one.transformed_feature_spec()))
