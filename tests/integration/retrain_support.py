"""Helpers of the retraining tests: a simulated bank, a toy trainer, the CLI in-process.

The toy trainer stands in for ``training.train_job.run``: it exports a model
that scores one input, the terminal's 7-day fraud risk, with a weight. A
positive weight ranks risky terminals first (a useful model); a negative one
is the degraded model, worse on every metric. The evaluation stays real.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from typer.testing import CliRunner

from features.model_dir import ModelMetadata, read_metadata, write_metadata
from ingest.simulator import SimulationConfig, simulate
from ingest.writers import write_transactions
from tests.fixtures.model_server import export_toy_model

# 55 days from 2018-04-01: newest 2018-05-25, labels known through 05-18 (7-day delay),
# evaluation 05-14..05-18, training 05-10..05-13, history from 04-03 (37 days).
FAST_DAYS = 55
FAST_WINDOW = ["--train-days", "4", "--eval-days", "5"]
GOOD, DEGRADED = 5.0, -5.0
SIGNAL = "terminal_risk_7d"


def fast_bank(lake: Path) -> Path:
    """A small simulated bank written as date partitions."""
    table = simulate(SimulationConfig(customers=300, terminals=600, days=FAST_DAYS, seed=5)).table
    write_transactions(table, lake)
    return lake


def toy_signal_scores(inputs: dict[str, np.ndarray], weight: float) -> np.ndarray:
    """What a toy trainer's export of ``weight`` returns, in numpy."""
    x = inputs[SIGNAL].astype(np.float64)
    return (1.0 / (1.0 + np.exp(-(weight * x - 1.0)))).astype(np.float32)


class ToyTrainer:
    """Stands in for training.train_job.run: exports a toy model of ``weight`` into staging."""

    def __init__(self) -> None:
        self.weight = GOOD
        self.jobs: list[Any] = []

    def __call__(self, job: Any, progress: Any = None) -> Any:
        from training.train_job import TrainJobResult

        self.jobs.append(job)
        path = export_toy_model(job.model_dir, 1, self.weight, warmup=False, signal=SIGNAL)
        metadata = ModelMetadata(threshold=0.5, train_start=job.train_start,
                                 train_end=job.train_end, details={"toy_weight": self.weight})
        write_metadata(path, metadata)
        return TrainJobResult(path, read_metadata(job.model_dir, 1), {})


def run_retrain(bank: Path, model_dir: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    """``fraud retrain`` in this process: exit code, the decision (JSON last), the output."""
    from fraud.cli import app

    result = CliRunner().invoke(app, ["retrain", "--input", str(bank), "--model-dir",
                                      str(model_dir), *args])
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines, result.output
    return result.exit_code, json.loads(lines[-1]), result.output


def models(*args: str) -> dict[str, Any]:
    """``fraud models ...`` in this process; its JSON (last line)."""
    from fraud.cli import app

    result = CliRunner().invoke(app, ["models", *args])
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))
