"""Promotion, refusal, rollback and a canary seen by a running scorer, without a restart.

Real processes and services: ``fraud model-server --model-config`` (the file
``fraud retrain`` and ``fraud models`` write), the broker, the terminal stage
and a scorer bound to the ``stable`` label. Retraining runs the real command
with a toy trainer (tests/integration/retrain_support.py) and a real evaluation.
"""

from __future__ import annotations

import json
import shutil
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from features import model_registry as registry
from features.behaviour import compute_features
from features.canary import canary_rows
from features.model_inputs import to_model_inputs
from ingest.kafka_io import KafkaSettings
from scoring.model_server.process import model_server_command
from scoring.stream.app import Endpoints
from tests.fixtures.model_server import toy_scores
from tests.integration.retrain_support import (
    DEGRADED,
    FAST_WINDOW,
    GOOD,
    ToyTrainer,
    fast_bank,
    models,
    run_retrain,
    toy_signal_scores,
)
from tests.integration.scoring_support import (
    ScorerThread,
    StageThread,
    Topics,
    alerts,
    produce,
    small_bank,
    wait_for,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def topics(unique_topic) -> Topics:
    return Topics(
        unique_topic("tx"), unique_topic("labels"), unique_topic("dlq"), unique_topic("group")
    )


@pytest.fixture
def db(sqlite_url: str) -> str:
    from scoring.db.engine import make_engine
    from scoring.db.migrate import upgrade

    upgrade(make_engine(sqlite_url))
    return sqlite_url


@contextmanager
def serving(model_dir: Path, log: Path) -> Iterator[dict[str, Any]]:
    args = ["--model-config", str(model_dir / "models.config"), "--poll-seconds", "0.2"]
    with log.open("ab") as err, model_server_command(args, stderr=err) as ready:
        yield ready


@contextmanager
def scoring(topics: Topics, bootstrap: str, db: str, ready: dict[str, Any],
            **settings: Any) -> Iterator[Any]:
    endpoints = Endpoints(KafkaSettings(bootstrap), db, f"grpc://127.0.0.1:{ready['grpc_port']}")
    with StageThread(topics.stage_settings(), endpoints.kafka, db, endpoints.model):
        scorer = ScorerThread(topics.settings(threshold=0.0, model_follow_seconds=0.2,
                                              **settings), endpoints).start()
        try:
            yield scorer
        finally:
            scorer.process.scorer.stop()
            scorer.join()


def label_version(ready: dict[str, Any], label: str) -> int:
    url = f"http://127.0.0.1:{ready['rest_port']}/v1/models/fraud/labels/{label}/metadata"
    with urllib.request.urlopen(url, timeout=5) as answer:
        return int(json.load(answer)["model_spec"]["version"])


def _inputs(table: pa.Table) -> dict[str, np.ndarray]:
    return to_model_inputs(table, compute_features(table, workers=1))


def test_a_running_scorer_follows_retraining_promotion_refusal_and_rollback(
    kafka_broker, topics, db, tmp_path, monkeypatch
):
    trainer = ToyTrainer()
    monkeypatch.setattr("training.train_job.run", trainer)
    lake = fast_bank(tmp_path / "lake")
    model_dir = tmp_path / "models"
    events = small_bank(days=12)
    parts = [events.slice(i * 150, 150) for i in range(4)]

    trainer.weight = DEGRADED
    assert run_retrain(lake, model_dir, *FAST_WINDOW)[1]["decision"] == "first_champion"
    with serving(model_dir, tmp_path / "server.log") as ready:
        assert ready["labels"] == {"stable": 1}
        with scoring(topics, kafka_broker.bootstrap, db, ready) as scorer:
            health = scorer.process.scorer.metrics.health

            def scored(count: int) -> None:
                wait_for(lambda: len(alerts(db)) == count, 60, f"{count} alerts")

            produce(kafka_broker.bootstrap, topics.transactions, parts[0])
            scored(150)

            trainer.weight = GOOD
            code, promoted, _ = run_retrain(lake, model_dir, *FAST_WINDOW)
            assert code == 0 and promoted["decision"] == "promoted"
            wait_for(lambda: label_version(ready, "stable") == 2, 30, "stable -> 2 served")
            wait_for(lambda: health.model_version == 2, 30, "the scorer on version 2")
            produce(kafka_broker.bootstrap, topics.transactions, parts[1])
            scored(300)

            trainer.weight = DEGRADED
            code, kept, _ = run_retrain(lake, model_dir, *FAST_WINDOW)
            assert code == 3 and kept["challenger_version"] == 3
            produce(kafka_broker.bootstrap, topics.transactions, parts[2])
            scored(450)  # version 3 is the newest on disk, and never scores

            rolled = models("rollback", "--model-dir", str(model_dir), "--reason", "test")
            assert rolled["labels"] == {"stable": 1}
            wait_for(lambda: health.model_version == 1, 30, "the scorer back on version 1")
            produce(kafka_broker.bootstrap, topics.transactions, parts[3])
            scored(600)

    rows = {a["transaction_id"]: a for a in alerts(db)}
    inputs = _inputs(events.slice(0, 600))
    ids = events.slice(0, 600).column("transaction_id").to_pylist()
    weights = {1: DEGRADED, 2: GOOD}
    for part, version in zip(parts, (1, 2, 2, 1), strict=True):
        for txid in part.column("transaction_id").to_pylist():
            assert rows[txid]["model_version"] == version, txid
    expected = {v: dict(zip(ids, toy_signal_scores(inputs, w).tolist(), strict=True))
                for v, w in weights.items()}
    for txid, row in rows.items():
        assert row["score"] == pytest.approx(expected[row["model_version"]][txid], abs=1e-5)
    actions = [e["action"] for e in registry.read_decisions(model_dir)]
    assert actions == ["retrain", "retrain", "retrain", "rollback"]


def test_a_canary_share_is_scored_by_the_canary_version_chosen_by_transaction_id(
    kafka_broker, topics, db, tmp_path, toy_model_cache
):
    model_dir = tmp_path / "models"
    model_dir.mkdir()
    for version in (1, 2):
        shutil.copytree(toy_model_cache / str(version), model_dir / str(version))
    registry.promote(model_dir, 1)
    models("canary", "--model-dir", str(model_dir), "2")
    events = small_bank(days=12).slice(0, 300)
    with serving(model_dir, tmp_path / "server.log") as ready:
        assert ready["labels"] == {"stable": 1, "canary": 2}
        with scoring(topics, kafka_broker.bootstrap, db, ready, canary_share=0.25):
            produce(kafka_broker.bootstrap, topics.transactions, events)
            wait_for(lambda: len(alerts(db)) == 300, 60, "300 alerts")
    rows = {a["transaction_id"]: a for a in alerts(db)}
    ids = events.column("transaction_id").to_pylist()
    to_canary = canary_rows(ids, 0.25)
    assert [rows[t]["model_version"] for t in ids] == np.where(to_canary, 2, 1).tolist()
    assert 40 < to_canary.sum() < 110
    inputs = _inputs(events)
    for weight, version in ((0.5, 1), (1.5, 2)):
        scores = dict(zip(ids, toy_scores(inputs, weight).tolist(), strict=True))
        for txid in (t for t in ids if rows[t]["model_version"] == version):
            assert rows[txid]["score"] == pytest.approx(scores[txid], abs=1e-5)
