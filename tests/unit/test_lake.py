"""The Parquet lake without a broker: batches, commit markers, recovery, reading."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from features import spec
from features.errors import InputError
from ingest import lake
from ingest.readers import read_transactions
from ingest.records import records_to_table

T0 = datetime(2018, 5, 1, 23, 0, tzinfo=UTC)


def tx(i: int, hours: float) -> dict[str, object]:
    return {
        spec.TRANSACTION_ID: f"t{i}", spec.TIMESTAMP: T0 + timedelta(hours=hours),
        spec.CUSTOMER_ID: "C1", spec.TERMINAL_ID: "T1", spec.AMOUNT: 10.0 + i,
        spec.MERCHANT_CATEGORY: "5411", spec.COUNTRY: "BE", spec.CHANNEL: "pos",
    }


def label(i: int, is_fraud: int, labelled_hours: float) -> dict[str, object]:
    return {
        spec.TRANSACTION_ID: f"t{i}", spec.LABEL_KEY: is_fraud, spec.TIMESTAMP: T0,
        spec.CUSTOMER_ID: "C1", spec.TERMINAL_ID: "T1",
        "labelled_at": T0 + timedelta(hours=labelled_hours), "source": "chargeback",
    }


@pytest.fixture
def root(tmp_path: Path) -> Path:
    lake.create(tmp_path / "lake")
    return tmp_path / "lake"


def test_batches_split_by_day_and_are_committed_last(root: Path) -> None:
    batch = lake.Batch("transactions", 0, 5, 7)
    table = records_to_table([tx(1, 0), tx(2, 2), tx(3, 3)], labelled=False)
    files = lake.write_batch(root, batch, table, None, [{"offset": 8, "reason": "x"}])
    names = sorted(str(p.relative_to(root)) for p in files)
    assert names == [
        f"_rejected/{batch.name}.jsonl",
        f"transactions/date=2018-05-01/{batch.name}.parquet",
        f"transactions/date=2018-05-02/{batch.name}.parquet",
    ]
    marker = json.loads(lake.commit_marker(root, batch).read_text())
    assert marker["first_offset"] == 5 and marker["last_offset"] == 7
    assert marker["transactions"] == 3 and marker["rejected"] == 1
    assert lake.recover(root, "transactions", 0) == 7
    assert lake.recover(root, "transactions", 1) is None


def test_recovery_deletes_what_a_crash_left_uncommitted(root: Path) -> None:
    kept = lake.Batch("transactions", 0, 0, 9)
    lake.write_batch(root, kept, records_to_table([tx(1, 0)], labelled=False), None, [])
    lost = lake.Batch("transactions", 0, 10, 19)
    lake.write_batch(root, lost, records_to_table([tx(2, 1)], labelled=False), None, [])
    other = lake.Batch("transactions", 1, 10, 19)
    lake.write_batch(root, other, records_to_table([tx(3, 1)], labelled=False), None, [])
    lake.commit_marker(root, lost).unlink()  # the crash: files written, marker not
    half = root / "transactions" / "date=2018-05-02" / ".part.parquet.tmp"
    half.write_bytes(b"half a file")
    assert lake.recover(root, "transactions", 0) == 9
    assert not half.exists()
    ids = read_transactions(root, labelled=False).table.column(spec.TRANSACTION_ID).to_pylist()
    assert ids == ["t1", "t3"]  # t2 will be archived again, once


def test_reading_joins_the_latest_label_and_defaults_to_genuine(root: Path) -> None:
    transactions = records_to_table([tx(1, 0), tx(2, 1), tx(3, 2), tx(1, 0)], labelled=False)
    lake.write_batch(root, lake.Batch("transactions", 0, 0, 3), transactions, None, [])
    labels = lake.labels_table([label(1, 1, 5), label(2, 1, 9), label(2, 0, 7)])
    lake.write_batch(root, lake.Batch("fraud-labels", 0, 0, 2), None, labels, [])
    result = read_transactions(root, labelled=True)
    read = result.table
    assert read.schema == spec.arrow_schema(labelled=True).append(
        pa.field(spec.LABELLED_AT, pa.timestamp("us", tz="UTC")))
    rows = {r[spec.TRANSACTION_ID]: r[spec.LABEL_KEY] for r in read.to_pylist()}
    assert rows == {"t1": 1, "t2": 1, "t3": 0}  # t1 read once; t2's later label wins
    assert read.num_rows == 3
    # When each fraud became known: t2 was genuine at 7 h, fraud from 9 h.
    known = {r[spec.TRANSACTION_ID]: r[spec.LABELLED_AT] for r in read.to_pylist()}
    assert known == {"t1": T0 + timedelta(hours=5), "t2": T0 + timedelta(hours=9), "t3": None}
    assert result.labels is not None and result.labels.num_rows == 3
    # Only the labels known before a cutoff: t2 was genuine then.
    early = read_transactions(root, labelled=True, labels_known_before=T0 + timedelta(hours=8))
    rows = {r[spec.TRANSACTION_ID]: r[spec.LABEL_KEY] for r in early.table.to_pylist()}
    assert rows == {"t1": 1, "t2": 0, "t3": 0}
    assert early.labels is not None and early.labels.num_rows == 2
    window = read_transactions(root, labelled=True, start=date(2018, 5, 2)).table
    assert window.column(spec.TRANSACTION_ID).to_pylist() == ["t2", "t3"]


def test_a_directory_with_other_files_is_not_made_a_lake(tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_text("x\n")
    with pytest.raises(InputError, match="not empty and not a lake"):
        lake.create(tmp_path)
    lake.create(tmp_path / "new")
    lake.create(tmp_path / "new")  # idempotent
    assert lake.is_lake(tmp_path / "new")
    assert pa.types.is_int8(lake.LABELS_SCHEMA.field(spec.LABEL_KEY).type)


def test_a_resumed_partition_that_restarts_below_the_lake_stops_the_archiver(root: Path) -> None:
    """A recreated topic restarts its offsets; the seek past its end falls back to the
    earliest offset, and archiving from there would skip records."""
    from kafka import TopicPartition

    from ingest.archiver import ArchiveConfig, Archiver
    from ingest.kafka_io import KafkaSettings

    archiver = Archiver(KafkaSettings("127.0.0.1:1"), ArchiveConfig(out=root))
    tp = TopicPartition("transactions", 2)
    archiver._resumed[tp] = 500
    archiver._check_resumed(tp, 500)  # continues where the lake stopped: fine
    archiver._resumed[tp] = 500
    with pytest.raises(InputError, match=r"archived transactions\[2\] up to offset 499, but the "
                                         r"partition now starts again at offset 0"):
        archiver._check_resumed(tp, 0)
    archiver._check_resumed(tp, 0)  # checked once, on the first message after resuming
