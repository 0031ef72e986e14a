"""Behavioural features: batch replay rows/s and streaming events/s on the simulator's default bank.

Run: .venv/bin/python -m benchmarks.bench_features [--customers 5000 --terminals 10000 --days 183]
Prints one JSON line of figures.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from features.behaviour import BehaviourState, compute_features
from features.timebase import DAY_US, to_epoch_us
from ingest.simulator import SimulationConfig, simulate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--terminals", type=int, default=10000)
    parser.add_argument("--days", type=int, default=183)
    parser.add_argument("--stream-days", type=int, default=7)
    parser.add_argument("--batch-size", type=int, default=500, help="streaming micro-batch")
    args = parser.parse_args()

    table = simulate(SimulationConfig(args.customers, args.terminals, args.days)).table
    figures: dict[str, object] = {"rows": table.num_rows}

    for workers in (1, 2):
        started = time.perf_counter()
        compute_features(table, workers=workers)
        seconds = time.perf_counter() - started
        figures[f"batch_rows_per_s_{workers}_workers"] = round(table.num_rows / seconds)

    times = to_epoch_us(table.column("timestamp"))
    cut = int(np.searchsorted(times, times[-1] - args.stream_days * DAY_US))
    state = BehaviourState()
    started = time.perf_counter()
    state.warm(table.slice(0, cut))
    figures["warm_rows_per_s"] = round(cut / (time.perf_counter() - started))
    live = table.slice(cut).drop(["is_fraud"])
    started = time.perf_counter()
    for start in range(0, live.num_rows, args.batch_size):
        state.update_and_read(live.slice(start, args.batch_size))
    seconds = time.perf_counter() - started
    figures["stream_events"] = live.num_rows
    figures[f"stream_events_per_s_batch_{args.batch_size}"] = round(live.num_rows / seconds)
    started = time.perf_counter()
    blob = state.to_bytes()
    figures["state_bytes"] = len(blob)
    figures["state_serialise_s"] = round(time.perf_counter() - started, 3)
    figures["state_size"] = state.size()
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
