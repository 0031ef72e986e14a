"""Labels as a bank gets them, against the real broker and PostgreSQL.

- delayed labels (``fraud produce --label-protocol realistic``): the stage and a
  scorer give every event the features of the batch path (features snapshot
  and toy-model scores within 1e-5), and ``fraud archive`` (with compaction)
  gives back the very lake that was published;
- ``fraud labels publish``: every decision reaches the topic (by key) across
  ``kill -9`` restarts, a decision committed late is not skipped, and a later
  event at the decided transaction's terminal shows the decision in its
  terminal-risk features from ``labelled_at + latency`` on.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from kafka import KafkaConsumer
from sqlalchemy import text

from features import spec
from features.behaviour import compute_features
from features.model_inputs import to_model_inputs
from ingest import lake
from ingest.kafka_io import KafkaSettings, decode_label
from ingest.readers import read_transactions
from ingest.simulator import SimulationConfig
from ingest.simulator.run import simulate_to
from scoring.db.engine import make_engine, make_sessionmaker
from scoring.db.migrate import upgrade
from scoring.stream.app import Endpoints
from tests.fixtures.model_server import toy_scores
from tests.integration.scoring_support import (
    ScorerThread,
    StageThread,
    Topics,
    produce,
    wait_for,
)

pytestmark = pytest.mark.integration

FRAUD = str(Path(sys.executable).with_name("fraud"))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
BANK = SimulationConfig(customers=150, terminals=100, days=30, start_date=date(2018, 4, 1),
                        seed=5)


def fraud(*args: str, timeout: float = 300) -> str:
    done = subprocess.run([FRAUD, *args], capture_output=True, text=True, timeout=timeout,
                          env=ENV)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture
def topics(unique_topic) -> Topics:
    return Topics(
        unique_topic("tx"), unique_topic("labels"), unique_topic("dlq"), unique_topic("group")
    )


def read_topic(bootstrap: str, topic: str, expected: int, timeout_s: float = 60) -> list:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=3000)
    messages: list = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(messages) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                messages.extend(batch)
        for batch in consumer.poll(timeout_ms=1000).values():  # anything beyond
            messages.extend(batch)
    finally:
        consumer.close()
    return messages


def alert_rows(db_url: str) -> dict[str, dict]:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT transaction_id, score, features FROM alerts"))
            out = {}
            for txid, score, features in rows:
                if isinstance(features, str):
                    features = json.loads(features)
                out[txid] = {"score": score, "features": features}
            return out
    finally:
        engine.dispose()


def test_with_delayed_labels_stream_features_and_scores_equal_the_batch_path(
    kafka_broker, topics, sqlite_url, model_server, tmp_path
):
    bank = tmp_path / "bank"
    figures = simulate_to(BANK, bank, label_protocol="realistic")
    read = read_transactions(bank, labelled=True)
    table, labels = read.table, read.labels
    assert labels is not None and figures["labels_by_source"]["analyst_fraud"] > 0
    upgrade(make_engine(sqlite_url))
    endpoints = Endpoints(KafkaSettings(kafka_broker.bootstrap), sqlite_url,
                          f"grpc://127.0.0.1:{model_server.grpc_port}")
    stage = StageThread(topics.stage_settings(), endpoints.kafka, endpoints.db_url,
                        endpoints.model)
    with stage:
        scorer = ScorerThread(topics.settings(threshold=0.0), endpoints).start()
        # Unpaced: months of events within a few seconds of Kafka time, the case where
        # only offsets (not timestamps) can say what the stage has read.
        sent = json.loads(fraud("produce", "--input", str(bank), "--bootstrap-servers",
                                kafka_broker.bootstrap, "--topic", topics.transactions,
                                "--labels-topic", topics.labels,
                                "--label-protocol", "realistic"))
        assert sent["sent"] == table.num_rows and sent["labels_sent"] == labels.num_rows
        wait_for(lambda: len(alert_rows(sqlite_url)) == table.num_rows, 240, "every alert")
        scorer.process.scorer.stop()
        scorer.join()

    batch = compute_features(table, workers=1, labels=labels)
    scores = toy_scores(to_model_inputs(table, batch), 0.5)
    streamed = alert_rows(sqlite_url)
    ids = table.column("transaction_id").to_pylist()
    worst_feature = worst_score = 0.0
    for name in spec.BEHAVIOURAL_FEATURES:
        expected = batch.column(name).to_numpy()
        got = np.array([streamed[t]["features"][name] for t in ids], dtype=np.float64)
        worst_feature = max(worst_feature, float(np.max(np.abs(got - expected))))
        bad = np.flatnonzero(np.abs(got - expected) > 1e-5)
        assert bad.size == 0, (name, bad.size, [ids[i] for i in bad[:5]], got[bad[:5]],
                               expected[bad[:5]])
    worst_score = max(abs(streamed[t]["score"] - float(s)) for t, s in zip(ids, scores,
                                                                           strict=True))
    assert worst_feature <= 1e-5 and worst_score <= 1e-5, (worst_feature, worst_score)
    risk = batch.column("terminal_risk_30d").to_numpy()
    handbook = compute_features(table.drop_columns(["labelled_at"]), workers=1).column(
        "terminal_risk_30d").to_numpy()  # each label known with its transaction
    assert np.count_nonzero(risk) > 20  # the delayed labels do show ...
    assert np.count_nonzero(risk != handbook) > 20  # ... later than the Handbook's would


def test_archive_with_compaction_gives_back_the_published_lake(kafka_broker, unique_topic,
                                                               tmp_path):
    bank = tmp_path / "bank"
    figures = json.loads(fraud("simulate", "--out", str(bank), "--customers", "150",
                               "--terminals", "100", "--days", "30", "--seed", "5",
                               "--label-protocol", "realistic"))
    assert figures["format"] == "lake" and figures["chargeback_delay_days"]["median"] > 5
    original = read_transactions(bank, labelled=True)
    tx_topic, labels_topic = unique_topic("tx"), unique_topic("labels")
    fraud("produce", "--input", str(bank), "--bootstrap-servers", kafka_broker.bootstrap,
          "--topic", tx_topic, "--labels-topic", labels_topic, "--label-protocol", "realistic",
          "--end", "2018-04-20")
    archived = tmp_path / "archived"
    archive = ["archive", "--out", str(archived), "--bootstrap-servers", kafka_broker.bootstrap,
               "--topic", tx_topic, "--labels-topic", labels_topic, "--batch-records", "400",
               "--exit-when-idle", "3", "--compact-every", "1", "--compact-min-files", "2"]
    first = json.loads(fraud(*archive))
    assert first["compactions"] > 0 and first["files_compacted"] > 0
    # The rest of the days, archived by a second run that compacts at the end by hand.
    fraud("produce", "--input", str(bank), "--bootstrap-servers", kafka_broker.bootstrap,
          "--topic", tx_topic, "--labels-topic", labels_topic, "--label-protocol", "realistic",
          "--start", "2018-04-21")
    fraud(*archive[:-4])
    compacted = json.loads(fraud("archive", "compact", "--out", str(archived)))
    assert compacted["files_merged"] > 0
    back = read_transactions(archived, labelled=True)
    assert back.table.num_rows == original.table.num_rows
    assert sorted(back.table.to_pylist(), key=lambda r: r["transaction_id"]) == sorted(
        original.table.to_pylist(), key=lambda r: r["transaction_id"])
    assert back.labels is not None and original.labels is not None
    key = ("transaction_id", "labelled_at", "is_fraud", "source")
    assert Counter(tuple(r[k] for k in key) for r in back.labels.to_pylist()) == Counter(
        tuple(r[k] for k in key) for r in original.labels.to_pylist())


# --- fraud labels publish ---------------------------------------------------------------------


def _alerts_and_decisions(db_url: str, n: int, at: datetime, terminal: str = "T-x",
                          pause_every: int = 0, pause_s: float = 0.0) -> None:
    """``n`` alerts, each decided (every third a confirmed fraud), straight into the tables.

    With ``pause_every``, the decisions are committed that many at a time, ``pause_s`` apart.
    """
    from scoring.db import repository as repo
    from scoring.db.models import Alert

    engine = make_engine(db_url)
    sessions = make_sessionmaker(engine)
    alerts = [repo.NewAlert(f"tx-{i}", f"c-{i % 9}", terminal, 10.0, at, 0.9, 0.5, 1, {})
              for i in range(n)]
    with sessions.begin() as session:
        repo.insert_alerts(session, alerts)
    with sessions() as session:
        ids = [a.id for a in session.query(Alert).order_by(Alert.id)]
    step = pause_every or n
    for start in range(0, n, step):
        with sessions.begin() as session:
            for alert_id in ids[start:start + step]:
                alert = session.get(Alert, alert_id)
                assert alert is not None
                fraud_ = int(alert.transaction_id[3:]) % 3 == 0
                repo.record_review(session, alert, "confirmed_fraud" if fraud_ else
                                   "false_positive", "ann", None, at + timedelta(minutes=1))
        time.sleep(pause_s)
    engine.dispose()


def _publish_args(db_url: str, bootstrap: str, topic: str) -> list[str]:
    return [FRAUD, "labels", "publish", "--db", db_url, "--bootstrap-servers", bootstrap,
            "--topic", topic]


def test_decisions_reach_the_topic_once_by_key_across_kill_9_restarts(
    kafka_broker, unique_topic, postgres_url
):
    """Analysts keep deciding while a following publisher is killed and restarted."""
    import threading

    from scoring.label_publisher import partition_for

    upgrade(make_engine(postgres_url))
    n = 3000
    writer = threading.Thread(target=_alerts_and_decisions, args=(
        postgres_url, n, datetime.now(UTC) - timedelta(days=1)),
        kwargs={"pause_every": 60, "pause_s": 0.2})
    writer.start()
    topic = unique_topic("labels")
    args = [*_publish_args(postgres_url, kafka_broker.bootstrap, topic), "--batch", "20",
            "--follow", "--interval", "0.05"]
    rng = random.Random(3)
    kills = 0
    while writer.is_alive() or kills < 3:
        child = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 env=ENV)
        time.sleep(rng.uniform(1.2, 3.0))
        child.send_signal(signal.SIGKILL)
        child.wait()
        kills += 1
    writer.join()
    last = json.loads(fraud("labels", "publish", "--db", postgres_url, "--bootstrap-servers",
                            kafka_broker.bootstrap, "--topic", topic))
    assert last["last_id"] == n and last["gaps"] == 0
    assert last["resumed_from"] > 0  # the killed publishers had sent (and recorded) them

    messages = read_topic(kafka_broker.bootstrap, topic, n)
    keys = Counter(m.key for m in messages)
    assert set(keys) == {f"tx-{i}:{i + 1}".encode() for i in range(n)}  # nothing skipped
    repeats = sum(keys.values()) - n
    print(f"{kills} kills, {repeats} repeats on the wire")
    assert repeats <= kills * 20  # at most the round in flight, once per kill
    by_key: dict[bytes, bytes] = {}
    for m in messages:  # a repeat is the same message, on its transaction's partition
        assert by_key.setdefault(m.key, m.value) == m.value
        assert m.partition == partition_for(m.key.decode().rsplit(":", 1)[0], [0, 1, 2])
    records = [decode_label(m.value, "test") for m in messages]
    assert {r["source"] for r in records} == {"analyst"}
    # In effect, exactly once: the label periods with the repeats are those without.
    table = lake.labels_table(records)
    once = lake.labels_table([decode_label(v, "test") for v in by_key.values()])
    assert lake.label_periods(table) == lake.label_periods(once)
    frauds = sum(r[spec.LABEL_KEY] for r in (decode_label(v, "t") for v in by_key.values()))
    assert frauds == len(range(0, n, 3))


def test_a_decision_committed_after_a_later_one_is_not_skipped(
    kafka_broker, unique_topic, postgres_url
):
    from scoring.db import repository as repo
    from scoring.db.models import Alert

    upgrade(make_engine(postgres_url))
    at = datetime.now(UTC)
    _alerts_and_decisions(postgres_url, 2, at)
    sessions = make_sessionmaker(make_engine(postgres_url))
    topic = unique_topic("labels")
    slow = sessions()
    first, second = slow.query(Alert).order_by(Alert.id).all()
    repo.record_review(slow, first, "confirmed_fraud", "bob", None, at)  # id 3, not committed
    with sessions.begin() as fast:
        again = fast.get(Alert, second.id)
        repo.record_review(fast, again, "false_positive", "eve", None, at)  # id 4, committed
    out = json.loads(fraud("labels", "publish", "--db", postgres_url, "--bootstrap-servers",
                           kafka_broker.bootstrap, "--topic", topic))
    assert out["last_id"] == 4 and out["gaps"] == 1 and out["published"] == 3
    slow.commit()
    slow.close()
    out = json.loads(fraud("labels", "publish", "--db", postgres_url, "--bootstrap-servers",
                           kafka_broker.bootstrap, "--topic", topic))
    assert out["published"] == 1 and out["gaps"] == 0
    keys = Counter(m.key for m in read_topic(kafka_broker.bootstrap, topic, 4))
    assert keys == Counter({b"tx-0:1": 1, b"tx-1:2": 1, b"tx-0:3": 1, b"tx-1:4": 1})


def test_a_published_decision_shows_in_later_terminal_features(
    kafka_broker, topics, postgres_url, model_server
):
    from scoring.db import repository as repo
    from scoring.db.models import Alert

    upgrade(make_engine(postgres_url))
    sessions = make_sessionmaker(make_engine(postgres_url))
    endpoints = Endpoints(KafkaSettings(kafka_broker.bootstrap), postgres_url,
                          f"grpc://127.0.0.1:{model_server.grpc_port}")
    now = datetime.now(UTC).replace(microsecond=0)

    def event(i: int, at: datetime, terminal: str = "T-hot") -> dict:
        return {"transaction_id": f"e-{i}", "timestamp": at, "customer_id": f"c-{i}",
                "terminal_id": terminal, "amount": 20.0, "merchant_category": "5411",
                "country": "BE", "channel": "pos"}

    def send(*rows: dict) -> None:
        table = pa.Table.from_pylist(list(rows), schema=spec.arrow_schema(labelled=False))
        produce(kafka_broker.bootstrap, topics.transactions, table)

    stage = StageThread(topics.stage_settings(), endpoints.kafka, endpoints.db_url,
                        endpoints.model)
    with stage:
        scorer = ScorerThread(topics.settings(threshold=0.0), endpoints).start()
        send(event(0, now - timedelta(days=8)), event(1, now - timedelta(days=8), "T-calm"))
        wait_for(lambda: {"e-0", "e-1"} <= alert_rows(postgres_url).keys(), 60, "two alerts")
        with sessions.begin() as session:
            alert = session.query(Alert).filter_by(transaction_id="e-0").one()
            decided = repo.label_alert(session, alert.id, "confirmed_fraud", "ann").reviewed_at
        out = json.loads(fraud("labels", "publish", "--db", postgres_url, "--bootstrap-servers",
                               kafka_broker.bootstrap, "--topic", topics.labels))
        assert out["published"] == 1
        # Before labelled_at + latency (60 min) the decision does not count yet; after, it does.
        send(event(2, decided + timedelta(minutes=30)), event(3, decided + timedelta(hours=2)),
             event(4, decided + timedelta(hours=2), "T-calm"))
        wait_for(lambda: {"e-2", "e-3", "e-4"} <= alert_rows(postgres_url).keys(), 90,
                 "the later events' alerts")
        scorer.process.scorer.stop()
        scorer.join()
    rows = alert_rows(postgres_url)
    before, after, calm = (rows[t]["features"] for t in ("e-2", "e-3", "e-4"))
    assert before["terminal_nb_tx_30d"] == after["terminal_nb_tx_30d"] == 1.0
    assert before["terminal_risk_30d"] == 0.0
    assert after["terminal_risk_30d"] == 1.0 and after["terminal_fraud_streak"] == 1.0
    assert calm["terminal_nb_tx_30d"] == 1.0 and calm["terminal_risk_30d"] == 0.0
