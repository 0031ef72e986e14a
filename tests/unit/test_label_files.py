"""Label files: what `fraud labels export` writes is what `fraud train --labels` applies."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from features import spec
from features.errors import InputError
from ingest.label_files import apply_label_files, read_label_files
from ingest.validation import ValidationError
from scoring.db.export import write_labels
from scoring.db.repository import ReviewedLabel

EVENT = datetime(2018, 5, 2, 12, tzinfo=UTC)


def decision(transaction_id: str, is_fraud: int, reviewed_day: int) -> ReviewedLabel:
    return ReviewedLabel(transaction_id, "C1", "T1", EVENT, is_fraud,
                         datetime(2018, 5, reviewed_day, tzinfo=UTC))


def transactions(labels: dict[str, int]) -> pa.Table:
    return pa.table({
        spec.TRANSACTION_ID: list(labels),
        spec.LABEL_KEY: pa.array(list(labels.values()), pa.int8()),
    })


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_exported_decisions_read_back(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"labels{suffix}"
    write_labels([decision("t1", 1, 3), decision("t2", 0, 3)], path)
    files = read_label_files([path])
    assert files.labels == {"t1": 1, "t2": 0}
    assert files.records == 2 and files.files == (str(path),)


def test_the_latest_decision_wins_across_files(tmp_path: Path) -> None:
    later, earlier = tmp_path / "a.jsonl", tmp_path / "b.csv"
    write_labels([decision("t1", 0, 9), decision("t2", 1, 3)], later)
    # Listed after, but decided before: it loses for t1, and t3 is new.
    write_labels([decision("t1", 1, 4), decision("t3", 1, 4)], earlier)
    files = read_label_files([later, earlier])
    assert files.labels == {"t1": 0, "t2": 1, "t3": 1}
    assert files.records == 4


def test_decisions_replace_the_labels_of_matching_rows(tmp_path: Path) -> None:
    path = tmp_path / "labels.jsonl"
    write_labels([decision("a", 1, 3), decision("b", 0, 3), decision("c", 1, 3),
                  decision("zz", 1, 3)], path)
    table = transactions({"a": 0, "b": 1, "c": 1, "d": 0})
    relabelled, applied = apply_label_files(table, read_label_files([path]))
    assert relabelled.column(spec.LABEL_KEY).to_pylist() == [1, 0, 1, 0]
    assert relabelled.schema == table.schema
    assert applied.as_dict() == {"labelled": 4, "matched": 3, "to_fraud": 1, "to_genuine": 1}


def test_a_bad_record_names_the_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "labels.jsonl"
    write_labels([decision("a", 1, 3)], path)
    record = json.loads(path.read_text()) | {"is_fraud": "maybe"}
    path.write_text(path.read_text() + "\n" + json.dumps(record) + "\n")
    with pytest.raises(ValidationError) as caught:
        read_label_files([path])
    assert caught.value.record == f"line 3 of {path}"
    assert caught.value.field == "is_fraud"
    path.write_text("{not json\n")
    with pytest.raises(ValidationError, match=r"line 1 of .*invalid JSON"):
        read_label_files([path])


def test_unusable_files_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="labels file not found"):
        read_label_files([tmp_path / "missing.jsonl"])
    (tmp_path / "labels.parquet").write_bytes(b"")
    with pytest.raises(InputError, match="unsupported labels file type"):
        read_label_files([tmp_path / "labels.parquet"])
    no_label = tmp_path / "labels.csv"
    no_label.write_text("transaction_id,timestamp\nt1,2018-05-02T12:00:00Z\n")
    with pytest.raises(InputError, match="missing column\\(s\\) is_fraud"):
        read_label_files([no_label])
