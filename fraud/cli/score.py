"""`fraud score`: the streaming scorer (Kafka -> features -> model -> alerts database)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from features.errors import InputError
from fraud.cli.db import DbOption
from scoring.db import DEFAULT_DB_URL


def score(
    bootstrap_servers: Annotated[
        str, typer.Option(envvar="FRAUD_BOOTSTRAP_SERVERS", help="Kafka HOST:PORT[,HOST:PORT]")
    ],
    db: DbOption = DEFAULT_DB_URL,
    model_server: Annotated[
        str | None,
        typer.Option(envvar="FRAUD_MODEL_SERVER", help="TF Serving endpoint, grpc://HOST:PORT."),
    ] = None,
    model_dir: Annotated[
        Path | None,
        typer.Option(
            envvar="FRAUD_MODEL_DIR",
            help="Model directory, scored in-process (instead of --model-server).",
        ),
    ] = None,
    model_name: Annotated[str, typer.Option(envvar="FRAUD_MODEL_NAME")] = "fraud",
    model_label: Annotated[
        str,
        typer.Option(
            envvar="FRAUD_MODEL_LABEL",
            help="Score with the version this TF Serving version label points at, and follow "
            "it when it moves (promotion, rollback); a server without the label is followed "
            "by its latest version, with a warning. Empty: always the latest version.",
        ),
    ] = "stable",
    canary_share: Annotated[
        float,
        typer.Option(
            envvar="FRAUD_CANARY_SHARE", min=0.0, max=1.0,
            help="Share of events (chosen by a hash of the transaction id) scored by the "
            "version --canary-label points at, while it is compatible.",
        ),
    ] = 0.0,
    canary_label: Annotated[
        str, typer.Option(envvar="FRAUD_CANARY_LABEL", help="The canary's version label.")
    ] = "canary",
    topic: Annotated[str, typer.Option(envvar="FRAUD_TOPIC")] = "transactions",
    group_id: Annotated[str, typer.Option(envvar="FRAUD_GROUP_ID")] = "fraud-scorer",
    threshold: Annotated[
        float | None,
        typer.Option(envvar="FRAUD_THRESHOLD", help="Alert threshold [default: from training]"),
    ] = None,
    history: Annotated[
        Path | None,
        typer.Option(envvar="FRAUD_HISTORY", help="Labelled files to warm the state from."),
    ] = None,
    labels_topic: Annotated[
        str,
        typer.Option(
            envvar="FRAUD_LABELS_TOPIC",
            help="The labels topic (read by the terminal stage; created if missing).",
        ),
    ] = "fraud-labels",
    state_topic: Annotated[
        str, typer.Option(envvar="FRAUD_STATE_TOPIC", help="The terminal stage's state topic.")
    ] = "fraud-terminal-state",
    stage_group: Annotated[
        str,
        typer.Option(envvar="FRAUD_STAGE_GROUP", help="The terminal stage's group (checkpoint)."),
    ] = "fraud-terminal-stage",
    dlq_topic: Annotated[str, typer.Option(envvar="FRAUD_DLQ_TOPIC")] = "transactions.dlq",
    metrics_port: Annotated[
        int | None,
        typer.Option(envvar="FRAUD_METRICS_PORT", help="Serve /metrics and /healthz here."),
    ] = None,
    metrics_host: Annotated[
        str, typer.Option(envvar="FRAUD_METRICS_HOST", help="Address of the metrics endpoint.")
    ] = "127.0.0.1",
    exit_when_idle: Annotated[
        float | None,
        typer.Option(help="Stop after this many seconds without new events."),
    ] = None,
    max_batch: Annotated[int, typer.Option(help="Largest micro-batch (events).")] = 2000,
    max_wait_ms: Annotated[int, typer.Option(help="Longest wait to fill a micro-batch.")] = 50,
    checkpoint_seconds: Annotated[
        float, typer.Option(help="How often state and offsets are checkpointed.")
    ] = 30.0,
    checkpoint_timeout_seconds: Annotated[
        float, typer.Option(help="A checkpoint writer still running after this is killed.")
    ] = 120.0,
    reason_codes: Annotated[
        bool,
        typer.Option(help="Store reason codes with each alert (one extra model call a batch)."),
    ] = True,
    rebuild_state: Annotated[
        bool,
        typer.Option(
            help="Without a usable checkpoint, rebuild the state from --history and replay "
            "the topic from its beginning (instead of holding)."
        ),
    ] = False,
) -> None:
    """Score every live transaction and write alerts; runs until SIGTERM/SIGINT.

    Invalid messages go to the dead-letter topic with the reason in headers.
    Offsets are committed only after the alerts and the state checkpoint are
    committed to the database. Prints a JSON summary as the last line.
    """
    import logging
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from ingest.kafka_io import KafkaSettings
    from scoring.stream.app import Endpoints, run_scorer
    from scoring.stream.settings import ScorerSettings

    if (model_server is None) == (model_dir is None):
        raise InputError("give either --model-server grpc://HOST:PORT or --model-dir DIR")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = ScorerSettings(
        topic=topic,
        labels_topic=labels_topic or None,
        dlq_topic=dlq_topic,
        state_topic=state_topic,
        stage_group=stage_group,
        group_id=group_id,
        threshold=threshold,
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        checkpoint_seconds=checkpoint_seconds,
        checkpoint_timeout_seconds=checkpoint_timeout_seconds,
        exit_when_idle_seconds=exit_when_idle,
        rebuild_state=rebuild_state,
        reason_codes=reason_codes,
        model_label=model_label or None,
        canary_label=canary_label,
        canary_share=canary_share,
    )
    endpoints = Endpoints(
        kafka=KafkaSettings.from_env(bootstrap_servers),
        db_url=db,
        model=model_server or str(model_dir),
        model_name=model_name,
        history=history,
        metrics_port=metrics_port,
        metrics_host=metrics_host,
    )
    summary = run_scorer(settings, endpoints)
    print(json.dumps(summary.as_dict()))
