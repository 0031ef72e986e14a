"""Settings of the synthetic bank: population size, period, seed and fraud scenarios."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from features.errors import InputError


@dataclass(frozen=True)
class ScenarioConfig:
    """Parameters of the four fraud scenarios.

    The first three are those of the Fraud Detection Handbook simulator (Le Borgne et al.,
    chapter 3); card testing is this project's addition. Daily attack counts are given for
    the Handbook's bank of 5,000 customers and 10,000 terminals and scale with the
    population, so the fraud rate stays alike at any size (a fractional expected count is
    rounded up or down at random each day).
    """

    #: Scenario 1: any transaction above this amount is fraud.
    large_amount_threshold: float = 220.0
    #: Scenario 2: terminals compromised each day per 10,000 terminals, and for how many
    #: days (that day included).
    terminals_per_day: float = 2.0
    terminal_compromise_days: int = 28
    #: Scenario 3: cards compromised each day per 5,000 customers, for how many days, which
    #: share of their transactions in that window become fraud, and by how much those
    #: amounts are inflated.
    cards_per_day: float = 3.0
    card_compromise_days: int = 14
    card_fraud_share: float = 1 / 3
    card_amount_factor: float = 5.0
    #: Scenario 4 (card testing): cards attacked each day per 5,000 customers; each attack
    #: is a burst of ``probes`` tiny amounts at one of a few weak online merchants, then
    #: one large cash-out purchase.
    card_testing_per_day: float = 1.0
    card_testing_merchants: int = 25
    card_testing_probes: tuple[int, int] = (8, 20)
    card_testing_probe_amount: tuple[float, float] = (0.5, 2.0)
    card_testing_cashout_amount: tuple[float, float] = (150.0, 1200.0)

    def __post_init__(self) -> None:
        counts = {
            "terminals_per_day": self.terminals_per_day,
            "terminal_compromise_days": self.terminal_compromise_days,
            "cards_per_day": self.cards_per_day,
            "card_compromise_days": self.card_compromise_days,
            "card_testing_per_day": self.card_testing_per_day,
        }
        for name, value in counts.items():
            if value < 0:
                raise InputError(f"scenario setting {name} must be >= 0, got {value}")
        if self.card_testing_merchants < 1:
            raise InputError("scenario setting card_testing_merchants must be >= 1")
        if not 0.0 <= self.card_fraud_share <= 1.0:
            raise InputError(f"card_fraud_share must be in [0, 1], got {self.card_fraud_share}")
        low, high = self.card_testing_probes
        if not 1 <= low <= high:
            raise InputError(f"card_testing_probes must satisfy 1 <= low <= high, got {low, high}")
        for name in ("card_testing_probe_amount", "card_testing_cashout_amount"):
            lo, hi = getattr(self, name)
            if not 0.0 <= lo <= hi:
                raise InputError(f"{name} must satisfy 0 <= low <= high, got {lo, hi}")


@dataclass(frozen=True)
class SimulationConfig:
    """What to simulate: a bank of ``customers`` cards and ``terminals`` over ``days`` days."""

    customers: int = 5000
    terminals: int = 10000
    days: int = 183
    start_date: date = date(2018, 4, 1)
    seed: int = 0
    #: Customers use the terminals within this distance of home, on a 100 x 100 grid.
    radius: float = 5.0
    home_country: str = "BE"
    scenarios: ScenarioConfig = field(default_factory=ScenarioConfig)

    def __post_init__(self) -> None:
        for name in ("customers", "terminals", "days"):
            value = getattr(self, name)
            if value < 1:
                raise InputError(f"--{name} must be >= 1, got {value}")
        if self.seed < 0:
            raise InputError(f"--seed must be >= 0, got {self.seed}")
        if self.radius <= 0:
            raise InputError(f"radius must be > 0, got {self.radius}")
        if len(self.home_country) != 2 or not self.home_country.isalpha():
            raise InputError(
                f"home_country must be an ISO 3166 alpha-2 code, got {self.home_country!r}"
            )


def parse_start_date(text: str) -> date:
    """Parse ``YYYY-MM-DD`` into a date, or raise :class:`InputError` naming the option."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InputError(f"--start-date must be a date YYYY-MM-DD, got {text!r}") from None
