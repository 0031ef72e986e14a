"""Wiring of the terminal stage process: settings in, real backends built, loop run."""

from __future__ import annotations

import logging
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from features.behaviour import BehaviourConfig
from features.model_config import STABLE
from ingest.kafka_io import DEFAULT_PARTITIONS, KafkaSettings, check_reachable, ensure_topics
from scoring.clients import make_client
from scoring.clients.base import ModelUnavailable
from scoring.stream.checkpoints import InlineCheckpoints, default_checkpoints
from scoring.stream.kafka_source import KafkaDeadLetters, KafkaSource
from scoring.stream.metrics import MetricsServer, ScorerMetrics
from scoring.stream.served_model import ModelRefused, ServedModel
from scoring.stream.sql_store import SqlAlertStore, SqlPartitionStore
from scoring.terminal_stage.service import StageSummary, TerminalStage
from scoring.terminal_stage.settings import StageSettings
from scoring.terminal_stage.state_topic import KafkaStatePublisher

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageEndpoints:
    """Where the stage's outside services are."""

    kafka: KafkaSettings
    db_url: str = field(repr=False)
    #: The model whose behavioural configuration the stage computes (server URL or directory).
    model: str
    model_name: str = "fraud"
    history: Path | None = None
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"


def model_config(
    model: str, model_name: str, stop: Any, wait_seconds: float = 5.0
) -> BehaviourConfig | None:
    """The behavioural configuration of the served model (waits while none is served).

    The version labelled ``stable`` when the server has that label (a canary or
    a refused version may be newer), else the latest.
    """
    client = make_client(model, model_name)
    try:
        served = ServedModel(client, label=STABLE)
        while not stop.is_set():
            try:
                return served.bind().metadata.behaviour
            except (ModelUnavailable, ModelRefused) as err:
                log.warning("waiting for a usable model version: %s", err)
                stop.wait(wait_seconds)
        return None
    finally:
        client.close()


class StageProcess:
    """A terminal stage with its real backends, and what must be closed after it."""

    def __init__(
        self, settings: StageSettings, endpoints: StageEndpoints, config: BehaviourConfig
    ) -> None:
        from scoring.db.engine import make_engine
        from scoring.db.migrate import require_schema

        check_reachable(endpoints.kafka)
        inputs = [settings.topic] + ([settings.labels_topic] if settings.labels_topic else [])
        ensure_topics(
            endpoints.kafka,
            {
                **{t: DEFAULT_PARTITIONS for t in inputs},
                settings.dlq_topic: 1,
                settings.state_topic: 1,
            },
        )
        self.engine = make_engine(endpoints.db_url)
        require_schema(self.engine)
        self.metrics = ScorerMetrics()
        self.server = (
            MetricsServer(self.metrics, endpoints.metrics_host, endpoints.metrics_port).start()
            if endpoints.metrics_port is not None
            else None
        )
        self.publisher = KafkaStatePublisher(endpoints.kafka, settings.state_topic)
        self.dead_letters = KafkaDeadLetters(endpoints.kafka, settings.dlq_topic)
        store = SqlAlertStore(self.engine, settings.group_id)
        self.stage = TerminalStage(
            settings,
            config,
            KafkaSource(endpoints.kafka, settings.group_id, inputs),
            self.publisher,
            store,
            SqlPartitionStore(self.engine, settings.scorer_group),
            self.dead_letters,
            metrics=self.metrics,
            history=_read_history(endpoints.history),
            checkpoints=(
                default_checkpoints(
                    store, store.reopened, timeout_seconds=settings.checkpoint_timeout_seconds
                )
                if store.reopenable
                else InlineCheckpoints(store)
            ),
        )

    def run(self) -> StageSummary:
        """Run until stopped or idle, then close every backend."""
        try:
            return self.stage.run()
        finally:
            self.publisher.close()
            self.dead_letters.close()
            self.engine.dispose()
            if self.server is not None:
                self.server.stop()


def run_stage(settings: StageSettings, endpoints: StageEndpoints) -> StageSummary:
    """Run the terminal stage until SIGTERM/SIGINT (or idle)."""
    import threading

    stopping = threading.Event()
    process: list[StageProcess] = []

    def on_signal(*_: object) -> None:
        stopping.set()
        if process:
            process[0].stage.stop()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        started = time.monotonic()
        config = model_config(endpoints.model, endpoints.model_name, stopping)
        if config is None:
            return StageSummary(seconds=time.monotonic() - started)
        process.append(StageProcess(settings, endpoints, config))
        if stopping.is_set():
            process[0].stage.stop()
        return process[0].run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _read_history(path: Path | None) -> Any:
    if path is None:
        return None
    from ingest.readers import read_transactions

    return read_transactions(path, labelled=True).table
