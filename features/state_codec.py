"""Serialisation of behavioural state: flat Arrow tables in Arrow IPC streams.

No pickle: a state blob read back from a database or a topic is data, never
code. Each part is one table whose rows are stored events with their key, in
key then time order, with a small JSON header in the schema metadata:

* customers (:func:`encode_customers`): a set of customer histories — a
  whole partition's, or only the customers that changed (a checkpoint delta;
  ``removed`` lists customers that left the state);
* terminals (:func:`encode_terminals`): a terminal store's histories and its
  pending labels (the terminal stage's checkpoint);
* a whole :class:`~features.behaviour.BehaviourState` (:func:`encode_state`):
  both, with the configuration and the watermark.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from itertools import chain
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from features.customer_state import CustomerHistory
from features.terminal_state import TerminalHistory, TerminalStore

if TYPE_CHECKING:
    from features.behaviour import BehaviourState

#: Layout version of every part written here.
FORMAT_VERSION = 3
STR = pa.string()
_flat = chain.from_iterable


def _write(sink: io.BytesIO, table: pa.Table, header: Mapping[str, Any]) -> None:
    meta = {"header": json.dumps({"format": FORMAT_VERSION, **header})}
    table = table.replace_schema_metadata(meta)
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)


def _read(source: pa.BufferReader) -> tuple[pa.Table, dict[str, Any]]:
    with pa.ipc.open_stream(source) as reader:
        table = reader.read_all()
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    header = json.loads(meta["header"])
    if header.get("format") != FORMAT_VERSION:
        raise ValueError(f"unsupported behavioural state format {header.get('format')!r}")
    return table, header


# --- customers -----------------------------------------------------------------


def customers_table(histories: Mapping[str, CustomerHistory]) -> pa.Table:
    """The customer histories as one flat table."""
    values = histories.values()
    return pa.table(
        {
            "key": pa.array(_flat([k] * len(h.times) for k, h in histories.items()), STR),
            "time_us": pa.array(_flat(h.times for h in values), pa.int64()),
            "amount": pa.array(_flat(h.amounts for h in values), pa.float64()),
            "terminal": pa.array(_flat(h.terminals for h in values), STR),
            "category": pa.array(_flat(h.categories for h in values), STR),
            "transaction_id": pa.array(_flat(h.transaction_ids for h in values), STR),
        }
    )


def encode_customers(
    histories: Mapping[str, CustomerHistory],
    *,
    removed: Iterable[str] = (),
    header: Mapping[str, Any] | None = None,
) -> bytes:
    """Serialise customer histories (and the ids of customers removed since a base)."""
    sink = io.BytesIO()
    _write(sink, customers_table(histories), {"removed": sorted(removed), **(header or {})})
    return sink.getvalue()


def decode_customers(data: bytes) -> tuple[dict[str, CustomerHistory], list[str], dict[str, Any]]:
    """The histories, the removed ids and the header of :func:`encode_customers` bytes."""
    table, header = _read(pa.BufferReader(data))
    return _customer_histories(table), list(header.get("removed", [])), header


def _customer_histories(table: pa.Table) -> dict[str, CustomerHistory]:
    c = table.to_pydict()
    histories: dict[str, CustomerHistory] = {}
    for key, t, a, term, cat, txid in zip(
        c["key"], c["time_us"], c["amount"], c["terminal"], c["category"], c["transaction_id"],
        strict=True,
    ):
        hist = histories.get(key)
        if hist is None:
            hist = histories[key] = CustomerHistory()
        hist.times.append(t)
        hist.amounts.append(a)
        hist.terminals.append(term)
        hist.categories.append(cat)
        hist.transaction_ids.append(txid)
    return histories


# --- terminals -----------------------------------------------------------------


def _terminals_table(histories: Mapping[str, TerminalHistory]) -> pa.Table:
    values = histories.values()
    return pa.table(
        {
            "key": pa.array(_flat([k] * len(h.times) for k, h in histories.items()), STR),
            "time_us": pa.array(_flat(h.times for h in values), pa.int64()),
            "transaction_id": pa.array(_flat(h.transaction_ids for h in values), STR),
            "fraud_from": pa.array(_flat(h.fraud_from for h in values), pa.int64()),
            "fraud_until": pa.array(_flat(h.fraud_until for h in values), pa.int64()),
        }
    )


def _pending_table(pending: Mapping[str, tuple[int, str, int, int]]) -> pa.Table:
    rows = pending.values()
    return pa.table(
        {
            "transaction_id": pa.array(list(pending), STR),
            "time_us": pa.array([v[0] for v in rows], pa.int64()),
            "terminal": pa.array([v[1] for v in rows], STR),
            "fraud": pa.array([v[2] for v in rows], pa.int8()),
            "known_us": pa.array([v[3] for v in rows], pa.int64()),
        }
    )


def encode_terminals(store: TerminalStore, header: Mapping[str, Any] | None = None) -> bytes:
    """Serialise a terminal store's histories and pending labels."""
    sink = io.BytesIO()
    _write(sink, _terminals_table(store.histories), {"part": "terminals", **(header or {})})
    _write(sink, _pending_table(store.pending_labels), {"part": "pending_labels"})
    return sink.getvalue()


def decode_terminals(data: bytes, store: TerminalStore) -> dict[str, Any]:
    """Fill ``store`` from :func:`encode_terminals` bytes; return the header."""
    source = pa.BufferReader(data)
    table, header = _read(source)
    pending, _ = _read(source)
    _fill_terminals(store, table, pending)
    return header


def _fill_terminals(store: TerminalStore, table: pa.Table, pending: pa.Table) -> None:
    tm = table.to_pydict()
    histories = store.histories
    for key, t, txid, frm, until in zip(
        tm["key"], tm["time_us"], tm["transaction_id"], tm["fraud_from"], tm["fraud_until"],
        strict=True,
    ):
        hist = histories.get(key)
        if hist is None:
            hist = histories[key] = TerminalHistory()
        hist.times.append(t)
        hist.transaction_ids.append(txid)
        hist.fraud_from.append(frm)
        hist.fraud_until.append(until)
    for hist in histories.values():
        hist.flagged = sum(1 for f in hist.fraud_from if f < 2**62)
    p = pending.to_pydict()
    for txid, t, term, fraud, known in zip(
        p["transaction_id"], p["time_us"], p["terminal"], p["fraud"], p["known_us"], strict=True
    ):
        store.pending_labels[txid] = (t, term, fraud, known)


# --- a whole state ---------------------------------------------------------------


def encode_state(state: BehaviourState) -> bytes:
    """Serialise a :class:`~features.behaviour.BehaviourState` (config and watermark included)."""
    header = {
        "config": asdict(state.config),
        "watermark_us": state.watermark_us,
        "expiry_floor_us": state.expiry_floor_us,
    }
    sink = io.BytesIO()
    _write(sink, customers_table(state.customers.histories), {"part": "customers", **header})
    _write(sink, _terminals_table(state.terminals.histories), {"part": "terminals"})
    _write(sink, _pending_table(state.terminals.pending_labels), {"part": "pending_labels"})
    return sink.getvalue()


def decode_state(data: bytes, cls: Any) -> BehaviourState:
    """Rebuild a state from :func:`encode_state` bytes; ``cls`` is BehaviourState."""
    from features.behaviour import BehaviourConfig

    source = pa.BufferReader(data)
    customers, header = _read(source)
    terminals, _ = _read(source)
    pending, _ = _read(source)
    config = dict(header["config"])
    config["windows_days"] = tuple(config["windows_days"])
    state = cls(BehaviourConfig(**config))
    state.watermark_us = header["watermark_us"]
    state.expiry_floor_us = header.get("expiry_floor_us")
    state._last_sweep_us = state.watermark_us
    state.customers.histories.update(_customer_histories(customers))
    _fill_terminals(state.terminals, terminals, pending)
    return state
