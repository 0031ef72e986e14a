"""The Parquet lake that ``fraud archive`` fills and the batch jobs read.

Layout (``LAKE/``)::

    _lake.json                                   marks the directory as a lake
    transactions/date=YYYY-MM-DD/<batch>.parquet the contract's fields, no label
    labels/date=YYYY-MM-DD/<batch>.parquet       fraud-labels records, by the
                                                 transaction's date
    _rejected/<batch>.jsonl                      records that failed validation,
                                                 with the reason (nothing lost)
    _commits/<topic>-<partition>/<first>-<last>.json   one marker per batch

A batch is a run of consecutive offsets ``first..last`` of one topic
partition, named ``<topic>-<partition>-<first>-<last>``. Its files are written
under hidden temporary names, moved into place, then its commit marker is
written; the lake, not the broker, records what was archived. On start the
archiver deletes the files of batches without a marker (a crash between the
two) and resumes each partition after its last committed offset, so every
record ends up in the lake exactly once.

Reading a lake (``ingest.readers.read_transactions``) joins each transaction
with its latest label (``labelled_at``); a transaction without a label is
genuine, as in a bank where no chargeback and no analyst decision means no
known fraud.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from features import spec
from features.errors import InputError
from ingest.writers import partition_bounds

MARKER = "_lake.json"
TRANSACTIONS = "transactions"
LABELS = "labels"
REJECTED = "_rejected"
COMMITS = "_commits"
LAYOUT_VERSION = 1
_BATCH_NAME = re.compile(r"^(?P<source>.+)-(?P<first>\d+)-(?P<last>\d+)$")

LABELS_SCHEMA = pa.schema([
    (spec.TRANSACTION_ID, pa.string()),
    (spec.LABEL_KEY, pa.int8()),
    (spec.TIMESTAMP, pa.timestamp("us", tz="UTC")),
    (spec.CUSTOMER_ID, pa.string()),
    (spec.TERMINAL_ID, pa.string()),
    ("labelled_at", pa.timestamp("us", tz="UTC")),
    ("source", pa.string()),
])


def is_lake(path: str | Path) -> bool:
    """Whether ``path`` is a lake written by ``fraud archive``."""
    return (Path(path) / MARKER).is_file()


def create(root: Path) -> None:
    """Make ``root`` a lake (idempotent); refuse a directory holding other files."""
    if root.exists() and not root.is_dir():
        raise InputError(f"{root}: exists and is not a directory")
    if root.is_dir() and not is_lake(root) and any(root.iterdir()):
        raise InputError(f"{root}: not empty and not a lake written by fraud archive")
    root.mkdir(parents=True, exist_ok=True)
    if not is_lake(root):
        _write_bytes(root / MARKER, json.dumps({"layout": LAYOUT_VERSION}).encode())


@dataclass(frozen=True)
class Batch:
    """Consecutive offsets ``first..last`` of one topic partition."""

    topic: str
    partition: int
    first: int
    last: int

    @property
    def source(self) -> str:
        """``<topic>-<partition>``: whose offsets these are."""
        return f"{self.topic}-{self.partition}"

    @property
    def name(self) -> str:
        """The name every file of the batch carries."""
        return f"{self.source}-{self.first:020d}-{self.last:020d}"


def commit_marker(root: Path, batch: Batch) -> Path:
    """Where the batch's commit marker lives."""
    return root / COMMITS / batch.source / f"{batch.first:020d}-{batch.last:020d}.json"


def write_batch(
    root: Path,
    batch: Batch,
    transactions: pa.Table | None,
    labels: pa.Table | None,
    rejected: Sequence[dict[str, Any]],
) -> list[Path]:
    """Write one batch's files, then its commit marker; return the files written."""
    files: list[Path] = []
    for kind, table in ((TRANSACTIONS, transactions), (LABELS, labels)):
        if table is not None and table.num_rows:
            for day, part in _by_day(table):
                path = root / kind / f"date={day.isoformat()}" / f"{batch.name}.parquet"
                _write_parquet(part, path)
                files.append(path)
    if rejected:
        path = root / REJECTED / f"{batch.name}.jsonl"
        lines = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rejected)
        _write_bytes(path, lines.encode("utf-8"))
        files.append(path)
    marker = {
        "topic": batch.topic, "partition": batch.partition,
        "first_offset": batch.first, "last_offset": batch.last,
        "transactions": 0 if transactions is None else transactions.num_rows,
        "labels": 0 if labels is None else labels.num_rows,
        "rejected": len(rejected),
        "files": [str(p.relative_to(root)) for p in files],
    }
    _write_bytes(commit_marker(root, batch), json.dumps(marker, indent=1).encode())
    return files


def recover(root: Path, topic: str, partition: int) -> int | None:
    """Delete the partition's uncommitted files; return its last committed offset (or None)."""
    source = f"{topic}-{partition}"
    committed: set[tuple[int, int]] = set()
    markers = root / COMMITS / source
    if markers.is_dir():
        for marker in markers.glob("*.json"):
            first, _, last = marker.stem.partition("-")
            committed.add((int(first), int(last)))
    for path in _batch_files(root):
        if path.name.startswith(".") and path.name.endswith(".tmp"):
            path.unlink()  # a write cut short
            continue
        match = _BATCH_NAME.match(path.name.removesuffix(path.suffix))
        if match is None or match["source"] != source:
            continue
        if (int(match["first"]), int(match["last"])) not in committed:
            path.unlink()
    return max((last for _, last in committed), default=None)


def _batch_files(root: Path) -> Iterable[Path]:
    for kind in (TRANSACTIONS, LABELS, REJECTED):
        directory = root / kind
        if directory.is_dir():
            yield from (p for p in directory.rglob("*") if p.is_file())


def labels_table(records: Sequence[dict[str, Any]]) -> pa.Table:
    """Validated ``fraud-labels`` records as a table of :data:`LABELS_SCHEMA`."""
    columns = {name: [r[name] for r in records] for name in LABELS_SCHEMA.names}
    return pa.table(columns, schema=LABELS_SCHEMA)


def latest_labels(table: pa.Table) -> dict[str, int]:
    """Transaction id -> its latest label (by ``labelled_at``; ties: the later row)."""
    if table.num_rows == 0:
        return {}
    order = pc.sort_indices(table, sort_keys=[("labelled_at", "ascending")])
    ordered = table.take(order)
    ids = ordered.column(spec.TRANSACTION_ID).to_pylist()
    values = ordered.column(spec.LABEL_KEY).to_pylist()
    return dict(zip(ids, values, strict=True))


def labels_of(transactions: pa.Table, labels: dict[str, int], missing: int) -> np.ndarray:
    """Each row's label from ``labels`` (transaction id -> label), ``missing`` when absent."""
    ids = transactions.column(spec.TRANSACTION_ID).to_pylist()
    return np.fromiter((labels.get(i, missing) for i in ids), dtype=np.int64, count=len(ids))


def join_labels(transactions: pa.Table, labels: dict[str, int]) -> pa.Table:
    """Append ``is_fraud``: each transaction's latest label, 0 when it has none."""
    values = labels_of(transactions, labels, missing=0).astype(np.int8)
    return transactions.append_column(spec.LABEL_KEY, pa.array(values, pa.int8()))


def drop_repeated_ids(table: pa.Table) -> pa.Table:
    """Keep the first row of each transaction id (a producer retry can publish one twice)."""
    ids = table.column(spec.TRANSACTION_ID).to_numpy(zero_copy_only=False)
    _, first = np.unique(ids, return_index=True)
    if len(first) == table.num_rows:
        return table
    return table.take(pa.array(np.sort(first)))


def data_files(root: Path, kind: str, start: date | None, end: date | None) -> list[Path]:
    """The lake's Parquet files of ``kind`` whose date partition is in ``[start, end]``."""
    directory = root / kind
    if not directory.is_dir():
        return []
    files = []
    for partition in sorted(directory.iterdir()):
        if not partition.name.startswith("date="):
            continue
        day = date.fromisoformat(partition.name.removeprefix("date="))
        if (start is None or day >= start) and (end is None or day <= end):
            files += sorted(p for p in partition.glob("*.parquet") if not p.name.startswith("."))
    return files


def read_labels(root: Path, start: date | None, end: date | None) -> pa.Table:
    """Every label record of the transactions dated within ``[start, end]``."""
    tables = [pq.read_table(p, schema=LABELS_SCHEMA) for p in data_files(root, LABELS, start, end)]
    return pa.concat_tables(tables) if tables else LABELS_SCHEMA.empty_table()


def _by_day(table: pa.Table) -> Iterable[tuple[date, pa.Table]]:
    table, days, bounds = partition_bounds(table)
    for i, day in enumerate(days):
        part = table.slice(bounds[i], bounds[i + 1] - bounds[i])
        yield np.datetime64(int(day), "D").astype(date), part


def _write_parquet(table: pa.Table, path: Path) -> None:
    _write_atomically(path, lambda temporary: pq.write_table(table, temporary,
                                                            compression="snappy"))


def _write_bytes(path: Path, data: bytes) -> None:
    _write_atomically(path, lambda temporary: temporary.write_bytes(data))


def _write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """``write`` a hidden temporary file beside ``path``, fsync it, move it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    write(temporary)
    _fsync(temporary)
    os.replace(temporary, path)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
