"""Helpers shared by the streaming-scorer integration tests (real broker, DB, model server)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
from sqlalchemy import text

from ingest.kafka_io import KafkaSettings, encode_transactions, make_producer
from ingest.simulator import SimulationConfig, simulate
from scoring.db.engine import make_engine
from scoring.stream.app import Endpoints, ScorerProcess
from scoring.stream.service import RunSummary
from scoring.stream.settings import ScorerSettings
from scoring.terminal_stage.settings import StageSettings

FRAUD = str(Path(sys.executable).with_name("fraud"))


def small_bank(days: int = 12, seed: int = 3) -> pa.Table:
    config = SimulationConfig(
        customers=120, terminals=240, days=days, start_date=date(2018, 4, 1), seed=seed
    )
    return simulate(config).table


def produce(bootstrap: str, topic: str, table: pa.Table) -> None:
    """Publish a canonical table as ``fraud produce`` does (keyed by customer, JSON)."""
    producer = make_producer(KafkaSettings(bootstrap))
    for key, value in encode_transactions(table):
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()


def produce_raw(
    bootstrap: str, topic: str, messages: list[tuple[bytes, bytes | None]]
) -> list[tuple[int, int]]:
    """Publish raw messages in order; returns each one's (partition, offset)."""
    producer = make_producer(KafkaSettings(bootstrap), max_request_size=12 * 1024 * 1024)
    futures = [producer.send(topic, key=key, value=value) for key, value in messages]
    producer.flush()
    placed = [(f.get(30).partition, f.get(30).offset) for f in futures]
    producer.close()
    return placed


def alerts(db_url: str) -> list[dict[str, object]]:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = (
                conn.execute(
                    text("SELECT transaction_id, score, threshold, model_version FROM alerts")
                )
                .mappings()
                .all()
            )
        return [dict(r) for r in rows]
    finally:
        engine.dispose()


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


@dataclass
class Topics:
    transactions: str
    labels: str
    dlq: str
    group: str

    @property
    def state(self) -> str:
        return f"{self.transactions}.state"

    @property
    def stage_group(self) -> str:
        return f"{self.group}-stage"

    def settings(self, **overrides: object) -> ScorerSettings:
        values: dict[str, object] = {
            "topic": self.transactions,
            "labels_topic": self.labels,
            "dlq_topic": self.dlq,
            "group_id": self.group,
            "state_topic": self.state,
            "stage_group": self.stage_group,
            "checkpoint_seconds": 1.0,
            "retry_initial_seconds": 0.1,
            "retry_max_seconds": 1.0,
            "hold_check_seconds": 0.2,
        }
        values.update(overrides)
        return ScorerSettings(**values)  # type: ignore[arg-type]

    def stage_settings(self, **overrides: object) -> StageSettings:
        values: dict[str, object] = {
            "topic": self.transactions,
            "labels_topic": self.labels,
            "dlq_topic": self.dlq,
            "state_topic": self.state,
            "group_id": self.stage_group,
            "scorer_group": self.group,
            "checkpoint_seconds": 1.0,
            "retry_initial_seconds": 0.1,
            "retry_max_seconds": 1.0,
        }
        values.update(overrides)
        return StageSettings(**values)  # type: ignore[arg-type]

    def cli_args(self) -> list[str]:
        return [
            "--topic",
            self.transactions,
            "--labels-topic",
            self.labels,
            "--dlq-topic",
            self.dlq,
            "--group-id",
            self.group,
            "--state-topic",
            self.state,
            "--stage-group",
            self.stage_group,
        ]

    def stage_cli_args(self) -> list[str]:
        return [
            "--topic",
            self.transactions,
            "--labels-topic",
            self.labels,
            "--dlq-topic",
            self.dlq,
            "--state-topic",
            self.state,
            "--group-id",
            self.stage_group,
            "--scorer-group",
            self.group,
        ]


class ScorerThread:
    """A scorer with real backends, run in a thread of the test process."""

    def __init__(self, settings: ScorerSettings, endpoints: Endpoints) -> None:
        self.process = ScorerProcess(settings, endpoints)
        self.summary: RunSummary | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.summary = self.process.run()
        except BaseException as err:  # surfaced by join()
            self.error = err

    def start(self) -> ScorerThread:
        self._thread.start()
        return self

    def join(self, timeout_s: float = 120) -> RunSummary:
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            self.process.scorer.stop()
            self._thread.join(30)
            raise AssertionError("scorer did not stop by itself")
        if self.error is not None:
            raise self.error
        assert self.summary is not None
        return self.summary


class StageThread:
    """A terminal stage with real backends, run in a thread of the test process."""

    def __init__(
        self, settings: StageSettings, kafka: KafkaSettings, db_url: str, model: str, **extra: Any
    ) -> None:
        from features.behaviour import BehaviourConfig
        from scoring.terminal_stage.app import StageEndpoints, StageProcess, model_config

        endpoints = StageEndpoints(kafka, db_url, model, **extra)
        config = model_config(model, "fraud", threading.Event())
        assert isinstance(config, BehaviourConfig)
        self.process = StageProcess(settings, endpoints, config)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.process.run()
        except BaseException as err:  # surfaced by stop()
            self.error = err

    def start(self) -> StageThread:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.process.stage.stop()
        self._thread.join(60)
        if self.error is not None:
            raise self.error

    def __enter__(self) -> StageThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def stage_subprocess(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    with log.open("ab") as out:
        return subprocess.Popen([FRAUD, "terminal-stage", *args], stdout=out, stderr=out, env=env)


def scorer_subprocess(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    with log.open("ab") as out:
        return subprocess.Popen([FRAUD, "score", *args], stdout=out, stderr=out, env=env)
