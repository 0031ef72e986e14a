"""A card's recent transactions from the Parquet lake (``--lake``), for the alert page.

A lake written by ``fraud archive`` (or any date-partitioned directory of
Parquet files) is read with the customer filter pushed down to Parquet, so
only that card's rows are decoded; other inputs go through
:func:`ingest.readers.read_transactions`.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from features import spec

COLUMNS = [spec.TRANSACTION_ID, spec.TIMESTAMP, spec.TERMINAL_ID, spec.AMOUNT,
           spec.MERCHANT_CATEGORY, spec.COUNTRY, spec.CHANNEL]
MAX_ROWS = 500


def card_transactions(root: Path, customer_id: str, until: date, days: int) -> list[dict[str, Any]]:
    """The card's transactions of the ``days`` days up to ``until``, newest first."""
    from ingest import lake, readers

    start = until - timedelta(days=days - 1)
    if lake.is_lake(root):
        files = lake.data_files(root, lake.TRANSACTIONS, start, until)
    else:
        files = readers.list_files(root, start=start, end=until)
    tables = []
    if files and all(f.suffix == ".parquet" for f in files):
        for f in files:
            names = pq.read_schema(f).names
            table = pq.read_table(f, columns=[c for c in COLUMNS if c in names],
                                  filters=[(spec.CUSTOMER_ID, "=", customer_id)])
            tables.append(table)
    else:
        table = readers.read_transactions(root, labelled=False, start=start, end=until).table
        tables.append(table.filter(pc.equal(table[spec.CUSTOMER_ID], customer_id)))
    tables = [t.select([c for c in COLUMNS if c in t.column_names]) for t in tables]
    if not tables:
        return []
    merged = pa.concat_tables(tables, promote_options="permissive")
    if merged.num_rows == 0:
        return []
    merged = merged.sort_by([(spec.TIMESTAMP, "descending")]).slice(0, MAX_ROWS)
    return merged.to_pylist()
