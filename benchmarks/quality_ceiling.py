"""How high can card precision@100 go on the Handbook protocol? Ceilings per test week.

For each test week of the Handbook protocol (train 7 days from ``first + 7k``,
label delay ``delay`` days, test the 7 days after the delay; cards already known
compromised left out exactly as ``fraud evaluate`` does), two rankings are
measured with the project's own metric functions (:mod:`training.evaluation`):

* **perfect**: every fraud first — the most card precision@100 can be;
* **detectable oracle**: every fraud first *except* the compromised-terminal
  (scenario 2) frauds made less than ``delay`` days after their terminal's
  compromise began: no fraud of that terminal is labelled yet under the label
  delay, and such a transaction looks genuine, so no feature known to the bank
  can separate it. Those frauds are tied with the genuine transactions (score 0:
  mid-ranks for AUC-ROC, card id order for card precision).

The simulator exposes each row's scenario and each compromise's day, so
"compromised less than ``delay`` days earlier" is exact: the transaction time
minus the start (00:00 UTC) of the day the terminal's current run of
compromised days began. A second oracle (``label_based_oracle_*``) leaves out
instead the scenario-2 frauds whose terminal had no fraud at or before
``t - delay`` within the ``lookback`` days before that — what the terminal-risk
features can see (a terminal with about one transaction a day often shows its
first fraud a day or more after the compromise began, so this set is larger).

With ``--handbook DIR`` (the output of ``benchmarks/handbook_dataset.py``: the
Handbook's own published dataset) the rows and scenarios come from there; its
files do not record when a compromise began, so only the label-based oracle
is measured.

    .venv/bin/python benchmarks/quality_ceiling.py [--weeks 6] [--delay 7] [--handbook DIR]

Prints one JSON object per week, then a JSON summary as the last line.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow.parquet as pq

from features import spec
from features.timebase import DAY_US, to_epoch_us
from ingest.simulator import Scenario, SimulationConfig, SimulationResult, simulate
from training import evaluation as ev

BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Bank:
    """The simulated bank's rows, as arrays, with what the simulator knows about them."""

    times_us: npt.NDArray[np.int64]
    days: npt.NDArray[np.datetime64]
    cards: npt.NDArray[np.object_]
    terminals: npt.NDArray[np.int64]
    labels: npt.NDArray[np.int64]
    scenario: npt.NDArray[np.int8]
    #: Start (epoch µs, 00:00 UTC) of the row's terminal's current compromise run; -1 if none.
    compromise_start_us: npt.NDArray[np.int64]


def compromise_run_starts(result: SimulationResult) -> npt.NDArray[np.int64]:
    """Per row, the first day (index into the period) of its terminal's current compromise run.

    A terminal compromised again before the previous compromise ended stays
    compromised without a break; the run starts at the first compromise. Rows of
    terminals not compromised on their day get -1.
    """
    config = result.config
    events = result.compromises[Scenario.COMPROMISED_TERMINAL]
    length = config.scenarios.terminal_compromise_days
    covered = np.zeros((config.days, config.terminals), dtype=bool)
    for day, terminal in zip(events.day, events.target, strict=True):
        covered[day : day + length, terminal] = True
    run_start = np.full(covered.shape, -1, dtype=np.int64)
    for day in range(config.days):
        previous = run_start[day - 1] if day else np.full(config.terminals, -1, dtype=np.int64)
        run_start[day] = np.where(covered[day], np.where(previous >= 0, previous, day), -1)
    start_us = to_epoch_us_of_day(config.start_date)
    day_index = (to_epoch_us(result.table.column(spec.TIMESTAMP)) - start_us) // DAY_US
    starts = run_start[day_index, result.terminal_index]
    return np.where(starts >= 0, start_us + starts * DAY_US, -1)


def to_epoch_us_of_day(day: date) -> int:
    """Epoch microseconds of 00:00 UTC of ``day``."""
    return (day - date(1970, 1, 1)).days * DAY_US


def load_bank(config: SimulationConfig) -> Bank:
    """Simulate ``config`` and keep what the ceilings need."""
    result = simulate(config)
    table = result.table
    times = to_epoch_us(table.column(spec.TIMESTAMP))
    return Bank(
        times_us=times,
        days=times.astype("datetime64[us]").astype("datetime64[D]"),
        cards=np.asarray(table.column(spec.CUSTOMER_ID).to_pylist(), dtype=object),
        terminals=np.asarray(result.terminal_index, dtype=np.int64),
        labels=table.column(spec.LABEL_KEY).to_numpy().astype(np.int64),
        scenario=np.asarray(result.scenario),
        compromise_start_us=compromise_run_starts(result),
    )


def load_handbook(directory: Path) -> Bank:
    """The Handbook's dataset as converted by ``benchmarks/handbook_dataset.py``."""
    from handbook_dataset import SCENARIOS_FILE, TRANSACTIONS_FILE  # beside this script

    from ingest.readers import read_transactions

    table = read_transactions(directory / TRANSACTIONS_FILE, labelled=True).table
    scenarios = pq.read_table(directory / SCENARIOS_FILE)
    scenario_of = dict(zip(scenarios.column(spec.TRANSACTION_ID).to_pylist(),
                           scenarios.column("scenario").to_pylist(), strict=True))
    ids = table.column(spec.TRANSACTION_ID).to_pylist()
    times = to_epoch_us(table.column(spec.TIMESTAMP))
    return Bank(
        times_us=times,
        days=times.astype("datetime64[us]").astype("datetime64[D]"),
        cards=np.asarray(table.column(spec.CUSTOMER_ID).to_pylist(), dtype=object),
        terminals=np.asarray(table.column(spec.TERMINAL_ID).to_pylist(), dtype=np.int64),
        labels=table.column(spec.LABEL_KEY).to_numpy().astype(np.int64),
        scenario=np.asarray([scenario_of[i] for i in ids], dtype=np.int8),
        compromise_start_us=np.full(len(ids), -1, dtype=np.int64),
    )


def undetectable(bank: Bank, delay_days: int) -> BoolArray:
    """Scenario-2 frauds made less than ``delay_days`` after their terminal's compromise began."""
    terminal_fraud = bank.scenario == Scenario.COMPROMISED_TERMINAL
    young = bank.times_us - bank.compromise_start_us < delay_days * DAY_US
    return terminal_fraud & (bank.compromise_start_us >= 0) & young


def label_based_undetectable(bank: Bank, rows: BoolArray, delay_days: int,
                             lookback_days: int) -> BoolArray:
    """Scenario-2 frauds among ``rows`` whose terminal shows no fraud the bank knows yet.

    Known = a fraud of the same terminal at a time in ``(t - delay - lookback, t - delay]``.
    """
    out = np.zeros(bank.labels.shape, dtype=bool)
    frauds = np.flatnonzero(bank.labels == 1)
    by_terminal: dict[int, npt.NDArray[np.int64]] = {}
    order = np.argsort(bank.terminals[frauds], kind="stable")
    sorted_terminals = bank.terminals[frauds][order]
    sorted_times = bank.times_us[frauds][order]
    bounds = np.flatnonzero(np.diff(sorted_terminals)) + 1
    for chunk_t, chunk in zip(np.split(sorted_terminals, bounds),
                              np.split(sorted_times, bounds), strict=True):
        by_terminal[int(chunk_t[0])] = np.sort(chunk)
    candidates = np.flatnonzero(rows & (bank.scenario == Scenario.COMPROMISED_TERMINAL))
    for i in candidates:
        times = by_terminal[int(bank.terminals[i])]
        known_until = bank.times_us[i] - delay_days * DAY_US
        lo = np.searchsorted(times, known_until - lookback_days * DAY_US, side="right")
        hi = np.searchsorted(times, known_until, side="right")
        out[i] = hi == lo
    return out


def _figures(labels: npt.NDArray[np.int64], scores: npt.NDArray[np.float64],
             days: npt.NDArray[np.datetime64], cards: npt.NDArray[np.object_]) -> dict[str, float]:
    return {
        "card_precision_at_100": ev.card_precision_top_k(days, cards, labels, scores).mean,
        "auc_roc": ev.roc_auc(labels, scores),
        "average_precision": ev.average_precision(labels, scores),
    }


def week_ceiling(bank: Bank, train_start: date, delay_days: int,
                 lookback_days: int) -> dict[str, Any]:
    """The ceilings of the test week of the model trained from ``train_start``."""
    test_start = train_start + timedelta(days=7 + delay_days)
    first, last = np.datetime64(test_start, "D"), np.datetime64(test_start + timedelta(6), "D")
    known = ev.known_compromised(bank.days, bank.cards, bank.labels,
                                 np.datetime64(train_start, "D"), delay_days)
    assessed = (bank.days >= first) & (bank.days <= last) & ~known
    hidden = undetectable(bank, delay_days) & assessed
    by_labels = label_based_undetectable(bank, assessed, delay_days, lookback_days)
    labels, days, cards = bank.labels[assessed], bank.days[assessed], bank.cards[assessed]
    figures: dict[str, Any] = {
        "train_start": train_start.isoformat(),
        "test_period": f"{test_start}..{test_start + timedelta(6)}",
        "transactions": int(labels.size),
        "frauds": int(labels.sum()),
        "label_based_undetectable_frauds": int(by_labels.sum()),
        "perfect_card_precision_at_100": ev.card_precision_top_k(
            days, cards, labels, labels.astype(np.float64)).mean,
    }
    oracles = [("label_based_oracle", by_labels)]
    if (bank.compromise_start_us >= 0).any():  # compromise days known: the exact oracle too
        oracles.insert(0, ("oracle", hidden))
        figures["undetectable_frauds"] = int(hidden.sum())
    for name, excluded in oracles:
        oracle = ((labels == 1) & ~excluded[assessed]).astype(np.float64)
        for metric, value in _figures(labels, oracle, days, cards).items():
            figures[f"{name}_{metric}"] = value
    return figures


def main() -> None:
    """Print the ceilings of each test week and their means."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--first-train-start", type=date.fromisoformat,
                        default=date(2018, 7, 25), help="the Handbook's first training day")
    parser.add_argument("--weeks", type=int, default=6, help="consecutive test weeks")
    parser.add_argument("--delay", type=int, default=spec.DEFAULT_DELAY_DAYS,
                        help="label delay, days")
    parser.add_argument("--lookback", type=int, default=28,
                        help="days of known labels the label-based cross-check looks back over")
    parser.add_argument("--handbook", type=Path,
                        help="the Handbook's dataset, converted by benchmarks/handbook_dataset.py")
    args = parser.parse_args()
    bank = load_handbook(args.handbook) if args.handbook else load_bank(SimulationConfig())
    weeks = []
    for k in range(args.weeks):
        start = args.first_train_start + timedelta(days=7 * k)
        week = week_ceiling(bank, start, args.delay, args.lookback)
        print(json.dumps({"week": k + 1, **week}), flush=True)
        weeks.append(week)
    keys = [key for key in weeks[0] if key.endswith(("_at_100", "_auc_roc", "_precision"))]
    print(json.dumps({
        "weeks": len(weeks),
        "delay_days": args.delay,
        "mean": {key: round(float(np.mean([w[key] for w in weeks])), 4) for key in keys},
        "mean_first_3": {key: round(float(np.mean([w[key] for w in weeks[:3]])), 4)
                         for key in keys},
    }))


if __name__ == "__main__":
    main()
