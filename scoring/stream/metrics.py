"""Prometheus metrics and the health endpoint of the scorer (one port, two paths)."""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


@dataclass
class Health:
    """What /healthz reports: each outside dependency's state and the last progress."""

    model_ok: bool = True
    database_ok: bool = True
    broker_ok: bool = True
    #: False while only some of the topic's partitions are assigned (the scorer holds).
    partitions_ok: bool = True
    last_error: str = ""
    last_batch_at: float = field(default_factory=time.time)
    lag: int = 0
    #: Why the state cannot be restored (the scorer holds), or "" when it can.
    state: str = ""
    #: The model version the scorer scores with, and versions it refused (with why).
    model_version: int | None = None
    refused_versions: dict[int, str] = field(default_factory=dict)
    #: Seconds since the last checkpoint while there is progress it does not hold.
    checkpoint_age_seconds: float = 0.0
    #: Past this age the checkpoints are stuck: degraded.
    stale_checkpoint_seconds: float = float("inf")
    #: Transactions partitions this scorer owns and scores.
    partitions_owned: list[int] = field(default_factory=list)
    #: How far (event-time seconds) the terminal stage is behind what the next events need,
    #: and how far it may trail the stream and stay exact (the label latency; the delay
    #: for transactions).
    terminal_stage_lag_seconds: float = 0.0
    terminal_stage_allowed_lag_seconds: float = 0.0
    #: Partitions whose state was restored from checkpoint rows since the start.
    partitions_restored: int = 0
    #: Why the scorer waits for the terminal stage, or "" when it does not.
    terminal_stage: str = ""

    def as_dict(self) -> dict[str, Any]:
        """JSON body of /healthz."""
        checkpoint_ok = self.checkpoint_age_seconds <= self.stale_checkpoint_seconds
        ok = (
            self.model_ok
            and self.database_ok
            and self.broker_ok
            and self.partitions_ok
            and not self.state
            and not self.refused_versions
            and checkpoint_ok
            and not self.terminal_stage
        )
        return {
            "status": "ok" if ok else "degraded",
            "model": "ok" if self.model_ok else "unavailable",
            "model_version": self.model_version,
            "refused_model_versions": {str(v): r for v, r in self.refused_versions.items()},
            "database": "ok" if self.database_ok else "unavailable",
            "broker": "ok" if self.broker_ok else "unavailable",
            "partitions": "all assigned" if self.partitions_ok else "holding: some assigned",
            "partitions_owned": self.partitions_owned,
            "terminal_stage": self.terminal_stage or "ok",
            "terminal_stage_lag_seconds": round(self.terminal_stage_lag_seconds, 3),
            "terminal_stage_allowed_lag_seconds": self.terminal_stage_allowed_lag_seconds,
            "partitions_restored": self.partitions_restored,
            "state": self.state or "ok",
            "checkpoint_age_seconds": round(self.checkpoint_age_seconds, 3),
            "checkpoint": "ok" if checkpoint_ok else "stale",
            "lag": self.lag,
            "seconds_since_last_batch": round(time.time() - self.last_batch_at, 3),
            "last_error": self.last_error,
        }


class ScorerMetrics:
    """The scorer's counters, gauges and histograms in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events = Counter("fraud_scorer_events", "Transactions scored", registry=r)
        self.alerts = Counter("fraud_scorer_alerts", "Alerts written (new rows)", registry=r)
        self.dead_letters = Counter(
            "fraud_scorer_dead_letters",
            "Messages sent to the dead-letter topic",
            ["field"],
            registry=r,
        )
        self.labels = Counter("fraud_scorer_labels", "Fraud labels applied to state", registry=r)
        self.repeats = Counter(
            "fraud_scorer_repeats",
            "Events dropped as repeats of a transaction already scored (producer retries)",
            registry=r,
        )
        self.unexplained_alerts = Counter(
            "fraud_scorer_unexplained_alerts",
            "Alerts written without reason codes (no baseline, a model fault, over the cap)",
            registry=r,
        )
        self.refused_model_version = Gauge(
            "fraud_scorer_refused_model_version",
            "Newest served model version the scorer refused (0: none)",
            registry=r,
        )
        self.partitions_owned = Gauge(
            "fraud_scorer_partitions_owned", "Transactions partitions owned", registry=r
        )
        self.partitions_held = Gauge(
            "fraud_scorer_partitions_held",
            "Owned partitions held because their state cannot be restored",
            registry=r,
        )
        self.partitions_restored = Counter(
            "fraud_scorer_partitions_restored",
            "Partitions whose state was restored from checkpoint rows",
            registry=r,
        )
        self.terminal_stage_lag_seconds = Gauge(
            "fraud_scorer_terminal_stage_lag_seconds",
            "Event-time seconds the terminal stage is behind what the next events need",
            registry=r,
        )
        self.terminal_stage_waits = Counter(
            "fraud_scorer_terminal_stage_waits",
            "Batches held until the terminal stage had read far enough",
            registry=r,
        )
        self.events_past_stage_retention = Counter(
            "fraud_scorer_events_past_stage_retention",
            "Events scored whose look-back reaches before what the terminal stage still "
            "holds (its --retention-cap-days forgot history they needed)",
            registry=r,
        )
        self.stage_retention_capped = Counter(
            "fraud_stage_retention_capped",
            "Terminal-stage sweeps whose --retention-cap-days forgot history a scorer "
            "may still need",
            registry=r,
        )
        self.checkpoint_age_seconds = Gauge(
            "fraud_scorer_checkpoint_age_seconds",
            "Seconds since the last state checkpoint while there is progress it does not hold",
            registry=r,
        )
        self.retries = Counter(
            "fraud_scorer_retries",
            "Retries of an unavailable dependency",
            ["dependency"],
            registry=r,
        )
        self.batch_seconds = Histogram(
            "fraud_scorer_batch_seconds",
            "Poll-to-commit time of a micro-batch",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.event_to_alert_seconds = Histogram(
            "fraud_scorer_event_to_alert_seconds",
            "From the message's Kafka timestamp to its alert's database commit",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.lag = Gauge(
            "fraud_scorer_lag", "Messages not yet consumed (all partitions)", registry=r
        )
        self.model_version = Gauge(
            "fraud_scorer_model_version", "Version of the last scores", registry=r
        )
        self.state_keys = Gauge(
            "fraud_scorer_state_keys", "Keys held in behavioural state", ["kind"], registry=r
        )
        self.too_late = Gauge(
            "fraud_scorer_events_beyond_late_tolerance",
            "Events that arrived later than the state's tolerance behind their terminal",
            registry=r,
        )
        self.last_checkpoint = Gauge(
            "fraud_scorer_last_checkpoint_timestamp",
            "Unix time of the last state checkpoint",
            registry=r,
        )
        self.checkpoint_seconds = Gauge(
            "fraud_scorer_checkpoint_duration_seconds",
            "Time the last state checkpoint took to encode and write (off the scoring path)",
            registry=r,
        )
        self.checkpoints = Counter(
            "fraud_scorer_checkpoints",
            "State checkpoints written",
            registry=r,
        )
        self.checkpoint_pause_seconds = Gauge(
            "fraud_scorer_checkpoint_pause_seconds",
            "How long the last checkpoint held up scoring (the fork of the writer)",
            registry=r,
        )
        self.health = Health()


class MetricsServer:
    """Serves ``/metrics`` (Prometheus text format) and ``/healthz`` (JSON) on a port."""

    def __init__(self, metrics: ScorerMetrics, host: str, port: int) -> None:
        handler = _handler_for(metrics)
        self._server = _QuietServer((host, port), handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> MetricsServer:
        """Serve in a daemon thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the port."""
        self._server.shutdown()
        self._server.server_close()


class _QuietServer(ThreadingHTTPServer):
    """A scraper that hung up before its answer is not an error worth a traceback."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


def _handler_for(metrics: ScorerMetrics) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith("/metrics"):
                body, ctype, code = generate_latest(metrics.registry), CONTENT_TYPE_LATEST, 200
            elif self.path.startswith("/healthz"):
                report = metrics.health.as_dict()
                code = 200 if report["status"] == "ok" else 503
                body, ctype = json.dumps(report).encode(), "application/json"
            else:
                body, ctype, code = b"not found\n", "text/plain", 404
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Keep scrapes out of the service log."""

    return Handler
