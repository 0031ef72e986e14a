"""The terminal stage's one frozen settings object; the command line fills it at the edge."""

from __future__ import annotations

from dataclasses import dataclass

from features.errors import InputError
from ingest.kafka_io import DLQ_TOPIC, LABELS_TOPIC, SCORER_GROUP, TRANSACTIONS_TOPIC
from scoring.terminal_stage.protocol import STATE_TOPIC

#: The stage's consumer group; also the key of its checkpoint.
STAGE_GROUP = "fraud-terminal-stage"


@dataclass(frozen=True)
class StageSettings:
    """What the terminal stage reads and writes, and how it batches, publishes and checkpoints."""

    topic: str = TRANSACTIONS_TOPIC
    labels_topic: str | None = LABELS_TOPIC
    state_topic: str = STATE_TOPIC
    dlq_topic: str = DLQ_TOPIC
    group_id: str = STAGE_GROUP
    #: The scorers' consumer group: their partition checkpoints bound what may expire.
    scorer_group: str = SCORER_GROUP
    max_batch: int = 5000
    max_wait_ms: int = 50
    #: Progress that moved without new entries is published at most this often.
    publish_idle_seconds: float = 0.1
    #: And, changed or not, at least this often: a scorer that just started waits for it.
    heartbeat_seconds: float = 1.0
    checkpoint_seconds: float = 30.0
    checkpoint_timeout_seconds: float = 120.0
    #: 0: keep the terminal history any scorer partition may still need (exact).
    #: N: forget history more than N days (plus the look-back) behind the newest
    #: transaction, even if a scorer trailing that far still needs it (bounded memory).
    retention_cap_days: int = 0
    exit_when_idle_seconds: float | None = None
    retry_initial_seconds: float = 0.2
    retry_max_seconds: float = 10.0
    rebuild_state: bool = False
    #: While its checkpoint cannot be restored, how often the stage looks again.
    hold_check_seconds: float = 5.0

    def __post_init__(self) -> None:
        if self.max_batch <= 0 or self.max_wait_ms < 0:
            raise InputError("--max-batch must be > 0 and --max-wait-ms >= 0")
        if self.checkpoint_seconds <= 0 or self.publish_idle_seconds <= 0:
            raise InputError("--checkpoint-seconds and --publish-idle-seconds must be > 0")
        if self.retention_cap_days < 0:
            raise InputError("--retention-cap-days must be >= 0")
        if self.state_topic in (self.topic, self.labels_topic):
            raise InputError("the state topic must differ from the input topics")
