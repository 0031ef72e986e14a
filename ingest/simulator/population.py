"""Customers and terminals of the synthetic bank (Fraud Detection Handbook, §3.2).

Customers live at a point of a 100 x 100 grid and have a spending profile; terminals sit
at a point of the same grid and have a channel, a merchant category and a country. A
customer uses only the terminals within a radius of home.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GRID_SIZE = 100.0

#: Terminal channels and their shares.
CHANNELS: tuple[str, ...] = ("pos", "ecom", "atm")
CHANNEL_SHARES = (0.75, 0.20, 0.05)
POS, ECOM, ATM = range(3)

#: Merchant category codes (ISO 18245) by channel, with their shares.
MCC_BY_CHANNEL: dict[int, dict[str, float]] = {
    POS: {
        "5411": 0.30,  # grocery stores, supermarkets
        "5812": 0.18,  # restaurants
        "5541": 0.12,  # service stations (fuel)
        "5999": 0.10,  # miscellaneous retail
        "5311": 0.08,  # department stores
        "5912": 0.08,  # pharmacies
        "5813": 0.07,  # bars
        "5732": 0.05,  # electronics stores
        "7995": 0.02,  # gambling
    },
    ECOM: {
        "5999": 0.24,  # miscellaneous retail
        "5815": 0.16,  # digital goods
        "5732": 0.15,  # electronics
        "5311": 0.12,  # department stores
        "4722": 0.10,  # travel agencies
        "5812": 0.08,  # food delivery
        "4829": 0.08,  # money transfer
        "7995": 0.07,  # gambling
    },
    ATM: {"6011": 1.0},  # cash withdrawal
}

#: Merchant categories where stolen cards are cashed out.
CASHOUT_MCCS: tuple[str, ...] = ("5732", "4829", "7995", "4722")

#: Countries of foreign terminals, with their shares among foreign terminals.
FOREIGN_COUNTRIES: dict[str, float] = {
    "FR": 0.25,
    "NL": 0.20,
    "DE": 0.15,
    "LU": 0.10,
    "GB": 0.10,
    "ES": 0.06,
    "IT": 0.05,
    "US": 0.05,
    "CN": 0.02,
    "NG": 0.02,
}
#: Share of foreign terminals by channel: online merchants are often abroad.
FOREIGN_SHARE_BY_CHANNEL = {POS: 0.02, ECOM: 0.25, ATM: 0.02}


@dataclass(frozen=True)
class Customers:
    """Customer profiles, one entry per customer; terminals within radius in CSR form."""

    x: np.ndarray
    y: np.ndarray
    mean_amount: np.ndarray
    std_amount: np.ndarray
    mean_nb_tx_per_day: np.ndarray
    #: Customer ``c`` uses ``terminal_index[terminal_offsets[c]:terminal_offsets[c + 1]]``.
    terminal_offsets: np.ndarray
    terminal_index: np.ndarray

    def __len__(self) -> int:
        return len(self.x)

    def terminals_of(self, customer: int) -> np.ndarray:
        """Return the indices of the terminals that ``customer`` uses."""
        start, end = self.terminal_offsets[customer], self.terminal_offsets[customer + 1]
        return self.terminal_index[start:end]


@dataclass(frozen=True)
class Terminals:
    """Terminal profiles, one entry per terminal; categorical values as strings."""

    x: np.ndarray
    y: np.ndarray
    channel: np.ndarray
    merchant_category: np.ndarray
    country: np.ndarray

    def __len__(self) -> int:
        return len(self.x)


@dataclass(frozen=True)
class Population:
    """Everyone the bank simulates."""

    customers: Customers
    terminals: Terminals


def _draw(rng: np.random.Generator, shares: dict[str, float], size: int) -> np.ndarray:
    """Draw ``size`` values from a mapping value -> share (shares need not sum to 1)."""
    values = np.array(list(shares), dtype=object)
    weights = np.fromiter(shares.values(), dtype=float)
    return values[rng.choice(len(values), size=size, p=weights / weights.sum())]


def make_terminals(n: int, home_country: str, rng: np.random.Generator) -> Terminals:
    """Draw terminals uniform on the grid, with channel, merchant category and country."""
    x = rng.uniform(0, GRID_SIZE, n)
    y = rng.uniform(0, GRID_SIZE, n)
    channel = rng.choice(len(CHANNELS), size=n, p=CHANNEL_SHARES)
    mcc = np.empty(n, dtype=object)
    country = np.full(n, home_country, dtype=object)
    for code, categories in MCC_BY_CHANNEL.items():
        members = np.flatnonzero(channel == code)
        mcc[members] = _draw(rng, categories, len(members))
        foreign = members[rng.random(len(members)) < FOREIGN_SHARE_BY_CHANNEL[code]]
        country[foreign] = _draw(rng, FOREIGN_COUNTRIES, len(foreign))
    names = np.array(CHANNELS, dtype=object)[channel]
    return Terminals(x=x, y=y, channel=names, merchant_category=mcc, country=country)


def terminals_within_radius(
    cx: np.ndarray, cy: np.ndarray, terminals: Terminals, radius: float, chunk: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """Find, as CSR (offsets, indices), the terminals closer than ``radius`` to each point."""
    offsets = np.zeros(len(cx) + 1, dtype=np.int64)
    indices: list[np.ndarray] = []
    for start in range(0, len(cx), chunk):
        dx = cx[start : start + chunk, None] - terminals.x[None, :]
        dy = cy[start : start + chunk, None] - terminals.y[None, :]
        rows, cols = np.nonzero(np.sqrt(dx * dx + dy * dy) < radius)
        offsets[start + 1 : start + 1 + len(dx)] = np.bincount(rows, minlength=len(dx))
        indices.append(cols.astype(np.int32))
    np.cumsum(offsets, out=offsets)
    return offsets, np.concatenate(indices) if indices else np.zeros(0, np.int32)


def make_customers(
    n: int, terminals: Terminals, radius: float, rng: np.random.Generator
) -> Customers:
    """Draw customers as in the Handbook: home, mean amount U(5,100), std mean/2, rate U(0,4)."""
    x = rng.uniform(0, GRID_SIZE, n)
    y = rng.uniform(0, GRID_SIZE, n)
    mean_amount = rng.uniform(5, 100, n)
    mean_nb_tx_per_day = rng.uniform(0, 4, n)
    offsets, index = terminals_within_radius(x, y, terminals, radius)
    return Customers(
        x=x,
        y=y,
        mean_amount=mean_amount,
        std_amount=mean_amount / 2,
        mean_nb_tx_per_day=mean_nb_tx_per_day,
        terminal_offsets=offsets,
        terminal_index=index,
    )
