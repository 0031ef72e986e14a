"""Wiring of a scorer process: settings in, real backends built, loop run, summary out."""

from __future__ import annotations

import logging
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest.kafka_io import DEFAULT_PARTITIONS, KafkaSettings, check_reachable, ensure_topics
from scoring.clients import ModelClient, make_client
from scoring.stream.checkpoints import InlineCheckpoints, default_checkpoints
from scoring.stream.kafka_source import KafkaDeadLetters, KafkaSource
from scoring.stream.metrics import MetricsServer, ScorerMetrics
from scoring.stream.replica import TerminalReplica
from scoring.stream.served_model import ServedModel
from scoring.stream.service import RunSummary, Scorer
from scoring.stream.settings import ScorerSettings
from scoring.stream.sql_store import SqlAlertStore, SqlPartitionStore
from scoring.terminal_stage.state_topic import KafkaStateFollower

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Endpoints:
    """Where the scorer's outside services are."""

    kafka: KafkaSettings
    db_url: str = field(repr=False)
    model: str  # grpc://HOST:PORT, http://HOST:PORT or a model directory
    model_name: str = "fraud"
    history: Path | None = None
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"

    def __repr__(self) -> str:
        from scoring.db.engine import safe_url

        return (
            f"Endpoints(kafka={self.kafka.bootstrap_servers!r}, db={safe_url(self.db_url)!r}, "
            f"model={self.model!r}, model_name={self.model_name!r})"
        )


class ScorerProcess:
    """A scorer with its real backends built, and what must be closed after it."""

    def __init__(self, settings: ScorerSettings, endpoints: Endpoints) -> None:
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
        self.model: ModelClient = make_client(endpoints.model, endpoints.model_name)
        self.metrics = ScorerMetrics()
        self.metrics.health.stale_checkpoint_seconds = settings.stale_checkpoint_seconds
        self.server = (
            MetricsServer(self.metrics, endpoints.metrics_host, endpoints.metrics_port).start()
            if endpoints.metrics_port is not None
            else None
        )
        self.dead_letters = KafkaDeadLetters(endpoints.kafka, settings.dlq_topic)
        partitions = SqlPartitionStore(self.engine, settings.group_id)
        self.follower = KafkaStateFollower(endpoints.kafka, settings.state_topic)
        self.scorer = Scorer(
            settings,
            KafkaSource(endpoints.kafka, settings.group_id, [settings.topic]),
            self.dead_letters,
            SqlAlertStore(self.engine, settings.group_id),
            partitions,
            ServedModel(
                self.model,
                fixed_threshold=settings.threshold,
                follow_seconds=settings.model_follow_seconds,
                label=settings.model_label,
                canary_label=settings.canary_label,
                canary_share=settings.canary_share,
            ),
            TerminalReplica(self.follower, SqlAlertStore(self.engine, settings.stage_group)),
            metrics=self.metrics,
            history=_read_history(endpoints.history),
            checkpoints=(
                default_checkpoints(
                    partitions,
                    partitions.reopened,
                    timeout_seconds=settings.checkpoint_timeout_seconds,
                )
                if partitions.reopenable
                else InlineCheckpoints(partitions)
            ),
        )

    def run(self) -> RunSummary:
        """Run the loop until stopped or idle, then close every backend."""
        try:
            return self.scorer.run()
        finally:
            self.dead_letters.close()
            self.follower.close()
            self.model.close()
            self.engine.dispose()
            if self.server is not None:
                self.server.stop()


def run_scorer(settings: ScorerSettings, endpoints: Endpoints) -> RunSummary:
    """Run one scorer until SIGTERM/SIGINT (or idle), with real Kafka, SQL and model backends."""
    process = ScorerProcess(settings, endpoints)
    previous = {
        sig: signal.signal(sig, lambda *_: process.scorer.stop())
        for sig in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        return process.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _read_history(path: Path | None) -> Any:
    if path is None:
        return None
    from ingest.readers import read_transactions

    return read_transactions(path, labelled=True).table
