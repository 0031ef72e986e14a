"""Labels as a bank gets them: chargebacks weeks late, analysts' decisions within hours.

The Handbook protocol takes every label as known with its transaction (and
used once the feature delay has passed). A bank learns of a fraud later, and
not all at once (docs/labels.md):

- **Chargebacks**: every fraud is charged back after a log-normal delay, median
  ``chargeback_median_days`` (10) and 95th percentile ``chargeback_p95_days``
  (30): 5% arrive a month or more late. Genuine transactions never get one.
- **Analysts' decisions**, within hours (log-normal, median
  ``analyst_median_hours``, 95th percentile ``analyst_p95_hours``): a share of
  the frauds is caught (confirmed fraud), a smaller share wrongly cleared
  (genuine; the chargeback later overrules it); a share of the genuine
  transactions is reviewed and cleared (a false-positive alert), and some of
  those are wrongly confirmed as fraud, then corrected (genuine again) when the
  customer calls, days later.

Every label carries the time it became known (``labelled_at``) and its
``source`` (``chargeback`` or ``analyst``). The latest label known wins from
when it is known, so every transaction ends with its true label. Draws are
vectorised over every row in a fixed order: the same table and seed give the
same labels, whatever the settings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from features import spec
from features.errors import InputError
from features.timebase import DAY_US, to_epoch_us

HANDBOOK = "handbook"
REALISTIC = "realistic"
PROTOCOLS = (HANDBOOK, REALISTIC)
CHARGEBACK = "chargeback"
ANALYST = "analyst"
_HOUR_US = 3_600_000_000
#: The standard normal's 95th percentile.
_Z95 = 1.6448536269514722


@dataclass(frozen=True)
class LabelConfig:
    """How late, and from whom, the realistic protocol's labels arrive."""

    chargeback_median_days: float = 10.0
    chargeback_p95_days: float = 30.0
    #: Frauds an analyst confirms within hours (an alert caught them).
    analyst_catch_share: float = 0.3
    #: Frauds an analyst wrongly clears within hours (the chargeback overrules it).
    analyst_miss_share: float = 0.03
    analyst_median_hours: float = 2.0
    analyst_p95_hours: float = 8.0
    #: Genuine transactions an analyst reviews (a false-positive alert) and clears.
    false_positive_rate: float = 0.005
    #: Of those, the share wrongly confirmed as fraud, then corrected days later.
    wrong_block_share: float = 0.1
    correction_median_days: float = 2.0
    correction_p95_days: float = 7.0

    def __post_init__(self) -> None:
        for name in ("analyst_catch_share", "analyst_miss_share", "false_positive_rate",
                     "wrong_block_share"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise InputError(f"{name} must be in [0, 1], got {value}")
        if self.analyst_catch_share + self.analyst_miss_share > 1.0:
            raise InputError("analyst_catch_share + analyst_miss_share must be <= 1")
        for median, p95 in (("chargeback_median_days", "chargeback_p95_days"),
                            ("analyst_median_hours", "analyst_p95_hours"),
                            ("correction_median_days", "correction_p95_days")):
            if not 0 < getattr(self, median) <= getattr(self, p95):
                raise InputError(f"need 0 < {median} <= {p95}")


def check_protocol(protocol: str, option: str = "--label-protocol") -> str:
    """``protocol`` if it is one of :data:`PROTOCOLS`, else an :class:`InputError`."""
    if protocol not in PROTOCOLS:
        raise InputError(f"{option}: expected {' or '.join(PROTOCOLS)}, got {protocol!r}")
    return protocol


def _lognormal_us(rng: np.random.Generator, n: int, median: float, p95: float,
                  unit_us: int) -> np.ndarray:
    """``n`` log-normal delays (µs) with the given median and 95th percentile (in ``unit_us``)."""
    sigma = np.log(p95 / median) / _Z95
    draws = median * np.exp(sigma * rng.standard_normal(n))
    return np.maximum((draws * unit_us).astype(np.int64), 1)


def realistic_labels(table: pa.Table, config: LabelConfig, rng: np.random.Generator) -> pa.Table:
    """Every label the bank gets for a labelled table's transactions, in ``labelled_at`` order.

    ``table`` has the contract's labelled columns (``is_fraud``: the truth).
    Returns a table of :data:`ingest.lake.LABELS_SCHEMA` (ties in
    ``labelled_at`` keep the transaction's order).
    """
    from ingest.lake import LABELS_SCHEMA

    n = table.num_rows
    times = to_epoch_us(table.column(spec.TIMESTAMP))
    fraud = np.asarray(table.column(spec.LABEL_KEY).to_numpy(zero_copy_only=False)) == 1
    # Fixed draws for every row, whatever the settings: deterministic per seed.
    chargeback = _lognormal_us(rng, n, config.chargeback_median_days,
                               config.chargeback_p95_days, DAY_US)
    analyst = _lognormal_us(rng, n, config.analyst_median_hours, config.analyst_p95_hours,
                            _HOUR_US)
    correction = _lognormal_us(rng, n, config.correction_median_days,
                               config.correction_p95_days, DAY_US)
    pick = rng.random(n)
    wrong = rng.random(n)

    caught = fraud & (pick < config.analyst_catch_share)
    missed = fraud & ~caught & (pick < config.analyst_catch_share + config.analyst_miss_share)
    reviewed = ~fraud & (pick < config.false_positive_rate)
    blocked = reviewed & (wrong < config.wrong_block_share)

    parts = [  # (rows, label, delay, source, rank among a transaction's labels)
        (np.flatnonzero(fraud), 1, chargeback, CHARGEBACK),
        (np.flatnonzero(caught), 1, analyst, ANALYST),
        (np.flatnonzero(missed), 0, analyst, ANALYST),
        (np.flatnonzero(reviewed & ~blocked), 0, analyst, ANALYST),
        (np.flatnonzero(blocked), 1, analyst, ANALYST),
        (np.flatnonzero(blocked), 0, analyst + correction, ANALYST),
    ]
    rows = np.concatenate([p[0] for p in parts])
    values = np.concatenate([np.full(len(p[0]), p[1], np.int8) for p in parts])
    known = np.concatenate([times[p[0]] + p[2][p[0]] for p in parts])
    sources = np.concatenate([np.full(len(p[0]), p[3], dtype=object) for p in parts])
    order = np.lexsort((rows, known))
    rows, values, known, sources = rows[order], values[order], known[order], sources[order]
    picked = pa.array(rows)
    columns = {
        spec.TRANSACTION_ID: table.column(spec.TRANSACTION_ID).take(picked),
        spec.LABEL_KEY: pa.array(values, pa.int8()),
        spec.TIMESTAMP: table.column(spec.TIMESTAMP).take(picked),
        spec.CUSTOMER_ID: table.column(spec.CUSTOMER_ID).take(picked),
        spec.TERMINAL_ID: table.column(spec.TERMINAL_ID).take(picked),
        spec.LABELLED_AT: pa.array(known, pa.timestamp("us", tz="UTC")),
        spec.LABEL_SOURCE: pa.array(sources.tolist(), pa.string()),
    }
    return pa.table({f.name: columns[f.name].cast(f.type) for f in LABELS_SCHEMA},
                    schema=LABELS_SCHEMA)
