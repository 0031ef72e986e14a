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
for labels) and its position (the next offset it reads: everything before it
is in the state it published). An event of time ``t`` may be scored once,
for every transactions partition, the stage has reached ``t - delay`` or read
up to the partition's end offset as the scorer asked the broker for it
*after* fetching the event, and likewise for every labels partition with
``t - label latency``. Offsets, not clocks: nothing appended before the
scorer's question can be missing from the stage's state.
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

#: Layout version of a state-topic message, and the versions a replica reads (version 1
#: had no positions: its progress counts by event time alone).
PROTOCOL_VERSION = 2
READABLE_VERSIONS = (1, 2)
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
    #: Next offset the stage reads: every message before it is in what it published.
    position: int | None = None

    def covers(self, needed_us: int, end: int | None) -> bool:
        """Whether the stage has reached ``needed_us`` or read to offset ``end``."""
        if self.reached_us is not None and self.reached_us >= needed_us:
            return True
        return end is not None and self.position is not None and self.position >= end


@dataclass(frozen=True)
class InputEnds:
    """End offsets of the stage's input partitions, as a scorer asked the broker for them."""

    transactions: Mapping[int, int] = field(default_factory=dict)
    labels: Mapping[int, int] = field(default_factory=dict)
    #: The topics asked about (the scorer's ``--topic`` and ``--labels-topic``).
    topics: tuple[str, str | None] | None = None


@dataclass(frozen=True)
class StageProgress:
    """The stage's progress on every input partition, by topic and partition."""

    transactions: Mapping[int, PartitionProgress] = field(default_factory=dict)
    labels: Mapping[int, PartitionProgress] = field(default_factory=dict)
    #: The topics the stage reads (transactions, labels); None from a version-1 stage.
    topics: tuple[str, str | None] | None = None

    def reads_other_topics(self, ends: InputEnds) -> bool:
        """Whether the stage reads other topics than the scorer asked the ends of."""
        return None not in (self.topics, ends.topics) and self.topics != ends.topics

    def covers(
        self, time_us: int, delay_us: int, latency_us: int, ends: InputEnds | None = None
    ) -> bool:
        """Whether events up to ``time_us`` can be scored exactly.

        Without ``ends`` only event times count (the cheap check, enough while
        the stage is far enough along every partition); with ``ends`` a
        partition the stage has read to its end offset counts too, and every
        partition the broker named must be in the progress.
        """
        if not self.transactions or (ends is not None and self.reads_other_topics(ends)):
            return False
        for parts, needed, known in (
            (self.transactions, time_us - delay_us, None if ends is None else ends.transactions),
            (self.labels, time_us - latency_us, None if ends is None else ends.labels),
        ):
            names = set(parts) if known is None else set(parts) | set(known)
            for p in names:
                progress = parts.get(p)
                end = None if known is None else known.get(p)
                if progress is None or not progress.covers(needed, end):
                    return False
        return True

    def lag_us(
        self, time_us: int, delay_us: int, latency_us: int, ends: InputEnds | None = None
    ) -> int:
        """How far (event time) the slowest input is behind what ``time_us`` needs (>= 0)."""
        lags = [0]
        for parts, margin, known in (
            (self.transactions, delay_us, None if ends is None else ends.transactions),
            (self.labels, latency_us, None if ends is None else ends.labels),
        ):
            for p, progress in parts.items():
                end = None if known is None else known.get(p)
                if not progress.covers(time_us - margin, end):
                    reached = progress.reached_us if progress.reached_us is not None else 0
                    lags.append(time_us - margin - reached)
        return max(lags)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        out: dict[str, Any] = {
            "transactions": {str(k): asdict(v) for k, v in self.transactions.items()},
            "labels": {str(k): asdict(v) for k, v in self.labels.items()},
        }
        if self.topics is not None:
            out["topics"] = list(self.topics)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StageProgress:
        """Inverse of :meth:`to_json`."""
        def part(value: Mapping[str, Any]) -> PartitionProgress:
            return PartitionProgress(value.get("reached_us"), value.get("position"))

        topics = data.get("topics")
        return cls(
            {int(k): part(v) for k, v in data.get("transactions", {}).items()},
            {int(k): part(v) for k, v in data.get("labels", {}).items()},
            None if topics is None else (str(topics[0]), topics[1]),
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
    if header.get("version") not in READABLE_VERSIONS:
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
