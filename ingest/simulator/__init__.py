"""A synthetic bank: labelled card transactions with realistic fraud scenarios.

Follows the transaction data simulator of the Fraud Detection Handbook (Le Borgne,
Siblini, Lebichot, Bontempi; ULB / Worldline, chapter 3) for the population, the genuine
activity and fraud scenarios 1-3, adds merchant category, country and channel per
terminal, and a card-testing scenario. Fully vectorised and deterministic per seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from ingest.simulator.activity import Transactions, genuine_transactions
from ingest.simulator.config import ScenarioConfig, SimulationConfig, parse_start_date
from ingest.simulator.labels import LabelConfig, realistic_labels
from ingest.simulator.population import Population, make_customers, make_terminals
from ingest.simulator.scenarios import (
    Compromises,
    Scenario,
    card_testing,
    compromised_cards,
    compromised_terminals,
    large_amounts,
)
from ingest.simulator.table import to_table

__all__ = [
    "Compromises",
    "LabelConfig",
    "Scenario",
    "ScenarioConfig",
    "SimulationConfig",
    "SimulationResult",
    "parse_start_date",
    "simulate",
]


@dataclass(frozen=True)
class SimulationResult:
    """The simulated transactions and what is known about how they were made."""

    config: SimulationConfig
    #: The contract's labelled table (``features.spec.arrow_schema(labelled=True)``),
    #: sorted by timestamp; transaction ids count up in that order.
    table: pa.Table
    #: :class:`Scenario` of each row of ``table`` (int8; 0 = genuine).
    scenario: np.ndarray
    population: Population
    #: Compromises by scenario: terminals (2), cards (3), tested cards (4).
    compromises: dict[Scenario, Compromises]
    #: Population index of each row's customer and terminal.
    customer_index: np.ndarray
    terminal_index: np.ndarray

    def realistic_labels(self, config: LabelConfig | None = None) -> pa.Table:
        """Every label the bank gets, as it gets them (:mod:`ingest.simulator.labels`).

        Drawn from the seed's own random stream: the transactions do not change.
        """
        rng = _generators(self.config.seed, _PARTS + 1)[_PARTS]
        return realistic_labels(self.table, config or LabelConfig(), rng)

    def frauds_per_scenario(self) -> dict[str, int]:
        """Count the fraudulent transactions of each scenario, by scenario name."""
        counts = np.bincount(self.scenario, minlength=len(Scenario))
        return {s.name.lower(): int(counts[s]) for s in Scenario if s is not Scenario.GENUINE}

    def figures(self) -> dict[str, Any]:
        """Summarise: transactions, frauds, fraud rate, frauds per scenario, sizes."""
        transactions = len(self.scenario)
        frauds = int(np.count_nonzero(self.scenario))
        return {
            "transactions": transactions,
            "frauds": frauds,
            "fraud_rate": round(frauds / transactions, 6) if transactions else 0.0,
            "frauds_per_scenario": self.frauds_per_scenario(),
            "customers": self.config.customers,
            "terminals": self.config.terminals,
            "days": self.config.days,
            "start_date": self.config.start_date.isoformat(),
            "seed": self.config.seed,
        }


#: Random streams of the transactions; the labels use the next one.
_PARTS = 6


def _generators(seed: int, count: int) -> list[np.random.Generator]:
    """Make independent random streams, one per part, so a change to one leaves the others alone."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(count)]


def simulate(config: SimulationConfig) -> SimulationResult:
    """Simulate the bank described by ``config``; the same config gives the same result."""
    rng_terminals, rng_customers, rng_activity, rng_s2, rng_s3, rng_s4 = _generators(
        config.seed, _PARTS
    )
    terminals = make_terminals(config.terminals, config.home_country, rng_terminals)
    customers = make_customers(config.customers, terminals, config.radius, rng_customers)
    population = Population(customers=customers, terminals=terminals)
    fraud = config.scenarios

    tx = genuine_transactions(customers, config.days, rng_activity)
    tx = large_amounts(tx, fraud.large_amount_threshold)
    tx, terminal_events = compromised_terminals(tx, len(terminals), config.days, fraud, rng_s2)
    tx, card_events = compromised_cards(tx, len(customers), config.days, fraud, rng_s3)
    tested, testing_events = card_testing(
        population, config.days, config.home_country, fraud, rng_s4
    )
    tx = Transactions.concat([tx, tested])
    tx = tx.take(np.argsort(tx.seconds, kind="stable"))

    return SimulationResult(
        config=config,
        table=to_table(tx, population, config.start_date),
        scenario=tx.scenario,
        population=population,
        compromises={
            Scenario.COMPROMISED_TERMINAL: terminal_events,
            Scenario.COMPROMISED_CARD: card_events,
            Scenario.CARD_TESTING: testing_events,
        },
        customer_index=tx.customer,
        terminal_index=tx.terminal,
    )
