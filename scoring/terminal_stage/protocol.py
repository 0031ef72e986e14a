"""What the terminal stage tells every scorer: state changes and how far it has read.

One message on the state topic per stage batch, an Arrow IPC stream:

* rows: the terminal entries the batch added or whose label period changed
  (``terminal, time_us, transaction_id, fraud_from, fraud_until``); a
  replica *upserts* them, so a message published twice (after the stage
  restarts from a checkpoint and reads again) changes nothing;
* a JSON header: the behavioural configuration, the stage's epoch (which
  lineage of checkpoints it continues), its progress on each input partition
  and the expiry floor.

**Progress** is what makes scoring exact (docs/scale-out.md). For each input
partition the stage reports the event time it has reached (``labelled_at``
for labels) and, when it has read the partition to its end, the Kafka time
(the largest message timestamp it has read anywhere) at which it was seen at
its end. An event of time ``t`` and Kafka timestamp ``k`` may be scored once,
for every transactions partition, the stage has reached ``t - delay`` or had
read the partition to its end by Kafka time ``k``, and likewise for every
labels partition with ``t - label latency``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa

from features.behaviour import BehaviourConfig
from features.terminal_state import Entry

#: Layout version of a state-topic message.
PROTOCOL_VERSION = 1
STATE_TOPIC = "fraud-terminal-state"
_SCHEMA = pa.schema(
    [
        ("terminal", pa.string()),
        ("time_us", pa.int64()),
        ("transaction_id", pa.string()),
        ("fraud_from", pa.int64()),
        ("fraud_until", pa.int64()),
    ]
)


@dataclass(frozen=True)
class PartitionProgress:
    """How far the stage has read one input partition."""

    #: Latest event time read (µs; ``labelled_at`` on the labels topic), None before any.
    reached_us: int | None = None
    #: Kafka time (ms) at which the partition was last seen read to its end, if it was.
    drained_at_ms: int | None = None

    def covers(self, needed_us: int, kafka_ms: int) -> bool:
        """Whether an event needing ``needed_us`` with Kafka time ``kafka_ms`` is covered."""
        if self.reached_us is not None and self.reached_us >= needed_us:
            return True
        return self.drained_at_ms is not None and self.drained_at_ms >= kafka_ms


@dataclass(frozen=True)
class StageProgress:
    """The stage's progress on every input partition, by topic and partition."""

    transactions: Mapping[int, PartitionProgress] = field(default_factory=dict)
    labels: Mapping[int, PartitionProgress] = field(default_factory=dict)

    def covers(self, time_us: int, kafka_ms: int, delay_us: int, latency_us: int) -> bool:
        """Whether events up to ``time_us`` / ``kafka_ms`` can be scored exactly."""
        if not self.transactions:
            return False
        return all(
            p.covers(time_us - delay_us, kafka_ms) for p in self.transactions.values()
        ) and all(p.covers(time_us - latency_us, kafka_ms) for p in self.labels.values())

    def lag_us(self, time_us: int, delay_us: int, latency_us: int) -> int:
        """How far (event time) the slowest input is behind what ``time_us`` needs (>= 0)."""
        lags = [0]
        for parts, margin in ((self.transactions, delay_us), (self.labels, latency_us)):
            for p in parts.values():
                if p.drained_at_ms is None:
                    reached = p.reached_us if p.reached_us is not None else 0
                    lags.append(time_us - margin - reached)
        return max(lags)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "transactions": {str(k): asdict(v) for k, v in self.transactions.items()},
            "labels": {str(k): asdict(v) for k, v in self.labels.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StageProgress:
        """Inverse of :meth:`to_json`."""
        return cls(
            {int(k): PartitionProgress(**v) for k, v in data.get("transactions", {}).items()},
            {int(k): PartitionProgress(**v) for k, v in data.get("labels", {}).items()},
        )


@dataclass(frozen=True)
class StateMessage:
    """One state-topic message: entries, progress and the stage's identity."""

    config: BehaviourConfig
    epoch: str
    progress: StageProgress
    expiry_floor_us: int | None
    entries: Sequence[Entry] = ()


def config_json(config: BehaviourConfig) -> dict[str, Any]:
    """A behavioural configuration as JSON."""
    out = asdict(config)
    out["windows_days"] = list(config.windows_days)
    return out


def config_from_json(data: Mapping[str, Any]) -> BehaviourConfig:
    """Inverse of :func:`config_json`."""
    values = dict(data)
    values["windows_days"] = tuple(values["windows_days"])
    return BehaviourConfig(**values)


def encode(message: StateMessage) -> bytes:
    """The bytes of a state-topic message."""
    columns: list[list[Any]] = [list(col) for col in zip(*message.entries, strict=True)]
    if not columns:
        columns = [[] for _ in _SCHEMA.names]
    table = pa.Table.from_arrays(
        [pa.array(col, type=f.type) for col, f in zip(columns, _SCHEMA, strict=True)],
        schema=_SCHEMA,
    )
    header = {
        "version": PROTOCOL_VERSION,
        "config": config_json(message.config),
        "epoch": message.epoch,
        "progress": message.progress.to_json(),
        "expiry_floor_us": message.expiry_floor_us,
    }
    table = table.replace_schema_metadata({"header": json.dumps(header)})
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def decode(data: bytes) -> StateMessage:
    """Parse a state-topic message; ValueError if it is not one."""
    try:
        with pa.ipc.open_stream(pa.BufferReader(data)) as reader:
            table = reader.read_all()
        header = json.loads((table.schema.metadata or {})[b"header"])
    except (pa.ArrowInvalid, KeyError, ValueError) as err:
        raise ValueError(f"not a terminal-stage message: {err}") from None
    if header.get("version") != PROTOCOL_VERSION:
        raise ValueError(f"terminal-stage message version {header.get('version')!r}")
    cols = table.to_pydict()
    entries = list(
        zip(
            cols["terminal"],
            cols["time_us"],
            cols["transaction_id"],
            cols["fraud_from"],
            cols["fraud_until"],
            strict=True,
        )
    )
    return StateMessage(
        config=config_from_json(header["config"]),
        epoch=str(header["epoch"]),
        progress=StageProgress.from_json(header["progress"]),
        expiry_floor_us=header.get("expiry_floor_us"),
        entries=entries,
    )
