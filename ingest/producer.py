"""Publish transaction files to Kafka in event-time order, optionally paced and with labels.

Each transaction goes to the transactions topic keyed by customer; with a
labels topic, its label follows right after, keyed by transaction id, with
``labelled_at`` = the transaction's time and ``source = "simulator"``.
Publishing labels early does not leak them into features: the behavioural
features (:mod:`features`) apply a label only ``delay`` days after its
transaction, whatever its arrival time.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any

import pyarrow as pa

from ingest.kafka_io import (
    DEFAULT_PARTITIONS,
    KafkaSettings,
    check_reachable,
    encode_labels,
    encode_transactions,
    ensure_topics,
    make_producer,
)

LABEL_SOURCE = "simulator"


@dataclass(frozen=True)
class ProduceOptions:
    """Where and how fast to publish."""

    topic: str = "transactions"
    labels_topic: str | None = None
    rate: float | None = None
    partitions: int = DEFAULT_PARTITIONS
    acks: str | int = "all"
    linger_ms: int = 5
    chunk_rows: int = 2000


@dataclass(frozen=True)
class ProduceResult:
    """What was published."""

    sent: int
    labels_sent: int
    seconds: float
    interrupted: bool

    @property
    def events_per_s(self) -> float:
        """Transactions published per second."""
        return self.sent / self.seconds if self.seconds > 0 else 0.0


class Pacer:
    """Spreads sends evenly at ``rate`` events/s (a token bucket holding ~10 ms of events).

    After a stall it does not burst to catch up: at most ``burst`` events go
    out at once.
    """

    def __init__(self, rate: float, stop: threading.Event) -> None:
        self.rate = rate
        self.burst = max(1, int(rate / 100))
        self._stop = stop
        self._tokens = float(self.burst)
        self._last = time.monotonic()

    def take(self) -> int:
        """Block until at least one event may go; returns how many may go now (0 if stopped)."""
        while not self._stop.is_set():
            now = time.monotonic()
            self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens >= 1:
                granted = int(self._tokens)
                self._tokens -= granted
                return granted
            self._stop.wait((1 - self._tokens) / self.rate)
        return 0


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT/SIGTERM set ``stop`` (a second one acts as usual); handlers restored after."""
    previous: dict[signal.Signals, Any] = {}

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()
        signal.signal(signum, previous[signal.Signals(signum)])

    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def publish(
    table: pa.Table,
    settings: KafkaSettings,
    options: ProduceOptions,
    *,
    stop: threading.Event | None = None,
    progress: Callable[[int], None] | None = None,
) -> ProduceResult:
    """Publish a canonical table (already in event-time order) and flush.

    Stops early, still flushing what was sent, when ``stop`` is set;
    ``progress`` is called with the number of transactions of each chunk.
    """
    stop = stop or threading.Event()
    check_reachable(settings)
    topics = {options.topic: options.partitions}
    if options.labels_topic:
        topics[options.labels_topic] = options.partitions
    ensure_topics(settings, topics)
    producer = make_producer(settings, acks=options.acks, linger_ms=options.linger_ms)
    failures: list[BaseException] = []
    pacer = Pacer(options.rate, stop) if options.rate else None
    sent = labels_sent = 0
    began = time.perf_counter()
    try:
        offset = 0
        while offset < table.num_rows and not stop.is_set():
            size = pacer.take() if pacer else options.chunk_rows
            chunk = table.slice(offset, min(size, options.chunk_rows))
            if chunk.num_rows == 0:
                break
            n, n_labels = _send_chunk(producer, chunk, options, failures.append)
            sent += n
            labels_sent += n_labels
            offset += chunk.num_rows
            if progress:
                progress(n)
        producer.flush()
    finally:
        producer.close()
    if failures:
        raise RuntimeError(f"Kafka rejected {len(failures)} messages; first: {failures[0]}")
    return ProduceResult(sent, labels_sent, time.perf_counter() - began, stop.is_set())


def _send_chunk(
    producer: Any,
    chunk: pa.Table,
    options: ProduceOptions,
    on_error: Callable[[BaseException], Any],
) -> tuple[int, int]:
    """Send one chunk, each transaction followed by its label when labels are on."""
    messages = encode_transactions(chunk)
    send = producer.send
    if not options.labels_topic:
        for key, value in messages:
            send(options.topic, key=key, value=value).add_errback(on_error)
        return len(messages), 0
    labels = encode_labels(chunk, source=LABEL_SOURCE)
    for (key, value), (label_key, label_value) in zip(messages, labels, strict=True):
        send(options.topic, key=key, value=value).add_errback(on_error)
        send(options.labels_topic, key=label_key, value=label_value).add_errback(on_error)
    return len(messages), len(labels)
