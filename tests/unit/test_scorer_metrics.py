"""The scorer's /metrics and /healthz endpoint, and how the alert threshold is chosen."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from ingest.kafka_io import KafkaSettings
from scoring.stream.app import Endpoints
from scoring.stream.metrics import MetricsServer, ScorerMetrics


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


def test_threshold_fixed_or_from_each_served_versions_metadata():
    from features.model_dir import ModelMetadata
    from scoring.stream.served_model import ModelRefused, ServedModel
    from tests.unit.scorer_fakes import FakeModel

    model = FakeModel(versions={1: ModelMetadata(threshold=0.2)})
    assert ServedModel(model, fixed_threshold=0.9).bind().threshold == 0.9
    per_version = ServedModel(model, follow_seconds=0)
    assert per_version.bind().threshold == 0.2
    model.versions[2] = ModelMetadata(threshold=0.7)
    per_version.follow()
    assert (per_version.binding.version, per_version.binding.threshold) == (2, 0.7)
    missing = FakeModel(versions={1: ModelMetadata(threshold=None)})
    with pytest.raises(ModelRefused, match="--threshold"):
        ServedModel(missing).bind()
    assert ServedModel(missing, fixed_threshold=0.4).bind().threshold == 0.4


def test_endpoints_and_settings_never_show_a_password():
    endpoints = Endpoints(
        KafkaSettings("127.0.0.1:9092", sasl_password="kafka-secret"),
        "postgresql://fraud:db-secret@db/fraud",
        "grpc://h:1",
    )
    shown = repr(endpoints) + str(endpoints) + repr(endpoints.kafka)
    assert "db-secret" not in shown and "kafka-secret" not in shown
    assert "fraud@db" in shown or "***" in shown
