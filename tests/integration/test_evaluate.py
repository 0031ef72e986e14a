"""`fraud evaluate` end to end: simulated lake, real features, a SavedModel, the CLI."""

from __future__ import annotations

import csv
import dataclasses
import json
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from features import spec
from features.behaviour import BehaviourConfig, compute_features
from ingest.simulator import SimulationConfig, simulate
from ingest.writers import write_transactions
from tests.fixtures.model_server import export_toy_model, toy_scores
from training.evaluate_job import _load_period, choose_model
from training.report import PLOTS

pytestmark = pytest.mark.integration

START, END = date(2018, 5, 21), date(2018, 5, 27)
FIGURES = {"auc_roc", "average_precision", "card_precision_at_100", "transactions", "frauds",
           "recall_at_threshold", "precision_at_threshold", "alerts_per_day", "threshold",
           "model_version"}


@pytest.fixture(scope="module")
def bank(tmp_path_factory) -> tuple[Path, pa.Table]:
    """60 simulated days written as a date-partitioned Parquet lake, and the table itself."""
    table = simulate(SimulationConfig(customers=300, terminals=600, days=60, seed=1)).table
    lake = tmp_path_factory.mktemp("bank") / "lake"
    write_transactions(table, lake)
    return lake, table


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    """Toy exports with the real serving contract: version 1 (weight 0.5) and 2 (weight 1.5)."""
    model_dir = tmp_path_factory.mktemp("models")
    export_toy_model(model_dir, 1, 0.5, warmup=False)
    export_toy_model(model_dir, 2, 1.5, warmup=False)
    return model_dir


def _fraud(*args: str | Path) -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).parent / "fraud"), "evaluate", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def _in_period(table: pa.Table) -> pa.Array:
    times = table.column(spec.TIMESTAMP)
    low = pa.scalar(datetime(START.year, START.month, START.day, tzinfo=UTC), times.type)
    high = pa.scalar(datetime(END.year, END.month, END.day + 1, tzinfo=UTC), times.type)
    return pc.and_(pc.greater_equal(times, low), pc.less(times, high))


def _known_compromised(table: pa.Table, since: date = START - timedelta(days=37)) -> np.ndarray:
    """Per period row, whether its card had a fraud from ``since`` to its day - delay - 1.

    The toy exports carry no training start, so by default "known" counts from
    the first day read: START minus the 37-day feature look-back.
    """
    fraud_days: dict[str, list[date]] = {}
    for row in table.to_pylist():
        day = row[spec.TIMESTAMP].date()
        if row[spec.LABEL_KEY] == 1 and day >= since:
            fraud_days.setdefault(row[spec.CUSTOMER_ID], []).append(day)
    period = table.filter(_in_period(table)).to_pylist()
    return np.array([
        any(f <= row[spec.TIMESTAMP].date() - timedelta(days=8)
            for f in fraud_days.get(row[spec.CUSTOMER_ID], []))
        for row in period
    ])


@pytest.fixture(scope="module")
def evaluated(bank, models, tmp_path_factory):
    """One full run of `fraud evaluate` on the latest version, with scores and report."""
    lake, _ = bank
    out = tmp_path_factory.mktemp("evaluation")
    result = _fraud("--input", lake, "--start", START, "--end", END, "--model-dir", models,
                    "--scores-out", out / "scores.csv", "--report-dir", out / "report")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1]), out


@pytest.mark.parametrize("train_start", [None, START - timedelta(days=50)])
def test_period_features_need_no_history_beyond_the_lookback(bank, models, train_start):
    lake, table = bank
    model = dataclasses.replace(choose_model(models, None), train_start=train_start)
    loaded = _load_period(lake, START, END, model, exclude_known=True)
    period, features = loaded.transactions, loaded.features
    expected_known = _known_compromised(table, train_start or START - timedelta(days=37))
    assert np.array_equal(loaded.known_compromised, expected_known)
    everything = compute_features(table, BehaviourConfig())
    expected = everything.filter(_in_period(table))
    assert period.column(spec.TRANSACTION_ID).equals(
        table.filter(_in_period(table)).column(spec.TRANSACTION_ID))
    assert features.equals(expected)


def test_evaluate_prints_every_figure_in_range(evaluated, bank):
    figures, _ = evaluated
    period = bank[1].filter(_in_period(bank[1]))
    known = _known_compromised(bank[1])
    labels = period.column(spec.LABEL_KEY).to_numpy()
    assert set(figures) >= FIGURES
    assert figures["model_version"] == 2  # the latest by default
    assert figures["threshold"] == 0.5
    assert figures["excluded_known_compromised"] == known.sum() > 0
    assert figures["transactions"] == period.num_rows - known.sum()
    assert figures["frauds"] == labels[~known].sum() > 0
    for name in ("auc_roc", "average_precision", "card_precision_at_100",
                 "recall_at_threshold", "precision_at_threshold"):
        assert 0.0 <= figures[name] <= 1.0, name
    assert figures["auc_roc"] > 0.5  # amounts carry signal: the toy model beats chance
    assert 0 <= figures["alerts_per_day"] <= period.num_rows / 7


def test_scores_csv_has_the_model_score_of_every_transaction(evaluated, bank):
    figures, out = evaluated
    _, table = bank
    with (out / "scores.csv").open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == [spec.TRANSACTION_ID, "score"]
    in_period = _in_period(table)
    period = table.filter(in_period)
    assert [r[0] for r in rows[1:]] == period.column(spec.TRANSACTION_ID).to_pylist()

    features = compute_features(table, BehaviourConfig()).filter(in_period)
    inputs = {
        spec.AMOUNT: period.column(spec.AMOUNT).to_numpy().astype(np.float32),
        spec.CHANNEL: np.asarray(period.column(spec.CHANNEL).to_pylist(), dtype=object),
        "customer_nb_tx_1d": features.column("customer_nb_tx_1d").to_numpy(),
    }
    scores = np.array([float(r[1]) for r in rows[1:]])
    np.testing.assert_allclose(scores, toy_scores(inputs, weight=1.5), atol=1e-5)

    # the printed AUC is the share of (fraud, genuine) pairs ranked right, ties half,
    # over the transactions of cards not yet known compromised
    assessed = ~_known_compromised(table)
    labels = period.column(spec.LABEL_KEY).to_numpy()[assessed]
    fraud, genuine = scores[assessed][labels == 1], scores[assessed][labels == 0]
    pairs = (fraud[:, None] > genuine[None, :]).mean() + 0.5 * (
        fraud[:, None] == genuine[None, :]).mean()
    assert figures["auc_roc"] == pytest.approx(pairs, abs=1e-9)


def test_report_has_the_page_and_every_plot(evaluated):
    figures, out = evaluated
    page = (out / "report" / "index.html").read_text(encoding="utf-8")
    assert f"{figures['auc_roc']:.4f}" in page and f"{figures['card_precision_at_100']:.4f}" in page
    for name in PLOTS.values():
        assert (out / "report" / name).stat().st_size > 10_000, name


def test_version_option_picks_an_older_model_and_all_rows_can_be_kept(bank, models):
    lake, table = bank
    result = _fraud("--input", lake, "--start", START, "--end", START, "--model-dir", models,
                    "--version", "1", "--keep-known-compromised")
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    first_day = table.filter(pc.equal(pc.cast(table.column(spec.TIMESTAMP), pa.date32()), START))
    assert figures["model_version"] == 1
    assert figures["excluded_known_compromised"] == 0
    assert figures["transactions"] == first_day.num_rows


@pytest.fixture(scope="module")
def no_fraud_file(bank, tmp_path_factory) -> Path:
    _, table = bank
    index = table.schema.get_field_index(spec.LABEL_KEY)
    genuine = table.set_column(index, spec.LABEL_KEY,
                               pa.array(np.zeros(table.num_rows, np.int8)))
    path = tmp_path_factory.mktemp("genuine") / "genuine.parquet"
    write_transactions(genuine, path)
    return path


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("empty period", "no transactions between 2019-01-01 and 2019-01-07"),
        ("no frauds", "no frauds between 2018-05-21 and 2018-05-27"),
        ("no model dir", "model directory not found"),
        ("no such version", "model version 7 not found"),
        ("end before start", "--end 2018-05-20 is before --start 2018-05-21"),
        ("not a date", "--start must be a date YYYY-MM-DD, got '2018-05-32'"),
    ],
)
def test_bad_input_exits_2_with_a_one_line_reason(case, reason, bank, models, no_fraud_file,
                                                   tmp_path, capsys):
    from tests.cli_support import fraud_in_process

    lake, _ = bank
    args = {"--input": lake, "--start": START, "--end": END, "--model-dir": models}
    if case == "empty period":
        args.update({"--start": "2019-01-01", "--end": "2019-01-07"})
    elif case == "no frauds":
        args["--input"] = no_fraud_file
    elif case == "no model dir":
        args["--model-dir"] = tmp_path / "missing"
    elif case == "no such version":
        args["--version"] = 7
    elif case == "end before start":
        args["--end"] = "2018-05-20"
    else:
        args["--start"] = "2018-05-32"
    code, _, err = fraud_in_process(
        capsys, "evaluate", *[str(item) for pair in args.items() for item in pair]
    )
    assert code == 2
    # progress lines may come first; the reason is one line, last, with no traceback
    lines = err.strip().splitlines()
    assert lines[-1].startswith("error: ") and reason in lines[-1], lines
    assert "Traceback" not in err
