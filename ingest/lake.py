"""The Parquet lake that ``fraud archive`` fills and the batch jobs read.

Layout (``LAKE/``)::

    _lake.json                                   marks the directory as a lake
    transactions/date=YYYY-MM-DD/<batch>.parquet the contract's fields, no label
    labels/date=YYYY-MM-DD/<batch>.parquet       fraud-labels records, by the
                                                 transaction's date
    _rejected/<batch>.jsonl                      records that failed validation,
                                                 with the reason (nothing lost)
    _commits/<topic>-<partition>/<first>-<last>.json   one marker per batch
    _compactions/<id>.json                       a compaction under way (see compact)

A batch is a run of consecutive offsets ``first..last`` of one topic
partition, named ``<topic>-<partition>-<first>-<last>``. Its files are written
under hidden temporary names, moved into place, then its commit marker is
written; the lake, not the broker, records what was archived. On start the
archiver deletes the files of batches without a marker (a crash between the
two) and resumes each partition after its last committed offset, so every
record ends up in the lake exactly once.

Reading a lake (``ingest.readers.read_transactions``) joins each transaction
with the latest label known (by ``labelled_at``, optionally only those known by
a cutoff: :func:`join_labels`) and also hands every label over with its time,
so that the behavioural features apply each from when it was known, as the
live terminal stage does (docs/labels.md); a transaction without a label is
genuine, as in a bank where no chargeback and no analyst decision means no
known fraud.

``fraud simulate --label-protocol realistic`` writes the same layout (without
commit markers: files named ``part-0.parquet``); ``fraud archive compact``
(:func:`compact`) merges a date partition's small files (see there).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
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
COMPACTIONS = "_compactions"
#: Name of the files ``fraud simulate --label-protocol realistic`` writes (one per day).
SIMULATED_FILE = "part-0.parquet"
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


def sort_labels(table: pa.Table) -> pa.Table:
    """Labels in ``labelled_at`` order, stably (ties keep their order): the order they apply in."""
    if table.num_rows == 0:
        return table
    return table.take(pc.sort_indices(table, sort_keys=[(spec.LABELLED_AT, "ascending")]))


def known_by(labels: pa.Table, cutoff_us: int | None) -> pa.Table:
    """The labels known before ``cutoff_us`` (µs; None: all of them)."""
    if cutoff_us is None or labels.num_rows == 0:
        return labels
    cutoff = pa.scalar(cutoff_us, pa.timestamp("us", tz="UTC"))
    return labels.filter(pc.less(labels.column(spec.LABELLED_AT), cutoff))


def label_periods(labels: pa.Table) -> dict[str, tuple[int, int]]:
    """Transaction id -> its fraud period ``(fraud_from, fraud_until)`` after all of ``labels``.

    The rule of :mod:`features.terminal_state` (the latest label known wins
    from when it is known, one fraud period per transaction), applied in
    ``labelled_at`` order (ties: table order) with no latency: a transaction
    is fraud at the end when its period is still open (``fraud_until`` is
    :data:`~features.terminal_state.NEVER`).
    """
    from features.terminal_state import NEVER, labelled_period

    ordered = sort_labels(labels)
    ids = ordered.column(spec.TRANSACTION_ID).to_pylist()
    values = ordered.column(spec.LABEL_KEY).to_pylist()
    known = ordered.column(spec.LABELLED_AT).cast(pa.int64()).to_pylist()
    periods: dict[str, tuple[int, int]] = {}
    for txid, value, at in zip(ids, values, known, strict=True):
        frm, until = periods.get(txid, (NEVER, NEVER))
        periods[txid] = labelled_period(frm, until, int(value), int(at))
    return periods


def latest_labels(table: pa.Table) -> dict[str, int]:
    """Transaction id -> its latest label (by ``labelled_at``; ties: the later row)."""
    from features.terminal_state import NEVER

    return {txid: int(frm != NEVER and until == NEVER)
            for txid, (frm, until) in label_periods(table).items()}


def labels_of(transactions: pa.Table, labels: dict[str, int], missing: int) -> np.ndarray:
    """Each row's label from ``labels`` (transaction id -> label), ``missing`` when absent."""
    ids = transactions.column(spec.TRANSACTION_ID).to_pylist()
    return np.fromiter((labels.get(i, missing) for i in ids), dtype=np.int64, count=len(ids))


def join_labels(transactions: pa.Table, labels: pa.Table) -> pa.Table:
    """Append ``is_fraud`` and ``labelled_at``: each transaction's latest label in ``labels``.

    ``is_fraud`` is 0 when a transaction has no label; ``labelled_at`` is when
    its fraud became known (the start of its fraud period), null for a
    genuine one. Pass the labels :func:`known_by` a cutoff for the labels a
    bank had then.
    """
    from features.terminal_state import NEVER

    periods = label_periods(labels)
    ids = transactions.column(spec.TRANSACTION_ID).to_pylist()
    frm = np.full(len(ids), NEVER, dtype=np.int64)
    fraud = np.zeros(len(ids), dtype=np.int8)
    for i, txid in enumerate(ids):
        period = periods.get(txid)
        if period is not None and period[0] != NEVER and period[1] == NEVER:
            fraud[i], frm[i] = 1, period[0]
    known = pa.array(frm, pa.int64(), mask=fraud == 0).cast(pa.timestamp("us", tz="UTC"))
    return (transactions.append_column(spec.LABEL_KEY, pa.array(fraud, pa.int8()))
            .append_column(spec.LABELLED_AT, known))


def drop_repeated_ids(table: pa.Table) -> pa.Table:
    """Keep the first row of each transaction id (a producer retry can publish one twice)."""
    ids = table.column(spec.TRANSACTION_ID).to_numpy(zero_copy_only=False)
    _, first = np.unique(ids, return_index=True)
    if len(first) == table.num_rows:
        return table
    return table.take(pa.array(np.sort(first)))


def data_files(root: Path, kind: str, start: date | None, end: date | None) -> list[Path]:
    """The lake's Parquet files of ``kind`` whose date partition is in ``[start, end]``.

    Files a compaction has already replaced (its merged file is in place, a
    crash stopped it before it deleted them) are left out: each record is
    read once at every moment of a compaction.
    """
    directory = root / kind
    if not directory.is_dir():
        return []
    replaced = superseded(root)
    files = []
    for partition in sorted(directory.iterdir()):
        if not partition.name.startswith("date="):
            continue
        day = date.fromisoformat(partition.name.removeprefix("date="))
        if (start is None or day >= start) and (end is None or day <= end):
            files += [p for p in _visible(partition) if p not in replaced]
    return files


def _visible(partition: Path) -> list[Path]:
    return sorted(p for p in partition.glob("*.parquet") if not p.name.startswith("."))


def write_simulated(root: Path, transactions: pa.Table, labels: pa.Table) -> list[Path]:
    """Write a simulated bank as a lake: transactions without labels, and every label.

    One ``part-0.parquet`` per day and kind (labels by their transaction's
    day, as the archiver files them); no commit markers (nothing came from
    Kafka). ``root`` must be new or empty, or a lake: its data is replaced.
    """
    create(root)
    for kind in (TRANSACTIONS, LABELS, COMPACTIONS, COMMITS, REJECTED):
        shutil.rmtree(root / kind, ignore_errors=True)
    files = []
    for kind, table in ((TRANSACTIONS, transactions), (LABELS, labels)):
        for day, part in _by_day(table):
            path = root / kind / f"date={day.isoformat()}" / SIMULATED_FILE
            _write_parquet(part, path)
            files.append(path)
    return files


# --- compaction -------------------------------------------------------------


@dataclass
class CompactStats:
    """What a compaction did."""

    partitions: int = 0
    files_merged: int = 0
    files_written: int = 0
    rows: int = 0
    recovered: int = 0

    def as_dict(self) -> dict[str, int]:
        """Plain figures for a command's last line."""
        return dict(self.__dict__)


def superseded(root: Path) -> set[Path]:
    """Files replaced by a compaction whose merged file is in place (not yet deleted)."""
    replaced: set[Path] = set()
    directory = root / COMPACTIONS
    if not directory.is_dir():
        return replaced
    for manifest in directory.glob("*.json"):
        try:
            entry = json.loads(manifest.read_bytes())
        except (OSError, ValueError):
            continue  # being written (a temporary name is never *.json) or already gone
        folder = root / entry["partition"]
        if (folder / entry["new"]).is_file():
            replaced.update(folder / name for name in entry["replaces"])
    return replaced


def recover_compactions(root: Path) -> int:
    """Finish or undo compactions a crash interrupted; return how many there were.

    A merged file in place: delete the files it replaced. Not in place yet:
    delete its temporary file. Then the manifest. A merged file written before
    its manifest is deleted too. Needs the lake's lock.
    """
    count = 0
    directory = root / COMPACTIONS
    manifests = sorted(directory.iterdir()) if directory.is_dir() else []
    for manifest in manifests:
        if manifest.name.startswith("."):
            manifest.unlink()  # a manifest write cut short: nothing was renamed
            continue
        entry = json.loads(manifest.read_bytes())
        folder = root / entry["partition"]
        if (folder / entry["new"]).is_file():
            for name in entry["replaces"]:
                (folder / name).unlink(missing_ok=True)
        else:
            (folder / f".{entry['new']}.tmp").unlink(missing_ok=True)
        _fsync_dir(folder)
        manifest.unlink()
        count += 1
    for kind in (TRANSACTIONS, LABELS):  # merged files never recorded in a manifest
        if (root / kind).is_dir():
            for stray in (root / kind).glob("date=*/.compacted.*.tmp"):
                stray.unlink()
                count += 1
    return count


def compact(
    root: Path,
    *,
    min_files: int = 8,
    small_bytes: int = 32 * 1024 * 1024,
    on_step: Callable[[str], None] | None = None,
) -> CompactStats:
    """Merge each date partition's small files (under ``small_bytes``) into one, exactly once.

    A partition is compacted when it holds at least ``min_files`` small files.
    The caller holds the lake's lock (the archiver's, :func:`ingest.archiver.lock_lake`).
    Each merge: (1) the merged file is written under a hidden temporary name
    and synced; (2) a manifest naming it and the files it replaces is
    written; (3) the merged file is moved into place; (4) the old files are
    deleted; (5) the manifest is. Readers skip the old files from (3) on
    (:func:`superseded`); after a crash at any point :func:`recover_compactions`
    finishes (from 3 on) or undoes (before 3) the merge. Either way each
    record is in the lake once. ``on_step`` is told each step (for tests).
    """
    step = on_step or (lambda _: None)
    stats = CompactStats(recovered=recover_compactions(root))
    for kind in (TRANSACTIONS, LABELS):
        directory = root / kind
        if not directory.is_dir():
            continue
        for partition in sorted(directory.iterdir()):
            if not partition.name.startswith("date="):
                continue
            small = [p for p in _visible(partition) if p.stat().st_size < small_bytes]
            if len(small) < max(2, min_files):
                continue
            stats.rows += _merge(root, partition, small, step)
            stats.partitions += 1
            stats.files_merged += len(small)
            stats.files_written += 1
    return stats


def _merge(root: Path, partition: Path, files: list[Path], step: Callable[[str], None]) -> int:
    table = pa.concat_tables([pq.read_table(p) for p in files], promote_options="default")
    name = f"compacted.{uuid.uuid4().hex}.parquet"
    temporary = partition / f".{name}.tmp"
    pq.write_table(table, temporary, compression="snappy")
    _fsync(temporary)
    step("written")
    manifest = {"partition": str(partition.relative_to(root)), "new": name,
                "replaces": [p.name for p in files]}
    manifest_path = root / COMPACTIONS / f"{name.removesuffix('.parquet')}.json"
    _write_bytes(manifest_path, json.dumps(manifest, indent=1).encode())
    _fsync_dir(manifest_path.parent)
    step("manifest")
    os.replace(temporary, partition / name)
    _fsync_dir(partition)
    step("in place")
    for path in files:
        path.unlink()
        step("deleted")
    _fsync_dir(partition)
    manifest_path.unlink()
    step("done")
    return table.num_rows


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
