"""Benchmark `fraud train` on the Fraud Detection Handbook protocol, speed and quality.

Protocol (Handbook chapter 5): train on 7 days, label delay 7 days, test on the
7 days that follow the delay; history before the training window feeds the
behavioural features. With ``--weeks N`` the protocol is repeated on N
consecutive weeks and the mean is reported. The data is the simulator's
default bank (5,000 customers, 10,000 terminals, 183 days, ~1.75M rows)
unless ``--input`` is given.

``--label-protocol realistic`` simulates labels as a bank gets them
(chargebacks days to weeks late, analysts' decisions within hours): the job
trains on the labels known by ``train_end`` + the delay, the features use
each label from when it was known, and the test uses every label
(docs/labels.md).

Prints, per week, the wall time of each stage, TFT rows/s and training
examples/s, and the test figures from ``fraud evaluate``'s own function; the
last line is a JSON summary.

    .venv/bin/python benchmarks/bench_train.py [--weeks 3] [--input PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np

HANDBOOK = {"auc_roc": 0.879, "average_precision": 0.687, "card_precision_at_100": 0.305}


def _simulate(directory: Path, label_protocol: str = "handbook") -> Path:
    from ingest.simulator import SimulationConfig, simulate
    from ingest.simulator.run import simulate_to
    from ingest.writers import write_transactions

    if label_protocol == "realistic":  # a lake: labels as a bank gets them (docs/labels.md)
        path = directory / "bank"
        simulate_to(SimulationConfig(), path, label_protocol="realistic")
        return path
    path = directory / "bank.parquet"
    write_transactions(simulate(SimulationConfig()).table, path)
    return path


def _week(
    input_path: Path, train_start: date, work: Path, train: dict[str, Any]
) -> dict[str, Any]:
    from training.evaluate_job import evaluate
    from training.settings import TrainConfig
    from training.train_job import TrainJobConfig, run

    train_end = train_start + timedelta(days=6)
    test_start = train_end + timedelta(days=8)
    config = TrainJobConfig(
        input_path=input_path, train_start=train_start, train_end=train_end,
        model_dir=work / "models", work_dir=work / f"work-{train_start}",
        train=TrainConfig(**train),
    )
    started = time.perf_counter()
    result = run(config, progress=lambda m: print(f"  {m}", file=sys.stderr))
    wall = time.perf_counter() - started
    timings = result.timings
    meta = result.metadata.details
    window_rows = meta["rows"]["train"]["rows"] + meta["rows"]["validation"]["rows"]
    pipeline_s = next(v for k, v in timings.items() if k.startswith("features + TFT"))
    features_s = timings.get("behavioural_features (in the pipeline)", 0.0)
    training = meta["training"]
    figures = evaluate(input_path, test_start, test_start + timedelta(days=6), config.model_dir,
                       version=int(result.export_path.name))
    return {
        "train": f"{train_start}..{train_end}",
        "test_period": f"{test_start}..{test_start + timedelta(days=6)}",
        "wall_s": round(wall, 1),
        "stages_s": {k: v for k, v in timings.items() if k != "rows_read"},
        "rows_read": timings["rows_read"],
        "training_rows": window_rows,
        "behavioural_features_rows_per_s": round(timings["rows_read"] / features_s)
        if features_s else None,
        "tft_rows_per_s": round(window_rows / max(pipeline_s - features_s, 1e-9)),
        "training_examples_per_s": round(
            meta["rows"]["train"]["rows"] * training["epochs_run"] / timings["training"]
        ),
        "epochs_run": training["epochs_run"],
        "test": {k: figures[k] for k in HANDBOOK} | {"transactions": figures["transactions"],
                                                     "frauds": figures["frauds"]},
    }


def _overrides(assignments: list[str]) -> dict[str, Any]:
    """``NAME=VALUE`` strings as TrainConfig fields, typed like the field's default."""
    from training.settings import TrainConfig

    defaults = TrainConfig()
    out: dict[str, Any] = {}
    for assignment in assignments:
        name, _, value = assignment.partition("=")
        if not hasattr(defaults, name):
            raise SystemExit(f"--set {assignment}: TrainConfig has no field {name!r}")
        default = getattr(defaults, name)
        if isinstance(default, tuple):
            out[name] = tuple(int(v) for v in value.split(","))
        elif isinstance(default, bool):
            out[name] = value.lower() in ("1", "true", "yes")
        else:
            out[name] = type(default)(value)
    return out


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, help="labelled transactions (default: simulate)")
    parser.add_argument("--first-train-start", type=date.fromisoformat,
                        default=date(2018, 7, 25), help="the Handbook's first training day")
    parser.add_argument("--weeks", type=int, default=1, help="consecutive test weeks")
    parser.add_argument("--label-protocol", choices=("handbook", "realistic"),
                        default="handbook",
                        help="simulated labels: known with each transaction (the Handbook) or "
                             "as a bank gets them, chargebacks weeks late (docs/labels.md)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--positive-weight", type=float, default=5.0)
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="another TrainConfig field, e.g. batch_size=128 or "
                             "hidden_units=256,128 (repeatable)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        work = Path(tmp)
        input_path = args.input or _simulate(work, args.label_protocol)
        weeks = []
        for k in range(args.weeks):
            start = args.first_train_start + timedelta(days=7 * k)
            print(f"week {k + 1}: training from {start}", file=sys.stderr)
            train = {"epochs": args.epochs, "positive_weight": args.positive_weight,
                     **_overrides(args.set)}
            week = _week(input_path, start, work, train)
            print(json.dumps(week), flush=True)
            weeks.append(week)
    mean = {m: round(float(np.mean([w["test"][m] for w in weeks])), 4) for m in HANDBOOK}
    print(json.dumps({
        "label_protocol": "input" if args.input else args.label_protocol,
        "weeks": len(weeks),
        "mean_test": mean,
        "handbook_best": HANDBOOK,
        "beats_handbook": {m: mean[m] > HANDBOOK[m] for m in HANDBOOK},
        "mean_train_wall_s": round(float(np.mean([w["wall_s"] for w in weeks])), 1),
        "max_train_wall_s": max(w["wall_s"] for w in weeks),
    }))


if __name__ == "__main__":
    main()
