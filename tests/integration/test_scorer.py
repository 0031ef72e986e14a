"""The streaming scorer against a real broker process, real databases and a real gRPC server."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from kafka import KafkaConsumer

from features.behaviour import compute_features
from features.model_inputs import to_model_inputs
from ingest.kafka_io import (
    HEADER_FIELD,
    HEADER_OFFSET,
    HEADER_PARTITION,
    HEADER_REASON,
    KafkaSettings,
)
from scoring.stream.app import Endpoints
from tests.fixtures.model_server import add_cached_version, toy_scores
from tests.integration.scoring_support import (
    ScorerThread,
    StageThread,
    Topics,
    alerts,
    produce,
    produce_raw,
    scorer_subprocess,
    small_bank,
    wait_for,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def topics(unique_topic) -> Topics:
    return Topics(
        unique_topic("tx"), unique_topic("labels"), unique_topic("dlq"), unique_topic("group")
    )


@pytest.fixture(scope="module")
def bank() -> pa.Table:
    return small_bank()


def expected_scores(table: pa.Table, weight: float) -> dict[str, float]:
    """Batch path: behavioural features over the whole table, then the toy model's formula."""
    features = compute_features(table, workers=1)
    scores = toy_scores(to_model_inputs(table, features), weight)
    return dict(zip(table.column("transaction_id").to_pylist(), scores.tolist(), strict=True))


def test_poison_messages_land_in_the_dlq_with_reasons_and_valid_events_are_scored(
    kafka_broker, topics, alerts_db_url, model_server, bank
):
    valid = bank.slice(0, 40)
    good = [(k, v) for k, v in _encoded(valid)]
    base = json.loads(good[0][1])
    poison = {
        "missing field": {k: v for k, v in base.items() if k != "customer_id"},
        "wrong type": {**base, "amount": "twelve"},
        "negative amount": {**base, "amount": -3.5},
        "non-finite amount": {**base, "amount": float("inf")},
        "bad timestamp": {**base, "timestamp": "yesterday at noon"},
    }
    poison_messages = [(b"p", json.dumps(v).encode()) for v in poison.values()]
    poison_messages += [
        (b"p", b"\xff\xfe not utf-8"),
        (b"p", b'{"transaction_id": '),
        (b"p", b"[1, 2, 3]"),
        (b"p", b"{" + b" " * (10 * 1024 * 1024) + b"}"),  # a 10 MB message
    ]
    stream = good[:20] + poison_messages + good[20:]
    placed = produce_raw(kafka_broker.bootstrap, topics.transactions, stream)
    poison_places = placed[20 : 20 + len(poison_messages)]

    endpoints = Endpoints(
        KafkaSettings(kafka_broker.bootstrap),
        alerts_db_url,
        f"grpc://127.0.0.1:{model_server.grpc_port}",
    )
    with _stage(topics, endpoints):
        summary = (
            ScorerThread(topics.settings(threshold=0.0, exit_when_idle_seconds=3), endpoints)
            .start()
            .join()
        )

    assert summary.events == 40 and summary.dead_letters == len(poison_messages)
    assert {a["transaction_id"] for a in alerts(alerts_db_url)} == set(
        valid.column("transaction_id").to_pylist()
    )
    letters = _read_all(kafka_broker.bootstrap, topics.dlq, len(poison_messages))
    sources = [
        (int(dict(m.headers)[HEADER_PARTITION]), int(dict(m.headers)[HEADER_OFFSET]))
        for m in letters
    ]
    assert sources == poison_places
    reasons = [dict(m.headers)[HEADER_REASON].decode() for m in letters]
    fields = [dict(m.headers)[HEADER_FIELD].decode() for m in letters]
    assert fields[:5] == ["customer_id", "amount", "amount", "amount", "timestamp"]
    assert "UTF-8" in reasons[5] and "JSON" in reasons[6] and "object" in reasons[7]
    assert "byte limit" in reasons[8]
    assert dict(letters[8].headers)[b"truncated".decode()] == b"true"
    assert letters[1].value == poison_messages[1][1]  # original bytes kept


def test_streamed_scores_equal_the_batch_path_and_a_new_version_is_used_mid_stream(
    kafka_broker, topics, sqlite_url, model_server, toy_model_dir, toy_model_cache, bank
):
    from scoring.db.engine import make_engine
    from scoring.db.migrate import upgrade

    upgrade(make_engine(sqlite_url))
    first, second = bank.slice(0, 300), bank.slice(300, 300)
    expected_v1 = expected_scores(bank.slice(0, 600), weight=0.5)  # cached versions 1 and 2
    expected_v2 = expected_scores(bank.slice(0, 600), weight=1.5)
    endpoints = Endpoints(
        KafkaSettings(kafka_broker.bootstrap),
        sqlite_url,
        f"grpc://127.0.0.1:{model_server.grpc_port}",
    )
    with _stage(topics, endpoints):
        scorer = ScorerThread(topics.settings(threshold=0.0), endpoints).start()
        produce(kafka_broker.bootstrap, topics.transactions, first)
        wait_for(lambda: len(alerts(sqlite_url)) == 300, 60, "the first 300 alerts")

        add_cached_version(toy_model_cache, toy_model_dir, 2)
        wait_for(lambda: model_server.manager.serving_version == 2, 30, "version 2 to be served")
        produce(kafka_broker.bootstrap, topics.transactions, second)
        wait_for(lambda: len(alerts(sqlite_url)) == 600, 60, "all 600 alerts")
        scorer.process.scorer.stop()
        scorer.join()

    rows = {a["transaction_id"]: a for a in alerts(sqlite_url)}
    for txid in first.column("transaction_id").to_pylist():
        assert rows[txid]["model_version"] == 1
        assert rows[txid]["score"] == pytest.approx(expected_v1[txid], abs=1e-5)
    for txid in second.column("transaction_id").to_pylist():
        assert rows[txid]["model_version"] == 2
        assert rows[txid]["score"] == pytest.approx(expected_v2[txid], abs=1e-5)


def test_checkpoints_are_written_in_the_background_and_their_positions_committed(
    kafka_broker, topics, sqlite_url, model_server, bank
):
    """A forked child writes each partition's checkpoint row; Kafka gets exactly its offsets."""
    from scoring.db.engine import make_engine
    from scoring.db.migrate import upgrade
    from scoring.stream.partitions import PartitionState
    from scoring.stream.sql_store import SqlPartitionStore

    upgrade(make_engine(sqlite_url))
    first = bank.slice(0, 300)
    endpoints = Endpoints(
        KafkaSettings(kafka_broker.bootstrap),
        sqlite_url,
        f"grpc://127.0.0.1:{model_server.grpc_port}",
    )
    store = SqlPartitionStore(make_engine(sqlite_url), topics.group)

    def checkpointed() -> dict[tuple[str, int], int]:
        ends = {key: store.rows(key) for key in store.partitions()}
        return {key: rows[-1].next_offset for key, rows in ends.items() if rows}

    with _stage(topics, endpoints):
        scorer = ScorerThread(topics.settings(threshold=0.0, checkpoint_seconds=0.5), endpoints)
        scorer.start()
        produce(kafka_broker.bootstrap, topics.transactions, first)
        wait_for(lambda: len(alerts(sqlite_url)) == 300, 60, "300 alerts")
        wait_for(lambda: sum(checkpointed().values()) == 300, 30,
                 "checkpoint rows at the end of the 300 events")
        wait_for(
            lambda: sum(_committed(kafka_broker.bootstrap, topics).values()) == 300,
            30,
            "Kafka to hold the checkpoint's positions",
        )
        assert scorer._thread.is_alive()  # written while the scorer kept running
        assert scorer.process.metrics.checkpoint_seconds._value.get() > 0  # by a forked writer
        assert checkpointed() == _committed(kafka_broker.bootstrap, topics)
        restored = set()
        for key in store.partitions():
            state = PartitionState.restore(key, scorer.process.scorer.owned.config, store.rows(key))
            restored |= set(state.customers.histories)
        assert restored == set(first.column("customer_id").to_pylist())

        produce(kafka_broker.bootstrap, topics.transactions, bank.slice(300, 100))
        wait_for(lambda: len(alerts(sqlite_url)) == 400, 60, "alerts of later events")
        scorer.process.scorer.stop()
        scorer.join()
    chains = [store.all_rows(key) for key in store.partitions()]
    assert sum(len(chain) for chain in chains) > len(chains)  # deltas after the bases
    assert all(chain[-1].kind in ("base", "delta") for chain in chains)


def _committed(bootstrap: str, topics: Topics) -> dict[tuple[str, int], int]:
    """The consumer group's committed offsets of the transactions topic."""
    from kafka import TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=topics.group)
    try:
        partitions = consumer.partitions_for_topic(topics.transactions) or set()
        found = {p: consumer.committed(TopicPartition(topics.transactions, p)) for p in partitions}
        return {(topics.transactions, p): o for p, o in found.items() if o is not None}
    finally:
        consumer.close()


def test_kill_minus_nine_mid_stream_leaves_exactly_one_alert_per_event_above_threshold(
    kafka_broker, topics, postgres_url, toy_model_dir, bank, tmp_path
):
    from scoring.db.engine import make_engine
    from scoring.db.migrate import upgrade

    upgrade(make_engine(postgres_url))
    alerts_db_url = postgres_url
    events = bank.slice(0, 2500)
    expected = expected_scores(events, weight=0.5)
    threshold = 0.3
    above = {t for t, s in expected.items() if s >= threshold + 1e-5}
    borderline = {t for t, s in expected.items() if abs(s - threshold) < 1e-5}
    args = [
        "--bootstrap-servers",
        kafka_broker.bootstrap,
        "--db",
        alerts_db_url,
        "--model-dir",
        str(toy_model_dir),
        "--threshold",
        str(threshold),
        "--checkpoint-seconds",
        "0.5",
        "--max-batch",
        "100",
        *topics.cli_args(),
    ]
    log = tmp_path / "scorer.log"

    stage = StageThread(
        topics.stage_settings(checkpoint_seconds=0.5),
        KafkaSettings(kafka_broker.bootstrap),
        alerts_db_url,
        str(toy_model_dir),
    ).start()
    feeder = threading.Thread(
        target=_produce_slowly, args=(kafka_broker.bootstrap, topics.transactions, events)
    )
    feeder.start()
    rng = np.random.default_rng()
    kills = 0
    try:
        while feeder.is_alive() or kills < 3:
            proc = scorer_subprocess(args, log)
            before = len(alerts(alerts_db_url))
            wait_for(
                lambda: len(alerts(alerts_db_url)) > before or not feeder.is_alive(),  # noqa: B023
                90,
                "progress",
            )
            time.sleep(rng.uniform(0.1, 1.0))
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            kills += 1
            if kills >= 6:
                break
    finally:
        if proc.poll() is None:
            proc.kill()
        feeder.join()
    final = scorer_subprocess([*args, "--exit-when-idle", "4"], log)
    assert final.wait(180) == 0, log.read_text()[-3000:]
    stage.stop()

    written = [a["transaction_id"] for a in alerts(alerts_db_url)]
    assert len(written) == len(set(written))  # exactly one per transaction
    assert above <= set(written) <= above | borderline, log.read_text()[-2000:]


def test_database_and_model_server_outages_lose_nothing_and_recover_by_themselves(
    kafka_broker, topics, postgres_url, toy_model_dir, bank, tmp_path
):
    from scoring.db.engine import make_engine
    from scoring.db.migrate import upgrade

    upgrade(make_engine(postgres_url))
    proxy = _TcpProxy(5432)
    proxied_url = postgres_url.replace(":5432/", f":{proxy.port}/")
    port = _free_port()
    server = _model_server_process(toy_model_dir, port, tmp_path / "server.log")
    endpoints = Endpoints(
        KafkaSettings(kafka_broker.bootstrap), proxied_url, f"grpc://127.0.0.1:{port}"
    )
    stage = StageThread(
        topics.stage_settings(),
        KafkaSettings(kafka_broker.bootstrap),
        postgres_url,
        str(toy_model_dir),
    ).start()
    scorer = ScorerThread(topics.settings(threshold=0.0), endpoints).start()
    health = scorer.process.metrics.health
    try:
        produce(kafka_broker.bootstrap, topics.transactions, bank.slice(0, 100))
        wait_for(lambda: len(alerts(postgres_url)) == 100, 90, "first alerts")

        proxy.cut()  # the database goes away
        produce(kafka_broker.bootstrap, topics.transactions, bank.slice(100, 100))
        wait_for(lambda: not health.database_ok, 30, "the scorer to notice the database is down")
        proxy.restore()
        wait_for(lambda: len(alerts(postgres_url)) == 200, 60, "alerts after the database is back")

        server.send_signal(signal.SIGKILL)  # the model server goes away
        server.wait(10)
        produce(kafka_broker.bootstrap, topics.transactions, bank.slice(200, 100))
        wait_for(lambda: not health.model_ok, 30, "the scorer to notice the model is down")
        server = _model_server_process(toy_model_dir, port, tmp_path / "server.log")
        wait_for(lambda: len(alerts(postgres_url)) == 300, 90, "alerts after the model is back")
        assert health.model_ok and health.database_ok
    finally:
        scorer.process.scorer.stop()
        scorer.join()
        stage.stop()
        server.send_signal(signal.SIGTERM)
        server.wait(10)
        proxy.close()
    written = [a["transaction_id"] for a in alerts(postgres_url)]
    assert sorted(written) == sorted(bank.slice(0, 300).column("transaction_id").to_pylist())


# --- helpers ---------------------------------------------------------------------


def _stage(topics: Topics, endpoints: Endpoints, **overrides: object) -> StageThread:
    """A terminal stage for the scorer of ``endpoints`` (same broker, database and model)."""
    return StageThread(
        topics.stage_settings(**overrides), endpoints.kafka, endpoints.db_url, endpoints.model
    )


def _encoded(table: pa.Table) -> list[tuple[bytes, bytes]]:
    from ingest.kafka_io import encode_transactions

    return encode_transactions(table)


def _read_all(bootstrap: str, topic: str, expected: int) -> list:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=5000,
        max_partition_fetch_bytes=16 << 20,
        fetch_max_bytes=64 << 20,
    )
    messages = []
    for message in consumer:
        messages.append(message)
        if len(messages) >= expected:
            break
    consumer.close()
    return sorted(messages, key=lambda m: int(dict(m.headers)[HEADER_OFFSET]))


def _produce_slowly(bootstrap: str, topic: str, table: pa.Table) -> None:
    """About 100 events every 0.6 s, so scorers are killed while events still arrive."""
    for start in range(0, table.num_rows, 100):
        produce(bootstrap, topic, table.slice(start, 100))
        time.sleep(0.6)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _model_server_process(model_dir: Path, port: int, log: Path):
    from scoring.model_server.process import start

    with log.open("ab") as out:
        return start(model_dir, "--poll-seconds", "0.5", grpc_port=port, stderr=out).process


class _TcpProxy:
    """A loopback TCP proxy whose link can be cut (connections dropped, new ones refused)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._up = threading.Event()
        self._up.set()
        self._closed = False
        self._links: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self._up.is_set():
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self._links += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self._up.clear()
        for link in self._links:
            with contextlib.suppress(OSError):
                link.shutdown(socket.SHUT_RDWR)
        self._links = []

    def restore(self) -> None:
        self._up.set()

    def close(self) -> None:
        self._closed = True
        self.cut()
        self._listener.close()


def test_keep_alive_leaves_no_partition_paused(kafka_broker, topics, bank):
    """A pause left from before (kafka-python keeps it across a rebalance that keeps the
    partition) must not survive a keep-alive: the partition would never be read again."""
    from scoring.stream.kafka_source import KafkaSource

    produce(kafka_broker.bootstrap, topics.transactions, bank.slice(0, 50))
    source = KafkaSource(KafkaSettings(kafka_broker.bootstrap), topics.group, [topics.transactions])
    assigned: list[list[tuple[str, int]]] = []
    source.on_assignment(lambda parts: assigned.append(parts) or {}, lambda parts: None)
    read: list[object] = []
    try:
        wait_for(lambda: read.extend(source.poll(100, 1)) or bool(assigned), 60, "an assignment")
        consumer = source._consumer
        consumer.pause(*consumer.assignment())  # paused before a rebalance, never resumed

        source.keep_alive(0.2)

        assert consumer.paused() == set()
        wait_for(lambda: read.extend(source.poll(200, 100)) or len(read) >= 50, 60, "all events")
    finally:
        source.close()
