"""Micro-batch decoding: every message becomes a valid record or a dead letter with a reason.

Whatever a message's bytes provoke — the contract's own
:class:`~ingest.validation.ValidationError`, or any other exception a decoder
bug might raise — that message alone goes to the dead-letter topic with the
reason; the others of the batch go on. A live event may not be dated more
than ``features.spec.BOUNDS.max_future_skew`` past its Kafka timestamp or the
scorer's clock, whichever is earlier, so no single event can move the state's
clock (and expire everything in it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from ingest.kafka_io import (
    BATCH_DECODE_MIN_MESSAGES,
    decode_label,
    decode_transaction,
    decode_transactions,
    message_where,
)
from ingest.records import records_to_table
from ingest.validation import ValidationError
from scoring.stream.ports import Message

#: A message's identity: (topic, partition, offset).
MessageId = tuple[str, int, int]


def message_id(message: Message) -> MessageId:
    """The identity of ``message`` in the log."""
    return (message.topic, message.partition, message.offset)


def where(message: Message) -> str:
    """How ``message`` is named in errors: ``transactions[0]@42``."""
    return message_where(message.topic, message.partition, message.offset)


@dataclass
class DecodedBatch:
    """One micro-batch after validation: valid transactions and labels, and the dead."""

    transactions: pa.Table
    transaction_messages: list[Message]
    labels: list[dict[str, Any]] = field(default_factory=list)
    label_messages: list[Message] = field(default_factory=list)
    dead: list[tuple[Message, ValidationError]] = field(default_factory=list)


def unexpected(message: Message, err: BaseException, stage: str) -> ValidationError:
    """A dead-letter reason for an exception that is not the contract's own."""
    text = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
    detail = f"{type(err).__name__}: {text}" if text else type(err).__name__
    return ValidationError(where(message), None, f"{stage} failed ({detail})")


class BatchDecoder:
    """Decodes a poll's messages (transactions and, on ``labels_topic``, labels)."""

    def __init__(
        self, labels_topic: str | None, clock_ms: Callable[[], int] = lambda: int(time.time() * 1e3)
    ) -> None:
        self.labels_topic = labels_topic
        self._clock_ms = clock_ms

    def decode(
        self, messages: list[Message], poison: Mapping[MessageId, str] | None = None
    ) -> DecodedBatch:
        """Validate a batch: all transactions at once when all are valid, else one by one.

        ``poison`` names messages found to break feature computation; they are
        dead letters with that reason, whatever their bytes.
        """
        poison = poison or {}
        now_ms = self._clock_ms()
        transactions: list[Message] = []
        labels: list[Message] = []
        dead: list[tuple[Message, ValidationError]] = []
        for m in messages:
            reason = poison.get(message_id(m))
            if reason is not None:
                dead.append((m, ValidationError(where(m), None, reason)))
            elif m.topic == self.labels_topic:
                labels.append(m)
            else:
                transactions.append(m)
        out = self._transactions(transactions, now_ms)
        out.dead[:0] = dead
        for m in labels:
            try:
                label = decode_label(m.value, where(m), kafka_timestamp_ms=_time_ms(m, now_ms))
                out.labels.append(label)
                out.label_messages.append(m)
            except ValidationError as err:
                out.dead.append((m, err))
            except Exception as err:  # any input must be data, never a crash
                out.dead.append((m, unexpected(m, err, "decoding the label")))
        return out

    def _transactions(self, messages: list[Message], now_ms: int) -> DecodedBatch:
        if len(messages) >= BATCH_DECODE_MIN_MESSAGES:
            try:
                table = decode_transactions(
                    [m.value for m in messages],
                    kafka_timestamps_ms=[_time_ms(m, now_ms) for m in messages],
                )
            except Exception:  # the fast path must never decide: the exact path names the culprit
                table = None
            if table is not None:
                return DecodedBatch(table, messages)
        records: list[dict[str, object]] = []
        valid: list[Message] = []
        dead: list[tuple[Message, ValidationError]] = []
        for m in messages:
            try:
                records.append(
                    decode_transaction(m.value, where(m), kafka_timestamp_ms=_time_ms(m, now_ms))
                )
                valid.append(m)
            except ValidationError as err:
                dead.append((m, err))
            except Exception as err:  # any input must be data, never a crash
                dead.append((m, unexpected(m, err, "decoding the transaction")))
        return DecodedBatch(records_to_table(records, labelled=False), valid, dead=dead)


def _time_ms(message: Message, now_ms: int) -> int:
    """The time an event is measured against: its Kafka timestamp, capped by the clock."""
    stamp = message.timestamp_ms
    return now_ms if stamp is None or stamp <= 0 else min(stamp, now_ms)
