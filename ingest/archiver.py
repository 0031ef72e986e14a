"""``fraud archive``: the transactions and labels topics into the Parquet lake, exactly once.

The archiver reads every partition of both topics itself (no consumer group:
the lake, not the broker, remembers what was archived, see :mod:`ingest.lake`).
It gathers messages per partition and writes a batch when a partition has
``batch_records`` waiting or the oldest waiting message is ``batch_seconds``
old, and on stop. A lock file keeps a second archiver off the same lake.

Transactions and labels are validated as the scorer validates them, the
bounds on future event times included (against each message's Kafka
timestamp, capped by the clock); a record that fails — whatever the
exception — is written to the lake's ``_rejected/`` with the reason, the
field and its raw value, so nothing is lost, nothing invalid reaches training
and no record stops the archiver.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from features.errors import InputError
from features.progress import Progress
from ingest import lake
from ingest.kafka_io import (
    KafkaSettings,
    decode_label,
    decode_transaction,
    decode_transactions,
    make_consumer,
    message_time_ms,
    message_where,
)
from ingest.records import records_to_table
from ingest.validation import ValidationError

LOCK_FILE = "_archiver.lock"


@dataclass(frozen=True)
class ArchiveConfig:
    """What to archive, where, and how often to write."""

    out: Path
    topic: str = "transactions"
    labels_topic: str | None = "fraud-labels"
    batch_records: int = 100_000
    batch_seconds: float = 30.0
    #: Stop after this many seconds without a message (None: run until stopped).
    exit_when_idle: float | None = None
    #: How long to wait for the topics to exist at start.
    topic_wait_seconds: float = 30.0
    #: How often to look for partitions added to the topics while running.
    partition_check_seconds: float = 10.0
    #: Compact the lake's small files this often (None: never; ``fraud archive compact``).
    compact_seconds: float | None = None
    #: A date partition is compacted once it holds this many small files.
    compact_min_files: int = 8


@dataclass
class ArchiveStats:
    """What a run archived."""

    transactions: int = 0
    labels: int = 0
    rejected: int = 0
    batches: int = 0
    files: int = 0
    resumed_from: dict[str, int] = field(default_factory=dict)
    #: Partitions found added to a topic while running ("topic-partition").
    partitions_added: list[str] = field(default_factory=list)
    compactions: int = 0
    files_compacted: int = 0

    def as_dict(self) -> dict[str, Any]:
        """Plain figures for the command's last line."""
        return asdict(self)


@dataclass
class _Pending:
    messages: list[Any] = field(default_factory=list)
    since: float = 0.0


class Archiver:
    """Consumes both topics into the lake; :meth:`run` until idle or stopped."""

    def __init__(self, settings: KafkaSettings, config: ArchiveConfig,
                 progress: Progress | None = None) -> None:
        self.settings = settings
        self.config = config
        self.say = progress or (lambda _: None)
        self.stats = ArchiveStats()
        self.stop = threading.Event()
        self._lock_fd: int | None = None
        self._consumer: Any = None
        self._pending: dict[Any, _Pending] = {}
        #: Partitions resumed from the lake, until their first message: the offset expected.
        self._resumed: dict[Any, int] = {}
        self._assigned: list[Any] = []

    # --- start and stop -----------------------------------------------------

    def open(self) -> None:
        """Lock and prepare the lake, assign every partition, resume after the lake's last."""
        lake.create(self.config.out)
        self._lock()
        from kafka import TopicPartition

        lake.recover_compactions(self.config.out)
        self._consumer = make_consumer(self.settings, None, max_poll_records=5_000)
        partitions = []
        for topic in self._topics():
            for p in sorted(self._wait_for_partitions(topic)):
                partitions.append(TopicPartition(topic, p))
        self._assign(partitions)

    def _assign(self, added: list[Any]) -> None:
        """Add partitions to the assignment, each resumed after the lake's last offset.

        The partitions assigned before keep their positions (kafka-python keeps
        the state of a partition present in the old and the new assignment).
        """
        self._assigned.extend(added)
        self._consumer.assign(list(self._assigned))
        for tp in added:
            last = lake.recover(self.config.out, tp.topic, tp.partition)
            if last is None:
                self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, last + 1)
                self._resumed[tp] = last + 1
                self.stats.resumed_from[f"{tp.topic}-{tp.partition}"] = last + 1

    def check_partitions(self) -> list[Any]:
        """Assign the partitions added to the topics since the last look; return them.

        A topic's partitions can grow (``kafka-topics --alter``, the admin
        API's ``create_partitions``); producers start writing to the new ones
        at once, so the archiver picks them up while it runs, from their
        first offset (or after the lake's last, for one archived before).
        """
        from kafka import TopicPartition

        self._consumer.topics()  # refreshes the metadata
        known = set(self._assigned)
        added = []
        for topic in self._topics():
            for p in sorted(self._consumer.partitions_for_topic(topic) or ()):
                tp = TopicPartition(topic, p)
                if tp not in known:
                    added.append(tp)
        if added:
            self._assign(added)
            self.stats.partitions_added += [f"{tp.topic}-{tp.partition}" for tp in added]
            self.say(f"new partitions: {', '.join(self.stats.partitions_added[-len(added):])}")
        return added

    def compact(self) -> lake.CompactStats:
        """Compact the lake's small files now (the archiver holds the lake's lock)."""
        done = lake.compact(self.config.out, min_files=self.config.compact_min_files)
        if done.files_merged:
            self.stats.compactions += done.partitions
            self.stats.files_compacted += done.files_merged
            self.say(f"compacted {done.files_merged} files into {done.files_written}")
        return done

    def close(self) -> None:
        """Close the consumer and release the lock."""
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Archiver:
        try:
            self.open()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _lock(self) -> None:
        self._lock_fd = lock_lake(self.config.out)

    def _topics(self) -> list[str]:
        topics = [self.config.topic]
        if self.config.labels_topic:
            topics.append(self.config.labels_topic)
        return topics

    def _wait_for_partitions(self, topic: str) -> set[int]:
        deadline = time.monotonic() + self.config.topic_wait_seconds
        while True:
            self._consumer.topics()  # refreshes the metadata
            partitions = self._consumer.partitions_for_topic(topic)
            if partitions:
                return set(partitions)
            if time.monotonic() >= deadline:
                raise InputError(f"topic {topic!r} does not exist on "
                                 f"{self.settings.bootstrap_servers}")
            time.sleep(0.5)

    # --- the loop -----------------------------------------------------------

    def run(self) -> ArchiveStats:
        """Archive until :attr:`stop` is set or the topics stay idle long enough."""
        idle_since = checked = compacted = time.monotonic()
        while not self.stop.is_set():
            polled = self._consumer.poll(timeout_ms=500)
            now = time.monotonic()
            if now - checked >= self.config.partition_check_seconds:
                if self.check_partitions():
                    idle_since = now
                checked = now
            every = self.config.compact_seconds
            if every is not None and now - compacted >= every:
                self.compact()
                compacted = now
            for tp, messages in polled.items():
                self._check_resumed(tp, messages[0].offset)
                pending = self._pending.setdefault(tp, _Pending())
                if not pending.messages:
                    pending.since = now
                pending.messages.extend(messages)
            if polled:
                idle_since = now
            self._flush(full_only=True, now=now)
            idle = self.config.exit_when_idle
            if idle is not None and now - idle_since >= idle:
                break
        self._flush(full_only=False, now=time.monotonic())
        return self.stats

    def _check_resumed(self, tp: Any, offset: int) -> None:
        """A resumed partition must continue at or after the lake's next offset.

        A seek past a partition's end (the topic was deleted and recreated, its
        offsets restarted) makes the consumer start again from the earliest
        offset; archiving from there would skip everything up to the lake's
        offset in the new topic, so the archiver stops instead.
        """
        expected = self._resumed.pop(tp, None)
        if expected is not None and offset < expected:
            raise InputError(
                f"{self.config.out}: archived {tp.topic}[{tp.partition}] up to offset "
                f"{expected - 1}, but the partition now starts again at offset {offset}: "
                "was the topic recreated? Archive it into a new lake")

    def _flush(self, *, full_only: bool, now: float) -> None:
        for tp, pending in self._pending.items():
            if not pending.messages:
                continue
            due = (len(pending.messages) >= self.config.batch_records
                   or now - pending.since >= self.config.batch_seconds)
            if full_only and not due:
                continue
            self._write(tp.topic, tp.partition, pending.messages)
            pending.messages = []

    def _write(self, topic: str, partition: int, messages: list[Any]) -> None:
        batch = lake.Batch(topic, partition, messages[0].offset, messages[-1].offset)
        rejected: list[dict[str, Any]] = []
        transactions = labels = None
        if topic == self.config.topic:
            transactions = self._transactions(messages, rejected)
        else:
            labels = self._labels(messages, rejected)
        files = lake.write_batch(self.config.out, batch, transactions, labels, rejected)
        self.stats.batches += 1
        self.stats.files += len(files)
        self.stats.rejected += len(rejected)
        self.stats.transactions += 0 if transactions is None else transactions.num_rows
        self.stats.labels += 0 if labels is None else labels.num_rows
        self.say(f"{batch.name}: {len(messages)} records, {len(rejected)} rejected, "
                 f"{len(files)} files")

    @staticmethod
    def _transactions(messages: list[Any], rejected: list[dict[str, Any]]) -> pa.Table:
        now_ms = int(time.time() * 1000)
        try:
            times = [message_time_ms(m, now_ms) for m in messages]
            table = decode_transactions([m.value for m in messages], kafka_timestamps_ms=times)
        except Exception:  # never stop on a record: decode them one by one
            table = None
        if table is not None:
            return table
        return records_to_table(_decode_each(messages, decode_transaction, rejected, now_ms),
                                labelled=False)

    @staticmethod
    def _labels(messages: list[Any], rejected: list[dict[str, Any]]) -> pa.Table:
        now_ms = int(time.time() * 1000)
        return lake.labels_table(_decode_each(messages, decode_label, rejected, now_ms))


def lock_lake(root: Path) -> int:
    """Take the lake's lock (one writer: an archiver or a compaction); its file descriptor."""
    fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise InputError(f"{root}: another fraud archive is writing this lake") from None
    return fd


def _decode_each(
    messages: list[Any],
    decode: Callable[..., dict[str, Any]],
    rejected: list[dict[str, Any]],
    now_ms: int | None = None,
) -> list[dict[str, Any]]:
    """Decode message by message; the ones that fail go to ``rejected`` with the reason.

    Any exception, not only a :class:`ValidationError`, rejects the one record:
    the archiver never stops on a record.
    """
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    records = []
    for m in messages:
        where = message_where(m.topic, m.partition, m.offset)
        try:
            record = decode(m.value, where, kafka_timestamp_ms=message_time_ms(m, now_ms))
        except Exception as err:
            rejected.append(_rejection(m, err))
        else:
            records.append(record)
    return records


def _rejection(message: Any, error: Exception) -> dict[str, Any]:
    if isinstance(error, ValidationError):
        reason, field_name, text = error.reason, error.field, str(error)
    else:
        reason = f"{type(error).__name__}: {error}"
        field_name, text = None, reason
    value = message.value
    if value is not None and not isinstance(value, bytes):
        value = repr(value).encode("utf-8", errors="replace")
    return {
        "topic": message.topic, "partition": message.partition, "offset": message.offset,
        "reason": reason, "field": field_name, "message": text,
        "value": None if value is None else value.decode("utf-8", errors="replace"),
    }
