"""Kafka plumbing shared by the producer, the archiver and the scorer.

Connection settings (:class:`KafkaSettings`), client factories, idempotent
topic creation, and the message codec of ``docs/contracts.md`` §2: transactions as
JSON objects keyed by customer, labels keyed by transaction, dead letters with
the reason in headers. Nothing here depends on the broker implementation
(Tansu in development, Apache Kafka in production).
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pjson

from features.errors import InputError
from features.spec import (
    BOUNDS,
    CUSTOMER_ID,
    LABEL_KEY,
    LABEL_SOURCE,
    LABEL_SOURCE_MAX_LENGTH,
    LABELLED_AT,
    TERMINAL_ID,
    TIMESTAMP,
    TRANSACTION_FIELDS,
    TRANSACTION_ID,
)
from ingest.table_validation import validate_table
from ingest.validation import (
    FUTURE_SKEW_US,
    MAX_RECORD_BYTES,
    ValidationError,
    decode_json_record,
    guarded,
    parse_json_object,
    parse_label,
    parse_string,
    parse_timestamp,
)

TRANSACTIONS_TOPIC = "transactions"
#: Partitions of the transactions and labels topics when this code creates them.
DEFAULT_PARTITIONS = 3
DLQ_TOPIC = "transactions.dlq"
LABELS_TOPIC = "fraud-labels"
#: The scorers' consumer group (the key of their partition checkpoints).
SCORER_GROUP = "fraud-scorer"

#: Dead-letter header names (values are UTF-8 bytes).
HEADER_REASON = "error.reason"
HEADER_FIELD = "error.field"
HEADER_MESSAGE = "error.message"
HEADER_TOPIC = "source.topic"
HEADER_PARTITION = "source.partition"
HEADER_OFFSET = "source.offset"

LABEL_FIELDS = (
    TRANSACTION_ID,
    LABEL_KEY,
    TIMESTAMP,
    CUSTOMER_ID,
    TERMINAL_ID,
    LABELLED_AT,
    LABEL_SOURCE,
)

_ENV_PREFIX = "FRAUD_KAFKA_"
_TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
_ARROW_TS_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # Arrow's %S carries the microseconds
_NEEDS_ESCAPE = r'["\\\x00-\x1f]'


@dataclass(frozen=True)
class KafkaSettings:
    """How to reach the cluster and how consumers behave in a group.

    The group timeouts default to values that let a group join in seconds
    (``docs/ingest.md``, Kafka messages); production may raise
    ``max_poll_interval_ms`` when a batch can take longer to process.
    """

    bootstrap_servers: str
    client_id: str = "fraud"
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None
    max_poll_interval_ms: int = 5000
    session_timeout_ms: int = 6000
    heartbeat_interval_ms: int = 1000

    def __post_init__(self) -> None:
        for server in self.servers:
            host, _, port = server.rpartition(":")
            if not host or not port.isdigit():
                raise InputError(f"bootstrap server {server!r}: expected HOST:PORT")
        if not self.heartbeat_interval_ms < self.session_timeout_ms:
            raise InputError("heartbeat_interval_ms must be below session_timeout_ms")
        if min(self.max_poll_interval_ms, self.session_timeout_ms, self.heartbeat_interval_ms) <= 0:
            raise InputError("Kafka timeouts must be positive")

    @property
    def servers(self) -> list[str]:
        """The bootstrap servers as a list."""
        return [s.strip() for s in self.bootstrap_servers.split(",") if s.strip()] or [""]

    @classmethod
    def from_env(
        cls, bootstrap_servers: str, env: Mapping[str, str] | None = None, **values: Any
    ) -> KafkaSettings:
        """Build settings from ``FRAUD_KAFKA_<FIELD>`` variables (``FRAUD_KAFKA_SASL_USERNAME``...).

        Explicit ``values`` win over the environment; call this at the edge (a CLI command).
        """
        env = os.environ if env is None else env
        ints = {"max_poll_interval_ms", "session_timeout_ms", "heartbeat_interval_ms"}
        found: dict[str, Any] = {}
        for name in (f.name for f in fields(cls)):
            raw = env.get(_ENV_PREFIX + name.upper())
            if raw is None or name == "bootstrap_servers":
                continue
            if name in ints:
                if not raw.strip().isdigit():
                    raise InputError(f"{_ENV_PREFIX}{name.upper()}: expected an integer")
                found[name] = int(raw)
            else:
                found[name] = raw
        found.update({k: v for k, v in values.items() if v is not None})
        return cls(bootstrap_servers=bootstrap_servers, **found)

    def client_config(self) -> dict[str, Any]:
        """Keyword arguments common to every kafka-python client."""
        config: dict[str, Any] = {
            "bootstrap_servers": self.servers,
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
        }
        optional = {
            "sasl_mechanism": self.sasl_mechanism,
            "sasl_plain_username": self.sasl_username,
            "sasl_plain_password": self.sasl_password,
            "ssl_cafile": self.ssl_cafile,
        }
        config.update({k: v for k, v in optional.items() if v is not None})
        return config


def check_reachable(settings: KafkaSettings, timeout_s: float = 5.0) -> None:
    """Fail fast with a one-line reason when no bootstrap server accepts a connection.

    kafka-python itself only gives up after its request timeout (~30 s).
    """
    for server in settings.servers:
        host, _, port = server.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
                return
        except OSError:
            continue
    raise InputError(f"no Kafka broker reachable at {settings.bootstrap_servers}")


def make_producer(settings: KafkaSettings, **overrides: Any) -> Any:
    """Create a ``KafkaProducer``: acks from all replicas, idempotent, 5 ms linger."""
    from kafka import KafkaProducer

    config: dict[str, Any] = {"acks": "all", "linger_ms": 5, "batch_size": 256 * 1024}
    config.update(overrides)
    return KafkaProducer(**settings.client_config(), **config)


def make_consumer(
    settings: KafkaSettings, group_id: str | None, *topics: str, **overrides: Any
) -> Any:
    """Create a ``KafkaConsumer`` with manual commits, reading from the earliest offset."""
    from kafka import KafkaConsumer

    config: dict[str, Any] = {
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_poll_interval_ms": settings.max_poll_interval_ms,
        "session_timeout_ms": settings.session_timeout_ms,
        "heartbeat_interval_ms": settings.heartbeat_interval_ms,
    }
    config.update(overrides)
    return KafkaConsumer(*topics, **settings.client_config(), **config)


def ensure_topics(
    settings: KafkaSettings, partitions: Mapping[str, int], replication_factor: int = 1
) -> list[str]:
    """Create the topics that do not exist yet; returns the names created."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(**settings.client_config())
    try:
        existing = set(admin.list_topics())
        created = []
        for name, count in partitions.items():
            if name in existing:
                continue
            try:
                admin.create_topics([NewTopic(name, count, replication_factor)])
                created.append(name)
            except TopicAlreadyExistsError:
                pass
        return created
    finally:
        admin.close()


# --- codec ------------------------------------------------------------------


def format_timestamp(moment: datetime) -> str:
    """ISO-8601 in UTC with microseconds and a ``Z``: ``2018-04-01T00:00:31.000000Z``."""
    return moment.astimezone(UTC).strftime(_TS_FORMAT)


def _dumps(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def encode_transaction(record: Mapping[str, Any]) -> tuple[bytes, bytes]:
    """Key (customer id) and value (JSON object without the label) of a canonical record."""
    value = {name: record[name] for name in TRANSACTION_FIELDS}
    value[TIMESTAMP] = format_timestamp(record[TIMESTAMP])
    return str(record[CUSTOMER_ID]).encode("utf-8"), _dumps(value)


def encode_transactions(table: pa.Table) -> list[tuple[bytes, bytes]]:
    """:func:`encode_transaction` for a whole canonical table, built column-wise by Arrow."""
    fields = [(name, table[name]) for name in TRANSACTION_FIELDS]
    values = _json_objects(fields)
    if values is None:
        return [encode_transaction(r) for r in table.to_pylist()]
    return list(zip(_utf8_list(table[CUSTOMER_ID]), values, strict=True))


def encode_label(
    record: Mapping[str, Any], *, labelled_at: datetime, source: str
) -> tuple[bytes, bytes]:
    """Key (transaction id) and value of a ``fraud-labels`` message for a labelled record."""
    value = {
        TRANSACTION_ID: record[TRANSACTION_ID],
        LABEL_KEY: int(record[LABEL_KEY]),
        TIMESTAMP: format_timestamp(record[TIMESTAMP]),
        CUSTOMER_ID: record[CUSTOMER_ID],
        TERMINAL_ID: record[TERMINAL_ID],
        "labelled_at": format_timestamp(labelled_at),
        "source": source,
    }
    return str(record[TRANSACTION_ID]).encode("utf-8"), _dumps(value)


def encode_labels(table: pa.Table, *, source: str) -> list[tuple[bytes, bytes]]:
    """Label messages for a labelled table, ``labelled_at`` = the transaction's time."""
    n = table.num_rows
    fields = [
        (TRANSACTION_ID, table[TRANSACTION_ID]),
        (LABEL_KEY, table[LABEL_KEY]),
        (TIMESTAMP, table[TIMESTAMP]),
        (CUSTOMER_ID, table[CUSTOMER_ID]),
        (TERMINAL_ID, table[TERMINAL_ID]),
        ("labelled_at", table[TIMESTAMP]),
        ("source", pa.array([source] * n, pa.string())),
    ]
    values = _json_objects(fields)
    if values is None:
        return [encode_label(r, labelled_at=r[TIMESTAMP], source=source) for r in table.to_pylist()]
    return list(zip(_utf8_list(table[TRANSACTION_ID]), values, strict=True))


def encode_label_table(labels: pa.Table) -> list[tuple[bytes, bytes]]:
    """Label messages for a table of labels apart (``ingest.lake.LABELS_SCHEMA``).

    Each keeps its own ``labelled_at`` and ``source``; key: the transaction id.
    """
    fields = [(name, labels[name]) for name in LABEL_FIELDS]
    values = _json_objects(fields)
    if values is None:
        return [encode_label(r, labelled_at=r[LABELLED_AT], source=r[LABEL_SOURCE])
                for r in labels.to_pylist()]
    return list(zip(_utf8_list(labels[TRANSACTION_ID]), values, strict=True))


def _utf8_list(column: pa.ChunkedArray | pa.Array) -> list[bytes]:
    return pc.cast(column, pa.binary()).to_pylist()


def _json_objects(fields: list[tuple[str, pa.ChunkedArray | pa.Array]]) -> list[bytes] | None:
    """One compact JSON object per row, concatenated by Arrow; ``None`` if a string needs escaping.

    Same bytes as :func:`_dumps` for canonical values (Arrow and Python both
    print floats in their shortest round-trip form).
    """
    parts: list[Any] = []
    for i, (name, column) in enumerate(fields):
        parts.append(("{" if i == 0 else ",") + json.dumps(name) + ":")
        if pa.types.is_timestamp(column.type):
            parts += ['"', pc.strftime(column, _ARROW_TS_FORMAT), '"']
        elif pa.types.is_string(column.type):
            if pc.any(pc.match_substring_regex(column, _NEEDS_ESCAPE)).as_py():
                return None
            parts += ['"', column, '"']
        else:
            parts.append(pc.cast(column, pa.string()))
    parts.append("}")
    return _utf8_list(pc.binary_join_element_wise(*parts, ""))


def message_time_ms(message: Any, now_ms: int) -> int:
    """The ``kafka_timestamp_ms`` to decode a consumed message with.

    Its Kafka timestamp, capped by the reader's clock ``now_ms`` (a producer
    sets the ``CreateTime`` it likes); the clock when it has none (-1).
    """
    stamp = getattr(message, "timestamp", None)
    if not isinstance(stamp, int) or stamp < 0:
        return now_ms
    return min(stamp, now_ms)


def message_where(topic: str, partition: int, offset: int) -> str:
    """How a Kafka message is named in errors: ``transactions[0]@42``."""
    return f"{topic}[{partition}]@{offset}"


def decode_transaction(
    message_value: bytes | None, where: str, *, kafka_timestamp_ms: int | None = None
) -> dict[str, Any]:
    """Validate a ``transactions`` message value into a canonical record (no label).

    ``kafka_timestamp_ms``: the message's time in ms since the epoch (the
    scorer passes ``min(message timestamp, wall clock)``); the event's
    ``timestamp`` may then be at most ``BOUNDS.max_future_skew`` after it.
    Raises :class:`~ingest.validation.ValidationError` (UTF-8, JSON, object,
    size, nesting, fields, bounds) and nothing else, whatever the bytes; the
    scorer sends such messages to the dead-letter topic.
    """
    if message_value is None:
        raise ValidationError(where, None, "empty message (null value)")
    return decode_json_record(
        message_value, where, labelled=False, message_ms=kafka_timestamp_ms
    )


#: Batches smaller than this are decoded message by message: Arrow's column
#: path has a fixed cost of ~3 ms a batch, which only pays from ~200 messages.
BATCH_DECODE_MIN_MESSAGES = 256


def decode_transactions(
    values: Sequence[bytes | None], *, kafka_timestamps_ms: Sequence[int] | None = None
) -> pa.Table | None:
    """Validate a micro-batch of ``transactions`` values at once, column by column.

    The fast path for the usual batch in which every message is valid: Arrow's
    JSON reader and the column validator that the file readers use too (the
    same rules and bounds as :func:`decode_transaction`), about 4 µs a message
    instead of 19. ``kafka_timestamps_ms``: each message's time, as
    :func:`decode_transaction`'s ``kafka_timestamp_ms``.

    Returns exactly the table :func:`decode_transaction` would give message by
    message, or None as soon as any message is not plainly valid — null, too
    large, not UTF-8, not one JSON object on one line, nested, a duplicate key,
    a bad field — and the caller then decodes message by message, which names
    each bad one. Never raises (but ``ValueError`` for timestamps that do not
    match the values one to one).
    """
    if kafka_timestamps_ms is not None and len(kafka_timestamps_ms) != len(values):
        raise ValueError(f"{len(kafka_timestamps_ms)} timestamps for {len(values)} messages")
    try:
        return _decode_batch(values, kafka_timestamps_ms)
    except MemoryError:
        raise
    except Exception:  # an optimisation only: the exact path decides
        return None


def _decode_batch(
    values: Sequence[bytes | None], kafka_timestamps_ms: Sequence[int] | None
) -> pa.Table | None:
    if not values:
        return None
    for v in values:
        # Each message one object: no BOM, no whitespace or second object around it.
        if (not isinstance(v, bytes) or not 2 <= len(v) <= MAX_RECORD_BYTES
                or v[0] != 0x7B or v[-1] != 0x7D):
            return None
    data = b"\n".join(values)  # type: ignore[arg-type]  # all bytes
    if data.count(b"\n") != len(values) - 1:
        return None  # a message spans lines: positions would not match rows
    if b"\x00" in data:
        return None  # Arrow's parser stops at a NUL; Python's refuses it
    if data.count(b"{") + data.count(b"[") > len(values):  # cheap: canonical messages have one
        for v in values:
            if v.count(b"{") + v.count(b"[") > BOUNDS.max_json_depth:  # type: ignore[union-attr]
                return None  # maybe too deep (Arrow's reader crashes on ~10,000 levels)
    try:
        data.decode("utf-8")
        raw = pjson.read_json(
            pa.BufferReader(data),
            read_options=pjson.ReadOptions(block_size=len(data) + 1, use_threads=False),
            parse_options=_BATCH_PARSE,
        )
    except (UnicodeDecodeError, pa.ArrowInvalid):
        return None  # also a duplicate key or a lone surrogate: Arrow refuses both
    if raw.num_rows != len(values):
        return None  # two objects in one message
    checked = validate_table(raw, labelled=False, row_name=str, skip_invalid=True, max_errors=0)
    if checked.skipped:
        return None
    table = checked.table
    if kafka_timestamps_ms is not None:
        times = pc.cast(table[TIMESTAMP], pa.int64()).to_numpy(zero_copy_only=False)
        if (times > _latest_live_us(kafka_timestamps_ms)).any():
            return None
    return table


def _latest_live_us(kafka_timestamps_ms: Sequence[int]) -> np.ndarray:
    """Each message's latest acceptable event time in µs (int64, clipped: never overflows)."""
    low, high = -(1 << 40), 1 << 42  # ms: far outside the timestamp bounds either side
    ms = np.array([min(max(int(t), low), high) for t in kafka_timestamps_ms], dtype=np.int64)
    return ms * 1000 + FUTURE_SKEW_US


_BATCH_PARSE = pjson.ParseOptions(
    explicit_schema=pa.schema([(TIMESTAMP, pa.string())]), unexpected_field_behavior="infer"
)


def decode_label(
    message_value: bytes | None, where: str, *, kafka_timestamp_ms: int | None = None
) -> dict[str, Any]:
    """Validate a ``fraud-labels`` message value; timestamps become UTC datetimes.

    ``kafka_timestamp_ms`` as for :func:`decode_transaction`: ``labelled_at``
    and the transaction's ``timestamp`` may be at most
    ``BOUNDS.max_future_skew`` after it. Raises nothing but
    :class:`~ingest.validation.ValidationError`, whatever the bytes.
    """
    if message_value is None:
        raise ValidationError(where, None, "empty message (null value)")
    return guarded(where, _decode_label, message_value, where, kafka_timestamp_ms)


def _decode_label(value: bytes, where: str, kafka_timestamp_ms: int | None) -> dict[str, Any]:
    return label_record(parse_json_object(value, where), where,
                        kafka_timestamp_ms=kafka_timestamp_ms)


def label_record(
    obj: Mapping[str, Any], where: str, *, kafka_timestamp_ms: int | None = None
) -> dict[str, Any]:
    """Validate one label in the ``fraud-labels`` format (a message or a file's row).

    The same rules and bounds as a transaction's fields; ``source`` is
    optional (``"unknown"``) and at most ``LABEL_SOURCE_MAX_LENGTH``
    characters. ``kafka_timestamp_ms`` as for :func:`decode_label`.
    """
    ms = kafka_timestamp_ms
    return {
        TRANSACTION_ID: parse_string(obj.get(TRANSACTION_ID), where, TRANSACTION_ID, True),
        LABEL_KEY: parse_label(obj.get(LABEL_KEY), where),
        TIMESTAMP: parse_timestamp(obj.get(TIMESTAMP), where, message_ms=ms),
        CUSTOMER_ID: parse_string(obj.get(CUSTOMER_ID), where, CUSTOMER_ID, True),
        TERMINAL_ID: parse_string(obj.get(TERMINAL_ID), where, TERMINAL_ID, True),
        LABELLED_AT: parse_timestamp(obj.get(LABELLED_AT), where, LABELLED_AT, message_ms=ms),
        LABEL_SOURCE: parse_string(obj.get(LABEL_SOURCE), where, LABEL_SOURCE, False,
                                   LABEL_SOURCE_MAX_LENGTH),
    }


def dead_letter_headers(
    reason: ValidationError | str, topic: str, partition: int, offset: int
) -> list[tuple[str, bytes]]:
    """Headers of a dead letter: why it failed (reason, field, message) and where it came from."""
    if isinstance(reason, ValidationError):
        why, field_name, message = reason.reason, reason.field or "", str(reason)
    else:
        why, field_name, message = reason, "", reason
    values = {
        HEADER_REASON: why,
        HEADER_FIELD: field_name,
        HEADER_MESSAGE: message,
        HEADER_TOPIC: topic,
        HEADER_PARTITION: str(partition),
        HEADER_OFFSET: str(offset),
    }
    return [(name, value.encode("utf-8")) for name, value in values.items()]
