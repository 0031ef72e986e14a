"""`fraud archive`: the transactions and labels topics into the Parquet lake, exactly once."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer


def archive(
    out: Annotated[
        Path, typer.Option("--out", envvar="FRAUD_LAKE",
                           help="The lake directory (created if missing).")
    ],
    bootstrap_servers: Annotated[
        str, typer.Option(help="Kafka bootstrap servers, HOST:PORT[,...].",
                          envvar="FRAUD_BOOTSTRAP_SERVERS")
    ] = "localhost:9092",
    topic: Annotated[
        str, typer.Option(help="Transactions topic.", envvar="FRAUD_TOPIC")
    ] = "transactions",
    labels_topic: Annotated[
        str, typer.Option(help="Labels topic ('' to archive transactions only).",
                          envvar="FRAUD_LABELS_TOPIC")
    ] = "fraud-labels",
    batch_records: Annotated[
        int, typer.Option(min=1, envvar="FRAUD_ARCHIVE_BATCH_RECORDS",
                          help="Write a partition's batch once this many records wait.")
    ] = 100_000,
    batch_seconds: Annotated[
        float, typer.Option(min=0.0, envvar="FRAUD_ARCHIVE_BATCH_SECONDS",
                            help="... or once its oldest waiting record is this old.")
    ] = 30.0,
    topic_wait: Annotated[
        float, typer.Option(min=0.0, envvar="FRAUD_ARCHIVE_TOPIC_WAIT",
                            help="Seconds to wait at start for the topics to exist.")
    ] = 30.0,
    exit_when_idle: Annotated[
        float | None, typer.Option(min=0.0, envvar="FRAUD_EXIT_WHEN_IDLE",
                                   help="Stop after this many seconds without a message.")
    ] = None,
) -> None:
    """Archive every record of both topics into the lake once; Ctrl-C/SIGTERM write what waits.

    Prints {"transactions", "labels", "rejected", "batches", "files", "seconds"} last.
    """
    import threading

    from fraud.cli.console import stderr_console
    from ingest.archiver import ArchiveConfig, Archiver
    from ingest.kafka_io import KafkaSettings, check_reachable
    from ingest.producer import stop_on_signals

    console = stderr_console()
    settings = KafkaSettings.from_env(bootstrap_servers)
    config = ArchiveConfig(out=out, topic=topic, labels_topic=labels_topic or None,
                           batch_records=batch_records, batch_seconds=batch_seconds,
                           exit_when_idle=exit_when_idle, topic_wait_seconds=topic_wait)
    check_reachable(settings)
    began = time.perf_counter()
    stop = threading.Event()
    with stop_on_signals(stop), Archiver(settings, config, console.log) as archiver:
        archiver.stop = stop
        stats = archiver.run()
    figures = {**stats.as_dict(), "seconds": round(time.perf_counter() - began, 3)}
    typer.echo(json.dumps(figures))
