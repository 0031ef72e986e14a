"""Event time as integer microseconds since the Unix epoch (UTC), and calendar flags.

Integers keep window boundaries exact: the batch replay and the live scorer
compare the very same numbers.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

DAY_US = 86_400 * 1_000_000
#: Hours counted as night for ``tx_is_night`` (the Handbook's ``hour <= 6``).
NIGHT_LAST_HOUR = 6


def to_epoch_us(timestamps: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Arrow UTC timestamps (any unit) -> int64 microseconds since the epoch."""
    as_us = pc.cast(timestamps, pa.timestamp("us", tz="UTC"))
    return np.asarray(as_us.cast(pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)


def calendar_features(epoch_us: np.ndarray) -> dict[str, np.ndarray]:
    """Hour of day (UTC), weekend and night flags, as float32 columns."""
    seconds = epoch_us // 1_000_000
    hour = (seconds // 3600) % 24
    weekday = (seconds // 86_400 + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    return {
        "tx_hour": hour.astype(np.float32),
        "tx_is_weekend": (weekday >= 5).astype(np.float32),
        "tx_is_night": (hour <= NIGHT_LAST_HOUR).astype(np.float32),
    }
