"""Speed of the synthetic bank: simulate the default bank, write it in every format.

Run: ``.venv/bin/python benchmarks/bench_simulator.py [--customers N --terminals N --days N]``.
Prints one JSON object of figures as the last line.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from ingest.simulator import SimulationConfig, simulate
from ingest.writers import write_transactions

FORMATS = {"parquet": "tx.parquet", "partitioned": "lake", "csv": "tx.csv", "jsonl": "tx.jsonl"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--terminals", type=int, default=10000)
    parser.add_argument("--days", type=int, default=183)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3, help="simulations to time (best kept)")
    args = parser.parse_args()
    config = SimulationConfig(args.customers, args.terminals, args.days, seed=args.seed)

    timings, cpu = [], []
    for _ in range(args.repeat):
        started, cpu_started = time.perf_counter(), time.process_time()
        result = simulate(config)
        timings.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
    rows = result.table.num_rows
    figures: dict[str, Any] = {
        **result.figures(),
        "simulate_seconds": round(min(timings), 3),
        "simulate_rows_per_s": round(rows / min(timings)),
        # CPU time is what a busy shared machine cannot inflate.
        "simulate_cpu_seconds": round(min(cpu), 3),
    }
    write_seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for fmt, name in FORMATS.items():
            started = time.perf_counter()
            files = write_transactions(result.table, Path(tmp) / name)
            write_seconds[fmt] = elapsed = time.perf_counter() - started
            figures[f"write_{fmt}_seconds"] = round(elapsed, 3)
            figures[f"write_{fmt}_rows_per_s"] = round(rows / elapsed)
            figures[f"write_{fmt}_mb"] = round(sum(f.stat().st_size for f in files) / 1e6, 1)
    # What `fraud simulate --out tx.parquet` spends, without the interpreter's start-up.
    total = min(timings) + write_seconds["parquet"]
    figures["seconds"] = round(total, 3)
    figures["rows_per_s"] = round(rows / total)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
