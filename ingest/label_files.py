"""Label files for retraining: analysts' decisions on top of the labels a history carries.

``fraud labels export`` writes the alerts analysts decided as records of the
``fraud-labels`` format (``docs/contracts.md`` §2.2), one per line (``.jsonl``) or per
row (``.csv``). ``fraud train --labels FILE`` reads them here and applies them
to the transactions it trains on: a fraud the chargebacks have not shown yet
becomes a fraud, a confirmed false positive a genuine transaction. This is how
the analysts' work flows back into the model.

Each record is validated like a message of the labels topic, with the same
bounds (``docs/ingest.md``, Bounds); a bad one stops the job with the file, the
line and the field. When a transaction was decided
more than once, the latest decision (``labelled_at``, then file order) wins.

For point-in-time features and targets, :func:`label_history` merges the
decisions with the labels the input already carries (a lake's, each with its
``labelled_at``; a labelled file's, known with their transactions) into one
history: the latest label known wins from when it is known, an analyst's
decision and a chargeback alike (docs/labels.md).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features.errors import InputError
from features.spec import (
    CUSTOMER_ID,
    LABEL_KEY,
    LABEL_SOURCE,
    LABELLED_AT,
    TERMINAL_ID,
    TIMESTAMP,
    TRANSACTION_ID,
)
from ingest.kafka_io import label_record
from ingest.lake import LABELS_SCHEMA, join_labels, known_by, labels_of, labels_table, sort_labels
from ingest.validation import ValidationError, guarded, parse_json_object

SUFFIXES = (".jsonl", ".csv")
REQUIRED_COLUMNS = (TRANSACTION_ID, LABEL_KEY)


@dataclass(frozen=True)
class LabelFiles:
    """The latest decision per transaction id, read from one or more label files."""

    labels: dict[str, int]
    #: Records read, every decision counted (a transaction decided twice counts twice).
    records: int
    files: tuple[str, ...]
    #: Every record, in file order, as a table of ``ingest.lake.LABELS_SCHEMA``.
    table: pa.Table | None = None


@dataclass(frozen=True)
class LabelsApplied:
    """What applying label files to a table did."""

    #: Transactions the files decide.
    labelled: int
    #: Of those, found among the rows.
    matched: int
    #: Matched rows whose label the files changed, by new label.
    to_fraud: int
    to_genuine: int

    def as_dict(self) -> dict[str, int]:
        """Plain figures for the export's metadata."""
        return {"labelled": self.labelled, "matched": self.matched,
                "to_fraud": self.to_fraud, "to_genuine": self.to_genuine}


def check_label_files(paths: Sequence[Path]) -> None:
    """Each path must be an existing ``.jsonl`` or ``.csv`` file (before any work starts)."""
    for path in paths:
        if path.suffix.lower() not in SUFFIXES:
            raise InputError(f"{path}: unsupported labels file type (expected .jsonl or .csv)")
        if not path.is_file():
            raise InputError(f"labels file not found: {path}")


def read_label_files(paths: Sequence[Path]) -> LabelFiles:
    """Read and validate every record; keep the latest decision per transaction.

    Every record keeps the labels topic's rules and bounds
    (:func:`ingest.kafka_io.label_record`); whatever a file holds, a bad one
    raises :class:`~ingest.validation.ValidationError` naming its line.
    """
    check_label_files(paths)
    decisions: list[tuple[float, int, str, int]] = []
    records: list[dict[str, object]] = []
    for path in paths:
        for where, raw in _raw_records(path):
            record = guarded(where, label_record, raw, where)
            order = len(decisions)
            decisions.append((record[LABELLED_AT].timestamp(), order,
                              record[TRANSACTION_ID], record[LABEL_KEY]))
            records.append(record)
    decisions.sort()
    latest = {transaction_id: label for _, _, transaction_id, label in decisions}
    return LabelFiles(latest, len(decisions), tuple(str(p) for p in paths),
                      labels_table(records))


def own_labels(table: pa.Table) -> pa.Table:
    """The frauds of a labelled table as labels known with their transactions (Handbook).

    Genuine rows need none: a transaction without a label is genuine.
    """
    frauds = table.filter(pc.equal(table.column(LABEL_KEY), 1))
    n = frauds.num_rows
    columns = {name: frauds.column(name) for name in
               (TRANSACTION_ID, LABEL_KEY, TIMESTAMP, CUSTOMER_ID, TERMINAL_ID)}
    columns[LABELLED_AT] = frauds.column(TIMESTAMP)
    columns[LABEL_SOURCE] = pa.array(["input"] * n, pa.string())
    return pa.table({f.name: columns[f.name].cast(f.type) for f in LABELS_SCHEMA},
                    schema=LABELS_SCHEMA)


def label_history(
    table: pa.Table, labels: pa.Table | None, files: LabelFiles, known_before_us: int | None
) -> pa.Table:
    """Every label of ``table``'s rows with its time: the input's and the files', in time order.

    ``labels``: the labels the input keeps apart (a lake's), or None when each
    row's ``is_fraud`` is its label (known with the transaction). Only labels
    known before ``known_before_us`` (µs; None: all) are kept. Ties in
    ``labelled_at`` put the input's labels first, then the files' in file order.
    """
    own = labels if labels is not None else own_labels(table)
    decided = files.table if files.table is not None else LABELS_SCHEMA.empty_table()
    merged = pa.concat_tables([own.select(LABELS_SCHEMA.names).cast(LABELS_SCHEMA), decided])
    return sort_labels(known_by(merged, known_before_us))


def _raw_records(path: Path) -> list[tuple[str, Mapping[str, object]]]:
    data = path.read_bytes()
    if path.suffix.lower() == ".csv":
        return _csv_records(path, data.removeprefix(_BOM))
    if data.startswith(_BOM):
        data = b"   " + data[len(_BOM):]  # a byte order mark; byte offsets kept
    records: list[tuple[str, Mapping[str, object]]] = []
    for n, line in enumerate(data.split(b"\n"), 1):
        if line.strip():
            where = f"line {n} of {path}"
            records.append((where, parse_json_object(line, where)))
    return records


_BOM = b"\xef\xbb\xbf"


def _csv_records(path: Path, data: bytes) -> list[tuple[str, Mapping[str, object]]]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1)
        raise ValidationError(f"line {line} of {path}", None,
                              f"invalid UTF-8 at byte {column}") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    records: list[tuple[str, Mapping[str, object]]] = []
    try:
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise InputError(f"{path}: missing column(s) {', '.join(missing)}")
        # Line 1 is the header.
        for n, row in enumerate(reader, 2):
            records.append((f"line {n} of {path}", row))
    except csv.Error as err:
        raise ValidationError(f"line {reader.line_num} of {path}", None,
                              f"unreadable CSV: {err}") from None
    return records


def apply_label_files(
    table: pa.Table, files: LabelFiles, history: pa.Table | None = None
) -> tuple[pa.Table, LabelsApplied]:
    """``table`` with its ``is_fraud`` replaced by the files' decision wherever there is one.

    With ``history`` (:func:`label_history`), each row's label is instead the
    latest label known in it, and ``labelled_at`` when that became known.
    """
    old = np.asarray(table.column(LABEL_KEY).to_numpy(zero_copy_only=False), dtype=np.int64)
    new = labels_of(table, files.labels, missing=-1)
    decided = new >= 0
    if history is not None:
        bare = table.drop_columns([c for c in (LABEL_KEY, LABELLED_AT) if c in table.column_names])
        joined = join_labels(bare, history)
        known = np.asarray(joined.column(LABEL_KEY).to_numpy(zero_copy_only=False), np.int64)
        changed = decided & (known != old)
        applied = LabelsApplied(
            labelled=len(files.labels),
            matched=len(set(table.column(TRANSACTION_ID).filter(pa.array(decided)).to_pylist())),
            to_fraud=int((changed & (known == 1)).sum()),
            to_genuine=int((changed & (known == 0)).sum()),
        )
        joined = joined.set_column(joined.schema.get_field_index(LABEL_KEY), LABEL_KEY,
                                   joined.column(LABEL_KEY).cast(table.schema.field(LABEL_KEY).type))
        return joined.select(list(dict.fromkeys([*table.column_names, LABELLED_AT]))), applied
    updated = np.where(decided, new, old)
    matched = len(set(table.column(TRANSACTION_ID).filter(pa.array(decided)).to_pylist()))
    changed = decided & (updated != old)
    applied = LabelsApplied(
        labelled=len(files.labels),
        matched=matched,
        to_fraud=int((changed & (updated == 1)).sum()),
        to_genuine=int((changed & (updated == 0)).sum()),
    )
    column = pa.array(updated, type=table.schema.field(LABEL_KEY).type)
    index = table.schema.get_field_index(LABEL_KEY)
    return table.set_column(index, LABEL_KEY, column), applied
