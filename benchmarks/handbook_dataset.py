"""Convert the Fraud Detection Handbook's published simulated dataset to this project's format.

The Handbook's quality figures (AUC-ROC 0.879, average precision 0.687, card
precision@100 0.305) were measured on its own simulated dataset, published as
daily pandas pickles (``YYYY-MM-DD.pkl``, repository
``Fraud-Detection-Handbook/simulated-data-raw``, directory ``data/``) with the
columns ``TRANSACTION_ID, TX_DATETIME, CUSTOMER_ID, TERMINAL_ID, TX_AMOUNT,
TX_TIME_SECONDS, TX_TIME_DAYS, TX_FRAUD, TX_FRAUD_SCENARIO``. This script maps
them onto the transaction contract (``features/spec.py``) so that
``benchmarks/bench_train.py --input`` and ``benchmarks/quality_ceiling.py
--handbook`` measure this project on exactly that data:

* ids become decimal strings (the contract's "ints become strings");
* ``TX_DATETIME`` (naive) is taken as UTC;
* ``TX_AMOUNT`` -> ``amount``, ``TX_FRAUD`` -> ``is_fraud``;
* merchant category, country and channel do not exist there and stay null
  (readers fill in ``unknown``).

Writes ``OUT/transactions.parquet`` and ``OUT/scenarios.parquet``
(``transaction_id``, ``scenario``: 0 genuine, 1 large amount, 2 compromised
terminal, 3 compromised card).

Pickles can run code when loaded: convert only files you trust (the
Handbook's own repository). CSV and Parquet files with the same columns are
read too.

    .venv/bin/python benchmarks/handbook_dataset.py SOURCE OUT
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features import spec
from features.errors import InputError
from ingest.writers import write_transactions

HANDBOOK_COLUMNS = (
    "TRANSACTION_ID",
    "TX_DATETIME",
    "CUSTOMER_ID",
    "TERMINAL_ID",
    "TX_AMOUNT",
    "TX_FRAUD",
    "TX_FRAUD_SCENARIO",
)
TRANSACTIONS_FILE = "transactions.parquet"
SCENARIOS_FILE = "scenarios.parquet"


def read_handbook(source: Path) -> pd.DataFrame:
    """The Handbook's rows from a directory of daily files or from one file, by transaction id."""
    files = sorted(source.glob("*.pkl")) if source.is_dir() else [source]
    if not files:
        raise InputError(f"{source}: no .pkl files (expected the Handbook's data/ directory)")
    frames = [_read_one(path) for path in files]
    frame = pd.concat(frames, ignore_index=True)
    missing = [c for c in HANDBOOK_COLUMNS if c not in frame.columns]
    if missing:
        raise InputError(f"{source}: missing the Handbook's columns {missing}")
    duplicated = frame["TRANSACTION_ID"].duplicated()
    if duplicated.any():
        first = frame.loc[duplicated, "TRANSACTION_ID"].iloc[0]
        raise InputError(f"{source}: TRANSACTION_ID {first} appears more than once")
    return frame.sort_values("TRANSACTION_ID", kind="stable").reset_index(drop=True)


def _read_one(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    if suffix == ".pkl":
        frame = pd.read_pickle(path)
    elif suffix == ".parquet":
        frame = pd.read_parquet(path)
    elif suffix == ".csv":
        frame = pd.read_csv(path, parse_dates=["TX_DATETIME"])
    else:
        raise InputError(f"{path}: expected .pkl, .parquet or .csv")
    if not isinstance(frame, pd.DataFrame):
        raise InputError(f"{path}: not a pandas DataFrame")
    return frame


def to_contract(frame: pd.DataFrame) -> tuple[pa.Table, pa.Table]:
    """The labelled transactions table and the per-transaction scenario table."""
    transaction_ids = pa.array(frame["TRANSACTION_ID"].astype("int64").astype(str), pa.string())
    times = pd.to_datetime(frame["TX_DATETIME"]).to_numpy().astype("datetime64[us]")
    fraud = frame["TX_FRAUD"].to_numpy()
    if not np.isin(fraud, (0, 1)).all():
        raise InputError("TX_FRAUD must be 0 or 1")
    transactions = pa.table(
        {
            spec.TRANSACTION_ID: transaction_ids,
            spec.TIMESTAMP: pa.array(times, pa.timestamp("us", tz="UTC")),
            spec.CUSTOMER_ID: pa.array(frame["CUSTOMER_ID"].astype("int64").astype(str)),
            spec.TERMINAL_ID: pa.array(frame["TERMINAL_ID"].astype("int64").astype(str)),
            spec.AMOUNT: pa.array(frame["TX_AMOUNT"].to_numpy(np.float64)),
            spec.LABEL_KEY: pa.array(fraud.astype(np.int8)),
        }
    )
    scenarios = pa.table(
        {
            spec.TRANSACTION_ID: transaction_ids,
            "scenario": pa.array(frame["TX_FRAUD_SCENARIO"].to_numpy().astype(np.int8)),
        }
    )
    return transactions, scenarios


def convert(source: Path, out: Path) -> dict[str, object]:
    """Write the converted files under ``out``; return the dataset's counts."""
    frame = read_handbook(source)
    transactions, scenarios = to_contract(frame)
    out.mkdir(parents=True, exist_ok=True)
    write_transactions(transactions, out / TRANSACTIONS_FILE, overwrite=True)
    pq.write_table(scenarios, out / SCENARIOS_FILE)
    counts = np.bincount(frame["TX_FRAUD_SCENARIO"].to_numpy().astype(np.int64), minlength=4)
    times = pd.to_datetime(frame["TX_DATETIME"])
    return {
        "transactions": int(transactions.num_rows),
        "frauds": int(frame["TX_FRAUD"].sum()),
        "frauds_by_scenario": {str(s): int(n) for s, n in enumerate(counts) if s},
        "first": str(times.min()),
        "last": str(times.max()),
        "output": str(out),
    }


def main() -> None:
    """Convert SOURCE (the Handbook's data/ directory or one file) into OUT."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="the Handbook's data/ directory, or one file")
    parser.add_argument("out", type=Path, help="output directory")
    args = parser.parse_args()
    print(json.dumps(convert(args.source, args.out)))


if __name__ == "__main__":
    main()
