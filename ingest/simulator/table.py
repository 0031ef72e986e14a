"""Turn simulated transactions into an Arrow table with the contract's schema."""

from __future__ import annotations

from datetime import UTC, date, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features import spec
from ingest.simulator.activity import Transactions
from ingest.simulator.population import Population

_MICROS = 1_000_000


def _ids(prefix: str, count: int, min_width: int) -> pa.Array:
    """Make ``count`` ids like ``C000123``: the prefix and a zero-padded index."""
    width = max(min_width, len(str(max(count - 1, 0))))
    return pa.array([f"{prefix}{i:0{width}d}" for i in range(count)], pa.string())


def sequence_ids(count: int, min_width: int = 10) -> pa.Array:
    """Make sequence ids ``0000000000``, ``0000000001``, ...: zero-padded, they sort as numbers."""
    width = max(min_width, len(str(max(count - 1, 0))))
    digits = pc.cast(pa.array(np.arange(count, dtype=np.int64)), pa.string())
    return pc.utf8_lpad(digits, width=width, padding="0")


def to_table(tx: Transactions, population: Population, start: date) -> pa.Table:
    """Build the contract's labelled table; rows in the order of ``tx``, ids numbered so."""
    terminals = population.terminals
    terminal = pa.array(tx.terminal)
    epoch = datetime(start.year, start.month, start.day, tzinfo=UTC)
    start_us = int(epoch.timestamp()) * _MICROS
    columns = {
        spec.TRANSACTION_ID: sequence_ids(len(tx)),
        spec.TIMESTAMP: pa.array(start_us + tx.seconds.astype(np.int64) * _MICROS),
        spec.CUSTOMER_ID: _ids("C", len(population.customers), 6).take(pa.array(tx.customer)),
        spec.TERMINAL_ID: _ids("T", len(terminals), 7).take(terminal),
        spec.AMOUNT: pa.array(tx.amount, pa.float64()),
        spec.MERCHANT_CATEGORY: pa.array(terminals.merchant_category, pa.string()).take(terminal),
        spec.COUNTRY: pa.array(terminals.country, pa.string()).take(terminal),
        spec.CHANNEL: pa.array(terminals.channel, pa.string()).take(terminal),
        spec.LABEL_KEY: pa.array((tx.scenario > 0).astype(np.int8)),
    }
    schema = spec.arrow_schema(labelled=True)
    arrays = [columns[f.name].cast(f.type) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)
