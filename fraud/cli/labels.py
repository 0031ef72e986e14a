"""`fraud labels export`: analysts' decisions as a labels file for retraining."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from features.errors import InputError
from fraud.cli.db import DbOption, open_engine
from scoring.db import DEFAULT_DB_URL

app = typer.Typer(help="Labels from the analysts' decisions: a file, or the labels topic.",
                  no_args_is_help=True)


@app.command("export")
def export(
    since: Annotated[
        str,
        typer.Option(help="Decisions reviewed at or after this ISO date/time (UTC if no offset)."),
    ],
    out: Annotated[Path, typer.Option(help="Labels file to write: .jsonl or .csv.")],
    db: DbOption = DEFAULT_DB_URL,
) -> None:
    """Write confirmed-fraud and false-positive decisions as labels; prints a JSON summary last."""
    from scoring.db.engine import make_sessionmaker
    from scoring.db.export import write_labels
    from scoring.db.repository import labels_since

    start = _parse_since(since)
    with open_engine(db) as engine, make_sessionmaker(engine)() as session:
        labels = labels_since(session, start)
    written = write_labels(labels, out)
    frauds = sum(label.is_fraud for label in labels)
    print(json.dumps({"labels": written, "frauds": frauds, "out": str(out)}))


def _parse_since(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InputError(f"--since: {value!r} is not an ISO-8601 date or date-time") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


@app.command("publish")
def publish(
    db: DbOption = DEFAULT_DB_URL,
    bootstrap_servers: Annotated[
        str, typer.Option(help="Kafka bootstrap servers, HOST:PORT[,...].",
                          envvar="FRAUD_BOOTSTRAP_SERVERS")
    ] = "localhost:9092",
    topic: Annotated[
        str, typer.Option(help="The labels topic.", envvar="FRAUD_LABELS_TOPIC")
    ] = "fraud-labels",
    follow: Annotated[
        bool, typer.Option(help="Keep publishing new decisions until stopped (SIGTERM/Ctrl-C).")
    ] = False,
    interval: Annotated[
        float, typer.Option(min=0.01, help="With --follow: seconds between polls of the database.",
                            envvar="FRAUD_LABELS_INTERVAL")
    ] = 2.0,
    name: Annotated[
        str, typer.Option(help="Publisher name: its position row (one publisher per name).",
                          envvar="FRAUD_LABELS_PUBLISHER")
    ] = "default",
    batch: Annotated[int, typer.Option(min=1, help="Decisions per round.")] = 500,
) -> None:
    """Send every analyst decision to the labels topic once (source=analyst); JSON summary last.

    The position is kept in the database and advanced only after the broker
    acknowledged: a restart, even after kill -9, skips nothing; a repeat has
    the same key (transaction id:decision id). See docs/labels.md.
    """
    from ingest.kafka_io import KafkaSettings, check_reachable
    from ingest.producer import stop_on_signals
    from scoring.db.engine import make_sessionmaker
    from scoring.label_publisher import LabelPublisher, PublisherConfig

    settings = KafkaSettings.from_env(bootstrap_servers)
    check_reachable(settings)
    config = PublisherConfig(topic=topic, name=name, batch=batch, follow=follow,
                             interval_seconds=interval)
    with open_engine(db) as engine:
        publisher = LabelPublisher(
            make_sessionmaker(engine), settings, config,
            on_round=lambda n: typer.echo(f"published {n} decisions", err=True))
        with stop_on_signals(publisher.stop):
            summary = publisher.run()
    print(json.dumps(summary.as_dict()))
