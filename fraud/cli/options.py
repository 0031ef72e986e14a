"""Command-line options shared by the streaming services: `fraud score` and the stage.

Declared once, with their environment variables; the defaults of the command
functions come from the services' settings objects
(:class:`~scoring.stream.settings.ScorerSettings`,
:class:`~scoring.terminal_stage.settings.StageSettings`), never repeated here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from features.errors import InputError

Bootstrap = Annotated[
    str, typer.Option(envvar="FRAUD_BOOTSTRAP_SERVERS", help="Kafka HOST:PORT[,HOST:PORT]")
]
ModelServer = Annotated[
    str | None,
    typer.Option(envvar="FRAUD_MODEL_SERVER", help="TF Serving endpoint, grpc://HOST:PORT."),
]
ModelDir = Annotated[
    Path | None,
    typer.Option(
        envvar="FRAUD_MODEL_DIR",
        help="A model directory, loaded in-process (instead of --model-server).",
    ),
]
ModelName = Annotated[str, typer.Option(envvar="FRAUD_MODEL_NAME")]
Topic = Annotated[str, typer.Option(envvar="FRAUD_TOPIC", help="The transactions topic.")]
LabelsTopic = Annotated[
    str, typer.Option(envvar="FRAUD_LABELS_TOPIC", help="The labels topic (read by the stage).")
]
StateTopic = Annotated[
    str, typer.Option(envvar="FRAUD_STATE_TOPIC", help="The terminal stage's state topic.")
]
DlqTopic = Annotated[str, typer.Option(envvar="FRAUD_DLQ_TOPIC", help="The dead-letter topic.")]
ScorerGroup = Annotated[
    str, typer.Option("--group-id", envvar="FRAUD_GROUP_ID", help="The scorers' consumer group.")
]
StageGroup = Annotated[
    str,
    typer.Option(envvar="FRAUD_STAGE_GROUP", help="The terminal stage's group (and checkpoint)."),
]
History = Annotated[
    Path | None,
    typer.Option(envvar="FRAUD_HISTORY", help="Labelled files (or a lake) to warm the state from."),
]
MetricsPort = Annotated[
    int | None, typer.Option(envvar="FRAUD_METRICS_PORT", help="Serve /metrics and /healthz here.")
]
MetricsHost = Annotated[
    str, typer.Option(envvar="FRAUD_METRICS_HOST", help="Address of the metrics endpoint.")
]
CheckpointSeconds = Annotated[
    float, typer.Option(help="How often state and offsets are checkpointed.")
]
CheckpointTimeout = Annotated[
    float, typer.Option(help="A checkpoint writer still running after this is killed.")
]
ExitWhenIdle = Annotated[
    float | None, typer.Option(help="Stop after this many seconds without new events.")
]
RebuildState = Annotated[
    bool,
    typer.Option(
        help="Without a usable checkpoint, rebuild the state from --history and replay the "
        "topic from its beginning (instead of holding)."
    ),
]


def model_location(model_server: str | None, model_dir: Path | None) -> str:
    """The one model endpoint given: a server URL or a directory (InputError otherwise)."""
    if (model_server is None) == (model_dir is None):
        raise InputError("give either --model-server grpc://HOST:PORT or --model-dir DIR")
    return model_server or str(model_dir)


def configure_logging() -> None:
    """The services' log format (one line per record, with the logger's name)."""
    import logging
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
