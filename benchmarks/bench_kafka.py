"""Ingest speed: file reading + validation, message encoding, produce and consume+decode rates.

Runs against a local Tansu broker it starts itself (or ``--bootstrap-servers``).
Prints one JSON object of figures as the last line.

    .venv/bin/python benchmarks/bench_kafka.py [--events 200000] [--read-rows 1750000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from features.spec import arrow_schema
from fraud.dev.local_broker import LocalBroker
from ingest.kafka_io import (
    KafkaSettings,
    decode_transaction,
    encode_transactions,
    make_consumer,
)
from ingest.producer import ProduceOptions, publish
from ingest.readers import read_transactions


def synthetic_table(n: int, seed: int = 0) -> pa.Table:
    """A labelled canonical table of ``n`` plausible transactions over 183 days."""
    rng = np.random.default_rng(seed)
    start = int(datetime(2018, 4, 1, tzinfo=UTC).timestamp() * 1e6)
    micros = np.sort(start + rng.integers(0, 183 * 86400, n) * 1_000_000)
    columns = {
        "transaction_id": pa.array(np.arange(n).astype(str)),
        "timestamp": pa.array(micros, pa.timestamp("us", tz="UTC")),
        "customer_id": pa.array(rng.integers(0, 5000, n).astype(str)),
        "terminal_id": pa.array(rng.integers(0, 10000, n).astype(str)),
        "amount": pa.array(np.round(rng.gamma(2.0, 30.0, n), 2)),
        "merchant_category": pa.array(rng.choice(["5411", "5812", "5999", "4111"], n)),
        "country": pa.array(rng.choice(["FR", "BE", "DE", "ES"], n)),
        "channel": pa.array(rng.choice(["pos", "ecom", "atm"], n)),
        "is_fraud": pa.array((rng.random(n) < 0.008).astype(np.int8)),
    }
    return pa.Table.from_pydict(columns, schema=arrow_schema(labelled=True))


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    began = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - began


def bench_reading(rows: int, workdir: Path) -> dict[str, float]:
    table = synthetic_table(rows, seed=1)
    files = {
        "parquet": workdir / "tx.parquet",
        "csv": workdir / "tx.csv",
        "jsonl": workdir / "tx.jsonl",
    }
    pq.write_table(table, files["parquet"])
    pcsv.write_csv(table, files["csv"])
    with files["jsonl"].open("wb") as f:
        f.writelines(value + b"\n" for _, value in encode_transactions(table))
    figures: dict[str, float] = {"read_rows": rows}
    for kind, path in files.items():
        result, seconds = timed(lambda p=path: read_transactions(p, labelled=False))  # type: ignore[misc]
        assert result.table.num_rows == rows
        figures[f"read_{kind}_rows_per_s"] = round(rows / seconds)
    return figures


def bench_codec(table: pa.Table) -> dict[str, float]:
    messages, seconds = timed(lambda: encode_transactions(table))
    values = [value for _, value in messages]
    _, decode_seconds = timed(lambda: [decode_transaction(v, "bench") for v in values])
    return {
        "encode_msgs_per_s": round(len(values) / seconds),
        "decode_validate_msgs_per_s": round(len(values) / decode_seconds),
    }


def bench_broker(table: pa.Table, bootstrap: str) -> dict[str, float]:
    settings = KafkaSettings(bootstrap)
    topic, labels = f"bench-{uuid.uuid4().hex[:8]}", f"bench-labels-{uuid.uuid4().hex[:8]}"
    produced = publish(table, settings, ProduceOptions(topic=topic, partitions=3))
    with_labels = publish(
        table, settings, ProduceOptions(topic=topic + "-2", labels_topic=labels, partitions=3)
    )
    consumer = make_consumer(settings, None, topic, max_poll_records=5000)
    n = 0
    began = time.perf_counter()
    while n < table.num_rows:
        for records in consumer.poll(timeout_ms=1000).values():
            for m in records:
                decode_transaction(m.value, "bench")
            n += len(records)
        if time.perf_counter() - began > 120:
            break
    seconds = time.perf_counter() - began
    consumer.close()
    return {
        "produce_events_per_s": round(produced.events_per_s),
        "produce_with_labels_events_per_s": round(with_labels.events_per_s),
        "consume_decode_msgs_per_s": round(n / seconds),
        "consumed": n,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--read-rows", type=int, default=1_750_000)
    parser.add_argument("--bootstrap-servers", default=None)
    args = parser.parse_args()

    figures: dict[str, float] = {"events": args.events}
    with tempfile.TemporaryDirectory() as tmp:
        figures.update(bench_reading(args.read_rows, Path(tmp)))
    table = synthetic_table(args.events)
    figures.update(bench_codec(table))
    broker = LocalBroker() if args.bootstrap_servers is None else None
    with broker or nullcontext():
        bootstrap = args.bootstrap_servers or (broker.bootstrap if broker else "")
        figures.update(bench_broker(table, bootstrap))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
