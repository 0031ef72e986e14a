"""End to end, three scorers and the terminal stage give `fraud evaluate`'s scores.

The central promise of the system, checked with the real commands: a model
trained by `fraud train`, batch scores from `fraud evaluate --scores-out`, and
the same period streamed through `fraud produce`, `fraud terminal-stage` and
three `fraud score` processes in one consumer group (threshold 0, so every
event is written) against `fraud model-server`. The model is trained with a
label delay of 3 days, not the default 7: the scorers and the stage, given
only the gRPC endpoint, learn it from the served model.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from sqlalchemy import text

from scoring.db.engine import make_engine
from scoring.model_server.process import model_server_process
from tests.integration.scoring_support import FRAUD

pytestmark = pytest.mark.integration

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")


def fraud(*args: str) -> str:
    done = subprocess.run([FRAUD, *args], capture_output=True, env=ENV, check=False)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    return done.stdout.decode().strip().splitlines()[-1]


def test_streamed_scores_equal_fraud_evaluate_scores(kafka_broker, unique_topic, tmp_path: Path):
    lake, models = tmp_path / "lake", tmp_path / "models"
    fraud(
        "simulate",
        "--out",
        str(lake),
        "--customers",
        "600",
        "--terminals",
        "1200",
        "--days",
        "52",
        "--start-date",
        "2018-04-01",
        "--seed",
        "5",
    )
    fraud(
        "train",
        "--input",
        str(lake),
        "--train-start",
        "2018-05-08",
        "--train-end",
        "2018-05-14",
        "--model-dir",
        str(models),
        "--epochs",
        "2",
        "--delay-days",
        "3",
    )
    fraud(
        "evaluate",
        "--input",
        str(lake),
        "--start",
        "2018-05-19",
        "--end",
        "2018-05-21",
        "--model-dir",
        str(models),
        "--scores-out",
        str(tmp_path / "batch.csv"),
    )
    with (tmp_path / "batch.csv").open() as f:
        batch = {r["transaction_id"]: float(r["score"]) for r in csv.DictReader(f)}

    from ingest.readers import read_transactions

    history = read_transactions(lake, labelled=True, end=_date("2018-05-18")).table
    live = read_transactions(
        lake, labelled=True, start=_date("2018-05-19"), end=_date("2018-05-21")
    ).table
    pq.write_table(history, tmp_path / "history.parquet")
    pq.write_table(live, tmp_path / "live.parquet")
    db = f"sqlite:///{tmp_path / 'alerts.db'}"
    fraud("db", "upgrade", "--db", db)

    topic, labels = unique_topic("tx"), unique_topic("labels")
    group, state = unique_topic("group"), unique_topic("state")
    wiring = ["--bootstrap-servers", kafka_broker.bootstrap, "--db", db, "--topic", topic,
              "--labels-topic", labels, "--state-topic", state, "--dlq-topic", unique_topic("dlq"),
              "--history", str(tmp_path / "history.parquet")]
    with model_server_process(models) as port:
        model = ["--model-server", f"grpc://127.0.0.1:{port}"]
        with (tmp_path / "stage.log").open("wb") as stage_log:
            stage = subprocess.Popen(
                [FRAUD, "terminal-stage", *wiring, *model, "--group-id", f"{group}-stage",
                 "--scorer-group", group],
                stdout=stage_log, stderr=subprocess.STDOUT, env=ENV,
            )
        try:
            scorers = [
                subprocess.Popen(
                    [FRAUD, "score", *wiring, *model, "--threshold", "0", "--group-id", group,
                     "--stage-group", f"{group}-stage", "--exit-when-idle", "6"],
                    stdout=subprocess.PIPE, stderr=(tmp_path / f"score-{i}.log").open("wb"),
                    env=ENV,
                )
                for i in range(3)
            ]
            fraud("produce", "--input", str(tmp_path / "live.parquet"), "--bootstrap-servers",
                  kafka_broker.bootstrap, "--topic", topic, "--labels-topic", labels)
            summaries = []
            for i, scorer in enumerate(scorers):
                out, _ = scorer.communicate(timeout=300)
                assert scorer.returncode == 0, (tmp_path / f"score-{i}.log").read_text()[-3000:]
                summaries.append(json.loads(out.decode().strip().splitlines()[-1]))
        finally:
            stage.send_signal(signal.SIGTERM)
            assert stage.wait(60) == 0, (tmp_path / "stage.log").read_text()[-3000:]

    engine = make_engine(db)
    with engine.connect() as conn:
        streamed = dict(conn.execute(text("SELECT transaction_id, score FROM alerts")).all())
    engine.dispose()
    assert sum(s["events"] for s in summaries) == live.num_rows == len(batch) > 1000
    assert all(s["events"] > 0 for s in summaries), summaries  # each scorer had its share
    assert streamed.keys() == batch.keys()
    worst = max(abs(streamed[t] - batch[t]) for t in batch)
    assert worst <= 1e-5, f"largest stream/batch score difference {worst}"
    assert len(set(streamed.values())) > 100  # a real model: scores vary


def _date(text_: str):
    from datetime import date

    return date.fromisoformat(text_)
