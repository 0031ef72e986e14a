"""Label files for retraining: analysts' decisions on top of the labels a history carries.

``fraud labels export`` writes the alerts analysts decided as records of the
``fraud-labels`` format (``contracts.md`` §2), one per line (``.jsonl``) or per
row (``.csv``). ``fraud train --labels FILE`` reads them here and applies them
to the transactions it trains on: a fraud the chargebacks have not shown yet
becomes a fraud, a confirmed false positive a genuine transaction. This is how
the analysts' work flows back into the model.

Each record is validated like a message of the labels topic; a bad one stops
the job with the file, the line and the field. When a transaction was decided
more than once, the latest decision (``labelled_at``, then file order) wins.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from features.errors import InputError
from features.spec import LABEL_KEY, TRANSACTION_ID
from ingest.kafka_io import label_record
from ingest.lake import labels_of
from ingest.validation import ValidationError

SUFFIXES = (".jsonl", ".csv")
REQUIRED_COLUMNS = (TRANSACTION_ID, LABEL_KEY)


@dataclass(frozen=True)
class LabelFiles:
    """The latest decision per transaction id, read from one or more label files."""

    labels: dict[str, int]
    #: Records read, every decision counted (a transaction decided twice counts twice).
    records: int
    files: tuple[str, ...]


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
    """Read and validate every record; keep the latest decision per transaction."""
    check_label_files(paths)
    decisions: list[tuple[float, int, str, int]] = []
    for path in paths:
        for where, raw in _raw_records(path):
            record = label_record(raw, where)
            order = len(decisions)
            decisions.append((record["labelled_at"].timestamp(), order,
                              record[TRANSACTION_ID], record[LABEL_KEY]))
    decisions.sort()
    latest = {transaction_id: label for _, _, transaction_id, label in decisions}
    return LabelFiles(latest, len(decisions), tuple(str(p) for p in paths))


def _raw_records(path: Path) -> list[tuple[str, dict[str, object]]]:
    records: list[tuple[str, dict[str, object]]] = []
    with path.open(encoding="utf-8", newline="") as handle:
        if path.suffix.lower() == ".csv":
            reader = csv.DictReader(handle)
            missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or ())]
            if missing:
                raise InputError(f"{path}: missing column(s) {', '.join(missing)}")
            # Line 1 is the header.
            records = [(f"line {n} of {path}", dict(row)) for n, row in enumerate(reader, 2)]
        else:
            for n, line in enumerate(handle, 1):
                where = f"line {n} of {path}"
                if line.strip():
                    records.append((where, _json_object(line, where)))
    return records


def _json_object(line: str, where: str) -> dict[str, object]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValidationError(where, None, f"invalid JSON: {err}") from None
    if not isinstance(obj, dict):
        raise ValidationError(where, None, "expected a JSON object")
    return obj


def apply_label_files(table: pa.Table, files: LabelFiles) -> tuple[pa.Table, LabelsApplied]:
    """``table`` with its ``is_fraud`` replaced by the files' decision wherever there is one."""
    old = np.asarray(table.column(LABEL_KEY).to_numpy(zero_copy_only=False), dtype=np.int64)
    new = labels_of(table, files.labels, missing=-1)
    decided = new >= 0
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
