"""Simulate and write in one call, with the figures ``fraud simulate`` prints."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from ingest.simulator import SimulationConfig, simulate
from ingest.writers import check_target, write_transactions


def simulate_to(
    config: SimulationConfig,
    out: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    on_step: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Simulate ``config``, write the transactions to ``out``, return the figures.

    ``on_step`` is told what is being done next (for progress display).
    """
    step = on_step or (lambda _: None)
    fmt = check_target(out, overwrite=overwrite)
    started = time.perf_counter()
    bank = f"{config.customers} customers, {config.terminals} terminals, {config.days} days"
    step(f"simulating {bank}")
    result = simulate(config)
    simulated = time.perf_counter()
    step(f"writing {result.table.num_rows} transactions to {out}")
    files = write_transactions(result.table, out, overwrite=overwrite)
    finished = time.perf_counter()
    seconds = finished - started
    return {
        **result.figures(),
        "out": str(out),
        "format": fmt.name.lower(),
        "files": len(files),
        "simulate_seconds": round(simulated - started, 3),
        "write_seconds": round(finished - simulated, 3),
        "seconds": round(seconds, 3),
        "rows_per_s": round(result.table.num_rows / seconds) if seconds > 0 else None,
    }
