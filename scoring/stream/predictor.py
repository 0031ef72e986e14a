"""Scoring a batch with the bound model: rows the model rejects found by splitting.

A request the model rejects as invalid (``INVALID_ARGUMENT``, or too large) is
split in halves until the rejected rows are known; each of them becomes a
dead letter with the model's reason and the others are scored. Transient
faults are the caller's ``retry``'s business (they are never dead-lettered).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ingest.validation import ValidationError
from scoring.clients.base import ModelRequestError, Prediction

#: Runs a model call until it succeeds, retrying while the model server is unavailable.
Retry = Callable[[Callable[[], Prediction]], Prediction]


def predict_rows(
    predict: Callable[[dict[str, np.ndarray]], Prediction],
    inputs: dict[str, np.ndarray],
    retry: Retry,
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, ValidationError]]]:
    """Scores (NaN where rejected), each row's model version (-1 where rejected), rejections."""
    n = len(next(iter(inputs.values())))
    scores = np.full(n, np.nan, dtype=np.float32)
    versions = np.full(n, -1, dtype=np.int64)
    rejected: list[tuple[int, ValidationError]] = []
    pending = [np.arange(n)]
    while pending:
        rows = pending.pop()
        part = inputs if len(rows) == n else {k: v[rows] for k, v in inputs.items()}
        try:
            prediction = retry(_call(predict, part))
        except ModelRequestError as err:
            if len(rows) == 1:
                reason = f"the model rejected the event: {err}"[:500]
                rejected.append((int(rows[0]), ValidationError("model", None, reason)))
            else:
                half = len(rows) // 2
                pending += [rows[half:], rows[:half]]
            continue
        scores[rows] = prediction.scores
        versions[rows] = prediction.versions()  # a canary split scores rows with two
    return scores, versions, sorted(rejected, key=lambda r: r[0])


def _call(
    predict: Callable[[dict[str, np.ndarray]], Prediction], inputs: dict[str, np.ndarray]
) -> Callable[[], Prediction]:
    return lambda: predict(inputs)
