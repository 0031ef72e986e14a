"""Terminal risk state: delayed windows over a terminal's transactions, with point-in-time labels.

For a transaction at time ``t``, the terminal's window of ``w`` days holds the
terminal's transactions of ``(t - delay - w, t - delay]`` — with a delay of 0,
those strictly before ``t`` (simultaneous transactions do not see each
other). Its features are the count of those transactions and the share of
them known to be fraud *at t*. ``terminal_fraud_streak`` is how many of the
terminal's latest transactions of the longest window, counted back from the
last, were all known fraud: a compromise still running shows every recent
transaction as fraud, one that was fixed ends with genuine ones.

**The label rule**, the same in the batch and the live path: a label counts
from ``labelled_at + label_latency`` on, and the latest label known wins from
the moment it is known (a chargeback that arrives after an analyst's
"false positive" makes the transaction fraud from then on; an analyst's
"false positive" after a chargeback makes it genuine from then on). A
transaction without a label is genuine. Each transaction keeps one fraud
period ``[fraud_from, fraud_until)``: a label sequence fraud, genuine, fraud
keeps only the last period (see docs/features.md).

The store has three uses, all on this code: the batch replay
(:meth:`TerminalStore.update_and_read`: read each event's features, then add
it), the terminal stage of the live system (:meth:`TerminalStore.insert` and
:meth:`TerminalStore.apply_labels`), and each scorer's read-only replica of
the stage's state (:meth:`TerminalStore.read`).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from features.timebase import DAY_US

#: "Never", in µs: a transaction not (or no longer) fraud.
NEVER = 2**62
#: One stored transaction as the stage shares it: terminal, time, id, fraud period.
Entry = tuple[str, int, str, int, int]


@dataclass(slots=True)
class TerminalHistory:
    """One terminal's recent transactions, sorted by event time (µs), with their label periods."""

    times: list[int] = field(default_factory=list)
    transaction_ids: list[str] = field(default_factory=list)
    #: From when each transaction counts as fraud (``NEVER``: it does not).
    fraud_from: list[int] = field(default_factory=list)
    #: From when it no longer does (``NEVER``: still fraud, or never was).
    fraud_until: list[int] = field(default_factory=list)
    #: How many entries carry a fraud period (0: every window is fraud-free).
    flagged: int = 0

    def find(self, time_us: int, transaction_id: str) -> int:
        """Position of a stored transaction, or -1."""
        times = self.times
        ids = self.transaction_ids
        for pos in range(bisect_left(times, time_us), bisect_right(times, time_us)):
            if ids[pos] == transaction_id:
                return pos
        return -1

    def insert(
        self, time_us: int, transaction_id: str, fraud_from: int = NEVER, fraud_until: int = NEVER
    ) -> bool:
        """Insert one transaction in event-time order (ties keep arrival order).

        False (and nothing changes) when the same transaction is already stored.
        """
        times = self.times
        if not times or time_us > times[-1]:
            pos = len(times)
        else:
            if self.find(time_us, transaction_id) >= 0:
                return False
            pos = bisect_right(times, time_us)
        times.insert(pos, time_us)
        self.transaction_ids.insert(pos, transaction_id)
        self.fraud_from.insert(pos, fraud_from)
        self.fraud_until.insert(pos, fraud_until)
        if fraud_from != NEVER:
            self.flagged += 1
        return True

    def set_period(self, pos: int, fraud_from: int, fraud_until: int) -> None:
        """Set the fraud period of the entry at ``pos``."""
        self.flagged += int(fraud_from != NEVER) - int(self.fraud_from[pos] != NEVER)
        self.fraud_from[pos] = fraud_from
        self.fraud_until[pos] = fraud_until

    def expire_before(self, cutoff_us: int) -> None:
        """Forget transactions older than ``cutoff_us``."""
        k = bisect_left(self.times, cutoff_us)
        if k:
            self.flagged -= sum(1 for f in self.fraud_from[:k] if f != NEVER)
            del self.times[:k], self.transaction_ids[:k], self.fraud_from[:k]
            del self.fraud_until[:k]


def labelled_period(
    fraud_from: int, fraud_until: int, is_fraud: int, known_us: int
) -> tuple[int, int]:
    """The fraud period after a label known at ``known_us`` (the latest known label wins).

    Labels arriving in ``labelled_at`` order give the rule exactly. A label
    arriving after a newer one (a publisher's retry, a late partition) does
    not undo it: a fraud label older than the genuine one that ended the
    period only moves the period's start back, a genuine label older than an
    open period's start is ignored, so a repeated label changes nothing.
    """
    if is_fraud:
        if fraud_from == NEVER or known_us >= fraud_until:
            return known_us, NEVER  # fraud from now on (a finished period is replaced)
        return min(fraud_from, known_us), fraud_until
    if fraud_from == NEVER:
        return NEVER, NEVER  # genuine already
    if fraud_until != NEVER:
        if fraud_from < known_us < fraud_until:
            return fraud_from, known_us  # an earlier genuine label, arriving late
        return fraud_from, fraud_until
    if known_us == fraud_from:
        return NEVER, NEVER  # known with the fraud label, after it: the genuine one wins
    if known_us < fraud_from:
        return fraud_from, fraud_until  # older than the fraud label: the fraud one wins
    return fraud_from, known_us


class TerminalStore:
    """Terminal histories by terminal id, with delayed, point-in-time risk windows per event."""

    def __init__(
        self,
        windows_days: Sequence[int],
        delay_days: int,
        late_tolerance_us: int,
        label_latency_us: int = 0,
    ) -> None:
        self.windows_us = tuple(int(w) * DAY_US for w in windows_days)
        self.delay_us = int(delay_days) * DAY_US
        self.late_tolerance_us = late_tolerance_us
        self.label_latency_us = label_latency_us
        #: Events that arrived more than the tolerance behind their terminal's newest
        #: one: their terminal windows may miss expired history (a metric, not an error).
        self.too_late = 0
        self.horizon_us = (
            self.delay_us + max(self.windows_us) + late_tolerance_us
        )
        self.histories: dict[str, TerminalHistory] = {}
        #: Labels that arrived before their transaction: id -> (time_us, terminal, fraud, known).
        self.pending_labels: dict[str, tuple[int, str, int, int]] = {}

    def feature_names(self) -> list[str]:
        """Output column names, in the order :meth:`read` fills them."""
        names: list[str] = []
        for w in self.windows_us:
            d = w // DAY_US
            names += [f"terminal_nb_tx_{d}d", f"terminal_risk_{d}d"]
        return [*names, "terminal_fraud_streak"]

    # -- reading ------------------------------------------------------------------

    def _read_one(self, hist: TerminalHistory | None, t: int, emit: list[float]) -> None:
        """Append the features of an event at ``t`` to ``emit``."""
        windows = self.windows_us
        if hist is None or not hist.times:
            for _ in windows:
                emit += (0.0, 0.0)
            emit.append(0.0)
            return
        times = hist.times
        end = t - self.delay_us
        hi = bisect_right(times, end) if self.delay_us else bisect_left(times, t)
        bounds = [bisect_right(times, end - w, 0, hi) for w in windows]
        if not hist.flagged:
            for lo in bounds:
                emit += (hi - lo, 0.0)
            emit.append(0.0)
            return
        frm, until = hist.fraud_from, hist.fraud_until
        longest = min(bounds)
        # Walk back from the newest: the streak, then every window's fraud count.
        known = [frm[k] <= t < until[k] for k in range(longest, hi)]
        streak = 0
        for flag in reversed(known):
            if not flag:
                break
            streak += 1
        for lo in bounds:
            count = hi - lo
            frauds = sum(known[lo - longest :])
            emit += (count, frauds / count if count else 0.0)
        emit.append(float(streak))

    def read(self, terminals: Sequence[str], times_us: Sequence[int]) -> np.ndarray:
        """The features of events at ``times_us`` (nothing is added to the state)."""
        histories = self.histories
        values: list[float] = []
        for tid, t in zip(terminals, times_us, strict=True):
            self._read_one(histories.get(tid), t, values)
        width = 2 * len(self.windows_us) + 1
        return np.array(values, dtype=np.float64).reshape(len(values) // width, width)

    def update_and_read(
        self,
        terminals: Sequence[str],
        times_us: Sequence[int],
        transaction_ids: Sequence[str],
        frauds: Sequence[int] | None,
        known_us: Sequence[int] | None = None,
    ) -> np.ndarray:
        """Batch path: read each event's windows, then add the event to its terminal.

        ``frauds`` are labels known with the transactions (a labelled history),
        each known at ``known_us`` (default: the transaction's own time);
        ``None`` when labels come separately through :meth:`apply_labels`.
        Returns float64 of shape ``(n, 2 * len(windows) + 1)``.
        """
        histories = self.histories
        tolerance = self.late_tolerance_us
        values: list[float] = []
        labels = frauds if frauds is not None else [0] * len(terminals)
        known = known_us if known_us is not None else times_us
        for tid, t, txid, label, k in zip(
            terminals, times_us, transaction_ids, labels, known, strict=True
        ):
            hist = histories.get(tid)
            if hist is None:
                hist = histories[tid] = TerminalHistory()
            if hist.times and t < hist.times[-1] - tolerance:
                self.too_late += 1
            self._read_one(hist, t, values)
            self._add(hist, t, txid, int(label), int(k))
        width = 2 * len(self.windows_us) + 1
        return np.array(values, dtype=np.float64).reshape(len(values) // width, width)

    # -- writing ----------------------------------------------------------------

    def _add(
        self, hist: TerminalHistory, t: int, txid: str, fraud: int, known: int
    ) -> tuple[int, int] | None:
        """Store a transaction (and a label waiting for it); its period, None for a repeat."""
        frm, until = NEVER, NEVER
        if fraud:
            frm = known + self.label_latency_us
        pending = self.pending_labels.pop(txid, None) if self.pending_labels else None
        if pending is not None:
            frm, until = labelled_period(frm, until, pending[2], pending[3])
        return (frm, until) if hist.insert(t, txid, frm, until) else None

    def insert(
        self, terminals: Sequence[str], times_us: Sequence[int], transaction_ids: Sequence[str]
    ) -> list[Entry]:
        """Add live transactions (labels come later); the entries actually added.

        A transaction already stored (a repeat) is not added again.
        """
        added: list[Entry] = []
        histories = self.histories
        tolerance = self.late_tolerance_us
        for tid, t, txid in zip(terminals, times_us, transaction_ids, strict=True):
            hist = histories.get(tid)
            if hist is None:
                hist = histories[tid] = TerminalHistory()
            if hist.times and t < hist.times[-1] - tolerance:
                self.too_late += 1
            period = self._add(hist, t, txid, 0, t)
            if period is not None:
                added.append((tid, t, txid, *period))
        return added

    def apply_labels(
        self,
        transaction_ids: Sequence[str],
        terminals: Sequence[str],
        times_us: Sequence[int],
        frauds: Sequence[int],
        labelled_us: Sequence[int] | None = None,
    ) -> list[Entry]:
        """Apply labels that arrived separately, in order; the periods they set.

        ``labelled_us`` is when each label became known (default: its
        transaction's time, the Handbook's protocol); it counts from that plus
        the label latency. A label whose transaction has not arrived yet is
        kept until it does (or falls out of the horizon). Returns
        ``(terminal, time, transaction_id, fraud_from, fraud_until)`` of every
        stored transaction whose period changed.
        """
        changed: list[Entry] = []
        latency = self.label_latency_us
        known_at = labelled_us if labelled_us is not None else times_us
        for txid, tid, t, fraud, labelled in zip(
            transaction_ids, terminals, times_us, frauds, known_at, strict=True
        ):
            t, fraud, known = int(t), int(fraud), int(labelled) + latency
            hist = self.histories.get(tid)
            pos = hist.find(t, txid) if hist is not None else -1
            if hist is None or pos < 0:
                previous = self.pending_labels.get(txid)
                if previous is None or previous[3] <= known:
                    self.pending_labels[txid] = (t, tid, fraud, known)
                continue
            period = labelled_period(hist.fraud_from[pos], hist.fraud_until[pos], fraud, known)
            if period != (hist.fraud_from[pos], hist.fraud_until[pos]):
                hist.set_period(pos, *period)
                changed.append((tid, t, txid, *period))
        return changed

    def upsert(self, entries: Sequence[Entry]) -> None:
        """Apply entries computed elsewhere: a replica following the terminal stage.

        An entry already stored gets the entry's period; a new one is inserted.
        """
        histories = self.histories
        for tid, t, txid, frm, until in entries:
            hist = histories.get(tid)
            if hist is None:
                hist = histories[tid] = TerminalHistory()
            if not hist.insert(t, txid, frm, until):  # stored already: a label, or a repeat
                hist.set_period(hist.find(t, txid), frm, until)

    def expire(self, now_us: int) -> int:
        """Forget what is older than the horizon before ``now_us``; return terminals dropped.

        Terminal histories are trimmed only here, never when an event is added:
        events of one terminal come from every Kafka partition, and one
        partition may run ahead of another, so the caller decides (with its
        slowest partition's time) what "now" safely is.
        """
        return self.expire_before(now_us - self.horizon_us)

    def expire_before(self, cutoff: int) -> int:
        """Forget transactions older than ``cutoff`` (µs); return terminals dropped."""
        idle = []
        for tid, hist in self.histories.items():
            if hist.times and hist.times[0] < cutoff:
                hist.expire_before(cutoff)
            if not hist.times:
                idle.append(tid)
        for tid in idle:
            del self.histories[tid]
        stale = [txid for txid, (t, *_rest) in self.pending_labels.items() if t < cutoff]
        for txid in stale:
            del self.pending_labels[txid]
        return len(idle)
