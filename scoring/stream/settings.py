"""The scorer's one frozen settings object; the command line fills it at the edge."""

from __future__ import annotations

from dataclasses import dataclass

from features.errors import InputError


@dataclass(frozen=True)
class ScorerSettings:
    """What the streaming scorer reads, where it writes, and how it batches and retries."""

    topic: str = "transactions"
    labels_topic: str | None = "fraud-labels"
    dlq_topic: str = "transactions.dlq"
    group_id: str = "fraud-scorer"
    #: Fixed alert threshold; ``None`` means the one chosen at training time.
    threshold: float | None = None
    max_batch: int = 2000
    max_wait_ms: int = 50
    checkpoint_seconds: float = 30.0
    exit_when_idle_seconds: float | None = None
    retry_initial_seconds: float = 0.2
    retry_max_seconds: float = 10.0

    def __post_init__(self) -> None:
        if self.max_batch <= 0 or self.max_wait_ms < 0:
            raise InputError("--max-batch must be > 0 and --max-wait-ms >= 0")
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise InputError(f"--threshold must be within [0, 1], got {self.threshold}")
        if self.checkpoint_seconds <= 0:
            raise InputError("--checkpoint-seconds must be > 0")
        if self.labels_topic == self.topic or self.dlq_topic == self.topic:
            raise InputError("the labels and dead-letter topics must differ from --topic")
