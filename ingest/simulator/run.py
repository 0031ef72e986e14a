"""Simulate and write in one call, with the figures ``fraud simulate`` prints."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features import spec
from features.errors import InputError
from features.timebase import DAY_US, to_epoch_us
from ingest import lake
from ingest.simulator import LabelConfig, SimulationConfig, simulate
from ingest.simulator.labels import HANDBOOK, REALISTIC, check_protocol
from ingest.writers import Format, check_target, write_transactions


def label_figures(labels: pa.Table) -> dict[str, Any]:
    """Labels by source and value, and the chargebacks' delays (days): what the bank got."""
    source = labels.column(spec.LABEL_SOURCE)
    value = labels.column(spec.LABEL_KEY)
    counts: dict[str, int] = {}
    for name in ("chargeback", "analyst"):
        mine = pc.equal(source, name)
        for label, word in ((1, "fraud"), (0, "genuine")):
            n = pc.sum(pc.and_(mine, pc.equal(value, label))).as_py() or 0
            if n:
                counts[f"{name}_{word}"] = n
    charged = labels.filter(pc.equal(source, "chargeback"))
    delay = (to_epoch_us(charged.column(spec.LABELLED_AT))
             - to_epoch_us(charged.column(spec.TIMESTAMP))) / DAY_US
    figures: dict[str, Any] = {"labels": labels.num_rows, "labels_by_source": counts}
    if len(delay):
        figures["chargeback_delay_days"] = {
            "median": round(float(np.median(delay)), 2),
            "p95": round(float(np.percentile(delay, 95)), 2),
            "share_after_30": round(float(np.mean(delay >= 30)), 4),
        }
    return figures


def simulate_to(
    config: SimulationConfig,
    out: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    on_step: Callable[[str], None] | None = None,
    label_protocol: str = HANDBOOK,
    label_config: LabelConfig | None = None,
) -> dict[str, Any]:
    """Simulate ``config``, write the transactions to ``out``, return the figures.

    ``label_protocol``: ``handbook`` writes labelled transactions (each label
    known with its transaction); ``realistic`` writes a lake (``out`` must be
    a directory): the transactions without labels and every label as the bank
    gets it, with ``labelled_at`` and ``source`` (docs/labels.md).
    ``on_step`` is told what is being done next (for progress display).
    """
    step = on_step or (lambda _: None)
    check_protocol(label_protocol)
    fmt = check_target(out, overwrite=overwrite)
    if label_protocol == REALISTIC and fmt is not Format.PARTITIONED:
        raise InputError(f"{out}: the realistic label protocol writes a lake: give a directory")
    started = time.perf_counter()
    bank = f"{config.customers} customers, {config.terminals} terminals, {config.days} days"
    step(f"simulating {bank}")
    result = simulate(config)
    labels_figures: dict[str, Any] = {}
    if label_protocol == REALISTIC:
        labels = result.realistic_labels(label_config)
        labels_figures = label_figures(labels)
    simulated = time.perf_counter()
    step(f"writing {result.table.num_rows} transactions to {out}")
    if label_protocol == REALISTIC:
        transactions = result.table.drop_columns([spec.LABEL_KEY])
        files = lake.write_simulated(Path(out), transactions, labels)
    else:
        files = write_transactions(result.table, out, overwrite=overwrite)
    finished = time.perf_counter()
    seconds = finished - started
    return {
        **result.figures(),
        "out": str(out),
        "format": "lake" if label_protocol == REALISTIC else fmt.name.lower(),
        "label_protocol": label_protocol,
        **labels_figures,
        "files": len(files),
        "simulate_seconds": round(simulated - started, 3),
        "write_seconds": round(finished - simulated, 3),
        "seconds": round(seconds, 3),
        "rows_per_s": round(result.table.num_rows / seconds) if seconds > 0 else None,
    }
