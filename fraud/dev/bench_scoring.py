"""`fraud bench scoring`: end-to-end scoring throughput, scale-out and latency, everything local.

On one machine: the broker's consume rate and the model's batch rate (the
ceilings); one scorer's sustained throughput with the in-process model and
through a TF-Serving-compatible gRPC endpoint; N scorers in one group (their
aggregate events/s and CPU per event, summed over every scorer and the
terminal stage); and event-to-alert latency at a steady 2,000 events/s.

Every scorer and the terminal stage run as their own ``fraud`` processes, as
in production; their CPU is read from ``/proc`` once they are up (so process
start-up and TensorFlow's import are not counted) and once every event is
scored.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console

from fraud.dev.local_broker import LocalBroker
from ingest.kafka_io import KafkaSettings, encode_transactions, make_consumer, make_producer
from scoring.model_server.process import model_server_process

FRAUD = str(Path(sys.executable).with_name("fraud"))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class BenchPlan:
    """Sizes of the benchmark run."""

    events: int = 100_000
    latency_rate: int = 2000
    latency_seconds: float = 60.0
    #: Scorer counts of the scale-out runs (aggregate events/s, CPU per event).
    scorers: tuple[int, ...] = (1, 2, 3)
    partitions: int = 6
    model_dir: Path | None = None
    workdir: Path | None = None


@dataclass
class Rig:
    """Everything a measurement needs: the broker, the data, the model and a work folder."""

    kafka: KafkaSettings
    live: pa.Table
    history: Path
    model_dir: Path
    workdir: Path
    plan: BenchPlan
    grpc: str = ""
    _runs: int = field(default=0)

    def fresh(self, name: str) -> Names:
        """Topics, groups and a database of their own for one run."""
        self._runs += 1
        stem = f"bench-{name}-{self._runs}-{time.time_ns() % 10**9}"
        db = f"sqlite:///{self.workdir / f'{stem}.db'}"
        from scoring.db.engine import make_engine
        from scoring.db.migrate import upgrade

        engine = make_engine(db)
        upgrade(engine)
        engine.dispose()
        return Names(stem, db)


@dataclass(frozen=True)
class Names:
    """One run's topics, groups and database."""

    stem: str
    db: str

    @property
    def topic(self) -> str:
        """The run's transactions topic."""
        return self.stem

    def wiring(self) -> list[str]:
        """The options every scorer and the stage of this run share."""
        return [
            "--db", self.db, "--topic", self.stem, "--labels-topic", f"{self.stem}.labels",
            "--dlq-topic", f"{self.stem}.dlq", "--state-topic", f"{self.stem}.state",
        ]

    def scorer_args(self) -> list[str]:
        """A scorer's options."""
        return [*self.wiring(), "--group-id", f"{self.stem}-scorers",
                "--stage-group", f"{self.stem}-stage"]

    def stage_args(self) -> list[str]:
        """The stage's options."""
        return [*self.wiring(), "--group-id", f"{self.stem}-stage",
                "--scorer-group", f"{self.stem}-scorers"]


def run_bench(plan: BenchPlan, console: Console) -> dict[str, Any]:
    """Run every measurement; return the figures."""
    workdir = plan.workdir or Path(tempfile.mkdtemp(prefix="fraud-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    history, live, model_dir = _prepare(plan, workdir, console)
    figures: dict[str, Any] = {"events": min(plan.events, live.num_rows)}
    live = live.slice(0, figures["events"])
    with LocalBroker(log_path=workdir / "broker.log") as broker:
        rig = Rig(KafkaSettings(broker.bootstrap), live, history, model_dir, workdir, plan)
        with console.status("Measuring the broker's consume rate"):
            figures["broker_limit_events_per_s"] = _broker_limit(rig)
        with console.status("Measuring the in-process model's batch rate"):
            figures["model_limit_events_per_s"] = _model_limit(rig)
        with console.status("One scorer, in-process model"):
            one = _fleet_run(rig, 1, str(model_dir), "inprocess")
        figures["inprocess_events_per_s"] = one["events_per_s"]
        with model_server_process(model_dir) as port:
            rig.grpc = f"grpc://127.0.0.1:{port}"
            scaling = {}
            for n in plan.scorers:
                with console.status(f"{n} scorer(s) and the terminal stage through gRPC"):
                    scaling[n] = _fleet_run(rig, n, rig.grpc, f"grpc{n}")
            figures["grpc_events_per_s"] = scaling.get(1, {}).get("events_per_s")
            figures["scale_out"] = {str(n): run for n, run in scaling.items()}
            if 1 in scaling and max(scaling) > 1:
                figures["cpu_per_1000_ratio_max_vs_1"] = round(
                    scaling[max(scaling)]["cpu_s_per_1000_events"]
                    / scaling[1]["cpu_s_per_1000_events"],
                    3,
                )
            with console.status(f"Latency at {plan.latency_rate:,} events/s through gRPC"):
                figures.update(_latency(rig))
    if plan.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return figures


# --- data and model -------------------------------------------------------------------------


def _prepare(plan: BenchPlan, workdir: Path, console: Console) -> tuple[Path, pa.Table, Path]:
    """A simulated bank split into history and live events, and a trained model."""
    from ingest.readers import read_transactions

    lake = workdir / "lake"
    start, days = date(2018, 4, 1), 62
    if not lake.exists():
        with console.status("Simulating the bank"):
            _run([FRAUD, "simulate", "--out", str(lake), "--days", str(days)])
    live_start = start + timedelta(days=days - 14)
    model_dir = plan.model_dir or workdir / "models"
    if plan.model_dir is None and not model_dir.exists():
        train_end = live_start - timedelta(days=8)
        with console.status("Training a model to serve (fraud train)"):
            _run([FRAUD, "train", "--input", str(lake), "--model-dir", str(model_dir),
                  "--train-start", (train_end - timedelta(days=6)).isoformat(),
                  "--train-end", train_end.isoformat(), "--epochs", "2"])
    history = workdir / "history.parquet"
    if not history.exists():
        before = read_transactions(lake, labelled=True, end=live_start - timedelta(days=1))
        pq.write_table(before.table, history)
    live = read_transactions(lake, labelled=True, start=live_start).table
    return history, live, model_dir


def _run(args: list[str]) -> None:
    subprocess.run(args, check=True, capture_output=True, env=ENV)


def _publish(rig: Rig, topic: str, table: pa.Table) -> None:
    from ingest.kafka_io import ensure_topics

    ensure_topics(rig.kafka, {topic: rig.plan.partitions})
    producer = make_producer(rig.kafka)
    for key, value in encode_transactions(table):
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()


# --- ceilings ---------------------------------------------------------------------------------


def _broker_limit(rig: Rig) -> int:
    """Consume + JSON-decode rate of a plain consumer (no scoring)."""
    from ingest.kafka_io import decode_transaction

    topic = f"bench-raw-{time.time_ns()}"
    _publish(rig, topic, rig.live)
    consumer = make_consumer(rig.kafka, None, topic, max_partition_fetch_bytes=1 << 20)
    seen, started = 0, time.perf_counter()
    while seen < rig.live.num_rows:
        for records in consumer.poll(timeout_ms=500, max_records=5000).values():
            for r in records:
                decode_transaction(r.value, "bench")
            seen += len(records)
    rate = seen / (time.perf_counter() - started)
    consumer.close()
    return round(rate)


def _model_inputs(rig: Rig, rows: int) -> dict[str, np.ndarray]:
    from features.behaviour import BehaviourState
    from features.model_inputs import to_model_inputs

    state = BehaviourState()
    state.warm(pq.read_table(rig.history))
    batch = rig.live.slice(0, rows)
    return to_model_inputs(batch, state.update_and_read(batch))


def _model_limit(rig: Rig) -> int:
    """Rows/s of the in-process model alone, on batches of 2,000 real model inputs."""
    from scoring.clients import make_client

    inputs = _model_inputs(rig, 2000)
    client = make_client(str(rig.model_dir))
    try:
        client.predict(inputs)
        started, rounds = time.perf_counter(), 20
        for _ in range(rounds):
            client.predict(inputs)
        return round(rounds * 2000 / (time.perf_counter() - started))
    finally:
        client.close()


# --- fleets of processes ------------------------------------------------------------------------


@dataclass
class _Proc:
    """One ``fraud`` process of a fleet: its metrics port and CPU seconds at the start."""

    name: str
    popen: subprocess.Popen[bytes]
    port: int
    cpu_at_start: float = 0.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a running process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _metrics(port: int) -> dict[str, float]:
    """The process's Prometheus samples (unlabelled ones), {} when it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as answer:
            text = answer.read().decode()
    except (OSError, urllib.error.URLError):
        return {}
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, _, value = line.partition(" ")
            out[name] = float(value)
    return out


def _start(rig: Rig, name: str, command: str, args: list[str]) -> _Proc:
    port = _free_port()
    with (rig.workdir / f"{name}.log").open("ab") as log:
        popen = subprocess.Popen(
            [FRAUD, command, "--bootstrap-servers", rig.kafka.bootstrap_servers, *args,
             "--metrics-port", str(port), "--checkpoint-seconds", "5"],
            stdout=subprocess.DEVNULL, stderr=log, env=ENV,
        )
    return _Proc(name, popen, port)


def _up(proc: _Proc, timeout: float = 180) -> None:
    """Wait until the process serves its metrics (it is up); note its CPU then."""
    deadline = time.monotonic() + timeout
    while not _metrics(proc.port):
        if proc.popen.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{proc.name} did not come up (see its log)")
        time.sleep(0.1)
    proc.cpu_at_start = _cpu_seconds(proc.popen.pid)


@contextmanager
def _fleet(rig: Rig, names: Names, scorers: int, model: str) -> Iterator[list[_Proc]]:
    """The stage and ``scorers`` scorer processes of one run; stopped on exit."""
    stage = _start(rig, f"{names.stem}-stage", "terminal-stage",
                   [*names.stage_args(), "--model-server" if model.startswith("grpc")
                    else "--model-dir", model])
    procs = [stage]
    try:
        _up(stage)
        for i in range(scorers):
            procs.append(_start(rig, f"{names.stem}-scorer-{i}", "score",
                                [*names.scorer_args(), "--model-server"
                                 if model.startswith("grpc") else "--model-dir", model]))
        for proc in procs[1:]:
            _up(proc)
        yield procs
    finally:
        for proc in procs:
            if proc.popen.poll() is None:
                proc.popen.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.popen.wait(60)
            except subprocess.TimeoutExpired:
                proc.popen.kill()


def _fleet_run(rig: Rig, scorers: int, model: str, name: str) -> dict[str, Any]:
    """Drain a topic holding every event with ``scorers`` scorers and the stage.

    The processes start on the full topic; the clock runs from the first event
    any scorer scores to the last, and the CPU is what every process (scorers
    and stage) used since it came up.
    """
    names = rig.fresh(name)
    _publish(rig, names.topic, rig.live)
    total = rig.live.num_rows
    with _fleet(rig, names, scorers, model) as procs:
        first: float | None = None
        deadline = time.monotonic() + 900
        scored = 0.0
        while time.monotonic() < deadline:
            scored = sum(_metrics(p.port).get("fraud_scorer_events_total", 0) for p in procs[1:])
            if scored and first is None:
                first = time.monotonic()
            if scored >= total:
                break
            time.sleep(0.05)
        last = time.monotonic()
        cpu = sum(_cpu_seconds(p.popen.pid) - p.cpu_at_start for p in procs)
        pauses = [_metrics(p.port).get("fraud_scorer_checkpoint_pause_seconds", 0.0)
                  for p in procs[1:]]
    if scored < total:
        raise RuntimeError(f"{name}: {scored:.0f} of {total} events scored in time")
    return {
        "scorers": scorers,
        "events_per_s": round(total / max(last - (first or last), 1e-9)),
        "cpu_s_per_1000_events": round(cpu / total * 1000, 4),
        "checkpoint_pause_ms_max": round(max(pauses) * 1000, 1),
        **_checkpoint_sizes(names.db),
    }


def _checkpoint_sizes(db: str) -> dict[str, Any]:
    """Mean bytes of the partitions' checkpoint rows, bases and deltas."""
    from sqlalchemy import text

    from scoring.db.engine import make_engine

    engine = make_engine(db)
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT kind, avg(length(state)), count(*) FROM partition_checkpoints "
                "GROUP BY kind"
            )
        ).all()
    engine.dispose()
    sizes = {kind: (int(mean or 0), int(count)) for kind, mean, count in rows}
    return {
        "partition_base_bytes": sizes.get("base", (0, 0))[0],
        "partition_delta_bytes": sizes.get("delta", (0, 0))[0],
        "partition_rows": sum(c for _, c in sizes.values()),
    }


# --- latency ------------------------------------------------------------------------------------


def _latency(rig: Rig) -> dict[str, Any]:
    """Event-to-alert latency (Kafka timestamp to alert commit) at a steady rate, two ways.

    Events come from ``fraud produce --rate`` in its own process, as from a bank,
    to one scorer in this process (its batches observed) and the terminal stage.
    With the model's own alert threshold (about 1% of events alert), every
    event's latency to the commit of its batch is measured — the moment its
    alert was written, had it scored high — and the alerts' own latencies too.
    Then a stress run with threshold 0, where every event is written as an
    alert with its feature snapshot.
    """
    plan = rig.plan
    figures: dict[str, Any] = {"latency_rate_events_per_s": plan.latency_rate}
    transport = _transport_latency(rig)
    figures["transport_p50_ms"] = _percentile(transport, 50)
    figures["transport_p99_ms"] = _percentile(transport, 99)
    decisions, alerts, metrics = _latency_run(rig, threshold=None)
    figures.update(
        {
            "latency_events": int(decisions.size),
            "p50_ms": _percentile(decisions, 50),
            "p99_ms": _percentile(decisions, 99),
            "max_ms": round(float(decisions.max()), 1),
            "latency_alerts": int(alerts.size),
            "alerts_p99_ms": _percentile(alerts, 99),
            "latency_run_checkpoints": int(metrics.checkpoints._value.get()),
            "checkpoint_ms": round(metrics.checkpoint_seconds._value.get() * 1000, 1),
            "checkpoint_pause_ms": round(metrics.checkpoint_pause_seconds._value.get() * 1000, 1),
        }
    )
    _, every, _ = _latency_run(rig, threshold=0.0)
    figures["all_alerts_p50_ms"] = _percentile(every, 50)
    figures["all_alerts_p99_ms"] = _percentile(every, 99)
    return figures


def _transport_latency(rig: Rig) -> np.ndarray:
    """The floor under every latency figure: producer to consumer, no scoring (ms)."""
    from ingest.kafka_io import ensure_topics
    from scoring.stream.kafka_source import KafkaSource

    plan = rig.plan
    topic = f"bench-transport-{time.time_ns()}"
    count = min(rig.live.num_rows, int(plan.latency_rate * min(plan.latency_seconds, 30.0)))
    events = rig.workdir / "transport.parquet"
    pq.write_table(rig.live.slice(0, count), events)
    ensure_topics(rig.kafka, {topic: 3})
    source = KafkaSource(rig.kafka, f"{topic}-reader", [topic])
    assigned = threading.Event()

    def on_assigned(_partitions: list[Any]) -> dict[Any, int]:
        assigned.set()
        return {}

    source.on_assignment(on_assigned, lambda _partitions: None)
    deadline = time.monotonic() + 60
    while not assigned.is_set() and time.monotonic() < deadline:
        source.poll(100, 1)  # join the group before the first event is sent
    latencies: list[float] = []
    producer = subprocess.Popen(_paced_produce(rig, topic, events), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=ENV)
    try:
        deadline = time.monotonic() + 120 + count / plan.latency_rate
        while len(latencies) < count and time.monotonic() < deadline:
            for message in source.poll(5, 2000):
                latencies.append(time.time() - message.timestamp_ms / 1000)
    finally:
        producer.wait(60)
        source.close()
    return np.asarray(latencies) * 1000


def _latency_run(rig: Rig, threshold: float | None) -> tuple[np.ndarray, np.ndarray, Any]:
    """One paced run: every event's and every alert's latency (ms), and the scorer's metrics."""
    from scoring.stream.app import Endpoints, ScorerProcess
    from scoring.stream.settings import ScorerSettings

    plan = rig.plan
    names = rig.fresh("latency")
    count = min(rig.live.num_rows, int(plan.latency_rate * plan.latency_seconds))
    events = rig.workdir / "latency.parquet"
    pq.write_table(rig.live.slice(0, count), events)
    stage = _start(rig, f"{names.stem}-stage", "terminal-stage",
                   [*names.stage_args(), "--model-server", rig.grpc,
                    "--history", str(rig.history)])
    try:
        _up(stage)
        process = ScorerProcess(
            ScorerSettings(
                topic=names.topic,
                labels_topic=f"{names.stem}.labels",
                dlq_topic=f"{names.stem}.dlq",
                state_topic=f"{names.stem}.state",
                group_id=f"{names.stem}-scorers",
                stage_group=f"{names.stem}-stage",
                threshold=threshold,
                max_wait_ms=5,
                exit_when_idle_seconds=3.0,
            ),
            Endpoints(rig.kafka, names.db, rig.grpc, history=rig.history),
        )
        observer = _Latencies()
        process.scorer.observer = observer
        runner = threading.Thread(target=process.run)
        runner.start()
        deadline = time.monotonic() + 300
        while not process.scorer.assigned and time.monotonic() < deadline:
            time.sleep(0.2)  # the group join and the warm-up from history
        subprocess.run(_paced_produce(rig, names.topic, events), check=True,
                       capture_output=True, env=ENV)
        runner.join()
    finally:
        stage.popen.send_signal(signal.SIGTERM)
        stage.popen.wait(60)
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


def _paced_produce(rig: Rig, topic: str, events: Path) -> list[str]:
    """The ``fraud produce`` command that sends ``events`` at the latency rate, as a bank would."""
    return [FRAUD, "produce", "--input", str(events), "--bootstrap-servers",
            rig.kafka.bootstrap_servers, "--topic", topic, "--rate", str(rig.plan.latency_rate)]


def _percentile(values_ms: np.ndarray, q: float) -> float | None:
    return round(float(np.percentile(values_ms, q)), 1) if values_ms.size else None
