"""`fraud score`: a streaming scorer (Kafka -> features -> model -> alerts database)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from fraud.cli import options as opt
from fraud.cli.db import DbOption
from scoring.db import DEFAULT_DB_URL
from scoring.stream.settings import ScorerSettings as S


def score(
    bootstrap_servers: opt.Bootstrap,
    db: DbOption = DEFAULT_DB_URL,
    model_server: opt.ModelServer = None,
    model_dir: opt.ModelDir = None,
    model_name: opt.ModelName = "fraud",
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
    topic: opt.Topic = S.topic,
    group_id: opt.ScorerGroup = S.group_id,
    threshold: Annotated[
        float | None,
        typer.Option(envvar="FRAUD_THRESHOLD", help="Alert threshold [default: from training]"),
    ] = None,
    history: opt.History = None,
    labels_topic: opt.LabelsTopic = S.labels_topic or "",
    state_topic: opt.StateTopic = S.state_topic,
    stage_group: opt.StageGroup = S.stage_group,
    dlq_topic: opt.DlqTopic = S.dlq_topic,
    metrics_port: opt.MetricsPort = None,
    metrics_host: opt.MetricsHost = "127.0.0.1",
    exit_when_idle: opt.ExitWhenIdle = None,
    max_batch: Annotated[int, typer.Option(help="Largest micro-batch (events).")] = S.max_batch,
    max_wait_ms: Annotated[
        int, typer.Option(help="Longest wait to fill a micro-batch.")
    ] = S.max_wait_ms,
    checkpoint_seconds: opt.CheckpointSeconds = S.checkpoint_seconds,
    checkpoint_timeout_seconds: opt.CheckpointTimeout = S.checkpoint_timeout_seconds,
    reason_codes: Annotated[
        bool,
        typer.Option(help="Store reason codes with each alert (one extra model call a batch)."),
    ] = S.reason_codes,
    rebuild_state: opt.RebuildState = S.rebuild_state,
) -> None:
    """Score the live transactions of the partitions this scorer owns; runs until SIGTERM/SIGINT.

    Run any number in one consumer group, with one `fraud terminal-stage`.
    Invalid messages go to the dead-letter topic with the reason in headers.
    Offsets are committed only after the alerts and the partitions' state
    checkpoints are committed to the database. Prints a JSON summary last.
    """
    from ingest.kafka_io import KafkaSettings
    from scoring.stream.app import Endpoints, run_scorer

    model = opt.model_location(model_server, model_dir)
    opt.configure_logging()
    settings = S(
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
        model=model,
        model_name=model_name,
        history=history,
        metrics_port=metrics_port,
        metrics_host=metrics_host,
    )
    summary = run_scorer(settings, endpoints)
    print(json.dumps(summary.as_dict()))
