"""The scorer's one frozen settings object; the command line fills it at the edge."""

from __future__ import annotations

from dataclasses import dataclass

from features.errors import InputError
from ingest.kafka_io import DLQ_TOPIC, LABELS_TOPIC, SCORER_GROUP, TRANSACTIONS_TOPIC
from scoring.terminal_stage.protocol import STATE_TOPIC
from scoring.terminal_stage.settings import STAGE_GROUP


@dataclass(frozen=True)
class ScorerSettings:
    """What the streaming scorer reads, where it writes, and how it batches and retries."""

    topic: str = TRANSACTIONS_TOPIC
    #: Read by the terminal stage (not the scorer), whose progress on it the scorer waits for.
    labels_topic: str | None = LABELS_TOPIC
    dlq_topic: str = DLQ_TOPIC
    group_id: str = SCORER_GROUP
    #: The terminal stage's state topic, and its consumer group (its checkpoint's key).
    state_topic: str = STATE_TOPIC
    stage_group: str = STAGE_GROUP
    #: Fixed alert threshold; ``None`` means the one chosen at training time.
    threshold: float | None = None
    max_batch: int = 2000
    max_wait_ms: int = 50
    checkpoint_seconds: float = 30.0
    exit_when_idle_seconds: float | None = None
    retry_initial_seconds: float = 0.2
    retry_max_seconds: float = 10.0
    #: A forked checkpoint writer still running after this is killed (and retried).
    checkpoint_timeout_seconds: float = 120.0
    #: How often the scorer asks the model server whether a new version is served.
    model_follow_seconds: float = 5.0
    #: The TF Serving version label to score with (None: the latest served version).
    model_label: str | None = "stable"
    #: The label of the canary version, and the share of events (by transaction id) it scores.
    canary_label: str = "canary"
    canary_share: float = 0.0
    #: While holding (no usable model or state), how often it checks again.
    hold_check_seconds: float = 5.0
    #: Without a usable checkpoint: rebuild the state from history and replay the
    #: topic from its beginning, instead of holding. Ignored when one is usable.
    rebuild_state: bool = False
    #: Compute reason codes for each alert (one extra model call per batch of alerts).
    reason_codes: bool = True
    #: At most this many alerts of one batch get reason codes (the rest none, counted).
    max_reason_rows: int = 1000

    @property
    def stale_checkpoint_seconds(self) -> float:
        """Checkpoint age past which the scorer reports itself degraded."""
        interval, timeout = self.checkpoint_seconds, self.checkpoint_timeout_seconds
        return max(3 * interval, interval + timeout)

    def __post_init__(self) -> None:
        if self.max_batch <= 0 or self.max_wait_ms < 0:
            raise InputError("--max-batch must be > 0 and --max-wait-ms >= 0")
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise InputError(f"--threshold must be within [0, 1], got {self.threshold}")
        if self.checkpoint_seconds <= 0:
            raise InputError("--checkpoint-seconds must be > 0")
        if self.checkpoint_timeout_seconds <= 0 or self.hold_check_seconds <= 0:
            raise InputError("--checkpoint-timeout-seconds and hold checks must be > 0")
        if not 0.0 <= self.canary_share <= 1.0:
            raise InputError(f"--canary-share must be within [0, 1], got {self.canary_share}")
        if self.labels_topic == self.topic or self.dlq_topic == self.topic:
            raise InputError("the labels and dead-letter topics must differ from --topic")
