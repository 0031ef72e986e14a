"""Parallel batch replay: the same per-key stores, run on key shards in worker processes.

Customer state depends only on that customer's events and terminal state only
on that terminal's, so a time-ordered table split by key hash and replayed
shard by shard gives, row for row, what one sequential replay gives.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features import spec
from features.customer_state import CustomerStore
from features.terminal_state import TerminalStore

if TYPE_CHECKING:
    from features.behaviour import BehaviourConfig


def _shard_ids(
    keys: pa.ChunkedArray, shards: int, labels: pa.Table | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Each row's shard, and each label's (by its terminal; -1: a terminal of no row)."""
    encoded = pc.dictionary_encode(keys).combine_chunks()
    rows = np.asarray(encoded.indices.to_numpy(zero_copy_only=False)) % shards
    if labels is None:
        return rows, None
    codes = pc.index_in(labels.column(spec.TERMINAL_ID), value_set=encoded.dictionary)
    found = np.asarray(codes.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)
    return rows, np.where(found >= 0, found % shards, -1)


def _customer_shard(config: BehaviourConfig, table: pa.Table, times: np.ndarray) -> np.ndarray:
    store = CustomerStore(config.windows_days, config.late_tolerance_hours * 3_600_000_000)
    return store.update_and_read(
        table.column(spec.CUSTOMER_ID).to_pylist(),
        times.tolist(),
        table.column(spec.AMOUNT).to_pylist(),
        table.column(spec.TERMINAL_ID).to_pylist(),
        table.column(spec.MERCHANT_CATEGORY).to_pylist(),
        table.column(spec.TRANSACTION_ID).to_pylist(),
    )


def _terminal_shard(
    config: BehaviourConfig, table: pa.Table, times: np.ndarray, labels: pa.Table | None = None
) -> np.ndarray:
    from features.behaviour import labelled_us, replay_terminals, terminal_store

    if labels is not None:
        return replay_terminals(
            terminal_store(config),
            table.column(spec.TERMINAL_ID).to_pylist(),
            times.tolist(),
            table.column(spec.TRANSACTION_ID).to_pylist(),
            labels,
        )
    return terminal_store(config).update_and_read(
        table.column(spec.TERMINAL_ID).to_pylist(),
        times.tolist(),
        table.column(spec.TRANSACTION_ID).to_pylist(),
        table.column(spec.LABEL_KEY).to_pylist(),
        labelled_us(table, times).tolist(),
    )


def sharded_replay(
    table: pa.Table,
    times: np.ndarray,
    config: BehaviourConfig,
    workers: int,
    labels: pa.Table | None = None,
) -> pa.Table:
    """Replay a time-sorted labelled table over key shards in ``workers`` processes.

    ``labels`` (labels apart, see :func:`features.behaviour.compute_features`)
    go to the shard of their terminal.
    """
    from features.behaviour import assemble_features

    customer_cols = [
        spec.CUSTOMER_ID,
        spec.AMOUNT,
        spec.TERMINAL_ID,
        spec.MERCHANT_CATEGORY,
        spec.TRANSACTION_ID,
    ]
    terminal_cols = [spec.TERMINAL_ID, spec.TRANSACTION_ID]
    if labels is None:
        terminal_cols.append(spec.LABEL_KEY)
        if spec.LABELLED_AT in table.column_names:
            terminal_cols.append(spec.LABELLED_AT)
    # Customers cost ~3x terminals per event: give them more shards.
    plans = [
        (_customer_shard, customer_cols, spec.CUSTOMER_ID, 2 * workers),
        (_terminal_shard, terminal_cols, spec.TERMINAL_ID, workers),
    ]
    # spawn, not fork: the caller may have TensorFlow's threads running.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        jobs = []
        for func, cols, key, shards in plans:
            shard_of_row, shard_of_label = _shard_ids(table.column(key), shards, labels
                                                      if func is _terminal_shard else None)
            for shard in range(shards):
                rows = np.flatnonzero(shard_of_row == shard)
                part = table.select(cols).take(pa.array(rows))
                extra: tuple[pa.Table, ...] = ()
                if shard_of_label is not None and labels is not None:
                    extra = (labels.take(pa.array(np.flatnonzero(shard_of_label == shard))),)
                jobs.append((func, rows, pool.submit(func, config, part, times[rows], *extra)))
        results: dict[object, np.ndarray] = {}
        for func, rows, future in jobs:
            values = future.result()
            out = results.get(func)
            if out is None:
                out = results[func] = np.empty((table.num_rows, values.shape[1]), np.float64)
            out[rows] = values
    tolerance = config.late_tolerance_hours * 3_600_000_000
    return assemble_features(
        CustomerStore(config.windows_days, tolerance).feature_names(),
        results[_customer_shard],
        TerminalStore(config.windows_days, config.delay_days, tolerance).feature_names(),
        results[_terminal_shard],
        times,
    )
