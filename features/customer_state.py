"""Customer spending state: rolling windows over a card's own recent transactions.

One :class:`CustomerHistory` per customer holds that customer's transactions of
the last ``max(window) + late tolerance``, sorted by event time. Reading a
window is two binary searches and a slice sum, so the cost per event does not
depend on how the events were batched: the training replay and the live scorer
run exactly this code and get exactly the same numbers.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from features.timebase import DAY_US

#: Look-back of the novelty flags and of the time since the previous transaction
#: (capped at this when there is none).
NOVELTY_DAYS = 30


@dataclass(slots=True)
class CustomerHistory:
    """One customer's recent transactions, parallel lists sorted by event time (µs).

    ``transaction_ids`` are kept so that a repeated transaction (a producer's
    retry) is recognised for as long as the original is in the history.
    """

    times: list[int] = field(default_factory=list)
    amounts: list[float] = field(default_factory=list)
    terminals: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    transaction_ids: list[str] = field(default_factory=list)

    def insert(
        self, time_us: int, amount: float, terminal: str, category: str, transaction_id: str
    ) -> int:
        """Insert one transaction in event-time order; return its index.

        Ties keep arrival order (the new event goes after equal times), which is
        what a replay sorted stably by event time does too.
        """
        times = self.times
        if not times or time_us >= times[-1]:
            times.append(time_us)
            self.amounts.append(amount)
            self.terminals.append(terminal)
            self.categories.append(category)
            self.transaction_ids.append(transaction_id)
            return len(times) - 1
        pos = bisect_right(times, time_us)
        times.insert(pos, time_us)
        self.amounts.insert(pos, amount)
        self.terminals.insert(pos, terminal)
        self.categories.insert(pos, category)
        self.transaction_ids.insert(pos, transaction_id)
        return pos

    def expire_before(self, cutoff_us: int) -> None:
        """Forget transactions older than ``cutoff_us``."""
        k = bisect_left(self.times, cutoff_us)
        if k:
            del self.times[:k], self.amounts[:k], self.terminals[:k], self.categories[:k]
            del self.transaction_ids[:k]


class CustomerStore:
    """Customer histories by customer id, with the window features computed per event."""

    def __init__(self, windows_days: Sequence[int], late_tolerance_us: int) -> None:
        self.windows_us = tuple(int(w) * DAY_US for w in windows_days)
        self.novelty_us = NOVELTY_DAYS * DAY_US
        if max(self.windows_us) > self.novelty_us:
            raise ValueError(f"windows must not exceed the {NOVELTY_DAYS}-day novelty look-back")
        self.horizon_us = max(*self.windows_us, self.novelty_us) + late_tolerance_us
        self.histories: dict[str, CustomerHistory] = {}
        #: Customers changed, and customers dropped, since the caller last cleared these
        #: (a live scorer checkpoints only what changed).
        self.touched: set[str] = set()
        self.removed: set[str] = set()

    def feature_names(self) -> list[str]:
        """Output column names, in the order :meth:`update_and_read` fills them."""
        names: list[str] = []
        for w in self.windows_us:
            d = w // DAY_US
            names += [
                f"customer_nb_tx_{d}d",
                f"customer_avg_amount_{d}d",
                f"customer_amount_ratio_{d}d",
            ]
        return [
            *names,
            "customer_seconds_since_prev_tx",
            f"customer_terminal_seen_{NOVELTY_DAYS}d",
            f"customer_merchant_category_seen_{NOVELTY_DAYS}d",
        ]

    def repeats(self, customers: Sequence[str], transaction_ids: Sequence[str]) -> np.ndarray:
        """Which events repeat a transaction already in state or earlier in the same batch.

        A repeat is the same ``transaction_id`` for the same customer (a
        producer's retry carries the same key, so it reaches the same
        partition and the same history). Returns a boolean mask.
        """
        histories = self.histories
        seen: set[tuple[str, str]] = set()
        out = np.zeros(len(transaction_ids), dtype=bool)
        for i, (cid, txid) in enumerate(zip(customers, transaction_ids, strict=True)):
            hist = histories.get(cid)
            if (cid, txid) in seen or (hist is not None and txid in hist.transaction_ids):
                out[i] = True
            else:
                seen.add((cid, txid))
        return out

    def update_and_read(
        self,
        customers: Sequence[str],
        times_us: Sequence[int],
        amounts: Sequence[float],
        terminals: Sequence[str],
        categories: Sequence[str],
        transaction_ids: Sequence[str],
    ) -> np.ndarray:
        """Add each event to its customer's history (in order) and return its features.

        Returns a float64 array of shape ``(n, len(feature_names()))``: windows
        ``(t - w, t]`` include the event itself, as in the Handbook.
        """
        windows = self.windows_us
        histories = self.histories
        novelty_us = self.novelty_us
        no_prev_s = novelty_us / 1e6
        horizon_us = self.horizon_us
        values: list[float] = []
        emit = values.extend
        touch = self.touched.add
        for cid, t, amount, terminal, category, txid in zip(
            customers, times_us, amounts, terminals, categories, transaction_ids, strict=True
        ):
            touch(cid)
            hist = histories.get(cid)
            if hist is None:
                hist = histories[cid] = CustomerHistory()
            if hist.times and hist.times[0] < t - horizon_us - DAY_US:
                # A day of slack trims in one go what would otherwise be trimmed
                # one event at a time; retention only, never the features.
                hist.expire_before(t - horizon_us)
            times, amts = hist.times, hist.amounts
            if not times or t >= times[-1]:  # the usual case: in order, append
                times.append(t)
                amts.append(amount)
                hist.terminals.append(terminal)
                hist.categories.append(category)
                hist.transaction_ids.append(txid)
                pos = len(times) - 1
            else:
                pos = hist.insert(t, amount, terminal, category, txid)
            hi = pos + 1  # the event goes after every equal time
            lo_novel = bisect_right(times, t - novelty_us, 0, pos)
            for w in windows:  # every window is within the novelty look-back
                lo = lo_novel if w == novelty_us else bisect_right(times, t - w, lo_novel, pos)
                count = hi - lo
                avg = sum(amts[lo:hi]) / count
                emit((count, avg, amount / avg if avg > 0 else 1.0))
            emit(
                (
                    min((t - times[pos - 1]) / 1e6, no_prev_s) if pos > lo_novel else no_prev_s,
                    1.0 if terminal in hist.terminals[lo_novel:pos] else 0.0,
                    1.0 if category in hist.categories[lo_novel:pos] else 0.0,
                )
            )
        width = 3 * len(windows) + 3
        return np.array(values, dtype=np.float64).reshape(len(values) // width, width)

    def expire_idle(self, now_us: int) -> int:
        """Drop customers with nothing left inside the horizon; return how many."""
        cutoff = now_us - self.horizon_us
        idle = [cid for cid, h in self.histories.items() if not h.times or h.times[-1] < cutoff]
        for cid in idle:
            del self.histories[cid]
        self.removed.update(idle)
        self.touched.difference_update(idle)
        return len(idle)
