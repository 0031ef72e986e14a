"""Hyper-parameters and run settings of one training, free of TensorFlow imports.

Kept apart from :mod:`training.trainer` so the command line can build and
check them without loading TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters and run settings of one training."""

    epochs: int = 20
    batch_size: int = 512
    learning_rate: float = 1e-3
    hidden_units: tuple[int, ...] = (128, 64)
    dropout: float = 0.1
    positive_weight: float = 5.0
    patience: int = 3
    mixed_precision: bool = False
    seed: int = 0
    logs_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 0:
            raise ValueError("epochs and batch_size must be >= 1, patience >= 0")
        if self.positive_weight <= 0:
            raise ValueError(f"positive_weight must be > 0, got {self.positive_weight}")
