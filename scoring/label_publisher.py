"""``fraud labels publish``: the analysts' decisions onto the labels topic, exactly once in effect.

Every final decision recorded in the alerts database (``decisions``, written
by the workbench and ``fraud alerts label``) becomes one ``fraud-labels``
message with ``source = "analyst"``, ``labelled_at`` = when it was decided,
``is_fraud`` = 1 for a confirmed fraud, 0 for a false positive.

**The guarantee** (docs/labels.md). The publisher keeps its position in the
database (``label_publisher_positions``: the last decision id sent, and the
ids below it not seen yet). One round reads the decisions after the
position, sends them, waits for the broker's acknowledgement of every one
(``acks=all``) and only then advances the position, in one transaction. So:

- nothing is skipped: a decision is behind the position only once acknowledged;
- after a crash (``kill -9``) between the acknowledgement and the position's
  commit, the round's decisions are sent again: **at least once on the wire**,
  each with the same deterministic key ``<transaction id>:<decision id>`` and
  the same value, so a consumer can drop the repeat by key; the terminal
  state's label rule (:func:`features.terminal_state.labelled_period`) is
  unchanged by a repeated label anyway: **exactly once in effect**;
- ids are given when a decision is inserted, not when it commits, so a
  decision may commit after a higher id was published: ids skipped below the
  position are kept as gaps and looked for again for ``gap_seconds`` (5
  minutes: far longer than a review's transaction) before being given up (a
  rolled-back insert leaves a gap that never fills).

Each message goes to the partition of its transaction id (the partition the
simulator's and the chargebacks' labels of that transaction use), so all
labels of a transaction stay in order on one partition. Run one publisher
per ``--name`` (position row).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from features.spec import (
    CUSTOMER_ID,
    LABEL_KEY,
    TERMINAL_ID,
    TIMESTAMP,
    TRANSACTION_ID,
)
from ingest.kafka_io import (
    DEFAULT_PARTITIONS,
    LABELS_TOPIC,
    KafkaSettings,
    encode_label,
    ensure_topics,
    make_producer,
)
from scoring.db.workbench_models import Decision, LabelPublisherPosition

SOURCE = "analyst"
CONFIRMED = "confirmed_fraud"


@dataclass(frozen=True)
class PublisherConfig:
    """Where to publish, and how."""

    topic: str = LABELS_TOPIC
    #: The position row: one publisher per name.
    name: str = "default"
    batch: int = 500
    follow: bool = False
    interval_seconds: float = 2.0
    gap_seconds: float = 300.0
    partitions: int = DEFAULT_PARTITIONS
    send_timeout_seconds: float = 30.0


@dataclass
class PublishSummary:
    """What a run published (the command's last line)."""

    published: int = 0
    rounds: int = 0
    last_id: int = 0
    gaps: int = 0
    resumed_from: int = 0
    topic: str = ""
    seconds: float = 0.0
    stopped: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Plain figures."""
        values = asdict(self)
        values.pop("extra")
        return {**values, **self.extra}


def message_key(decision: Decision) -> bytes:
    """``<transaction id>:<decision id>``: the same for every send of one decision."""
    return f"{decision.transaction_id}:{decision.id}".encode()


def label_of(decision: Decision) -> tuple[bytes, bytes]:
    """Key and value of a decision's ``fraud-labels`` message."""
    record = {
        TRANSACTION_ID: decision.transaction_id,
        LABEL_KEY: int(decision.status == CONFIRMED),
        TIMESTAMP: decision.event_time,
        CUSTOMER_ID: decision.customer_id,
        TERMINAL_ID: decision.terminal_id,
    }
    _, value = encode_label(record, labelled_at=decision.decided_at, source=SOURCE)
    return message_key(decision), value


def partition_for(transaction_id: str, partitions: list[int]) -> int:
    """The partition Kafka's default partitioner gives a message keyed by the transaction id."""
    from kafka.partitioner.default import murmur2

    ordered = sorted(partitions)
    return int(ordered[(murmur2(transaction_id.encode("utf-8")) & 0x7FFFFFFF) % len(ordered)])


@dataclass
class Position:
    """The publisher's position: last id sent, ids below it not seen yet (id -> first missed)."""

    last_id: int = 0
    gaps: dict[int, float] = field(default_factory=dict)
    published: int = 0


def load_position(session: Session, name: str) -> Position:
    """The stored position (all zero for a new name)."""
    row = session.get(LabelPublisherPosition, name)
    if row is None:
        return Position()
    gaps = {int(k): float(v) for k, v in (row.gaps or {}).items()}
    return Position(int(row.last_id), gaps, int(row.published))


def save_position(session: Session, name: str, position: Position) -> None:
    """Store the position (the caller commits)."""
    row = session.get(LabelPublisherPosition, name, with_for_update=True)
    gaps = {str(k): v for k, v in sorted(position.gaps.items())}
    now = datetime.now(UTC)
    if row is None:
        session.add(LabelPublisherPosition(name=name, last_id=position.last_id, gaps=gaps,
                                           published=position.published, updated_at=now))
    else:
        row.last_id, row.gaps = position.last_id, gaps
        row.published, row.updated_at = position.published, now


def next_decisions(session: Session, position: Position, limit: int) -> list[Decision]:
    """The decisions after the position, and those of its gaps that appeared, by id."""
    condition = Decision.id > position.last_id
    if position.gaps:
        condition = or_(condition, Decision.id.in_(sorted(position.gaps)))
    stmt = select(Decision).where(condition).order_by(Decision.id).limit(limit)
    return list(session.scalars(stmt))


def advance(position: Position, sent: list[Decision], now: float, gap_seconds: float) -> Position:
    """The position once ``sent`` (by id) is acknowledged."""
    ids = {int(d.id) for d in sent}
    gaps = {k: v for k, v in position.gaps.items() if k not in ids}
    fresh = [i for i in ids if i > position.last_id]
    last = max(fresh, default=position.last_id)
    for missing in range(position.last_id + 1, last):
        if missing not in ids:
            gaps[missing] = now
    gaps = {k: v for k, v in gaps.items() if now - v < gap_seconds}
    return Position(last, gaps, position.published + len(sent))


class LabelPublisher:
    """Publishes decisions round by round; :meth:`run` until caught up (or stopped)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        settings: KafkaSettings,
        config: PublisherConfig,
        *,
        clock: Callable[[], float] = time.time,
        on_round: Callable[[int], None] | None = None,
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.config = config
        self.clock = clock
        self.on_round = on_round or (lambda _: None)
        self.stop = threading.Event()
        self._producer: Any = None
        self._partitions: list[int] = []

    def _open(self) -> None:
        ensure_topics(self.settings, {self.config.topic: self.config.partitions})
        self._producer = make_producer(self.settings, acks="all", linger_ms=5, retries=5)
        deadline = time.monotonic() + 30
        while True:
            found = self._producer.partitions_for(self.config.topic)
            if found:
                self._partitions = sorted(found)
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"no partitions for topic {self.config.topic!r}")
            time.sleep(0.2)

    def close(self) -> None:
        """Flush and close the producer."""
        if self._producer is not None:
            self._producer.close()
            self._producer = None

    def publish_round(self) -> int:
        """Send the next decisions, wait for every acknowledgement, then advance; how many."""
        if self._producer is None:
            self._open()
        with self.sessions() as session:
            position = load_position(session, self.config.name)
            decisions = next_decisions(session, position, self.config.batch)
            session.expunge_all()
        if not decisions:
            if position.gaps:  # let gaps expire even when nothing is new
                self._save(advance(position, [], self.clock(), self.config.gap_seconds))
            return 0
        futures = []
        for decision in decisions:
            key, value = label_of(decision)
            partition = partition_for(decision.transaction_id, self._partitions)
            futures.append(self._producer.send(self.config.topic, key=key, value=value,
                                               partition=partition))
        self._producer.flush()
        for future in futures:
            future.get(timeout=self.config.send_timeout_seconds)  # raises if not acknowledged
        self._save(advance(position, decisions, self.clock(), self.config.gap_seconds))
        self.on_round(len(decisions))
        return len(decisions)

    def _save(self, position: Position) -> None:
        with self.sessions.begin() as session:
            save_position(session, self.config.name, position)

    def run(self) -> PublishSummary:
        """Publish until caught up (or, following, until :attr:`stop` is set)."""
        began = time.perf_counter()
        summary = PublishSummary(topic=self.config.topic)
        with self.sessions() as session:
            summary.resumed_from = load_position(session, self.config.name).last_id
        try:
            while not self.stop.is_set():
                sent = self.publish_round()
                summary.rounds += 1
                summary.published += sent
                if sent >= self.config.batch:
                    continue
                if not self.config.follow:
                    break
                self.stop.wait(self.config.interval_seconds)
        finally:
            self.close()
        with self.sessions() as session:
            position = load_position(session, self.config.name)
        summary.last_id, summary.gaps = position.last_id, len(position.gaps)
        summary.seconds = round(time.perf_counter() - began, 3)
        summary.stopped = self.stop.is_set()
        return summary
