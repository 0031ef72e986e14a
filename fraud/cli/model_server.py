"""`fraud model-server`: a TF-Serving-compatible endpoint over a model directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from features.errors import InputError


def model_server(
    model_dir: Annotated[
        Path,
        typer.Option(envvar="FRAUD_MODEL_DIR", help="Model directory: <dir>/<version>/."),
    ],
    model_name: Annotated[
        str, typer.Option(envvar="FRAUD_MODEL_NAME", help="Model name clients ask for.")
    ] = "fraud",
    grpc_port: Annotated[
        int, typer.Option(envvar="FRAUD_GRPC_PORT", help="gRPC port; 0 picks a free one.")
    ] = 8500,
    rest_port: Annotated[
        int, typer.Option(envvar="FRAUD_REST_PORT", help="REST port; 0 picks a free one.")
    ] = 8501,
    poll_seconds: Annotated[
        float,
        typer.Option(envvar="FRAUD_POLL_SECONDS", help="How often to look for new versions."),
    ] = 2.0,
    host: Annotated[str, typer.Option(envvar="FRAUD_HOST", help="Address to listen on.")] = (
        "127.0.0.1"
    ),
) -> None:
    """Serve the latest model version over TF Serving's gRPC and REST APIs until stopped.

    Prints "serving model NAME version V on grpc :P rest :Q" on stderr and a JSON
    line with the ports on stdout once ready; SIGTERM or SIGINT stops it gracefully.
    """
    import logging
    import os

    from features.model_dir import require_model_dir

    if poll_seconds <= 0:
        raise InputError(f"--poll-seconds must be > 0, got {poll_seconds}")
    require_model_dir(model_dir)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from scoring.model_server.server import ServerConfig, serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    serve(
        ServerConfig(
            model_dir=model_dir,
            model_name=model_name,
            host=host,
            grpc_port=grpc_port,
            rest_port=rest_port,
            poll_seconds=poll_seconds,
        )
    )
