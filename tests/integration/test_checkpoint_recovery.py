"""A corrupt checkpoint holds the scorer; the documented recovery lets it go on, exactly."""

from __future__ import annotations

import subprocess

import pytest
from sqlalchemy import text

from ingest.kafka_io import KafkaSettings
from scoring.db.engine import make_engine
from scoring.db.migrate import upgrade
from scoring.stream.app import Endpoints
from tests.integration.scoring_support import (
    FRAUD,
    ScorerThread,
    StageThread,
    Topics,
    alerts,
    produce,
    small_bank,
    wait_for,
)
from tests.integration.test_scorer import expected_scores

pytestmark = pytest.mark.integration


def test_a_corrupt_checkpoint_holds_until_use_previous_then_scores_exactly(
    kafka_broker, unique_topic, postgres_url, model_server
):
    topics = Topics(
        unique_topic("tx"), unique_topic("labels"), unique_topic("dlq"), unique_topic("group")
    )
    engine = make_engine(postgres_url)
    upgrade(engine)
    bank = small_bank(days=8, seed=21)
    first, second = bank.slice(0, 200), bank.slice(200, 200)
    endpoints = Endpoints(
        KafkaSettings(kafka_broker.bootstrap),
        postgres_url,
        f"grpc://127.0.0.1:{model_server.grpc_port}",
    )
    settings = topics.settings(threshold=0.0, checkpoint_seconds=0.2, hold_check_seconds=0.2)
    stage = StageThread(
        topics.stage_settings(), endpoints.kafka, postgres_url, endpoints.model
    ).start()
    scorer = ScorerThread(settings, endpoints).start()
    produce(kafka_broker.bootstrap, topics.transactions, first.slice(0, 100))
    wait_for(lambda: len(alerts(postgres_url)) == 100, 60, "the first 100 alerts")
    produce(kafka_broker.bootstrap, topics.transactions, first.slice(100, 100))
    wait_for(lambda: len(alerts(postgres_url)) == 200, 60, "200 alerts")
    scorer.process.scorer.stop()
    scorer.join()
    with engine.begin() as conn:  # the newest checkpoint row's bytes damaged on disk
        seqs = conn.execute(
            text("SELECT seq FROM partition_checkpoints WHERE consumer_group = :g ORDER BY seq"),
            {"g": topics.group},
        ).scalars().all()
        assert len(seqs) >= 2
        conn.execute(
            text(
                "UPDATE partition_checkpoints SET state = :s "
                "WHERE consumer_group = :g AND seq = :q"
            ),
            {"s": b"not a checkpoint", "g": topics.group, "q": seqs[-1]},
        )

    produce(kafka_broker.bootstrap, topics.transactions, second)
    held = ScorerThread(settings, endpoints).start()
    health = held.process.metrics.health
    wait_for(lambda: "not a sealed checkpoint" in health.state, 60, "the scorer to hold")
    assert health.as_dict()["status"] == "degraded"
    assert len(alerts(postgres_url)) == 200  # nothing scored on an empty state

    groups = ["--group-id", topics.group, "--stage-group", topics.stage_group]
    shown = subprocess.run(
        [FRAUD, "checkpoint", "show", "--db", postgres_url, *groups],
        capture_output=True, text=True, check=True,
    ).stdout
    assert '"usable": false' in shown and '"usable": true' in shown  # the partition; the stage
    subprocess.run(
        [FRAUD, "checkpoint", "use-previous", "--db", postgres_url, *groups],
        capture_output=True, check=True,
    )
    wait_for(lambda: len(alerts(postgres_url)) == 400, 90, "the held scorer to resume")
    held.process.scorer.stop()
    held.join()
    stage.stop()

    expected = expected_scores(bank.slice(0, 400), weight=0.5)
    rows = {a["transaction_id"]: a["score"] for a in alerts(postgres_url)}
    assert rows.keys() == expected.keys()
    assert max(abs(rows[t] - s) for t, s in expected.items()) <= 1e-5
    engine.dispose()
