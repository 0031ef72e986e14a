"""Serialisation of the behavioural state: flat Arrow tables in one IPC stream.

No pickle: a state blob read back from a database or a topic is data, never
code. The layout is three tables (customer events, terminal events, pending
labels), each row one stored event with its key, in key then time order, and
the configuration and watermark in the schema metadata.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict
from itertools import chain
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from features.customer_state import CustomerHistory
from features.terminal_state import TerminalHistory

if TYPE_CHECKING:
    from features.behaviour import BehaviourState

#: Layout version written; 1 (no customer transaction ids) is still read.
FORMAT_VERSION = 2
_READABLE = (1, 2)
STR = pa.string()
_PARTS = ("customers", "terminals", "pending_labels")


def encode_state(state: BehaviourState) -> bytes:
    """Serialise a :class:`~features.behaviour.BehaviourState` to bytes."""
    customers = state.customers.histories
    terminals = state.terminals.histories
    pending = state.terminals.pending_labels
    flat = chain.from_iterable
    tables = {
        "customers": pa.table(
            {
                "key": pa.array(flat([k] * len(h.times) for k, h in customers.items()), STR),
                "time_us": pa.array(flat(h.times for h in customers.values()), pa.int64()),
                "amount": pa.array(flat(h.amounts for h in customers.values()), pa.float64()),
                "terminal": pa.array(flat(h.terminals for h in customers.values()), pa.string()),
                "category": pa.array(flat(h.categories for h in customers.values()), pa.string()),
                "transaction_id": pa.array(
                    flat(h.transaction_ids for h in customers.values()), pa.string()
                ),
            }
        ),
        "terminals": pa.table(
            {
                "key": pa.array(flat([k] * len(h.times) for k, h in terminals.items()), STR),
                "time_us": pa.array(flat(h.times for h in terminals.values()), pa.int64()),
                "transaction_id": pa.array(
                    flat(h.transaction_ids for h in terminals.values()), pa.string()
                ),
                "fraud": pa.array(flat(h.frauds for h in terminals.values()), pa.int8()),
            }
        ),
        "pending_labels": pa.table(
            {
                "transaction_id": pa.array(list(pending), pa.string()),
                "time_us": pa.array([v[0] for v in pending.values()], pa.int64()),
                "terminal": pa.array([v[1] for v in pending.values()], pa.string()),
                "fraud": pa.array([v[2] for v in pending.values()], pa.int8()),
            }
        ),
    }
    header = {
        "format": FORMAT_VERSION,
        "config": asdict(state.config),
        "watermark_us": state.watermark_us,
        "expiry_floor_us": state.expiry_floor_us,
    }
    sink = io.BytesIO()
    for name in _PARTS:
        table = tables[name]
        meta = {"part": name, "header": json.dumps(header)}
        table = table.replace_schema_metadata(meta)
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
    return sink.getvalue()


def decode_state(data: bytes, cls: Any) -> BehaviourState:
    """Rebuild a state from :func:`encode_state` bytes; ``cls`` is BehaviourState."""
    from features.behaviour import BehaviourConfig

    reader_input = pa.BufferReader(data)
    tables: dict[str, pa.Table] = {}
    header: dict[str, Any] = {}
    for _ in _PARTS:
        with pa.ipc.open_stream(reader_input) as reader:
            table = reader.read_all()
        meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
        header = json.loads(meta["header"])
        tables[meta["part"]] = table
    if header.get("format") not in _READABLE:
        raise ValueError(f"unsupported behavioural state format {header.get('format')!r}")
    config = header["config"]
    config["windows_days"] = tuple(config["windows_days"])
    state = cls(BehaviourConfig(**config))
    state.watermark_us = header["watermark_us"]
    state.expiry_floor_us = header.get("expiry_floor_us")
    state._last_sweep_us = state.watermark_us

    c = tables["customers"].to_pydict()
    txids = c.get("transaction_id") or [""] * len(c["key"])  # format 1 kept none
    for key, t, a, term, cat, txid in zip(
        c["key"], c["time_us"], c["amount"], c["terminal"], c["category"], txids, strict=True
    ):
        hist = state.customers.histories.get(key)
        if hist is None:
            hist = state.customers.histories[key] = CustomerHistory()
        hist.times.append(t)
        hist.amounts.append(a)
        hist.terminals.append(term)
        hist.categories.append(cat)
        hist.transaction_ids.append(txid)

    tm = tables["terminals"].to_pydict()
    for key, t, txid, fraud in zip(
        tm["key"], tm["time_us"], tm["transaction_id"], tm["fraud"], strict=True
    ):
        thist = state.terminals.histories.get(key)
        if thist is None:
            thist = state.terminals.histories[key] = TerminalHistory()
        thist.times.append(t)
        thist.transaction_ids.append(txid)
        thist.frauds.append(fraud)

    p = tables["pending_labels"].to_pydict()
    for txid, t, term, fraud in zip(
        p["transaction_id"], p["time_us"], p["terminal"], p["fraud"], strict=True
    ):
        state.terminals.pending_labels[txid] = (t, term, fraud)
    return state
