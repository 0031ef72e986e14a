"""`fraud produce`: publish transaction files to Kafka in event-time order."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from features.errors import InputError
from fraud.cli.dates import parse_day

if TYPE_CHECKING:
    import pyarrow


def produce(
    input_path: Annotated[
        Path,
        typer.Option(
            "--input",
            help="A .csv/.parquet/.jsonl file or a directory of them.",
            envvar="FRAUD_INPUT",
        ),
    ],
    bootstrap_servers: Annotated[
        str,
        typer.Option(
            help="Kafka bootstrap servers, HOST:PORT[,...].", envvar="FRAUD_BOOTSTRAP_SERVERS"
        ),
    ] = "localhost:9092",
    topic: Annotated[
        str, typer.Option(help="Transactions topic.", envvar="FRAUD_TOPIC")
    ] = "transactions",
    rate: Annotated[
        float | None,
        typer.Option(
            help="Target events/s, paced evenly; default as fast as possible.",
            envvar="FRAUD_RATE",
            min=0.001,
        ),
    ] = None,
    labels_topic: Annotated[
        str | None,
        typer.Option(
            help="Also publish each label there (e.g. fraud-labels); needs labelled input.",
            envvar="FRAUD_LABELS_TOPIC",
        ),
    ] = None,
    start: Annotated[
        str | None,
        typer.Option(
            help="First day to publish (YYYY-MM-DD, UTC, inclusive).", envvar="FRAUD_START"
        ),
    ] = None,
    end: Annotated[
        str | None,
        typer.Option(help="Last day to publish (YYYY-MM-DD, UTC, inclusive).", envvar="FRAUD_END"),
    ] = None,
    partitions: Annotated[
        int,
        typer.Option(
            help="Partitions of topics created by this command.", envvar="FRAUD_PARTITIONS", min=1
        ),
    ] = 3,
    skip_invalid: Annotated[
        bool,
        typer.Option(
            help="Skip and count invalid records instead of stopping.", envvar="FRAUD_SKIP_INVALID"
        ),
    ] = False,
    acks: Annotated[
        str, typer.Option(help="Producer acks: all, 1 or 0.", envvar="FRAUD_ACKS")
    ] = "all",
    linger_ms: Annotated[
        int,
        typer.Option(help="Producer linger (batching delay), ms.", envvar="FRAUD_LINGER_MS", min=0),
    ] = 5,
    label_protocol: Annotated[
        str,
        typer.Option(
            help="With --labels-topic. handbook: each transaction's label right after it, "
            "labelled_at = its time. realistic: the labels a lake keeps (chargebacks, "
            "analysts' decisions), each when the stream reaches its labelled_at "
            "(docs/labels.md).",
            envvar="FRAUD_LABEL_PROTOCOL",
        ),
    ] = "handbook",
) -> None:
    """Publish transactions keyed by customer in event-time order; Ctrl-C stops cleanly.

    Prints {"sent", "labels_sent", "seconds", "events_per_s", ...} as the last line.
    """
    from ingest.kafka_io import KafkaSettings, check_reachable
    from ingest.producer import ProduceOptions, publish, stop_on_signals
    from ingest.readers import read_transactions
    from ingest.simulator.labels import REALISTIC, check_protocol

    if acks not in ("all", "1", "0"):
        raise InputError(f"--acks: expected all, 1 or 0, got {acks!r}")
    realistic = check_protocol(label_protocol) == REALISTIC
    if realistic and labels_topic is None:
        raise InputError("--label-protocol realistic needs --labels-topic")
    settings = KafkaSettings.from_env(bootstrap_servers)
    options = ProduceOptions(
        topic=topic,
        labels_topic=labels_topic,
        rate=rate,
        partitions=partitions,
        acks="all" if acks == "all" else int(acks),
        linger_ms=linger_ms,
    )
    first = parse_day("--start", start) if start is not None else None
    last = parse_day("--end", end) if end is not None else None
    check_reachable(settings)
    stop = threading.Event()
    with stop_on_signals(stop):
        began = time.perf_counter()
        read = read_transactions(
            input_path,
            labelled=labels_topic is not None and not realistic,
            skip_invalid=skip_invalid,
            start=first,
            end=last,
        )
        apart = _labels_apart(input_path, first, last) if realistic else None
        read_seconds = time.perf_counter() - began
        with _progress(read.table.num_rows) as advance:
            result = publish(read.table, settings, options, stop=stop, progress=advance,
                             labels=apart)
    _report_skipped(read.skipped, read.errors)
    if result.interrupted:
        typer.echo(f"interrupted: sent {result.sent} of {read.table.num_rows}", err=True)
    figures = {
        "sent": result.sent,
        "labels_sent": result.labels_sent,
        "seconds": round(result.seconds, 3),
        "events_per_s": round(result.events_per_s, 1),
        "skipped": read.skipped,
        "read_seconds": round(read_seconds, 3),
        "interrupted": result.interrupted,
    }
    typer.echo(json.dumps(figures))


def _labels_apart(path: Path, first: date | None, last: date | None) -> pyarrow.Table:
    """The lake's labels known on the days published (``[first, last]``; open ends: all).

    Labels of earlier transactions known within those days are included, and
    labels known later are left to the run that publishes their day: the
    labels topic stays in ``labelled_at`` order across runs.
    """
    from datetime import UTC, datetime, timedelta

    import pyarrow as pa
    import pyarrow.compute as pc

    from features.spec import LABELLED_AT
    from ingest import lake

    if not lake.is_lake(path):
        raise InputError(f"{path}: --label-protocol realistic reads labels from a lake "
                         "(fraud simulate --label-protocol realistic, fraud archive)")
    labels = lake.read_labels(path, None, last)
    column = labels.column(LABELLED_AT)
    if first is not None:
        low = datetime.combine(first, datetime.min.time(), UTC)
        labels = labels.filter(pc.greater_equal(column, pa.scalar(low, column.type)))
        column = labels.column(LABELLED_AT)
    if last is not None:
        high = datetime.combine(last + timedelta(days=1), datetime.min.time(), UTC)
        labels = labels.filter(pc.less(column, pa.scalar(high, column.type)))
    return lake.sort_labels(labels)


def _report_skipped(skipped: int, errors: tuple[Exception, ...]) -> None:
    if skipped:
        typer.echo(f"skipped {skipped} invalid records; first: {errors[0]}", err=True)


@contextmanager
def _progress(total: int) -> Iterator[Callable[[int], None]]:
    """Show a rich progress bar on stderr; yield the function that advances it."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    columns = ("{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task("publishing", total=total)
        yield lambda n: bar.advance(task, n)
