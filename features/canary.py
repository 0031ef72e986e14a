"""Which transactions a canary scores: a deterministic split by transaction id.

A transaction goes to the canary version when the first 8 bytes of the
SHA-256 of its id (UTF-8), read as a big-endian unsigned integer and divided
by 2**64, fall below the canary share. The split depends on nothing but the
id and the share: every scorer process, every restart and every replay sends
a transaction to the same side, and the batch path can tell, for any
transaction, which version a canary at that share scored it with
(:func:`canary_rows`). A larger share keeps every transaction a smaller one
sent to the canary (the fractions are nested).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

_SCALE = float(2**64)


def bucket(transaction_id: str | bytes) -> float:
    """The transaction's position in [0, 1): the canary takes it when below the share."""
    raw = transaction_id if isinstance(transaction_id, bytes) else transaction_id.encode("utf-8")
    return int.from_bytes(hashlib.sha256(raw).digest()[:8], "big") / _SCALE


def canary_rows(transaction_ids: Iterable[str | bytes], share: float) -> np.ndarray:
    """Per transaction, whether a canary at ``share`` (0 to 1) scores it."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"canary share must be within [0, 1], got {share}")
    ids = list(transaction_ids)
    if share <= 0.0:
        return np.zeros(len(ids), dtype=bool)
    if share >= 1.0:
        return np.ones(len(ids), dtype=bool)
    return np.fromiter((bucket(i) < share for i in ids), dtype=bool, count=len(ids))
