"""Wiring of a scorer process: settings in, real backends built, loop run, summary out."""

from __future__ import annotations

import logging
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from features.errors import InputError
from ingest.kafka_io import KafkaSettings, check_reachable, ensure_topics
from scoring.clients import ModelClient, Prediction, make_client
from scoring.stream.checkpoints import InlineCheckpoints, default_checkpoints
from scoring.stream.kafka_source import KafkaDeadLetters, KafkaSource
from scoring.stream.metrics import MetricsServer, ScorerMetrics
from scoring.stream.service import RunSummary, Scorer, ThresholdOf
from scoring.stream.settings import ScorerSettings
from scoring.stream.sql_store import SqlAlertStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Endpoints:
    """Where the scorer's outside services are."""

    kafka: KafkaSettings
    db_url: str
    model: str  # grpc://HOST:PORT, http://HOST:PORT or a model directory
    model_name: str = "fraud"
    model_dir: Path | None = None  # for thresholds when the model is remote
    history: Path | None = None
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"


def threshold_policy(settings: ScorerSettings, endpoints: Endpoints) -> ThresholdOf:
    """A fixed ``--threshold``, else the one chosen at training time for each version.

    The chosen threshold is in ``metadata.json`` of each version; TF Serving's API
    cannot return it, so a remote model server needs the (read-only) model
    directory too — the same one the server loads from.
    """
    if settings.threshold is not None:
        fixed = settings.threshold
        return lambda _prediction: fixed
    model_dir = endpoints.model_dir
    if model_dir is None and Path(endpoints.model).is_dir():
        model_dir = Path(endpoints.model)
    cache: dict[int, float] = {}

    def of(prediction: Prediction) -> float:
        version = prediction.model_version
        if version not in cache:
            if model_dir is None:
                raise InputError(
                    "no threshold for this model: pass --threshold, or --model-dir "
                    "(each version's metadata.json holds the one chosen at training time)"
                )
            from features.model_dir import read_metadata

            cache[version] = float(read_metadata(model_dir, version)["threshold"])
        return cache[version]

    return of


class ScorerProcess:
    """A scorer with its real backends built, and what must be closed after it."""

    def __init__(self, settings: ScorerSettings, endpoints: Endpoints) -> None:
        from scoring.db.engine import make_engine
        from scoring.db.migrate import require_schema

        check_reachable(endpoints.kafka)
        topics = [settings.topic] + ([settings.labels_topic] if settings.labels_topic else [])
        ensure_topics(endpoints.kafka, {t: 1 for t in [*topics, settings.dlq_topic]})
        self.engine = make_engine(endpoints.db_url)
        require_schema(self.engine)
        self.model: ModelClient = make_client(endpoints.model, endpoints.model_name)
        self.metrics = ScorerMetrics()
        self.server = (
            MetricsServer(self.metrics, endpoints.metrics_host, endpoints.metrics_port).start()
            if endpoints.metrics_port is not None
            else None
        )
        self.dead_letters = KafkaDeadLetters(endpoints.kafka, settings.dlq_topic)
        store = SqlAlertStore(self.engine, settings.group_id)
        self.scorer = Scorer(
            settings,
            KafkaSource(endpoints.kafka, settings.group_id, topics),
            self.dead_letters,
            store,
            self.model,
            threshold_policy(settings, endpoints),
            metrics=self.metrics,
            history=_read_history(endpoints.history),
            checkpoints=(
                default_checkpoints(store, store.reopened)
                if store.reopenable
                else InlineCheckpoints(store)
            ),
        )

    def run(self) -> RunSummary:
        """Run the loop until stopped or idle, then close every backend."""
        try:
            return self.scorer.run()
        finally:
            self.dead_letters.close()
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
