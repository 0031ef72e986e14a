"""Fraud scenarios: which transactions are fraud, and the fraudulent transactions added.

Scenarios 1-3 are those of the Fraud Detection Handbook (§3.2.5), applied in that order to
the genuine transactions, a later one overriding an earlier one's label. Scenario 4, card
testing, adds transactions of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import IntEnum

import numpy as np

from ingest.simulator.activity import SECONDS_PER_DAY, Transactions
from ingest.simulator.config import ScenarioConfig
from ingest.simulator.population import CASHOUT_MCCS, Population, Terminals


class Scenario(IntEnum):
    """Why a transaction is (or is not) fraud."""

    GENUINE = 0
    #: Any amount above the threshold (Handbook scenario 1).
    LARGE_AMOUNT = 1
    #: Every transaction at a terminal compromised for some weeks (Handbook scenario 2).
    COMPROMISED_TERMINAL = 2
    #: A share of a compromised card's transactions, amounts inflated (Handbook scenario 3).
    COMPROMISED_CARD = 3
    #: A burst of tiny online payments, then a large cash-out purchase.
    CARD_TESTING = 4


@dataclass(frozen=True)
class Compromises:
    """When (day of the period) the fraudsters took which terminal or card."""

    day: np.ndarray
    target: np.ndarray


#: The population sizes the daily attack counts of :class:`ScenarioConfig` are given for.
REFERENCE_CUSTOMERS = 5_000
REFERENCE_TERMINALS = 10_000


def _daily_targets(
    rng: np.random.Generator, days: int, expected_per_day: float, population: int
) -> Compromises:
    """Draw distinct targets among ``population`` each day, ``expected_per_day`` on average.

    A whole expected count is drawn exactly every day (as in the Handbook); a fractional
    one is rounded up or down at random.
    """
    whole = int(np.floor(expected_per_day + 1e-9))
    fraction = expected_per_day - whole
    counts = np.full(days, whole, dtype=np.int64)
    if fraction > 1e-9:
        counts += rng.random(days) < fraction
    counts = np.minimum(counts, population)
    targets = [rng.choice(population, size=k, replace=False) for k in counts]
    day = np.repeat(np.arange(days, dtype=np.int64), counts)
    return Compromises(day=day, target=np.concatenate(targets).astype(np.int64))


def large_amounts(tx: Transactions, threshold: float) -> Transactions:
    """Apply scenario 1: every amount above ``threshold`` is fraud."""
    scenario = np.where(tx.amount > threshold, Scenario.LARGE_AMOUNT, tx.scenario)
    return replace(tx, scenario=scenario.astype(np.int8))


def compromised_terminals(
    tx: Transactions, n_terminals: int, days: int, config: ScenarioConfig, rng: np.random.Generator
) -> tuple[Transactions, Compromises]:
    """Apply scenario 2: each day some terminals are compromised for some weeks.

    All their transactions of that day and the following ``terminal_compromise_days - 1``
    days are fraud.
    """
    expected = config.terminals_per_day * n_terminals / REFERENCE_TERMINALS
    events = _daily_targets(rng, days, expected, n_terminals)
    compromised = np.zeros((days, n_terminals), dtype=bool)
    for day, terminal in zip(events.day, events.target, strict=True):
        compromised[day : day + config.terminal_compromise_days, terminal] = True
    hit = compromised[tx.day, tx.terminal]
    scenario = np.where(hit, Scenario.COMPROMISED_TERMINAL, tx.scenario).astype(np.int8)
    return replace(tx, scenario=scenario), events


def compromised_cards(
    tx: Transactions, n_customers: int, days: int, config: ScenarioConfig, rng: np.random.Generator
) -> tuple[Transactions, Compromises]:
    """Apply scenario 3: each day some cards are compromised for some days.

    Over that day and the following ``card_compromise_days - 1`` days a share of their
    transactions are fraud with inflated amounts (a transaction picked by two compromises
    is inflated twice, as in the Handbook).
    """
    expected = config.cards_per_day * n_customers / REFERENCE_CUSTOMERS
    events = _daily_targets(rng, days, expected, n_customers)
    day = tx.day
    order = np.lexsort((day, tx.customer))
    sorted_day = day[order]
    bounds = np.searchsorted(tx.customer[order], np.arange(n_customers + 1))
    hits = np.zeros(len(tx), dtype=np.int64)
    for start in range(days):
        cards = events.target[events.day == start]
        windows = []
        for card in cards:
            lo, hi = bounds[card], bounds[card + 1]
            first, last = lo + np.searchsorted(
                sorted_day[lo:hi], [start, start + config.card_compromise_days]
            )
            windows.append(order[first:last])
        candidates = np.concatenate(windows) if windows else np.zeros(0, np.int64)
        k = int(np.floor(len(candidates) * config.card_fraud_share + 1e-9))
        hits[rng.choice(candidates, size=k, replace=False)] += 1
    amount = np.round(tx.amount * config.card_amount_factor**hits, 2)
    scenario = np.where(hits > 0, Scenario.COMPROMISED_CARD, tx.scenario).astype(np.int8)
    return replace(tx, amount=amount, scenario=scenario), events


#: Card-testing attacks start before this second of the day, so burst and cash-out fit in it.
_ATTACK_LATEST_START = 60_000
_PROBE_GAP_MIN, _PROBE_GAP_MEAN, _PROBE_GAP_MAX = 2, 15.0, 120
_CASHOUT_DELAY = (600, 14_400)


def _pick_terminals(
    terminals: Terminals, channel: str, mccs: tuple[str, ...] | None = None
) -> np.ndarray:
    """Find terminals of ``channel`` (and of ``mccs`` if given), widening when none match."""
    on_channel = np.flatnonzero(terminals.channel == channel)
    if mccs is not None:
        matching = on_channel[np.isin(terminals.merchant_category[on_channel], mccs)]
        if len(matching):
            return matching
    return on_channel if len(on_channel) else np.arange(len(terminals))


def card_testing_merchants(
    terminals: Terminals, home_country: str, count: int, rng: np.random.Generator
) -> np.ndarray:
    """Choose the weak online merchants where fraudsters test stolen cards, mostly abroad."""
    online = _pick_terminals(terminals, "ecom")
    weight = np.where(terminals.country[online] == home_country, 1.0, 4.0)
    size = min(count, len(online))
    return rng.choice(online, size=size, replace=False, p=weight / weight.sum())


def card_testing(
    population: Population,
    days: int,
    home_country: str,
    config: ScenarioConfig,
    rng: np.random.Generator,
) -> tuple[Transactions, Compromises]:
    """Make scenario 4's transactions: card testing, then cash-out.

    A stolen card is tested with a burst of tiny payments at one weak online merchant
    within minutes, then cashed out with one large online purchase hours later.
    """
    n_customers = len(population.customers)
    expected = config.card_testing_per_day * n_customers / REFERENCE_CUSTOMERS
    events = _daily_targets(rng, days, expected, n_customers)
    merchants = card_testing_merchants(
        population.terminals, home_country, config.card_testing_merchants, rng
    )
    cashout_terminals = _pick_terminals(population.terminals, "ecom", CASHOUT_MCCS)
    attacks = len(events.day)
    low, high = config.card_testing_probes
    probes = rng.integers(low, high + 1, size=attacks)
    start = events.day * SECONDS_PER_DAY + rng.integers(0, _ATTACK_LATEST_START, size=attacks)

    attack_of_probe = np.repeat(np.arange(attacks), probes)
    gaps = np.clip(
        _PROBE_GAP_MIN + rng.exponential(_PROBE_GAP_MEAN, size=len(attack_of_probe)),
        None,
        _PROBE_GAP_MAX,
    ).astype(np.int64)
    elapsed = np.cumsum(gaps)
    first_probe = np.cumsum(probes) - probes
    before_attack = elapsed[first_probe] - gaps[first_probe]
    probe_seconds = start[attack_of_probe] + elapsed - before_attack[attack_of_probe]
    last_probe = probe_seconds[first_probe + probes - 1]

    cashout_seconds = last_probe + rng.integers(*_CASHOUT_DELAY, size=attacks)
    period_end = days * SECONDS_PER_DAY - 1
    seconds = np.minimum(np.concatenate([probe_seconds, cashout_seconds]), period_end)
    amount = np.concatenate(
        [
            rng.uniform(*config.card_testing_probe_amount, size=len(probe_seconds)),
            rng.uniform(*config.card_testing_cashout_amount, size=attacks),
        ]
    )
    terminal = np.concatenate(
        [
            rng.choice(merchants, size=attacks)[attack_of_probe],
            rng.choice(cashout_terminals, size=attacks),
        ]
    )
    customer = np.concatenate([events.target[attack_of_probe], events.target])
    testing = Transactions(
        seconds=seconds.astype(np.int64),
        customer=customer.astype(np.int32),
        terminal=terminal.astype(np.int32),
        amount=np.round(amount, 2),
        scenario=np.full(len(seconds), Scenario.CARD_TESTING, dtype=np.int8),
    )
    return testing, events
