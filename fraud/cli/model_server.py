"""`fraud model-server`: a TF-Serving-compatible endpoint over a model directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from features.errors import InputError

# Defaults repeated from scoring.model_server.limits.Limits (not imported here: the
# CLI must start without TensorFlow); tests/integration/test_model_server_hostile.py
# checks that they agree.
_MiB = 1024 * 1024


def model_server(
    model_dir: Annotated[
        Path | None,
        typer.Option(envvar="FRAUD_MODEL_DIR", help="Model directory: <dir>/<version>/; "
                     "the newest version is served."),
    ] = None,
    model_config: Annotated[
        Path | None,
        typer.Option(envvar="FRAUD_MODEL_CONFIG",
                     help="TF Serving model config file (models.config, instead of "
                          "--model-dir): its versions and labels are served."),
    ] = None,
    model_config_poll_seconds: Annotated[
        float | None,
        typer.Option(help="How often the model config file is read again "
                          "(default: --poll-seconds; 0: only at start)."),
    ] = None,
    model_name: Annotated[
        str, typer.Option(envvar="FRAUD_MODEL_NAME",
                          help="Model name clients ask for (with --model-config: the config's).")
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
    settle_seconds: Annotated[
        float | None,
        typer.Option(
            help="A version folder must be unchanged this long before it is loaded "
            "(default: --poll-seconds; 0 loads on sight, for writers that rename atomically)."
        ),
    ] = None,
    max_load_retries: Annotated[
        int, typer.Option(help="Retries of a version that failed to load (TF Serving: 5).")
    ] = 5,
    load_retry_interval_seconds: Annotated[
        float, typer.Option(help="Wait between load retries (TF Serving: 60 s).")
    ] = 60.0,
    max_batch_rows: Annotated[
        int, typer.Option(help="Rows one input tensor of a request may hold.")
    ] = 100_000,
    grpc_max_message_bytes: Annotated[
        int, typer.Option(help="Largest gRPC message either way.")
    ] = 32 * _MiB,
    grpc_max_concurrent_rpcs: Annotated[
        int, typer.Option(help="RPCs in flight before RESOURCE_EXHAUSTED.")
    ] = 32,
    grpc_workers: Annotated[int, typer.Option(help="Threads running gRPC requests.")] = 8,
    rest_max_body_bytes: Annotated[
        int, typer.Option(help="Largest REST request body (413 beyond).")
    ] = 16 * _MiB,
    rest_max_connections: Annotated[
        int, typer.Option(help="Open REST connections, a thread each (503 beyond).")
    ] = 32,
    rest_workers: Annotated[
        int, typer.Option(help="REST requests decoding JSON and predicting at once.")
    ] = 4,
    rest_read_timeout: Annotated[
        float, typer.Option(help="Longest wait for a REST client's next bytes (seconds).")
    ] = 10.0,
    rest_request_timeout: Annotated[
        float, typer.Option(help="Longest time to receive one REST request (seconds).")
    ] = 30.0,
) -> None:
    """Serve a model directory over TF Serving's gRPC and REST APIs until stopped.

    With --model-dir the newest version is served; with --model-config the
    versions and labels (stable, canary) of TF Serving's model config file,
    read again whenever it changes. Prints "serving model NAME version V on grpc
    :P rest :Q" on stderr and a JSON line with the ports on stdout once ready;
    SIGTERM or SIGINT stops it gracefully. Limits and version loading rules:
    docs/model-server.md; labels: docs/retraining.md.
    """
    import logging
    import os

    from features.model_dir import require_model_dir

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    if poll_seconds <= 0:
        raise InputError(f"--poll-seconds must be > 0, got {poll_seconds}")
    if settle_seconds is not None and settle_seconds < 0:
        raise InputError(f"--settle-seconds must be >= 0, got {settle_seconds}")
    if max_load_retries < 0 or load_retry_interval_seconds < 0:
        raise InputError("--max-load-retries and --load-retry-interval-seconds must be >= 0")
    if (model_dir is None) == (model_config is None):
        raise InputError("give either --model-dir DIR or --model-config FILE")
    if model_config_poll_seconds is not None and model_config_poll_seconds < 0:
        raise InputError("--model-config-poll-seconds must be >= 0")
    if model_dir is not None:
        require_model_dir(model_dir)
        from features.model_config import config_path

        if config_path(model_dir).is_file():
            logging.getLogger(__name__).warning(
                "%s holds a model config: serving the newest version instead of its labels "
                "(pass --model-config %s to serve those)", model_dir, config_path(model_dir))
    else:
        assert model_config is not None
        from features.model_config import read

        read(model_config)  # an unreadable file is an input error, before TensorFlow loads
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from scoring.model_server.limits import Limits

    limits = Limits(
        max_batch_rows=max_batch_rows,
        grpc_max_message_bytes=grpc_max_message_bytes,
        grpc_max_concurrent_rpcs=grpc_max_concurrent_rpcs,
        grpc_workers=grpc_workers,
        rest_max_body_bytes=rest_max_body_bytes,
        rest_max_connections=rest_max_connections,
        rest_workers=rest_workers,
        rest_read_timeout=rest_read_timeout,
        rest_request_timeout=rest_request_timeout,
    )
    from scoring.model_server.server import ServerConfig, serve  # imports TensorFlow

    serve(
        ServerConfig(
            model_dir=model_dir,
            model_config=model_config,
            model_config_poll_seconds=model_config_poll_seconds,
            model_name=model_name,
            host=host,
            grpc_port=grpc_port,
            rest_port=rest_port,
            poll_seconds=poll_seconds,
            settle_seconds=settle_seconds,
            max_load_retries=max_load_retries,
            load_retry_interval=load_retry_interval_seconds,
            limits=limits,
        )
    )
