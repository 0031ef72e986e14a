"""Genuine card activity: who pays where, when and how much (Handbook §3.2.4).

Each customer makes Poisson(mean_nb_tx_per_day) transactions a day, at a time of day drawn
from Normal(12:00, 20,000 s) — draws outside the day are dropped, as in the Handbook — for
an amount drawn from Normal(mean, std) — a negative draw is replaced by U(0, 2 * mean) —
at a terminal chosen uniformly among those within radius of home.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ingest.simulator.population import Customers

SECONDS_PER_DAY = 86_400
TIME_OF_DAY_MEAN = SECONDS_PER_DAY / 2
TIME_OF_DAY_STD = 20_000.0


@dataclass(frozen=True)
class Transactions:
    """Columns of simulated transactions, in no particular order; indices into the population."""

    #: Seconds since the start of the simulated period.
    seconds: np.ndarray
    customer: np.ndarray
    terminal: np.ndarray
    amount: np.ndarray
    #: Fraud scenario per row (0 = genuine); see :class:`ingest.simulator.Scenario`.
    scenario: np.ndarray

    def __len__(self) -> int:
        return len(self.seconds)

    @property
    def day(self) -> np.ndarray:
        """Return the day of the period (0-based) of each transaction."""
        return self.seconds // SECONDS_PER_DAY

    @staticmethod
    def concat(parts: list[Transactions]) -> Transactions:
        """Stack the rows of ``parts`` one after the other."""
        return Transactions(
            seconds=np.concatenate([p.seconds for p in parts]),
            customer=np.concatenate([p.customer for p in parts]),
            terminal=np.concatenate([p.terminal for p in parts]),
            amount=np.concatenate([p.amount for p in parts]),
            scenario=np.concatenate([p.scenario for p in parts]),
        )

    def take(self, order: np.ndarray) -> Transactions:
        """Select the rows at positions ``order``."""
        return Transactions(
            seconds=self.seconds[order],
            customer=self.customer[order],
            terminal=self.terminal[order],
            amount=self.amount[order],
            scenario=self.scenario[order],
        )


def genuine_transactions(customers: Customers, days: int, rng: np.random.Generator) -> Transactions:
    """All genuine transactions of ``customers`` over ``days`` days, vectorised."""
    n = len(customers)
    counts = rng.poisson(customers.mean_nb_tx_per_day, size=(days, n)).ravel()
    customer = np.repeat(np.tile(np.arange(n, dtype=np.int32), days), counts)
    day = np.repeat(np.repeat(np.arange(days, dtype=np.int64), n), counts)

    time_of_day = rng.normal(TIME_OF_DAY_MEAN, TIME_OF_DAY_STD, len(customer)).astype(np.int64)
    degree = np.diff(customers.terminal_offsets)[customer]
    keep = (time_of_day > 0) & (time_of_day < SECONDS_PER_DAY) & (degree > 0)
    customer, day, time_of_day, degree = customer[keep], day[keep], time_of_day[keep], degree[keep]

    mean = customers.mean_amount[customer]
    amount = rng.normal(mean, customers.std_amount[customer])
    negative = np.flatnonzero(amount < 0)
    amount[negative] = rng.uniform(0, 2 * mean[negative])

    pick = np.minimum((rng.random(len(customer)) * degree).astype(np.int64), degree - 1)
    terminal = customers.terminal_index[customers.terminal_offsets[customer] + pick]
    return Transactions(
        seconds=day * SECONDS_PER_DAY + time_of_day,
        customer=customer,
        terminal=terminal.astype(np.int32),
        amount=np.round(amount, 2),
        scenario=np.zeros(len(customer), dtype=np.int8),
    )
