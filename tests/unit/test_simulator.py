"""The synthetic bank: determinism, statistics, fraud scenarios, writers and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.dataset as ds
import pyarrow.json as pa_json
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from features import spec
from features.errors import InputError
from fraud.cli import app
from ingest.simulator import (
    Scenario,
    ScenarioConfig,
    SimulationConfig,
    SimulationResult,
    parse_start_date,
    simulate,
)
from ingest.writers import iso_timestamps, write_transactions

SMALL = SimulationConfig(customers=200, terminals=400, days=20, seed=7)
# Mid-sized bank, big enough for the fraud statistics to settle (~230k transactions).
MID = SimulationConfig(customers=1000, terminals=2000, days=120, seed=3)
SECONDS_PER_DAY = 86_400


@pytest.fixture(scope="module")
def mid() -> SimulationResult:
    return simulate(MID)


@pytest.fixture(scope="module")
def small() -> SimulationResult:
    return simulate(SMALL)


def _days(result: SimulationResult) -> np.ndarray:
    """Day of the period of each row, from its timestamp."""
    start = datetime.combine(result.config.start_date, datetime.min.time(), tzinfo=UTC)
    micros = pc.cast(result.table.column(spec.TIMESTAMP), pa.int64()).to_numpy()
    return (micros - int(start.timestamp()) * 1_000_000) // (SECONDS_PER_DAY * 1_000_000)


def _numpy(result: SimulationResult, column: str) -> np.ndarray:
    return result.table.column(column).to_numpy(zero_copy_only=False)


# --- determinism and shape --------------------------------------------------


def test_same_seed_gives_identical_tables_and_files(small: SimulationResult, tmp_path: Path):
    again = simulate(SMALL)
    assert again.table.equals(small.table)
    assert np.array_equal(again.scenario, small.scenario)
    for name in ("a.parquet", "a.csv", "a.jsonl"):
        write_transactions(small.table, tmp_path / "first" / name)
        write_transactions(again.table, tmp_path / "second" / name)
        assert (tmp_path / "first" / name).read_bytes() == (tmp_path / "second" / name).read_bytes()


def test_different_seeds_differ(small: SimulationResult):
    other = simulate(replace(SMALL, seed=SMALL.seed + 1))
    assert not other.table.equals(small.table)
    assert other.table.num_rows != small.table.num_rows or not np.array_equal(
        _numpy(other, spec.AMOUNT), _numpy(small, spec.AMOUNT)
    )


def test_schema_is_the_contract(small: SimulationResult):
    assert small.table.schema.equals(spec.arrow_schema(labelled=True))
    assert small.table.column(spec.LABEL_KEY).null_count == 0
    for name in spec.CATEGORICAL_FIELDS:
        assert small.table.column(name).null_count == 0


def test_rows_sorted_by_time_with_unique_ordered_ids(mid: SimulationResult):
    micros = pc.cast(mid.table.column(spec.TIMESTAMP), pa.int64()).to_numpy()
    assert np.all(np.diff(micros) >= 0)
    ids = _numpy(mid, spec.TRANSACTION_ID)
    assert len(set(ids)) == len(ids)
    assert list(ids) == sorted(ids)
    assert ids[0] == "0000000000"
    days = _days(mid)
    assert days.min() >= 0 and days.max() < MID.days


def test_ids_amounts_and_categories_look_like_a_bank(mid: SimulationResult):
    customers = _numpy(mid, spec.CUSTOMER_ID)
    terminals = _numpy(mid, spec.TERMINAL_ID)
    assert customers[0] == f"C{mid.customer_index[0]:06d}"
    assert terminals[0] == f"T{mid.terminal_index[0]:07d}"
    amounts = _numpy(mid, spec.AMOUNT)
    assert np.all(amounts >= 0)
    assert np.allclose(amounts, np.round(amounts, 2), rtol=0, atol=1e-9)
    genuine = mid.scenario == Scenario.GENUINE
    # Handbook profiles: mean amount U(5, 100), so genuine amounts average ~52.5; a
    # negative draw is replaced by U(0, 2 * mean), so hardly any amount is zero.
    assert 45 < amounts[genuine].mean() < 60
    assert np.mean(amounts[genuine] < 0.01) < 0.001
    channels = _numpy(mid, spec.CHANNEL)
    assert set(channels) == {"pos", "ecom", "atm"}
    assert 0.65 < np.mean(channels == "pos") < 0.85
    countries = _numpy(mid, spec.COUNTRY)
    assert 0.01 < np.mean(countries != "BE") < 0.12
    mccs = _numpy(mid, spec.MERCHANT_CATEGORY)
    assert np.all(mccs[channels == "atm"] == "6011")
    assert {"5411", "5812", "5541", "5999", "4829", "5732", "7995"} <= set(mccs)


def test_time_of_day_follows_the_handbook(mid: SimulationResult):
    micros = pc.cast(mid.table.column(spec.TIMESTAMP), pa.int64()).to_numpy()
    seconds_of_day = (micros // 1_000_000) % SECONDS_PER_DAY
    genuine = seconds_of_day[mid.scenario == Scenario.GENUINE]
    assert abs(genuine.mean() - SECONDS_PER_DAY / 2) < 500
    # Normal(43200, 20000) truncated to the day has a standard deviation of ~18,500 s.
    assert 17_000 < genuine.std() < 20_000


# --- fraud statistics and scenarios ------------------------------------------


def test_fraud_rate_and_scenarios_in_plausible_ranges(mid: SimulationResult):
    figures = mid.figures()
    labels = _numpy(mid, spec.LABEL_KEY)
    assert figures["transactions"] == mid.table.num_rows
    assert figures["frauds"] == int(labels.sum()) == int(np.count_nonzero(mid.scenario))
    assert np.array_equal(labels == 1, mid.scenario > 0)
    assert 0.005 < figures["fraud_rate"] < 0.015
    per = figures["frauds_per_scenario"]
    assert set(per) == {"large_amount", "compromised_terminal", "compromised_card", "card_testing"}
    assert sum(per.values()) == figures["frauds"]
    assert all(count > 0 for count in per.values()), per
    # As in the Handbook: compromised terminals give the most frauds, large amounts the fewest.
    assert per["compromised_terminal"] > per["compromised_card"] > per["large_amount"]


@pytest.mark.slow
def test_default_bank_matches_the_handbook_figures():
    result = simulate(SimulationConfig())
    figures = result.figures()
    per = figures["frauds_per_scenario"]
    # Handbook: 1,754,155 transactions, 14,681 frauds (0.84%) from scenarios 1-3.
    assert 1_700_000 < figures["transactions"] < 1_800_000
    handbook = per["large_amount"] + per["compromised_terminal"] + per["compromised_card"]
    assert 0.0075 < handbook / figures["transactions"] < 0.0095
    assert 0.0085 < figures["fraud_rate"] < 0.0115


def test_every_amount_above_220_is_fraud(mid: SimulationResult):
    amounts = _numpy(mid, spec.AMOUNT)
    labels = _numpy(mid, spec.LABEL_KEY)
    assert np.count_nonzero(amounts > 220) > 0
    assert np.all(labels[amounts > 220] == 1)
    large = mid.scenario == Scenario.LARGE_AMOUNT
    assert np.all(amounts[large] > 220)


def test_compromised_terminal_frauds_lie_within_28_days_of_compromise(mid: SimulationResult):
    events = mid.compromises[Scenario.COMPROMISED_TERMINAL]
    assert len(events.day) > 0
    window = np.zeros((MID.days, MID.terminals), dtype=bool)
    for day, terminal in zip(events.day, events.target, strict=True):
        window[day : day + 28, terminal] = True
    days, terminals = _days(mid), mid.terminal_index
    in_window = window[days, terminals]
    frauds = mid.scenario == Scenario.COMPROMISED_TERMINAL
    assert frauds.sum() > 0
    assert np.all(in_window[frauds])
    # ... and every Handbook transaction at a compromised terminal in its window is fraud
    # (scenario 3 may relabel some of them).
    handbook = mid.scenario != Scenario.CARD_TESTING
    assert np.all(mid.scenario[in_window & handbook] >= Scenario.COMPROMISED_TERMINAL)


def test_compromised_card_frauds_are_a_third_of_the_card_in_its_window(mid: SimulationResult):
    events = mid.compromises[Scenario.COMPROMISED_CARD]
    window = np.zeros((MID.days, MID.customers), dtype=bool)
    for day, customer in zip(events.day, events.target, strict=True):
        window[day : day + 14, customer] = True
    in_window = window[_days(mid), mid.customer_index] & (mid.scenario != Scenario.CARD_TESTING)
    frauds = mid.scenario == Scenario.COMPROMISED_CARD
    assert frauds.sum() > 0
    assert np.all(in_window[frauds])
    assert 0.25 < frauds.sum() / in_window.sum() < 0.45


def test_card_testing_is_a_burst_of_tiny_online_amounts_then_a_cash_out(mid: SimulationResult):
    config = MID.scenarios
    events = mid.compromises[Scenario.CARD_TESTING]
    assert len(events.day) > 0
    testing = mid.scenario == Scenario.CARD_TESTING
    assert np.all(_numpy(mid, spec.CHANNEL)[testing] == "ecom")
    days, amounts = _days(mid), _numpy(mid, spec.AMOUNT)
    micros = pc.cast(mid.table.column(spec.TIMESTAMP), pa.int64()).to_numpy()
    for day, customer in zip(events.day, events.target, strict=True):
        rows = np.flatnonzero(testing & (days == day) & (mid.customer_index == customer))
        probes, cashout = rows[:-1], rows[-1]
        assert config.card_testing_probes[0] <= len(probes) <= config.card_testing_probes[1]
        assert np.all((amounts[probes] >= 0.5) & (amounts[probes] <= 2.0))
        assert len(set(mid.terminal_index[probes])) == 1
        assert (micros[probes[-1]] - micros[probes[0]]) / 1e6 <= len(probes) * 120
        assert 150 <= amounts[cashout] <= 1200
        assert micros[cashout] - micros[probes[-1]] >= 600 * 1_000_000


def test_customers_use_only_terminals_within_radius(mid: SimulationResult):
    customers, terminals = mid.population.customers, mid.population.terminals
    handbook = mid.scenario != Scenario.CARD_TESTING
    c, t = mid.customer_index[handbook], mid.terminal_index[handbook]
    distance = np.hypot(customers.x[c] - terminals.x[t], customers.y[c] - terminals.y[t])
    assert np.all(distance < MID.radius)
    # Every terminal a customer may use really is within the radius, and none is missed.
    for customer in range(0, MID.customers, 97):
        d = np.hypot(terminals.x - customers.x[customer], terminals.y - customers.y[customer])
        assert np.array_equal(np.sort(customers.terminals_of(customer)), np.flatnonzero(d < 5.0))


def test_attack_counts_scale_with_the_bank():
    tiny = simulate(SimulationConfig(customers=500, terminals=1000, days=200, seed=1))
    terminal_events = tiny.compromises[Scenario.COMPROMISED_TERMINAL]
    card_events = tiny.compromises[Scenario.COMPROMISED_CARD]
    # 2 terminals per 10,000 and 3 cards per 5,000 a day: 0.2 and 0.3 a day here.
    assert 20 <= len(terminal_events.day) <= 65
    assert 35 <= len(card_events.day) <= 90


def test_bad_settings_are_input_errors():
    with pytest.raises(InputError, match="--customers"):
        SimulationConfig(customers=0)
    with pytest.raises(InputError, match="--days"):
        SimulationConfig(days=-1)
    with pytest.raises(InputError, match="card_testing_probes"):
        ScenarioConfig(card_testing_probes=(5, 2))
    with pytest.raises(InputError, match="--start-date"):
        parse_start_date("2018-02-30")
    assert parse_start_date("2018-04-01") == date(2018, 4, 1)


# --- writers -----------------------------------------------------------------


def _read_back(path: Path) -> pa.Table:
    schema = spec.arrow_schema(labelled=True)
    if path.suffix == ".csv":
        types = {f.name: f.type for f in schema}
        # The writer leaves a null unquoted and quotes an empty string: tell them apart.
        options = pa_csv.ConvertOptions(
            column_types=types, strings_can_be_null=True, quoted_strings_can_be_null=False
        )
        return pa_csv.read_csv(path, convert_options=options)
    if path.suffix == ".jsonl":
        return pa_json.read_json(path, parse_options=pa_json.ParseOptions(explicit_schema=schema))
    if path.suffix == ".parquet":
        return pq.read_table(path)
    table = ds.dataset(path, format="parquet", partitioning="hive").to_table()
    dates = pc.strftime(table.column(spec.TIMESTAMP), format="%Y-%m-%d")
    assert pc.all(pc.equal(dates, pc.cast(table.column("date"), pa.string()))).as_py()
    return table.drop_columns(["date"]).sort_by(spec.TRANSACTION_ID)


def _assert_same_rows(read: pa.Table, expected: pa.Table) -> None:
    assert read.num_rows == expected.num_rows
    for field in expected.schema:
        got = read.column(field.name).cast(field.type).combine_chunks()
        assert got.equals(expected.column(field.name).combine_chunks()), field.name


@pytest.mark.parametrize("name", ["tx.csv", "tx.parquet", "tx.jsonl", "lake"])
def test_every_format_round_trips(small: SimulationResult, tmp_path: Path, name: str):
    files = write_transactions(small.table, tmp_path / name)
    assert all(f.exists() for f in files)
    if name == "lake":
        assert len(files) == SMALL.days
        assert files[0] == tmp_path / "lake" / "date=2018-04-01" / "part-0.parquet"
    _assert_same_rows(_read_back(tmp_path / name), small.table)


@pytest.mark.parametrize("name", ["odd.csv", "odd.jsonl", "odd.parquet", "odd"])
def test_awkward_values_round_trip(tmp_path: Path, name: str):
    table = pa.table(
        {
            spec.TRANSACTION_ID: ["a,1", 'q"2', "line\nbreak", "é€\t\\"],
            spec.TIMESTAMP: pa.array(
                [datetime(2018, 4, 1, 23, 59, 59, 500000, tzinfo=UTC)] * 2
                + [datetime(2018, 4, 2, tzinfo=UTC), datetime(2018, 3, 31, 1, tzinfo=UTC)],
                pa.timestamp("us", tz="UTC"),
            ),
            spec.CUSTOMER_ID: ["C1", "C2", "C3", "C4"],
            spec.TERMINAL_ID: ["T1", "T2", "T3", "T4"],
            spec.AMOUNT: [0.1 + 0.2, 1e-7, 1234567.89, 100.0],
            spec.MERCHANT_CATEGORY: ["5411", None, "", "x"],
            spec.COUNTRY: ["BE", "FR", None, "NL"],
            spec.CHANNEL: ["pos", "ecom", "atm", None],
            spec.LABEL_KEY: pa.array([0, 1, 0, 1], pa.int8()),
        }
    )
    write_transactions(table, tmp_path / name)
    read = _read_back(tmp_path / name)
    expected = table.sort_by(spec.TRANSACTION_ID) if "." not in name else table
    _assert_same_rows(read, expected)
    if name == "odd":
        assert sorted(p.name for p in (tmp_path / name).iterdir()) == [
            "date=2018-03-31",
            "date=2018-04-01",
            "date=2018-04-02",
        ]


def test_iso_timestamps_end_in_z_with_fractions_only_when_needed():
    whole = pa.array([1_522_540_815_000_000], pa.timestamp("us", tz="UTC"))
    half = pa.array([1_522_540_815_500_000], pa.timestamp("us", tz="UTC"))
    assert iso_timestamps(whole).to_pylist() == ["2018-04-01T00:00:15Z"]
    assert iso_timestamps(half).to_pylist() == ["2018-04-01T00:00:15.500000Z"]


def test_writer_refuses_to_overwrite_unless_asked(small: SimulationResult, tmp_path: Path):
    target = tmp_path / "tx.parquet"
    write_transactions(small.table, target)
    with pytest.raises(InputError, match="already exists"):
        write_transactions(small.table.slice(0, 5), target)
    write_transactions(small.table.slice(0, 5), target, overwrite=True)
    assert pq.read_table(target).num_rows == 5

    lake = tmp_path / "lake"
    write_transactions(small.table, lake)
    with pytest.raises(InputError, match="not empty"):
        write_transactions(small.table, lake)
    first_day = small.table.slice(0, 10)
    write_transactions(first_day, lake, overwrite=True)
    assert [p.name for p in lake.iterdir()] == ["date=2018-04-01"]
    assert not list(tmp_path.glob(".*")), "no temporary files left behind"


def test_writer_rejects_paths_it_cannot_write(small: SimulationResult, tmp_path: Path):
    with pytest.raises(InputError, match=r"cannot write \.json files"):
        write_transactions(small.table, tmp_path / "tx.json")
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(InputError, match="is a directory"):
        write_transactions(small.table, tmp_path / "dir.csv")
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        write_transactions(small.table, tmp_path / "file")


def test_writer_names_a_missing_required_column(small: SimulationResult, tmp_path: Path):
    with pytest.raises(InputError, match="'amount'"):
        write_transactions(small.table.drop_columns([spec.AMOUNT]), tmp_path / "x.csv")
    unlabelled = small.table.drop_columns([spec.LABEL_KEY, spec.COUNTRY])
    write_transactions(unlabelled, tmp_path / "x.parquet")
    read = pq.read_table(tmp_path / "x.parquet")
    assert read.schema.names == list(spec.TRANSACTION_FIELDS)
    assert read.column(spec.COUNTRY).null_count == read.num_rows


# --- the command line ---------------------------------------------------------

_FIGURES = {
    "transactions",
    "frauds",
    "fraud_rate",
    "frauds_per_scenario",
    "customers",
    "terminals",
    "days",
    "seconds",
    "rows_per_s",
}


@pytest.mark.parametrize("name", ["tx.csv", "tx.parquet", "tx.jsonl", "lake"])
def test_cli_writes_each_format_and_prints_figures(tmp_path: Path, name: str):
    out = tmp_path / name
    args = [
        "simulate",
        "--out",
        str(out),
        "--customers",
        "40",
        "--terminals",
        "80",
        "--days",
        "4",
        "--start-date",
        "2020-01-30",
        "--seed",
        "5",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(figures) >= _FIGURES
    assert (figures["customers"], figures["terminals"], figures["days"]) == (40, 80, 4)
    expected = simulate(SimulationConfig(40, 80, 4, date(2020, 1, 30), 5))
    assert figures["transactions"] == expected.table.num_rows > 0
    assert figures["frauds"] == int(np.count_nonzero(expected.scenario))
    _assert_same_rows(_read_back(out), expected.table)


def test_cli_bad_input_exits_2_with_one_line_reason(tmp_path: Path):
    """The one subprocess check of exit code 2: the console script itself, no traceback."""
    fraud = Path(sys.executable).parent / "fraud"
    run = subprocess.run(
        [str(fraud), "simulate", "--out", str(tmp_path / "x.csv"), "--start-date", "tomorrow"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert run.stderr.strip() == "error: --start-date must be a date YYYY-MM-DD, got 'tomorrow'"
    assert not (tmp_path / "x.csv").exists()


def test_an_existing_output_is_refused_before_any_work(tmp_path: Path, capsys):
    from tests.cli_support import fraud_in_process

    (tmp_path / "x.csv").write_text("keep me")
    code, _, err = fraud_in_process(
        capsys, "simulate", "--out", str(tmp_path / "x.csv"), "--days", "100000"
    )
    # Checked before any work: a huge --days would take minutes to simulate.
    assert code == 2 and "already exists" in err and "Traceback" not in err
    assert (tmp_path / "x.csv").read_text() == "keep me"
