"""Terminal risk state with label delay.

For a transaction at time ``t``, the terminal's window of ``w`` days is
``(t - delay - w, t - delay]``: its transaction count and the share of those
known to be fraud. ``terminal_fraud_streak`` is how many of the terminal's
latest known transactions (those of the longest window) were all fraud: a
compromise still running shows every recent transaction as fraud, one that was
fixed ends its known history with genuine ones, while the windowed shares
cannot tell the two apart for as long as the old frauds stay in the windows.

Labels are stored with the terminal's transactions when they arrive (with the
transaction in a labelled history, or later from the labels topic); the delay
keeps the features to what a bank would know.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from features.timebase import DAY_US


@dataclass(slots=True)
class TerminalHistory:
    """One terminal's recent transactions, sorted by event time (µs), with fraud flags."""

    times: list[int] = field(default_factory=list)
    transaction_ids: list[str] = field(default_factory=list)
    frauds: list[int] = field(default_factory=list)

    def insert(self, time_us: int, transaction_id: str, fraud: int) -> None:
        """Insert one transaction in event-time order (ties keep arrival order)."""
        times = self.times
        if not times or time_us >= times[-1]:
            times.append(time_us)
            self.transaction_ids.append(transaction_id)
            self.frauds.append(fraud)
            return
        pos = bisect_right(times, time_us)
        times.insert(pos, time_us)
        self.transaction_ids.insert(pos, transaction_id)
        self.frauds.insert(pos, fraud)

    def set_label(self, time_us: int, transaction_id: str, fraud: int) -> bool:
        """Record the label of a stored transaction; False if it is not stored."""
        times = self.times
        for pos in range(bisect_left(times, time_us), bisect_right(times, time_us)):
            if self.transaction_ids[pos] == transaction_id:
                self.frauds[pos] = fraud
                return True
        return False

    def expire_before(self, cutoff_us: int) -> None:
        """Forget transactions older than ``cutoff_us``."""
        k = bisect_left(self.times, cutoff_us)
        if k:
            del self.times[:k], self.transaction_ids[:k], self.frauds[:k]


def _fraud_streak(flags: list[int], lo: int, hi: int) -> int:
    """How many of ``flags[lo:hi]``, counted back from the last, are frauds in a row.

    Bounded by the window (``lo``), not by what happens to be stored, so the
    value does not depend on when old history was expired.
    """
    k = hi
    while k > lo and flags[k - 1]:
        k -= 1
    return hi - k


class TerminalStore:
    """Terminal histories by terminal id, with delayed risk windows per event."""

    def __init__(self, windows_days: Sequence[int], delay_days: int, late_tolerance_us: int):
        self.windows_us = tuple(int(w) * DAY_US for w in windows_days)
        self.delay_us = int(delay_days) * DAY_US
        self.late_tolerance_us = late_tolerance_us
        #: Events that arrived more than the tolerance behind their terminal's newest
        #: one: their terminal windows may miss expired history (a metric, not an error).
        self.too_late = 0
        self.horizon_us = self.delay_us + max(self.windows_us) + late_tolerance_us
        self.histories: dict[str, TerminalHistory] = {}
        #: Labels that arrived before their transaction: id -> (time_us, terminal, fraud).
        self.pending_labels: dict[str, tuple[int, str, int]] = {}

    def feature_names(self) -> list[str]:
        """Output column names, in the order :meth:`update_and_read` fills them."""
        names: list[str] = []
        for w in self.windows_us:
            d = w // DAY_US
            names += [f"terminal_nb_tx_{d}d", f"terminal_risk_{d}d"]
        return [*names, "terminal_fraud_streak"]

    def update_and_read(
        self,
        terminals: Sequence[str],
        times_us: Sequence[int],
        transaction_ids: Sequence[str],
        frauds: Sequence[int] | None,
    ) -> np.ndarray:
        """Read each event's delayed windows, then add the event to its terminal.

        ``frauds`` are labels known with the transactions (a labelled history);
        ``None`` on the live stream, where labels arrive via :meth:`apply_labels`.
        Returns float64 of shape ``(n, 2 * len(windows) + 1)``.
        """
        histories = self.histories
        pending = self.pending_labels
        delay, windows, tolerance = self.delay_us, self.windows_us, self.late_tolerance_us
        longest = max(windows)
        labels = frauds if frauds is not None else [None] * len(terminals)
        values: list[float] = []
        emit = values.extend
        for tid, t, txid, label in zip(terminals, times_us, transaction_ids, labels, strict=True):
            hist = histories.get(tid)
            if hist is None:
                hist = histories[tid] = TerminalHistory()
            times, flags = hist.times, hist.frauds
            if times and t < times[-1] - tolerance:
                self.too_late += 1
            end = t - delay
            hi = bisect_right(times, end)
            for w in windows:
                lo = bisect_right(times, end - w, 0, hi)
                if w == longest:
                    longest_lo = lo
                count = hi - lo
                emit((count, sum(flags[lo:hi]) / count if count else 0.0))
            values.append(_fraud_streak(flags, longest_lo, hi))
            if label is not None:
                fraud = int(label)
            elif pending and txid in pending:
                fraud = pending.pop(txid)[2]
            else:
                fraud = 0
            if not times or t >= times[-1]:  # the usual case: in order, append
                times.append(t)
                hist.transaction_ids.append(txid)
                flags.append(fraud)
            else:
                hist.insert(t, txid, fraud)
        width = 2 * len(windows) + 1
        return np.array(values, dtype=np.float64).reshape(len(values) // width, width)

    def apply_labels(
        self,
        transaction_ids: Sequence[str],
        terminals: Sequence[str],
        times_us: Sequence[int],
        frauds: Sequence[int],
    ) -> int:
        """Store labels that arrived separately; return how many matched a stored transaction.

        A label whose transaction has not arrived yet is kept until it does
        (or until it falls out of the horizon).
        """
        matched = 0
        for txid, tid, t, fraud in zip(transaction_ids, terminals, times_us, frauds, strict=True):
            hist = self.histories.get(tid)
            if hist is not None and hist.set_label(int(t), txid, int(fraud)):
                matched += 1
            else:
                self.pending_labels[txid] = (int(t), tid, int(fraud))
        return matched

    def expire(self, now_us: int) -> int:
        """Forget what is older than the horizon before ``now_us``; return terminals dropped.

        Terminal histories are trimmed only here, never when an event is added:
        events of one terminal come from every Kafka partition, and one
        partition may run ahead of another, so the caller decides (with its
        slowest partition's time) what "now" safely is.
        """
        cutoff = now_us - self.horizon_us
        idle = []
        for tid, hist in self.histories.items():
            if hist.times and hist.times[0] < cutoff:
                hist.expire_before(cutoff)
            if not hist.times:
                idle.append(tid)
        for tid in idle:
            del self.histories[tid]
        stale = [txid for txid, (t, _, _) in self.pending_labels.items() if t < cutoff]
        for txid in stale:
            del self.pending_labels[txid]
        return len(idle)
