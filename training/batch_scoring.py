"""The batch scoring path: raw transactions + behavioural features -> the export's scores.

Everything that scores in batch (``fraud evaluate``, the parity tests, the
training job's own threshold choice) goes through here: the inputs are built
by :func:`features.model_inputs.to_model_inputs`, exactly as the streaming
scorer builds them, and scored by the export's ``serving_default``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from features.model_inputs import to_model_inputs

#: Rows per call of the signature: large enough to amortise the call, small in memory.
BATCH_ROWS = 65_536


def score_table(
    model_path: str | Path, transactions: pa.Table, features: pa.Table
) -> np.ndarray:
    """Scores (float32, one per row) of ``transactions`` by the export at ``model_path``.

    ``model_path`` is a version folder (``<model_dir>/<version>``);
    ``features`` holds the behavioural features row-aligned with ``transactions``.
    """
    from training.export import load_scorer

    scorer = load_scorer(model_path)
    parts = []
    for offset in range(0, transactions.num_rows, BATCH_ROWS):
        length = min(BATCH_ROWS, transactions.num_rows - offset)
        inputs = to_model_inputs(
            transactions.slice(offset, length), features.slice(offset, length)
        )
        parts.append(scorer(inputs))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
