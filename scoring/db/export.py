"""Write analysts' decisions as a labels file, to feed them back into training.

Each record has the ``fraud-labels`` fields of ``docs/contracts.md`` §2.2, with
``source`` ``"analyst"``. The format follows the extension: ``.jsonl`` or ``.csv``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

from features.errors import InputError
from ingest.atomic import write_atomically
from scoring.db.repository import ReviewedLabel

LABEL_FIELDS = (
    "transaction_id", "is_fraud", "timestamp", "customer_id", "terminal_id", "labelled_at",
    "source",
)
FORMATS = (".jsonl", ".csv")


def write_labels(labels: Sequence[ReviewedLabel], out: Path, source: str = "analyst") -> int:
    """Write ``labels`` to ``out`` (replaced atomically); return how many were written."""
    suffix = out.suffix.lower()
    if suffix not in FORMATS:
        raise InputError(f"{out}: unknown labels file type {suffix!r}; use one of {FORMATS}")
    records = [label.to_record(source) for label in labels]

    def write(path: Path) -> None:
        with path.open("w", encoding="utf-8", newline="") as handle:
            if suffix == ".jsonl":
                handle.writelines(json.dumps(record) + "\n" for record in records)
            else:
                writer = csv.DictWriter(handle, fieldnames=LABEL_FIELDS)
                writer.writeheader()
                writer.writerows(records)

    write_atomically(out, write)
    return len(records)
