"""Archive speed: ``fraud archive`` from a local broker into a Parquet lake, and reading it back.

Starts a local Tansu broker, publishes ``--events`` transactions with their
labels (3 partitions), archives both topics into a fresh lake in-process (the
same ``Archiver`` the command runs) and reads the lake back as training does.
Prints one JSON object of figures as the last line.

    .venv/bin/python benchmarks/bench_archive.py [--events 200000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from pathlib import Path

from bench_kafka import synthetic_table  # beside this script

from fraud.dev.local_broker import LocalBroker
from ingest.archiver import ArchiveConfig, Archiver
from ingest.kafka_io import KafkaSettings
from ingest.producer import ProduceOptions, publish
from ingest.readers import read_transactions


def main() -> None:
    """Publish, archive, read back; print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch-records", type=int, default=100_000)
    args = parser.parse_args()
    table = synthetic_table(args.events)
    topic, labels = f"bench-tx-{uuid.uuid4().hex[:6]}", f"bench-labels-{uuid.uuid4().hex[:6]}"
    broker = LocalBroker()
    broker.start()
    try:
        settings = KafkaSettings(broker.bootstrap)
        publish(table, settings, ProduceOptions(topic=topic, labels_topic=labels, partitions=3))
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "lake"
            config = ArchiveConfig(out=out, topic=topic, labels_topic=labels,
                                   batch_records=args.batch_records, exit_when_idle=2.0)
            began = time.perf_counter()
            with Archiver(settings, config) as archiver:
                stats = archiver.run()
            archive_s = time.perf_counter() - began - config.exit_when_idle  # type: ignore[operator]
            began = time.perf_counter()
            read = read_transactions(out, labelled=True).table
            read_s = time.perf_counter() - began
            size = sum(p.stat().st_size for p in out.rglob("*.parquet"))
    finally:
        broker.stop()
    records = stats.transactions + stats.labels
    print(json.dumps({
        "events": args.events,
        "archived_transactions": stats.transactions,
        "archived_labels": stats.labels,
        "batches": stats.batches,
        "archive_s": round(archive_s, 2),
        "archive_records_per_s": round(records / archive_s),
        "lake_mb": round(size / 1e6, 1),
        "read_back_rows": read.num_rows,
        "read_back_s": round(read_s, 2),
        "read_back_rows_per_s": round(read.num_rows / read_s),
    }))


if __name__ == "__main__":
    main()
