"""Publish transaction files to Kafka in event-time order, optionally paced and with labels.

Each transaction goes to the transactions topic keyed by customer. With a
labels topic, labels go to it keyed by transaction id, by one of two
protocols (docs/labels.md):

- ``handbook``: each transaction's label follows right after it, with
  ``labelled_at`` = the transaction's time and ``source = "simulator"``. This
  does not leak labels into features: the behavioural features
  (:mod:`features`) use a transaction's label only ``delay`` days after it.
- ``realistic``: the labels the input keeps apart (a lake's: chargebacks,
  analysts' decisions), each with its own ``labelled_at`` and ``source``, sent
  when the stream reaches their ``labelled_at`` — after every transaction at
  or before it, before any later one — so the labels topic is in
  ``labelled_at`` order, interleaved with the transactions in event time.
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

import numpy as np
import pyarrow as pa

from ingest.kafka_io import (
    DEFAULT_PARTITIONS,
    KafkaSettings,
    check_reachable,
    encode_label_table,
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
    labels: pa.Table | None = None,
) -> ProduceResult:
    """Publish a canonical table (already in event-time order) and flush.

    ``labels`` (the realistic protocol; needs ``options.labels_topic``): labels
    apart, each sent once the stream has reached its ``labelled_at``; without
    them, each transaction's own label follows it (the Handbook's protocol).
    Stops early, still flushing what was sent, when ``stop`` is set;
    ``progress`` is called with the number of transactions of each chunk.
    """
    if labels is not None and not options.labels_topic:
        raise ValueError("labels apart need a labels topic")
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
    apart = _LabelsApart(labels, table) if labels is not None else None
    try:
        offset = 0
        while offset < table.num_rows and not stop.is_set():
            size = pacer.take() if pacer else options.chunk_rows
            chunk = table.slice(offset, min(size, options.chunk_rows))
            if chunk.num_rows == 0:
                break
            if apart is not None:
                n, n_labels = apart.send(producer, chunk, offset, options, failures.append)
            else:
                n, n_labels = _send_chunk(producer, chunk, options, failures.append)
            sent += n
            labels_sent += n_labels
            offset += chunk.num_rows
            if progress:
                progress(n)
        if apart is not None and not stop.is_set():
            labels_sent += apart.send_rest(producer, options, failures.append)
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


class _LabelsApart:
    """Labels apart, each sent right after the last transaction at or before its ``labelled_at``."""

    def __init__(self, labels: pa.Table, table: pa.Table) -> None:
        from features.spec import LABELLED_AT, TIMESTAMP
        from features.timebase import to_epoch_us
        from ingest.lake import sort_labels

        self.labels = sort_labels(labels)
        known = to_epoch_us(self.labels.column(LABELLED_AT))
        times = to_epoch_us(table.column(TIMESTAMP))
        #: How many transactions go before each label.
        self.after = np.searchsorted(times, known, side="right")
        self.next = 0

    def send(self, producer: Any, chunk: pa.Table, offset: int, options: ProduceOptions,
             on_error: Callable[[BaseException], Any]) -> tuple[int, int]:
        """Send a chunk of transactions (rows ``offset..``) and the labels due within it."""
        send = producer.send
        messages = encode_transactions(chunk)
        end = offset + chunk.num_rows
        last = int(np.searchsorted(self.after, end, side="right"))
        due = self.labels.slice(self.next, last - self.next)
        encoded = encode_label_table(due) if due.num_rows else []
        positions = self.after[self.next:last]
        done = 0
        for (key, value), at in zip(encoded, positions, strict=True):
            while offset + done < at:
                k, v = messages[done]
                send(options.topic, key=k, value=v).add_errback(on_error)
                done += 1
            send(options.labels_topic, key=key, value=value).add_errback(on_error)
        for k, v in messages[done:]:
            send(options.topic, key=k, value=v).add_errback(on_error)
        self.next = last
        return len(messages), len(encoded)

    def send_rest(self, producer: Any, options: ProduceOptions,
                  on_error: Callable[[BaseException], Any]) -> int:
        """Labels known after the last transaction: sent at the end, in ``labelled_at`` order."""
        rest = self.labels.slice(self.next)
        for key, value in encode_label_table(rest) if rest.num_rows else []:
            producer.send(options.labels_topic, key=key, value=value).add_errback(on_error)
        self.next = self.labels.num_rows
        return rest.num_rows
