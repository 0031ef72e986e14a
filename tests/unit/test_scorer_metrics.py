"""The scorer's /metrics and /healthz endpoint, and how the alert threshold is chosen."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from features.errors import InputError
from ingest.kafka_io import KafkaSettings
from scoring.clients.base import Prediction
from scoring.stream.app import Endpoints, threshold_policy
from scoring.stream.metrics import MetricsServer, ScorerMetrics
from scoring.stream.settings import ScorerSettings


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_metrics_and_health_are_served_and_reflect_outages():
    metrics = ScorerMetrics()
    server = MetricsServer(metrics, "127.0.0.1", 0).start()
    try:
        metrics.events.inc(5)
        metrics.dead_letters.labels(field="amount").inc()
        status, body = get(f"http://127.0.0.1:{server.port}/metrics")
        assert status == 200
        assert "fraud_scorer_events_total 5.0" in body
        assert 'fraud_scorer_dead_letters_total{field="amount"} 1.0' in body
        assert json.loads(get(f"http://127.0.0.1:{server.port}/healthz")[1])["status"] == "ok"
        metrics.health.database_ok = False
        status, body = get(f"http://127.0.0.1:{server.port}/healthz")
        assert status == 503 and json.loads(body)["database"] == "unavailable"
        assert get(f"http://127.0.0.1:{server.port}/nope")[0] == 404
    finally:
        server.stop()


def prediction(version: int) -> Prediction:
    return Prediction(np.zeros(1, np.float32), version)


def endpoints(model: str, model_dir: Path | None = None) -> Endpoints:
    return Endpoints(KafkaSettings("127.0.0.1:9092"), "sqlite://", model, model_dir=model_dir)


def test_threshold_fixed_or_from_each_versions_metadata(tmp_path: Path):
    for version, threshold in ((1, 0.2), (2, 0.7)):
        extra = tmp_path / str(version) / "assets.extra"
        extra.mkdir(parents=True)
        (extra / "metadata.json").write_text(json.dumps({"threshold": threshold}))
        (tmp_path / str(version) / "saved_model.pb").write_bytes(b"")
    fixed = threshold_policy(ScorerSettings(threshold=0.9), endpoints("grpc://h:1"))
    assert fixed(prediction(1)) == 0.9
    per_version = threshold_policy(ScorerSettings(), endpoints("grpc://h:1", tmp_path))
    assert per_version(prediction(1)) == 0.2 and per_version(prediction(2)) == 0.7
    unknown = threshold_policy(ScorerSettings(), endpoints("grpc://h:1"))
    with pytest.raises(InputError, match="--threshold"):
        unknown(prediction(1))
