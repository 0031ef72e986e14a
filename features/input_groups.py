"""The model inputs in groups an analyst can read, and their training baseline.

Reason codes (:mod:`scoring.reasons`) explain an alert by the groups of inputs
that raised its score; the training job records each grouped input's
baseline in the export (``ModelMetadata.details["baseline"]``), the value a
group is replaced by to measure what it contributed. Both sides of that
contract live here, below training and scoring.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from features import spec


def input_groups() -> dict[str, tuple[str, ...]]:
    """The model inputs of each reason group, from :mod:`features.spec` (identifiers excluded)."""
    names = spec.MODEL_INPUTS

    def starting(*prefixes: str) -> tuple[str, ...]:
        return tuple(n for n in names if n.startswith(prefixes))

    return {
        "amount": (spec.AMOUNT,),
        "customer_spending": starting(
            "customer_nb_tx_", "customer_avg_amount_", "customer_amount_ratio_"
        ),
        "customer_novelty": starting(
            "customer_terminal_seen_", "customer_merchant_category_seen_",
            "customer_seconds_since_prev_tx",
        ),
        "terminal_risk": starting("terminal_nb_tx_", "terminal_risk_", "terminal_fraud_streak"),
        "calendar": starting("tx_hour", "tx_is_"),
        "categorical": tuple(spec.CATEGORICAL_FIELDS),
    }


def baseline_of(inputs: Mapping[str, np.ndarray], genuine: np.ndarray) -> dict[str, Any]:
    """The baseline of every grouped input over the rows where ``genuine`` is true.

    Numeric inputs: the median; string inputs: the most frequent value (ties:
    the smallest). Small (one value per input), JSON-ready.
    """
    mask = np.asarray(genuine, dtype=bool)
    out: dict[str, Any] = {}
    for group in input_groups().values():
        for name in group:
            values = np.asarray(inputs[name])[mask]
            if values.size == 0:
                continue
            if values.dtype.kind in "fiub":
                out[name] = round(float(np.median(values.astype(np.float64))), 6)
            else:
                labels, counts = np.unique(values.astype(str), return_counts=True)
                out[name] = str(labels[int(np.argmax(counts))])
    return out
