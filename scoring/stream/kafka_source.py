"""Kafka backends of the scorer's source and dead-letter sink (kafka-python)."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from ingest.kafka_io import KafkaSettings, dead_letter_headers, make_consumer, make_producer
from ingest.validation import ValidationError
from scoring.stream.ports import DependencyDown, Message, Partition

log = logging.getLogger(__name__)

#: Largest dead letter forwarded whole; bigger values are cut (the original stays
#: in the source topic at the offset named in the headers).
MAX_DEAD_LETTER_BYTES = 900 * 1024
#: Bytes fetched per partition per request (fewer, larger fetches: ~30% more
#: messages/s with kafka-python here). A larger message is still fetched whole
#: (KIP-74), so a poison message cannot stall its partition.
PARTITION_FETCH_BYTES = 4 * 1024 * 1024
#: How long the broker may hold a fetch waiting for data. Kafka's 500 ms default
#: shows up directly in event-to-alert latency when traffic is light.
FETCH_MAX_WAIT_MS = 20


class KafkaSource:
    """A group consumer over the transactions (and labels) topics."""

    def __init__(self, settings: KafkaSettings, group_id: str, topics: list[str]) -> None:
        self._consumer = make_consumer(
            settings,
            group_id,
            max_partition_fetch_bytes=PARTITION_FETCH_BYTES,
            fetch_max_bytes=16 * PARTITION_FETCH_BYTES,
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        )
        self._topics = topics
        self._subscribed = False
        self._assigned_cb: Callable[[list[Partition]], dict[Partition, int]] | None = None
        self._new_assignment: list[Partition] | None = None
        self._listener: Any = None  # set by on_assignment
        #: Partitions held by the caller: paused until released, whatever else resumes.
        self._held: set[Partition] = set()

    def on_assignment(
        self,
        assigned: Callable[[list[Partition]], dict[Partition, int]],
        revoked: Callable[[list[Partition]], None],
    ) -> None:
        """Subscribe with rebalance callbacks.

        kafka-python runs listeners on its IO thread, where no blocking consumer
        call may be made; so ``revoked`` runs there (it must not touch the
        consumer) and ``assigned`` runs on the caller's thread at the next
        :meth:`poll`, which then seeks to the positions it returns.
        """
        from kafka import ConsumerRebalanceListener

        source = self

        class Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked_tps: Any) -> None:
                revoked([(tp.topic, tp.partition) for tp in revoked_tps])

            def on_partitions_assigned(self, assigned_tps: Any) -> None:
                source._new_assignment = [(tp.topic, tp.partition) for tp in assigned_tps]

        self._assigned_cb = assigned
        self._listener = Listener()
        self._consumer.subscribe(self._topics, listener=self._listener)
        self._subscribed = True

    def poll(self, timeout_ms: int, max_records: int) -> list[Message]:
        """Messages from all assigned partitions, in offset order per partition.

        Right after a (re)assignment the records of that poll are dropped and
        every partition is positioned where the ``assigned`` callback says (or
        at the first dropped record), so nothing is skipped or read twice.
        """
        if not self._subscribed:
            self._consumer.subscribe(self._topics)
            self._subscribed = True
        batches = self._consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        if self._take_new_assignment(batches):
            return []
        return [
            Message(r.topic, r.partition, r.offset, r.key, r.value, r.timestamp)
            for records in batches.values()
            for r in records
        ]

    def _take_new_assignment(self, dropped: dict[Any, list[Any]]) -> bool:
        """Run the ``assigned`` callback after a rebalance and seek; True if there was one."""
        if self._new_assignment is None or self._assigned_cb is None:
            return False
        partitions, self._new_assignment = self._new_assignment, None
        self._reposition(self._assigned_cb(partitions), dropped)
        return True

    def _reposition(self, positions: dict[Partition, int], dropped: dict[Any, list[Any]]) -> None:
        from kafka import TopicPartition

        self._resume_all()  # a partition kept across the rebalance keeps a pause from before
        self.hold(sorted(self._held))  # held ones stay held
        first_dropped = {(tp.topic, tp.partition): recs[0].offset for tp, recs in dropped.items()}
        for tp in self._consumer.assignment():
            key = (tp.topic, tp.partition)
            offset = positions.get(key, first_dropped.get(key))
            if offset is not None:
                self._consumer.seek(TopicPartition(tp.topic, tp.partition), offset)

    def positions(self) -> dict[Partition, int]:
        """Return the consumer's next offset of every assigned partition."""
        return {
            (tp.topic, tp.partition): self._consumer.position(tp)
            for tp in self._consumer.assignment()
        }

    def commit(self, positions: dict[Partition, int]) -> None:
        """Commit the next offsets to read, synchronously."""
        from kafka import TopicPartition
        from kafka.structs import OffsetAndMetadata

        self._consumer.commit(
            {
                TopicPartition(topic, partition): OffsetAndMetadata(offset, "", -1)
                for (topic, partition), offset in positions.items()
            }
        )

    def keep_alive(self, seconds: float) -> None:
        """Pause the partitions and poll so the group keeps us, consuming nothing.

        Every paused partition is resumed afterwards, whatever the assignment
        became meanwhile: kafka-python keeps a partition's paused flag across a
        rebalance that leaves it assigned, so a partition paused here and
        reassigned during the poll would otherwise never be read again.
        """
        if not self._subscribed:  # not in a group yet: nothing to keep alive
            time.sleep(seconds)
            return
        self._consumer.pause(*self._consumer.assignment())
        returned: dict[Any, list[Any]] = {}
        try:
            returned = self._consumer.poll(timeout_ms=int(seconds * 1000))
        finally:
            self._resume_all()
        # Only partitions assigned during the poll (not paused) can have returned
        # records: the new assignment is taken here, and its seek undoes the read.
        self._take_new_assignment(returned)

    def _resume_all(self) -> None:
        held = self._held
        paused = [tp for tp in self._consumer.paused() if (tp.topic, tp.partition) not in held]
        if paused:
            self._consumer.resume(*paused)

    def hold(self, partitions: list[Partition]) -> None:
        """Pause ``partitions`` until :meth:`release` (keep-alives leave them paused)."""
        from kafka import TopicPartition

        self._held.update(partitions)
        assigned = self._consumer.assignment()
        tps = [TopicPartition(t, p) for t, p in partitions if TopicPartition(t, p) in assigned]
        if tps:
            self._consumer.pause(*tps)

    def release(self, partitions: list[Partition]) -> None:
        """Fetch held partitions again."""
        from kafka import TopicPartition

        self._held.difference_update(partitions)
        assigned = self._consumer.assignment()
        tps = [TopicPartition(t, p) for t, p in partitions if TopicPartition(t, p) in assigned]
        if tps:
            self._consumer.resume(*tps)

    def lag(self) -> int:
        """Sum over assigned partitions of high watermark minus position."""
        total = 0
        for tp in self._consumer.assignment():
            high = self._consumer.highwater(tp)
            if high is not None:
                total += max(0, high - self._consumer.position(tp))
        return total

    def end_offsets(self, topics: Sequence[str]) -> dict[Partition, int]:
        """Every partition of ``topics`` with its end offset (a ListOffsets request now)."""
        from kafka import TopicPartition

        tps = [
            TopicPartition(topic, p)
            for topic in topics
            for p in sorted(self._consumer.partitions_for_topic(topic) or ())
        ]
        if not tps:
            return {}
        from kafka.errors import KafkaError

        try:
            found = self._consumer.end_offsets(tps)
        except KafkaError as err:
            raise DependencyDown(f"end offsets unavailable: {err}") from err
        return {(tp.topic, tp.partition): int(offset) for tp, offset in found.items()}

    def rejoin(self) -> None:
        """Leave the group and subscribe again: the next poll joins as a new member.

        After a partial assignment this makes the later, complete one start
        from fresh partition states: kafka-python carries a partition's fetch
        state across a rebalance that keeps it, and a partition kept from a
        partial assignment was seen never to be fetched again.
        """
        self._consumer.unsubscribe()
        self._new_assignment = None
        self._consumer.subscribe(self._topics, listener=self._listener)

    def rewind(self, positions: dict[Partition, int]) -> None:
        """Seek the assigned partitions named in ``positions`` there."""
        from kafka import TopicPartition

        for tp in self._consumer.assignment():
            offset = positions.get((tp.topic, tp.partition))
            if offset is not None:
                self._consumer.seek(TopicPartition(tp.topic, tp.partition), offset)

    def beginning_offsets(self, partitions: list[Partition]) -> dict[Partition, int]:
        """The first offset the broker still holds of each of ``partitions``."""
        from kafka import TopicPartition

        found = self._consumer.beginning_offsets([TopicPartition(t, p) for t, p in partitions])
        return {(tp.topic, tp.partition): int(offset) for tp, offset in found.items()}

    def committed(self, partitions: list[Partition]) -> dict[Partition, int]:
        """The group's committed offsets of ``partitions`` (those that have one)."""
        from kafka import TopicPartition

        out = {}
        for topic, partition in partitions:
            offset = self._consumer.committed(TopicPartition(topic, partition))
            if offset is not None:
                out[(topic, partition)] = int(offset)
        return out

    def leave(self) -> None:
        """Leave the group until :meth:`rejoin`."""
        self._consumer.unsubscribe()
        self._new_assignment = None

    def partition_count(self, topic: str) -> int | None:
        """Partitions of ``topic`` in the cluster metadata (None if not known yet)."""
        partitions = self._consumer.partitions_for_topic(topic)
        return len(partitions) if partitions else None

    def close(self) -> None:
        """Leave the group (without an automatic commit)."""
        self._consumer.close(autocommit=False)


class KafkaDeadLetters:
    """Forwards invalid messages to the dead-letter topic, the reason in the headers."""

    def __init__(self, settings: KafkaSettings, topic: str) -> None:
        self._producer = make_producer(settings, max_request_size=MAX_DEAD_LETTER_BYTES + 65536)
        self._topic = topic
        self._pending: list[Any] = []
        self._queued: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]] = []

    def send(self, message: Message, reason: Exception) -> None:
        """Queue one dead letter: original key and bytes, reason and source in headers."""
        error = reason if isinstance(reason, ValidationError) else str(reason)
        headers = dead_letter_headers(error, message.topic, message.partition, message.offset)
        value = message.value
        if value is not None and len(value) > MAX_DEAD_LETTER_BYTES:
            headers += [
                ("original_size", str(len(value)).encode()),
                ("original_sha256", hashlib.sha256(value).hexdigest().encode()),
                ("truncated", b"true"),
            ]
            value = value[:MAX_DEAD_LETTER_BYTES]
        self._queued.append((message.key, value, headers))
        self._pending.append(
            self._producer.send(self._topic, key=message.key, value=value, headers=headers)
        )

    def flush(self) -> None:
        """Wait for every queued dead letter; DependencyDown if the broker did not take one.

        On failure the letters stay queued and are sent again by the next flush
        (the dead-letter topic is at-least-once, like the alerts).
        """
        from kafka.errors import KafkaError

        try:
            self._producer.flush(timeout=30)
            for future in self._pending:
                future.get(timeout=30)
        except KafkaError as err:
            self._resend_failed()
            raise DependencyDown(f"dead-letter topic unavailable: {err}") from err
        self._pending, self._queued = [], []

    def _resend_failed(self) -> None:
        self._pending = [
            self._producer.send(self._topic, key=k, value=v, headers=h) for k, v, h in self._queued
        ]

    def close(self) -> None:
        """Flush and close the producer."""
        self._producer.close()
