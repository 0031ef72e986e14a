"""`fraud archive`: the transactions and labels topics into the Parquet lake, exactly once."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="The topics into the Parquet lake, exactly once; and its compaction.")


@app.callback(invoke_without_command=True)
def archive(
    ctx: typer.Context,
    out: Annotated[
        Path | None, typer.Option("--out", envvar="FRAUD_LAKE",
                                  help="The lake directory (created if missing).")
    ] = None,
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
    partition_check: Annotated[
        float, typer.Option(min=0.1, envvar="FRAUD_ARCHIVE_PARTITION_CHECK",
                            help="Seconds between looks for partitions added to the topics.")
    ] = 10.0,
    compact_every: Annotated[
        float | None, typer.Option(min=1.0, envvar="FRAUD_ARCHIVE_COMPACT_EVERY",
                                   help="Compact small files this often, in seconds "
                                   "(default: never; see fraud archive compact).")
    ] = None,
    compact_min_files: Annotated[
        int, typer.Option(min=2, envvar="FRAUD_ARCHIVE_COMPACT_MIN_FILES",
                          help="Compact a date partition once it has this many small files.")
    ] = 8,
) -> None:
    """Archive every record of both topics into the lake once; Ctrl-C/SIGTERM write what waits.

    Prints {"transactions", "labels", "rejected", "batches", "files", "seconds"} last.
    """
    if ctx.invoked_subcommand is not None:
        return
    if out is None:
        raise typer.BadParameter("missing option --out", param_hint="--out")
    import threading

    from fraud.cli.console import stderr_console
    from ingest.archiver import ArchiveConfig, Archiver
    from ingest.kafka_io import KafkaSettings, check_reachable
    from ingest.producer import stop_on_signals

    console = stderr_console()
    settings = KafkaSettings.from_env(bootstrap_servers)
    config = ArchiveConfig(out=out, topic=topic, labels_topic=labels_topic or None,
                           batch_records=batch_records, batch_seconds=batch_seconds,
                           exit_when_idle=exit_when_idle, topic_wait_seconds=topic_wait,
                           partition_check_seconds=partition_check,
                           compact_seconds=compact_every, compact_min_files=compact_min_files)
    check_reachable(settings)
    began = time.perf_counter()
    stop = threading.Event()
    with stop_on_signals(stop), Archiver(settings, config, console.log) as archiver:
        archiver.stop = stop
        stats = archiver.run()
    figures = {**stats.as_dict(), "seconds": round(time.perf_counter() - began, 3)}
    typer.echo(json.dumps(figures))


@app.command("compact")
def compact(
    out: Annotated[
        Path, typer.Option("--out", envvar="FRAUD_LAKE", help="The lake directory.")
    ],
    min_files: Annotated[
        int, typer.Option(min=2, help="Compact a date partition once it has this many small files.")
    ] = 2,
    small_mb: Annotated[
        float, typer.Option(min=0.001, help="Files under this size (MiB) count as small.")
    ] = 32.0,
) -> None:
    """Merge each date partition's small files into one, exactly once even if killed.

    Takes the lake's lock (stop the archiver, or run it with --compact-every).
    Prints {"partitions", "files_merged", "files_written", "rows", "recovered", "seconds"} last.
    """
    import os

    from features.errors import InputError
    from ingest import lake
    from ingest.archiver import lock_lake

    if not lake.is_lake(out):
        raise InputError(f"{out}: not a lake written by fraud archive")
    began = time.perf_counter()
    fd = lock_lake(out)
    try:
        stats = lake.compact(out, min_files=min_files, small_bytes=int(small_mb * 1024 * 1024))
    finally:
        os.close(fd)
    typer.echo(json.dumps({**stats.as_dict(), "seconds": round(time.perf_counter() - began, 3)}))
