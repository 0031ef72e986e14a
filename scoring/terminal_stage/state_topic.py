"""The state topic over Kafka: the stage publishes to it, every scorer follows it.

One partition, so the order of the stage's messages is the order every replica
applies them in. Scorers read it with manual assignment (no consumer group):
each reads all of it, from the offset its replica's starting point names.
"""

from __future__ import annotations

from typing import Any

from ingest.kafka_io import KafkaSettings, make_consumer, make_producer
from scoring.stream.ports import DependencyDown

#: Largest state message (a batch's entries): a few hundred kB at the default batch size.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


class KafkaStatePublisher:
    """Publishes the stage's messages and says where the next one will be."""

    def __init__(self, settings: KafkaSettings, topic: str) -> None:
        self._producer = make_producer(settings, max_request_size=MAX_MESSAGE_BYTES, linger_ms=0)
        self._topic = topic
        self._pending: list[Any] = []
        self._next_offset = 0

    def publish(self, message: bytes) -> None:
        """Queue one message."""
        self._pending.append(self._producer.send(self._topic, value=message, partition=0))

    def flush(self) -> int:
        """Wait for every queued message; the offset after the last one written."""
        from kafka.errors import KafkaError

        try:
            self._producer.flush(timeout=30)
            for future in self._pending:
                self._next_offset = max(self._next_offset, future.get(timeout=30).offset + 1)
        except KafkaError as err:
            raise DependencyDown(f"state topic unavailable: {err}") from err
        self._pending = []
        return self._next_offset

    def close(self) -> None:
        """Flush and close the producer."""
        self._producer.close()


class KafkaStateFollower:
    """Reads the state topic from a given offset, outside any consumer group."""

    def __init__(self, settings: KafkaSettings, topic: str) -> None:
        from kafka import TopicPartition

        self._consumer = make_consumer(
            settings, None, max_partition_fetch_bytes=MAX_MESSAGE_BYTES, fetch_max_wait_ms=20
        )
        self._tp = TopicPartition(topic, 0)
        self._consumer.assign([self._tp])

    def seek(self, offset: int) -> None:
        """Read from ``offset`` on."""
        self._consumer.seek(self._tp, offset)

    def poll(self, timeout_ms: int) -> list[tuple[int, bytes]]:
        """The next messages as ``(offset, value)``."""
        batches = self._consumer.poll(timeout_ms=timeout_ms, max_records=500)
        return [(r.offset, r.value) for records in batches.values() for r in records]

    def close(self) -> None:
        """Close the consumer."""
        self._consumer.close(autocommit=False)
