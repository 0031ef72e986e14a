"""`fraud bench scoring`: end-to-end scoring throughput and latency, everything local.

Measures, on one machine: the broker's consume rate and the model's batch rate
(the ceilings), the scorer's sustained throughput with the in-process model and
through a TF-Serving-compatible gRPC endpoint, and event-to-alert latency at a
steady 2,000 events/s: with the model's own alert threshold (every event's time
to the commit of its batch, and the alerts' own), and as a stress run in which
every event is written as an alert.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console

from ingest.kafka_io import KafkaSettings, encode_transactions, make_consumer, make_producer
from ingest.local_broker import LocalBroker
from scoring.model_server.process import model_server_process

FRAUD = str(Path(sys.executable).with_name("fraud"))


@dataclass(frozen=True)
class BenchPlan:
    """Sizes of the benchmark run."""

    events: int = 100_000
    latency_rate: int = 2000
    latency_seconds: float = 60.0
    model_dir: Path | None = None
    workdir: Path | None = None


def run_bench(plan: BenchPlan, console: Console) -> dict[str, Any]:
    """Run every measurement; return the figures."""
    workdir = plan.workdir or Path(tempfile.mkdtemp(prefix="fraud-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    history, live, model_dir = _prepare(plan, workdir, env, console)
    figures: dict[str, Any] = {"events": min(plan.events, live.num_rows)}
    live = live.slice(0, figures["events"])
    with LocalBroker(log_path=workdir / "broker.log") as broker:
        settings = KafkaSettings(broker.bootstrap)
        with console.status("Measuring the broker's consume rate"):
            figures["broker_limit_events_per_s"] = _broker_limit(settings, live)
        with console.status("Measuring the in-process model's batch rate"):
            figures["model_limit_events_per_s"] = _model_limit(model_dir, history, live)
        with console.status("Scoring with the in-process model"):
            figures["inprocess_events_per_s"] = _throughput(
                settings, live, history, str(model_dir), model_dir, workdir, "inprocess"
            )
        with model_server_process(model_dir) as port:
            grpc = f"grpc://127.0.0.1:{port}"
            with console.status("Scoring through gRPC (TF Serving API)"):
                figures["grpc_events_per_s"] = _throughput(
                    settings, live, history, grpc, model_dir, workdir, "grpc"
                )
            with console.status(f"Latency at {plan.latency_rate:,} events/s through gRPC"):
                figures.update(_latency(settings, live, history, grpc, model_dir, workdir, plan))
    if plan.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return figures


def _prepare(
    plan: BenchPlan, workdir: Path, env: dict[str, str], console: Console
) -> tuple[Path, pa.Table, Path]:
    """A simulated bank split into history and live events, and a trained model."""
    from ingest.readers import read_transactions

    lake = workdir / "lake"
    start, days = date(2018, 4, 1), 62
    if not lake.exists():
        with console.status("Simulating the bank"):
            subprocess.run(
                [FRAUD, "simulate", "--out", str(lake), "--days", str(days)],
                check=True,
                capture_output=True,
                env=env,
            )
    live_start = start + timedelta(days=days - 14)
    model_dir = plan.model_dir or workdir / "models"
    if plan.model_dir is None and not model_dir.exists():
        train_end = live_start - timedelta(days=8)
        with console.status("Training a model to serve (fraud train)"):
            subprocess.run(
                [
                    FRAUD,
                    "train",
                    "--input",
                    str(lake),
                    "--model-dir",
                    str(model_dir),
                    "--train-start",
                    (train_end - timedelta(days=6)).isoformat(),
                    "--train-end",
                    train_end.isoformat(),
                    "--epochs",
                    "2",
                ],
                check=True,
                capture_output=True,
                env=env,
            )
    history = workdir / "history.parquet"
    if not history.exists():
        before = read_transactions(lake, labelled=True, end=live_start - timedelta(days=1))
        pq.write_table(before.table, history)
    live = read_transactions(lake, labelled=True, start=live_start).table
    return history, live, model_dir


def _publish(
    settings: KafkaSettings, topic: str, table: pa.Table, rate: float | None = None
) -> None:
    from ingest.kafka_io import ensure_topics

    ensure_topics(settings, {topic: 3})
    producer = make_producer(settings)
    messages = encode_transactions(table)
    started = time.perf_counter()
    for i, (key, value) in enumerate(messages):
        if rate is not None:
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()


def _broker_limit(settings: KafkaSettings, live: pa.Table) -> int:
    """Consume + JSON-decode rate of a plain consumer (no scoring)."""
    from ingest.kafka_io import decode_transaction

    topic = f"bench-raw-{time.time_ns()}"
    _publish(settings, topic, live)
    consumer = make_consumer(settings, None, topic, max_partition_fetch_bytes=1 << 20)
    seen, started = 0, time.perf_counter()
    while seen < live.num_rows:
        for records in consumer.poll(timeout_ms=500, max_records=5000).values():
            for r in records:
                decode_transaction(r.value, "bench")
            seen += len(records)
    rate = seen / (time.perf_counter() - started)
    consumer.close()
    return round(rate)


def _model_limit(model_dir: Path, history: Path, live: pa.Table) -> int:
    """Rows/s of the in-process model alone, on batches of 2,000 real model inputs."""
    from features.behaviour import BehaviourState
    from features.model_inputs import to_model_inputs
    from scoring.clients import make_client

    state = BehaviourState()
    state.warm(pq.read_table(history))
    batch = live.slice(0, 2000)
    inputs = to_model_inputs(batch, state.update_and_read(batch))
    client = make_client(str(model_dir))
    try:
        client.predict(inputs)
        started, rounds = time.perf_counter(), 20
        for _ in range(rounds):
            client.predict(inputs)
        return round(rounds * batch.num_rows / (time.perf_counter() - started))
    finally:
        client.close()


def _scorer(
    settings: KafkaSettings,
    topic: str,
    history: Path,
    model: str,
    model_dir: Path,
    db: str,
    **overrides: Any,
) -> Any:
    from scoring.db.engine import make_engine
    from scoring.db.migrate import upgrade
    from scoring.stream.app import Endpoints, ScorerProcess
    from scoring.stream.settings import ScorerSettings

    engine = make_engine(db)
    upgrade(engine)
    engine.dispose()
    process = ScorerProcess(
        ScorerSettings(
            topic=topic,
            labels_topic=None,
            dlq_topic=f"{topic}.dlq",
            group_id=f"{topic}-scorer",
            **overrides,
        ),
        Endpoints(settings, db, model, history=history),
    )
    return process


def _throughput(
    settings: KafkaSettings,
    live: pa.Table,
    history: Path,
    model: str,
    model_dir: Path,
    workdir: Path,
    name: str,
) -> int:
    """Sustained events/s of a scorer draining a topic that already holds every event."""
    topic = f"bench-{name}-{time.time_ns()}"
    _publish(settings, topic, live)
    db = f"sqlite:///{workdir / f'{name}.db'}"
    process = _scorer(settings, topic, history, model, model_dir, db, exit_when_idle_seconds=2.0)
    summary = process.run()
    return round(summary.events / summary.active_seconds)


def _latency(
    settings: KafkaSettings,
    live: pa.Table,
    history: Path,
    model: str,
    model_dir: Path,
    workdir: Path,
    plan: BenchPlan,
) -> dict[str, Any]:
    """Event-to-alert latency (Kafka timestamp to alert commit) at a steady rate, two ways.

    Events come from ``fraud produce --rate`` in its own process, as from a bank.
    With the model's own alert threshold (about 1% of events alert), every
    event's latency to the commit of its batch is measured — the moment its
    alert was written, had it scored high — and the alerts' own latencies too.
    Then a stress run with threshold 0, where every event is written as an
    alert with its feature snapshot.
    """
    figures: dict[str, Any] = {"latency_rate_events_per_s": plan.latency_rate}
    transport = _transport_latency(settings, live, workdir, plan)
    figures["transport_p50_ms"] = _percentile(transport, 50)
    figures["transport_p99_ms"] = _percentile(transport, 99)
    decisions, alerts, metrics = _latency_run(
        settings, live, history, model, model_dir, workdir, plan, threshold=None
    )
    figures.update(
        {
            "latency_events": int(decisions.size),
            "p50_ms": _percentile(decisions, 50),
            "p99_ms": _percentile(decisions, 99),
            "max_ms": round(float(decisions.max()), 1),
            "latency_alerts": int(alerts.size),
            "alerts_p99_ms": _percentile(alerts, 99),
            # Checkpoints written during the run, the final one at shutdown included.
            "latency_run_checkpoints": int(metrics.checkpoints._value.get()),
            "checkpoint_ms": round(metrics.checkpoint_seconds._value.get() * 1000, 1),
            "checkpoint_pause_ms": round(metrics.checkpoint_pause_seconds._value.get() * 1000, 1),
        }
    )
    _, every, _ = _latency_run(
        settings, live, history, model, model_dir, workdir, plan, threshold=0.0
    )
    figures.update(
        {
            "all_alerts_p50_ms": _percentile(every, 50),
            "all_alerts_p99_ms": _percentile(every, 99),
        }
    )
    return figures


def _transport_latency(
    settings: KafkaSettings, live: pa.Table, workdir: Path, plan: BenchPlan
) -> np.ndarray:
    """The floor under every latency figure: producer to consumer, no scoring (ms).

    ``fraud produce --rate`` into a topic read by the scorer's own Kafka source
    (same consumer settings), which only notes each message's latency.
    """
    from ingest.kafka_io import ensure_topics
    from scoring.stream.kafka_source import KafkaSource

    topic = f"bench-transport-{time.time_ns()}"
    count = min(live.num_rows, int(plan.latency_rate * min(plan.latency_seconds, 30.0)))
    events = workdir / "transport.parquet"
    pq.write_table(live.slice(0, count), events)
    ensure_topics(settings, {topic: 3})
    source = KafkaSource(settings, f"{topic}-reader", [topic])
    assigned = threading.Event()

    def on_assigned(_partitions: list[Any]) -> dict[Any, int]:
        assigned.set()
        return {}

    source.on_assignment(on_assigned, lambda _partitions: None)
    deadline = time.monotonic() + 60
    while not assigned.is_set() and time.monotonic() < deadline:
        source.poll(100, 1)  # join the group before the first event is sent
    latencies: list[float] = []
    producer = subprocess.Popen(
        _paced_produce(settings, topic, events, plan.latency_rate),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )
    try:
        deadline = time.monotonic() + 120 + count / plan.latency_rate
        while len(latencies) < count and time.monotonic() < deadline:
            for message in source.poll(5, 2000):
                latencies.append(time.time() - message.timestamp_ms / 1000)
    finally:
        producer.wait(60)
        source.close()
    return np.asarray(latencies) * 1000


def _latency_run(
    settings: KafkaSettings,
    live: pa.Table,
    history: Path,
    model: str,
    model_dir: Path,
    workdir: Path,
    plan: BenchPlan,
    threshold: float | None,
) -> tuple[np.ndarray, np.ndarray, Any]:
    """One paced run: every event's and every alert's latency (ms), and the scorer's metrics."""
    topic = f"bench-latency-{time.time_ns()}"
    count = min(live.num_rows, int(plan.latency_rate * plan.latency_seconds))
    events = workdir / "latency.parquet"
    pq.write_table(live.slice(0, count), events)
    db = f"sqlite:///{workdir / f'latency-{topic}.db'}"
    process = _scorer(
        settings,
        topic,
        history,
        model,
        model_dir,
        db,
        threshold=threshold,
        max_wait_ms=5,
        exit_when_idle_seconds=3.0,
    )
    observer = _Latencies()
    process.scorer.observer = observer
    runner = threading.Thread(target=process.run)
    runner.start()
    deadline = time.monotonic() + 300
    while not process.scorer.assigned and time.monotonic() < deadline:
        time.sleep(0.2)  # the group join and the warm-up from history
    subprocess.run(
        _paced_produce(settings, topic, events, plan.latency_rate),
        check=True,
        capture_output=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )
    runner.join()
    return (
        np.asarray(observer.decisions) * 1000,
        np.asarray(observer.alerts) * 1000,
        process.metrics,
    )


class _Latencies:
    """Every scored event's latency to its batch's commit, and every alert's (seconds)."""

    def __init__(self) -> None:
        self.decisions: list[float] = []
        self.alerts: list[float] = []

    def batch_committed(self, scored: list[Any], alerted: list[Any], committed_at: float) -> None:
        self.decisions += [max(0.0, committed_at - m.timestamp_ms / 1000) for m in scored]
        self.alerts += [max(0.0, committed_at - m.timestamp_ms / 1000) for m in alerted]


def _paced_produce(settings: KafkaSettings, topic: str, events: Path, rate: int) -> list[str]:
    """The ``fraud produce`` command that sends ``events`` at ``rate`` events/s, as a bank would."""
    return [
        FRAUD,
        "produce",
        "--input",
        str(events),
        "--bootstrap-servers",
        settings.bootstrap_servers,
        "--topic",
        topic,
        "--rate",
        str(rate),
    ]


def _percentile(values_ms: np.ndarray, q: float) -> float | None:
    return round(float(np.percentile(values_ms, q)), 1) if values_ms.size else None
