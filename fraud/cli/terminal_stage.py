"""`fraud terminal-stage`: the shared owner of terminal state that every scorer follows."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from fraud.cli import options as opt
from fraud.cli.db import DbOption
from scoring.db import DEFAULT_DB_URL
from scoring.terminal_stage.settings import StageSettings as S


def terminal_stage(
    bootstrap_servers: opt.Bootstrap,
    db: DbOption = DEFAULT_DB_URL,
    model_server: opt.ModelServer = None,
    model_dir: opt.ModelDir = None,
    model_name: opt.ModelName = "fraud",
    topic: opt.Topic = S.topic,
    labels_topic: opt.LabelsTopic = S.labels_topic or "",
    state_topic: opt.StateTopic = S.state_topic,
    dlq_topic: opt.DlqTopic = S.dlq_topic,
    group_id: Annotated[
        str, typer.Option(envvar="FRAUD_STAGE_GROUP", help="The stage's consumer group.")
    ] = S.group_id,
    scorer_group: Annotated[
        str, typer.Option(envvar="FRAUD_GROUP_ID", help="The scorers' consumer group.")
    ] = S.scorer_group,
    history: opt.History = None,
    metrics_port: opt.MetricsPort = None,
    metrics_host: opt.MetricsHost = "127.0.0.1",
    checkpoint_seconds: opt.CheckpointSeconds = S.checkpoint_seconds,
    checkpoint_timeout_seconds: opt.CheckpointTimeout = S.checkpoint_timeout_seconds,
    retention_cap_days: Annotated[
        int, typer.Option(min=0, help="0: keep the terminal history any scorer may still "
                                      "need (exact). N: keep at most N days beyond the "
                                      "look-back (bounded memory; a scorer trailing further "
                                      "gets terminal features that miss older history).")
    ] = S.retention_cap_days,
    exit_when_idle: opt.ExitWhenIdle = None,
    rebuild_state: opt.RebuildState = S.rebuild_state,
) -> None:
    """Keep terminal state for every scorer: read all of transactions and labels, publish.

    Uses the behavioural configuration of the served model. Prints a JSON
    summary as the last line when it stops (SIGTERM/SIGINT or idle).
    """
    from ingest.kafka_io import KafkaSettings
    from scoring.terminal_stage.app import StageEndpoints, run_stage

    model = opt.model_location(model_server, model_dir)
    opt.configure_logging()
    settings = S(
        topic=topic,
        labels_topic=labels_topic or None,
        state_topic=state_topic,
        dlq_topic=dlq_topic,
        group_id=group_id,
        scorer_group=scorer_group,
        checkpoint_seconds=checkpoint_seconds,
        checkpoint_timeout_seconds=checkpoint_timeout_seconds,
        retention_cap_days=retention_cap_days,
        exit_when_idle_seconds=exit_when_idle,
        rebuild_state=rebuild_state,
    )
    endpoints = StageEndpoints(
        kafka=KafkaSettings.from_env(bootstrap_servers),
        db_url=db,
        model=model,
        model_name=model_name,
        history=history,
        metrics_port=metrics_port,
        metrics_host=metrics_host,
    )
    print(json.dumps(run_stage(settings, endpoints).as_dict()))
