"""Customer state per Kafka partition: what a scorer owns, moves and checkpoints.

The transactions topic is keyed by customer, so every customer lives in one
partition; a scorer keeps one :class:`PartitionState` per partition it owns.
A partition's state moves with the partition when the group rebalances, and
is checkpointed on its own, incrementally: a checkpoint row holds either the
whole partition (a *base*) or only the customers changed since the row
before (a *delta*, with the customers that left the state). Restoring is the
newest base plus every delta after it.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from features import spec
from features.behaviour import BehaviourConfig
from features.customer_state import CustomerHistory, CustomerStore
from features.state_codec import decode_customers, encode_customers
from features.timebase import DAY_US
from scoring.stream.ports import Partition, PartitionRow
from scoring.stream.sealed import CheckpointUnusable, seal, unseal

#: A new base is written after this many deltas (or once they hold more customers than it).
MAX_DELTAS_PER_BASE = 20


class PartitionState:
    """One owned partition: its customers, how far it is read, and what is not checkpointed."""

    def __init__(self, key: Partition, config: BehaviourConfig) -> None:
        self.key = key
        tolerance_us = config.late_tolerance_hours * 3_600_000_000
        self.customers = CustomerStore(config.windows_days, tolerance_us)
        #: Next offset to read (None: wherever the consumer starts).
        self.next_offset: int | None = None
        #: Latest event time in this partition's state (µs).
        self.watermark_us: int | None = None
        self._last_sweep_us: int | None = None
        #: The last checkpoint row written (or restored): its seq and next offset.
        self.seq = -1
        self.checkpointed_offset: int | None = None
        self._deltas_since_base = 0
        self._changed_since_base = 0
        #: The next row must be a base that claims the partition for this scorer (it
        #: restored the partition from another owner's rows, or starts it).
        self.claim_due = True

    # -- events -----------------------------------------------------------------------

    def repeats(self, table: pa.Table) -> np.ndarray:
        """Rows that repeat a transaction this partition holds (or an earlier row)."""
        return self.customers.repeats(
            table.column(spec.CUSTOMER_ID).to_pylist(),
            table.column(spec.TRANSACTION_ID).to_pylist(),
        )

    def update_and_read(self, table: pa.Table, times_us: np.ndarray) -> np.ndarray:
        """Add events (in row order) and return their customer features (float64)."""
        features = self.customers.update_and_read(
            table.column(spec.CUSTOMER_ID).to_pylist(),
            times_us.tolist(),
            table.column(spec.AMOUNT).to_pylist(),
            table.column(spec.TERMINAL_ID).to_pylist(),
            table.column(spec.MERCHANT_CATEGORY).to_pylist(),
            table.column(spec.TRANSACTION_ID).to_pylist(),
        )
        if len(times_us):
            self._advance(int(times_us.max()))
        return features

    def _advance(self, latest_us: int) -> None:
        """Move the watermark; once per day of event time, expire idle customers."""
        if self.watermark_us is None or latest_us > self.watermark_us:
            self.watermark_us = latest_us
        now = self.watermark_us
        if self._last_sweep_us is None:
            self._last_sweep_us = now
        elif now - self._last_sweep_us >= DAY_US:
            self.customers.expire_idle(now)
            self._last_sweep_us = now

    @property
    def dirty(self) -> bool:
        """True when something was consumed since the last checkpoint row."""
        return self.next_offset is not None and self.next_offset != self.checkpointed_offset

    # -- checkpoints ------------------------------------------------------------------

    def take_changes(self) -> tuple[set[str], set[str]]:
        """Hand the changed and removed customers to a checkpoint (forget them here)."""
        changes = (self.customers.touched, self.customers.removed)
        self.customers.touched, self.customers.removed = set(), set()
        return changes

    def give_back(self, changes: tuple[set[str], set[str]]) -> None:
        """A checkpoint failed: its changes are still to be written."""
        touched, removed = changes
        self.customers.touched |= touched - self.customers.removed
        self.customers.removed |= removed - self.customers.touched

    def row_kind(self) -> str:
        """``base`` when due (none yet, many deltas, deltas outgrowing it), else ``delta``."""
        due = (
            self.claim_due
            or self.seq < 0
            or self._deltas_since_base >= MAX_DELTAS_PER_BASE
            or self._changed_since_base > max(len(self.customers.histories), 1)
        )
        return "base" if due else "delta"

    def encode_row(
        self,
        changes: tuple[set[str], set[str]],
        kind: str,
        seq: int,
        model_version: int | None = None,
        owner: str = "",
    ) -> PartitionRow:
        """The checkpoint row of ``changes`` (all customers for a base), sealed."""
        touched, removed = changes
        histories = self.customers.histories
        header = {"watermark_us": self.watermark_us, "last_sweep_us": self._last_sweep_us}
        if kind == "base":
            blob = encode_customers(histories, header=header)
        else:
            changed = {cid: histories[cid] for cid in touched if cid in histories}
            blob = encode_customers(changed, removed=removed - changed.keys(), header=header)
        assert self.next_offset is not None
        return PartitionRow(
            topic=self.key[0],
            partition=self.key[1],
            seq=seq,
            kind=kind,
            state=seal(blob),
            next_offset=self.next_offset,
            watermark_us=self.watermark_us,
            model_version=model_version,
            owner=owner,
            claim=kind == "base" and self.claim_due,
        )

    def written(self, seq: int, kind: str, next_offset: int, changed: int) -> None:
        """Record that row ``seq`` (holding ``changed`` customers) is stored."""
        self.seq = seq
        self.checkpointed_offset = next_offset
        if kind == "base":
            self.claim_due = False
            self._deltas_since_base, self._changed_since_base = 0, 0
        else:
            self._deltas_since_base += 1
            self._changed_since_base += changed

    @classmethod
    def restore(
        cls, key: Partition, config: BehaviourConfig, rows: list[PartitionRow]
    ) -> PartitionState:
        """Rebuild a partition from its newest base and the deltas after it (verified)."""
        state = cls(key, config)
        histories: dict[str, CustomerHistory] = {}
        header: dict[str, object] = {}
        for row in rows:
            where = f"checkpoint {row.seq} of partition {key[0]}[{key[1]}]"
            payload = unseal(row.state, where)
            try:
                changed, removed, header = decode_customers(payload)
            except Exception as err:
                raise CheckpointUnusable(f"{where}: does not decode ({err})") from None
            if row.kind == "base":
                histories = changed
                state._deltas_since_base, state._changed_since_base = 0, 0
            else:
                for cid in removed:
                    histories.pop(cid, None)
                histories.update(changed)
                state._deltas_since_base += 1
                state._changed_since_base += len(changed)
        state.customers.histories = histories
        if rows:
            last = rows[-1]
            state.seq, state.next_offset = last.seq, last.next_offset
            state.checkpointed_offset = last.next_offset
            state.watermark_us = last.watermark_us
            sweep = header.get("last_sweep_us")
            state._last_sweep_us = int(sweep) if isinstance(sweep, int) else state.watermark_us
        return state
