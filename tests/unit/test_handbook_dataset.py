"""The converter of the Handbook's published dataset (benchmarks/handbook_dataset.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pandas as pd
import pyarrow.parquet as pq
import pytest

from features import spec
from features.errors import InputError
from ingest.readers import read_transactions

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "handbook_dataset.py"


@pytest.fixture(scope="module")
def handbook() -> ModuleType:
    loader = importlib.util.spec_from_file_location("handbook_dataset", SCRIPT)
    assert loader is not None and loader.loader is not None
    module = importlib.util.module_from_spec(loader)
    sys.modules["handbook_dataset"] = module
    loader.loader.exec_module(module)
    return module


def _day(first_id: int, day: str, frauds: list[int], scenarios: list[int]) -> pd.DataFrame:
    """Rows laid out as the Handbook's daily pickles are."""
    n = len(frauds)
    return pd.DataFrame(
        {
            "TRANSACTION_ID": range(first_id, first_id + n),
            "TX_DATETIME": pd.date_range(f"{day} 08:00:00", periods=n, freq="37min"),
            "CUSTOMER_ID": [7, 12, 7][:n],
            "TERMINAL_ID": [3021, 18, 3021][:n],
            "TX_AMOUNT": [57.16, 230.5, 12.0][:n],
            "TX_TIME_SECONDS": range(n),
            "TX_TIME_DAYS": [0] * n,
            "TX_FRAUD": frauds,
            "TX_FRAUD_SCENARIO": scenarios,
        }
    )


def test_daily_pickles_become_contract_rows_in_id_order(
    handbook: ModuleType, tmp_path: Path
) -> None:
    source = tmp_path / "data"
    source.mkdir()
    # Written out of order on purpose: the second day's file sorts first by name.
    _day(3, "2018-04-02", [0, 1], [0, 2]).to_pickle(source / "2018-04-02.pkl")
    _day(0, "2018-04-01", [0, 1, 0], [0, 1, 0]).to_pickle(source / "2018-04-01.pkl")

    counts = handbook.convert(source, tmp_path / "out")

    assert counts["transactions"] == 5
    assert counts["frauds"] == 2
    assert counts["frauds_by_scenario"] == {"1": 1, "2": 1, "3": 0}
    table = read_transactions(tmp_path / "out" / "transactions.parquet", labelled=True).table
    assert table.column(spec.TRANSACTION_ID).to_pylist() == ["0", "1", "2", "3", "4"]
    assert table.column(spec.CUSTOMER_ID).to_pylist() == ["7", "12", "7", "7", "12"]
    assert table.column(spec.TERMINAL_ID).to_pylist()[1] == "18"
    assert table.column(spec.AMOUNT).to_pylist()[1] == 230.5
    assert table.column(spec.LABEL_KEY).to_pylist() == [0, 1, 0, 0, 1]
    first = table.column(spec.TIMESTAMP)[0].as_py()
    assert (first.isoformat(), str(first.tzinfo)) == ("2018-04-01T08:00:00+00:00", "UTC")
    assert set(table.column(spec.CHANNEL).to_pylist()) == {spec.UNKNOWN}
    scenarios = pq.read_table(tmp_path / "out" / "scenarios.parquet")
    assert scenarios.column("scenario").to_pylist() == [0, 1, 0, 0, 2]


def test_a_missing_column_is_named(handbook: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "one.parquet"
    _day(0, "2018-04-01", [0, 1], [0, 1]).drop(columns=["TX_FRAUD_SCENARIO"]).to_parquet(path)
    with pytest.raises(InputError, match="TX_FRAUD_SCENARIO"):
        handbook.convert(path, tmp_path / "out")


def test_a_repeated_transaction_id_is_an_error(handbook: ModuleType, tmp_path: Path) -> None:
    source = tmp_path / "data"
    source.mkdir()
    _day(0, "2018-04-01", [0, 0], [0, 0]).to_pickle(source / "2018-04-01.pkl")
    _day(1, "2018-04-02", [0], [0]).to_pickle(source / "2018-04-02.pkl")
    with pytest.raises(InputError, match="TRANSACTION_ID 1 appears more than once"):
        handbook.convert(source, tmp_path / "out")


def test_an_empty_directory_says_what_was_expected(handbook: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"no \.pkl files"):
        handbook.convert(tmp_path, tmp_path / "out")
