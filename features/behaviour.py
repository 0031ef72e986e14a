"""Behavioural (stateful) features: one implementation for training and scoring.

The training job replays history through :func:`compute_features`; the live
scorer keeps a :class:`BehaviourState` and calls
:meth:`BehaviourState.update_and_read` on each micro-batch of events and
:meth:`BehaviourState.apply_labels` on labels. Both end in the same per-event
code of :mod:`features.customer_state` and :mod:`features.terminal_state`, so a
transaction gets the same features either way (``tests/unit/test_behaviour_parity.py``).

Ordering and lateness: events of one customer are processed in arrival order,
which on Kafka is the producer's event-time order (messages are keyed by
customer). An event that arrives out of order is inserted at its event time
and its windows are read as of that time; later events see it. State keeps
``late_tolerance`` beyond the longest look-back, so events up to that late
still find all of their window history; terminal windows end ``delay`` days
back, so cross-partition disorder shorter than the delay cannot change them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from features import spec
from features.customer_state import NOVELTY_DAYS, CustomerStore
from features.sharding import sharded_replay
from features.state_codec import decode_state, encode_state
from features.terminal_state import TerminalStore
from features.timebase import DAY_US, calendar_features, to_epoch_us

#: Below this many rows a batch replay runs in-process (pool start-up costs more).
_PARALLEL_MIN_ROWS = 200_000
#: Sweep idle keys out of the state at most this often (in event time).
_SWEEP_EVERY_US = DAY_US


@dataclass(frozen=True)
class BehaviourConfig:
    """Windows, label delay, lateness tolerance and label latency of the behavioural features.

    ``label_latency_minutes``: a label counts for events from ``labelled_at``
    plus this on (see :mod:`features.terminal_state`); the live terminal stage
    may lag this far behind the stream for labels and stay exact.
    """

    windows_days: tuple[int, ...] = spec.WINDOWS_DAYS
    delay_days: int = spec.DEFAULT_DELAY_DAYS
    late_tolerance_hours: int = 24
    label_latency_minutes: int = spec.DEFAULT_LABEL_LATENCY_MINUTES

    def __post_init__(self) -> None:
        if not self.windows_days or min(self.windows_days) <= 0:
            raise ValueError(f"windows_days must be positive, got {self.windows_days}")
        if min(self.delay_days, self.late_tolerance_hours, self.label_latency_minutes) < 0:
            raise ValueError(
                "delay_days, late_tolerance_hours and label_latency_minutes must be >= 0"
            )
        if self.windows_days != spec.WINDOWS_DAYS:
            raise ValueError(
                f"the model contract names features for windows {spec.WINDOWS_DAYS}; "
                f"got {self.windows_days}"
            )


def lookback_days(delay_days: int = spec.DEFAULT_DELAY_DAYS) -> int:
    """Days of history before an event that its behavioural features can depend on.

    Customer windows and novelty flags reach ``max(window, novelty)`` days back;
    terminal windows end ``delay`` days back and span ``max(window)`` days.
    Replaying this much history before a period gives exactly the features of
    a full replay (the training and evaluation jobs read no more than that).
    """
    return max(*spec.WINDOWS_DAYS, NOVELTY_DAYS) + delay_days


class BehaviourState:
    """Per-customer and per-terminal state of the behavioural features.

    Serialisable (:meth:`to_bytes` / :meth:`from_bytes`), bounded (keys and
    labels that fall out of the longest look-back are dropped), and warmable
    from labelled history files (:meth:`warm`).
    """

    def __init__(self, config: BehaviourConfig | None = None) -> None:
        self.config = config or BehaviourConfig()
        tolerance_us = self.config.late_tolerance_hours * 3600 * 1_000_000
        self.customers = CustomerStore(self.config.windows_days, tolerance_us)
        self.terminals = terminal_store(self.config)
        #: Latest event time seen (µs), or None before the first event.
        self.watermark_us: int | None = None
        #: Expire nothing needed by events at or after this time (µs); a live
        #: scorer sets it to its slowest partition's event time. None: the watermark.
        self.expiry_floor_us: int | None = None
        self._last_sweep_us: int | None = None

    # -- events ---------------------------------------------------------------

    def update_and_read(self, transactions: pa.Table, *, with_labels: bool = False) -> pa.Table:
        """Add events (in row order) to the state and return their features.

        ``transactions`` has the columns of :func:`features.spec.arrow_schema`.
        With ``with_labels`` the ``is_fraud`` column is stored as each
        transaction's label (labelled history); otherwise labels come later
        through :meth:`apply_labels`. Returns one row per input row with the
        columns :data:`features.spec.BEHAVIOURAL_FEATURES` (float32).
        """
        times = to_epoch_us(transactions.column(spec.TIMESTAMP))
        return self._update(transactions, times, with_labels=with_labels)

    def _update(self, table: pa.Table, times: np.ndarray, *, with_labels: bool) -> pa.Table:
        times_list = times.tolist()
        customer = self.customers.update_and_read(
            table.column(spec.CUSTOMER_ID).to_pylist(),
            times_list,
            table.column(spec.AMOUNT).to_pylist(),
            table.column(spec.TERMINAL_ID).to_pylist(),
            table.column(spec.MERCHANT_CATEGORY).to_pylist(),
            table.column(spec.TRANSACTION_ID).to_pylist(),
        )
        frauds = table.column(spec.LABEL_KEY).to_pylist() if with_labels else None
        terminal = self.terminals.update_and_read(
            table.column(spec.TERMINAL_ID).to_pylist(),
            times_list,
            table.column(spec.TRANSACTION_ID).to_pylist(),
            frauds,
            labelled_us(table, times).tolist() if with_labels else None,
        )
        if len(times):
            self._advance(int(times.max()))
        return assemble_features(
            self.customers.feature_names(),
            customer,
            self.terminals.feature_names(),
            terminal,
            times,
        )

    def _update_with_labels(self, table: pa.Table, times: np.ndarray, labels: pa.Table) -> pa.Table:
        """:meth:`_update` without the rows' labels; ``labels`` applied when they count."""
        times_list = times.tolist()
        customer = self.customers.update_and_read(
            table.column(spec.CUSTOMER_ID).to_pylist(),
            times_list,
            table.column(spec.AMOUNT).to_pylist(),
            table.column(spec.TERMINAL_ID).to_pylist(),
            table.column(spec.MERCHANT_CATEGORY).to_pylist(),
            table.column(spec.TRANSACTION_ID).to_pylist(),
        )
        terminal = replay_terminals(
            self.terminals,
            table.column(spec.TERMINAL_ID).to_pylist(),
            times_list,
            table.column(spec.TRANSACTION_ID).to_pylist(),
            labels,
        )
        if len(times):
            self._advance(int(times.max()))
        return assemble_features(
            self.customers.feature_names(),
            customer,
            self.terminals.feature_names(),
            terminal,
            times,
        )

    def repeats(self, transactions: pa.Table) -> np.ndarray:
        """Mask of the rows repeating a transaction in state or earlier in ``transactions``.

        The live scorer drops them before :meth:`update_and_read`, as the file
        readers drop a repeated id: a producer's retry is one transaction.
        """
        return self.customers.repeats(
            transactions.column(spec.CUSTOMER_ID).to_pylist(),
            transactions.column(spec.TRANSACTION_ID).to_pylist(),
        )

    def apply_labels(self, labels: pa.Table) -> int:
        """Store fraud labels that arrived separately (the labels topic).

        ``labels`` has ``transaction_id``, ``terminal_id``, ``timestamp`` (of the
        transaction), ``is_fraud`` and, optionally, ``labelled_at``. Returns how
        many changed a stored transaction; the others wait for their transaction.
        """
        times = to_epoch_us(labels.column(spec.TIMESTAMP))
        return len(
            self.terminals.apply_labels(
                labels.column(spec.TRANSACTION_ID).to_pylist(),
                labels.column(spec.TERMINAL_ID).to_pylist(),
                times.tolist(),
                labels.column(spec.LABEL_KEY).to_pylist(),
                labelled_us(labels, times).tolist(),
            )
        )

    def warm(self, history: pa.Table) -> int:
        """Replay a labelled history into the state; return the rows replayed.

        Rows at or before the current watermark are skipped, so warming a
        restored state with the same history again counts nothing twice.
        """
        times = to_epoch_us(history.column(spec.TIMESTAMP))
        if self.watermark_us is not None:
            keep = times > self.watermark_us
            history, times = history.filter(pa.array(keep)), times[keep]
        order = np.argsort(times, kind="stable")
        if not np.array_equal(order, np.arange(len(order))):
            history, times = history.take(pa.array(order)), times[order]
        self._update(history, times, with_labels=True)
        return history.num_rows

    # -- bookkeeping ----------------------------------------------------------

    def _advance(self, latest_us: int) -> None:
        """Move the watermark; once per day of event time, expire what no event needs."""
        if self.watermark_us is None or latest_us > self.watermark_us:
            self.watermark_us = latest_us
        now = self.watermark_us
        if self.expiry_floor_us is not None:
            now = min(now, self.expiry_floor_us)
        if self._last_sweep_us is None:
            self._last_sweep_us = now
        elif now - self._last_sweep_us >= _SWEEP_EVERY_US:
            self.customers.expire_idle(now)
            self.terminals.expire(now)
            self._last_sweep_us = now

    def size(self) -> dict[str, int]:
        """Keys and stored events, for metrics and memory checks."""
        return {
            "customers": len(self.customers.histories),
            "customer_events": sum(len(h.times) for h in self.customers.histories.values()),
            "terminals": len(self.terminals.histories),
            "terminal_events": sum(len(h.times) for h in self.terminals.histories.values()),
            "pending_labels": len(self.terminals.pending_labels),
        }

    def to_bytes(self) -> bytes:
        """Serialise the whole state (config included); see :mod:`features.state_codec`."""
        return encode_state(self)

    @classmethod
    def from_bytes(cls, data: bytes) -> BehaviourState:
        """Restore a state written by :meth:`to_bytes`."""
        return decode_state(data, cls)


def terminal_store(config: BehaviourConfig) -> TerminalStore:
    """A terminal store with ``config``'s windows, delay, tolerance and label latency."""
    return TerminalStore(
        config.windows_days,
        config.delay_days,
        config.late_tolerance_hours * 3_600_000_000,
        config.label_latency_minutes * 60_000_000,
    )


def labelled_us(table: pa.Table, times_us: np.ndarray) -> np.ndarray:
    """When each row's label became known (µs).

    ``labelled_at`` where the table has it, else the transaction's own time:
    the Handbook's protocol, labels known with the transaction and used once
    the window's delay has passed.
    """
    if spec.LABELLED_AT not in table.column_names:
        return times_us
    column = table.column(spec.LABELLED_AT)
    known = to_epoch_us(column.fill_null(pa.scalar(0, pa.timestamp("us", tz="UTC"))))
    return np.where(known == 0, times_us, known)


def replay_terminals(
    store: TerminalStore,
    terminals: list[str],
    times_us: list[int],
    transaction_ids: list[str],
    labels: pa.Table,
) -> np.ndarray:
    """Batch replay of time-sorted transactions with labels apart, as the live stage sees them.

    The transactions are added without labels (:meth:`TerminalStore.update_and_read`
    with ``frauds=None``); each label goes through :meth:`TerminalStore.apply_labels`,
    in ``labelled_at`` order (ties: table order), just before the first
    transaction at or after the moment it counts from (``labelled_at`` plus the
    label latency). A label only changes features from that moment, and the
    store keeps one fraud period per transaction whatever the order of
    transactions and labels between two reads, so this gives the features of
    the live terminal stage, which applies each label whenever it reads it
    (before a scorer may need it; docs/scale-out.md).
    """
    width = 2 * len(store.windows_us) + 1
    if labels.num_rows == 0:
        return store.update_and_read(terminals, times_us, transaction_ids, None)
    label_times = to_epoch_us(labels.column(spec.TIMESTAMP))
    known = labelled_us(labels, label_times)
    order = np.argsort(known, kind="stable")
    known, label_times = known[order], label_times[order]
    picked = pa.array(order)
    label_ids = labels.column(spec.TRANSACTION_ID).take(picked).to_pylist()
    label_terminals = labels.column(spec.TERMINAL_ID).take(picked).to_pylist()
    label_values = labels.column(spec.LABEL_KEY).take(picked).to_pylist()
    # Labels known from ``known + latency`` on go before the first row at or after it.
    positions = np.searchsorted(np.asarray(times_us, dtype=np.int64),
                                known + store.label_latency_us, side="left")
    bounds = [*np.flatnonzero(np.diff(positions, prepend=-1)).tolist(), len(positions)]
    parts: list[np.ndarray] = []
    done = 0
    for g in range(len(bounds) - 1):
        lo, hi = bounds[g], bounds[g + 1]
        at = int(positions[lo])
        if at > done:
            parts.append(store.update_and_read(terminals[done:at], times_us[done:at],
                                               transaction_ids[done:at], None))
            done = at
        store.apply_labels(label_ids[lo:hi], label_terminals[lo:hi],
                           label_times[lo:hi].tolist(), label_values[lo:hi],
                           known[lo:hi].tolist())
    if done < len(times_us):
        parts.append(store.update_and_read(terminals[done:], times_us[done:],
                                           transaction_ids[done:], None))
    if not parts:
        return np.zeros((0, width), dtype=np.float64)
    return np.concatenate(parts)


def assemble_features(
    customer_names: list[str],
    customer: np.ndarray,
    terminal_names: list[str],
    terminal: np.ndarray,
    times: np.ndarray,
) -> pa.Table:
    """Stack customer, terminal and calendar columns into the contract's feature table."""
    columns: dict[str, np.ndarray] = {}
    for j, name in enumerate(customer_names):
        columns[name] = customer[:, j].astype(np.float32)
    for j, name in enumerate(terminal_names):
        columns[name] = terminal[:, j].astype(np.float32)
    columns.update(calendar_features(times))
    return pa.Table.from_pydict(
        {name: columns[name] for name in spec.BEHAVIOURAL_FEATURES},
        schema=spec.features_arrow_schema(),
    )


def compute_features(
    transactions: pa.Table,
    config: BehaviourConfig | None = None,
    *,
    workers: int | None = None,
    labels: pa.Table | None = None,
) -> pa.Table:
    """Batch path: replay a labelled table through fresh state, in event-time order.

    Rows are replayed sorted stably by timestamp (the order ``fraud produce``
    publishes them), each row's ``is_fraud`` stored as its label, known from
    its ``labelled_at`` (default: the transaction's time). With ``labels``
    (every label with its ``labelled_at``, as a lake or a labels file keeps
    them; several per transaction allowed) the rows' own labels are ignored
    and each label is applied as the live terminal stage applies it
    (:func:`replay_terminals`). The result is aligned row for row with the
    input. Customer and terminal state are independent, so large tables are
    split into key shards replayed in ``workers`` processes (default: one per
    CPU) — each shard runs the same per-event code as the live scorer, on the
    same events in the same order.
    """
    config = config or BehaviourConfig()
    times = to_epoch_us(transactions.column(spec.TIMESTAMP))
    order = np.argsort(times, kind="stable")
    if not np.array_equal(order, np.arange(len(order))):
        transactions, times = transactions.take(pa.array(order)), times[order]
    workers = workers or os.cpu_count() or 1
    if workers <= 1 or transactions.num_rows < _PARALLEL_MIN_ROWS:
        state = BehaviourState(config)
        if labels is None:
            features = state._update(transactions, times, with_labels=True)
        else:
            features = state._update_with_labels(transactions, times, labels)
    else:
        features = sharded_replay(transactions, times, config, workers, labels)
    if np.array_equal(order, np.arange(len(order))):
        return features
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    return features.take(pa.array(inverse))
