"""When a scorer may score: the stage's progress against the inputs' end offsets.

The rule (docs/scale-out.md, "What bounds exactness"): for every input
partition, the stage has reached the event time the batch needs, or has read
up to the end offset the scorer asked the broker for after fetching the batch.
"""

from __future__ import annotations

import threading
import time

from scoring.terminal_stage.protocol import (
    InputEnds,
    PartitionProgress,
    StageProgress,
    StateMessage,
    decode,
    encode,
)
from tests.unit.scorer_fakes import FakeSource, make_scorer, tx_message

DAY = 86_400_000_000
TOPICS = ("transactions", "fraud-labels")


def _progress(**parts: PartitionProgress) -> StageProgress:
    return StageProgress({int(k[1:]): v for k, v in parts.items()}, {}, TOPICS)


def test_event_time_reached_on_every_partition_covers_without_asking_the_broker():
    progress = _progress(p0=PartitionProgress(10 * DAY), p1=PartitionProgress(9 * DAY))
    assert progress.covers(16 * DAY, 7 * DAY, 0)
    assert not progress.covers(16 * DAY + 1, 7 * DAY, 0)  # p1 is one µs short


def test_a_partition_read_to_the_end_offset_asked_covers_whatever_its_event_time():
    progress = _progress(p0=PartitionProgress(10 * DAY, 40), p1=PartitionProgress(2 * DAY, 12))
    ends = InputEnds({0: 40, 1: 12}, {}, TOPICS)
    assert progress.covers(30 * DAY, 7 * DAY, 0, ends)
    behind = InputEnds({0: 40, 1: 13}, {}, TOPICS)  # one message the stage has not read
    assert not progress.covers(30 * DAY, 7 * DAY, 0, behind)
    assert progress.lag_us(30 * DAY, 7 * DAY, 0, behind) == 21 * DAY


def test_a_partition_the_broker_names_but_the_stage_does_not_report_is_not_covered():
    progress = _progress(p0=PartitionProgress(10 * DAY, 40))
    assert not progress.covers(30 * DAY, 7 * DAY, 0, InputEnds({0: 40, 1: 0}, {}, TOPICS))
    assert progress.covers(30 * DAY, 7 * DAY, 0, InputEnds({0: 40}, {}, TOPICS))


def test_a_stage_reading_other_topics_never_covers_and_says_so():
    progress = _progress(p0=PartitionProgress(10 * DAY, 40))
    other = InputEnds({0: 40}, {}, ("payments", "fraud-labels"))
    assert progress.reads_other_topics(other)
    assert not progress.covers(1, 7 * DAY, 0, other)


def test_progress_round_trips_and_a_version_1_message_reads_by_event_time_alone():
    progress = StageProgress(
        {0: PartitionProgress(5, 7)}, {0: PartitionProgress(None, 0)}, TOPICS
    )
    from features.behaviour import BehaviourConfig

    message = StateMessage(BehaviourConfig(), "e", progress, None, [])
    assert decode(encode(message)).progress == progress
    old = StageProgress.from_json(
        {"transactions": {"0": {"reached_us": 5, "drained_at_ms": 99}}, "labels": {}}
    )
    assert old == StageProgress({0: PartitionProgress(5, None)}, {}, None)


def test_the_scorer_holds_an_event_while_another_partition_has_messages_the_stage_has_not_read():
    """Days of events published at once: Kafka times tie, offsets do not."""
    mine = [tx_message(i, 95) for i in range(3)]
    unread = [tx_message(i, 10, customer="C2", partition=1) for i in range(4)]
    source = FakeSource(mine, others=unread)
    scorer, _, _, store, _ = make_scorer(mine, source=source, stage_messages=mine)
    runner = threading.Thread(target=scorer.run)
    runner.start()
    time.sleep(1.5)
    scorer.stop()
    runner.join(10)
    assert not runner.is_alive()
    assert store.alerts == {}, "scored before the stage read the other partition"
    assert source.end_queries >= 1

    source = FakeSource(mine, others=unread)
    scorer, _, _, store, _ = make_scorer(mine, source=source, stage_messages=mine + unread)
    scorer.run()
    assert sorted(store.alerts) == ["t0", "t1", "t2"]


# -- what the stage may forget -------------------------------------------------------------


class Marks:
    """The scorers' newest checkpoint rows: (watermark, next offset) per partition."""

    def __init__(self, marks=None) -> None:
        self.value = marks or {}

    def marks(self):
        return dict(self.value)


def _daily(days: int, partition: int = 0):
    """One transaction a day on terminal T1 (``tx_message`` counts offsets in minutes)."""
    return [
        tx_message(d * 1440, 10, partition=partition)._replace(offset=d) for d in range(days)
    ]


def _stage_over(messages, floor, **settings):
    from features.behaviour import BehaviourConfig
    from scoring.terminal_stage.service import TerminalStage
    from scoring.terminal_stage.settings import StageSettings
    from tests.unit.scorer_fakes import FakeDeadLetters, FakePublisher, FakeStore

    stage = TerminalStage(
        StageSettings(exit_when_idle_seconds=0, checkpoint_seconds=1e-9, **settings),
        BehaviourConfig(),
        FakeSource(messages, topics=("transactions", "fraud-labels")),
        FakePublisher(), FakeStore(), floor, FakeDeadLetters(),
    )
    stage.run()
    return stage


def _kept_days(stage) -> int:
    return len(stage.state.histories["T1"].times) if "T1" in stage.state.histories else 0


def test_the_stage_forgets_nothing_while_a_partition_has_no_scorer_checkpoint():
    """A bulk replay read by the stage long before the first scorer checkpoint: all kept."""
    stage = _stage_over(_daily(120), Marks())
    assert stage.expiry_floor_us is None and _kept_days(stage) == 120


def test_the_stage_keeps_the_look_back_of_the_slowest_scorer_partition():
    messages = _daily(120)
    watermark = int(messages[50].timestamp_ms) * 1000  # the scorer is at day 50
    stage = _stage_over(messages, Marks({("transactions", 0): (watermark, 51)}))
    horizon_days = stage.state.horizon_us // DAY
    assert stage.expiry_floor_us == watermark - stage.state.horizon_us
    assert _kept_days(stage) == 120 - (50 - horizon_days)


def test_a_caught_up_partition_lets_the_stage_forget_up_to_its_own_look_back():
    messages = _daily(120)
    old = int(messages[10].timestamp_ms) * 1000  # an old watermark, but the row is at the end
    stage = _stage_over(messages, Marks({("transactions", 0): (old, 120)}))
    head = int(messages[-1].timestamp_ms) * 1000
    assert stage.expiry_floor_us == head - stage.state.horizon_us


def test_a_retention_cap_forgets_what_a_trailing_scorer_needs_and_counts_it():
    messages = _daily(120)
    stage = _stage_over(messages, Marks(), retention_cap_days=20)
    head = int(messages[-1].timestamp_ms) * 1000
    assert stage.expiry_floor_us == head - 20 * DAY - stage.state.horizon_us
    assert stage.metrics.stage_retention_capped._value.get() >= 1
