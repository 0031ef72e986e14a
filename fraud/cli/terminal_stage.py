"""`fraud terminal-stage`: the shared owner of terminal state that every scorer follows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from features.errors import InputError
from fraud.cli.db import DbOption
from scoring.db import DEFAULT_DB_URL


def terminal_stage(
    bootstrap_servers: Annotated[
        str, typer.Option(envvar="FRAUD_BOOTSTRAP_SERVERS", help="Kafka HOST:PORT[,HOST:PORT]")
    ],
    db: DbOption = DEFAULT_DB_URL,
    model_server: Annotated[
        str | None,
        typer.Option(
            envvar="FRAUD_MODEL_SERVER",
            help="TF Serving endpoint whose served model's behavioural configuration is used.",
        ),
    ] = None,
    model_dir: Annotated[
        Path | None,
        typer.Option(envvar="FRAUD_MODEL_DIR", help="Or: a model directory (its latest version)."),
    ] = None,
    model_name: Annotated[str, typer.Option(envvar="FRAUD_MODEL_NAME")] = "fraud",
    topic: Annotated[str, typer.Option(envvar="FRAUD_TOPIC")] = "transactions",
    labels_topic: Annotated[str, typer.Option(envvar="FRAUD_LABELS_TOPIC")] = "fraud-labels",
    state_topic: Annotated[
        str, typer.Option(envvar="FRAUD_STATE_TOPIC", help="Where the scorers follow the stage.")
    ] = "fraud-terminal-state",
    dlq_topic: Annotated[str, typer.Option(envvar="FRAUD_DLQ_TOPIC")] = "transactions.dlq",
    group_id: Annotated[
        str, typer.Option(envvar="FRAUD_STAGE_GROUP", help="The stage's consumer group.")
    ] = "fraud-terminal-stage",
    scorer_group: Annotated[
        str, typer.Option(envvar="FRAUD_GROUP_ID", help="The scorers' consumer group.")
    ] = "fraud-scorer",
    history: Annotated[
        Path | None,
        typer.Option(envvar="FRAUD_HISTORY", help="Labelled files to warm the state from."),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(envvar="FRAUD_METRICS_PORT", help="Serve /metrics and /healthz here."),
    ] = None,
    metrics_host: Annotated[str, typer.Option(envvar="FRAUD_METRICS_HOST")] = "127.0.0.1",
    checkpoint_seconds: Annotated[
        float, typer.Option(help="How often state and offsets are checkpointed.")
    ] = 30.0,
    retention_cap_days: Annotated[
        int, typer.Option(help="Terminal history kept beyond the look-back, at most.")
    ] = 30,
    exit_when_idle: Annotated[
        float | None, typer.Option(help="Stop after this many seconds without new events.")
    ] = None,
    rebuild_state: Annotated[
        bool, typer.Option(help="Without a usable checkpoint, rebuild from --history.")
    ] = False,
) -> None:
    """Keep terminal state for every scorer: read all of transactions and labels, publish.

    Prints a JSON summary as the last line when it stops (SIGTERM/SIGINT or idle).
    """
    import logging
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from ingest.kafka_io import KafkaSettings
    from scoring.terminal_stage.app import StageEndpoints, run_stage
    from scoring.terminal_stage.settings import StageSettings

    if (model_server is None) == (model_dir is None):
        raise InputError("give either --model-server grpc://HOST:PORT or --model-dir DIR")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = StageSettings(
        topic=topic,
        labels_topic=labels_topic or None,
        state_topic=state_topic,
        dlq_topic=dlq_topic,
        group_id=group_id,
        scorer_group=scorer_group,
        checkpoint_seconds=checkpoint_seconds,
        retention_cap_days=retention_cap_days,
        exit_when_idle_seconds=exit_when_idle,
        rebuild_state=rebuild_state,
    )
    endpoints = StageEndpoints(
        kafka=KafkaSettings.from_env(bootstrap_servers),
        db_url=db,
        model=model_server or str(model_dir),
        model_name=model_name,
        history=history,
        metrics_port=metrics_port,
        metrics_host=metrics_host,
    )
    print(json.dumps(run_stage(settings, endpoints).as_dict()))
