"""The retraining's window rule and promotion gate, and where the input's days are read."""

from __future__ import annotations

import math
from datetime import date

import pytest

from features.errors import InputError
from training.gate import GateRule, decide
from training.retrain import choose_windows, data_days

CHAMPION = {"card_precision_at_100": 0.040, "auc_roc": 0.90, "average_precision": 0.60}


def test_the_windows_end_at_the_newest_day_minus_the_label_delay():
    w = choose_windows(date(2018, 4, 1), date(2018, 5, 30), delay_days=7, train_days=10,
                       eval_days=5)
    assert w.labelled_through == date(2018, 5, 23)
    assert (w.eval_start, w.eval_end) == (date(2018, 5, 19), date(2018, 5, 23))
    assert (w.train_start, w.train_end) == (date(2018, 5, 9), date(2018, 5, 18))
    assert w.history_start == date(2018, 4, 2)  # 37 days: 30-day windows + the 7-day delay
    assert w.as_dict()["eval_start"] == "2018-05-19"


def test_as_of_replays_a_past_decision_and_cannot_see_past_the_data():
    past = choose_windows(date(2018, 1, 1), date(2018, 5, 30), delay_days=7, train_days=10,
                          eval_days=5, as_of=date(2018, 5, 10))
    assert past.eval_end == date(2018, 5, 3)
    future = choose_windows(date(2018, 1, 1), date(2018, 5, 30), delay_days=7, train_days=10,
                            eval_days=5, as_of=date(2019, 1, 1))
    assert future.eval_end == date(2018, 5, 23)


def test_a_window_without_its_history_is_refused_with_what_is_missing():
    with pytest.raises(InputError, match=r"need data from 2018-04-02 .*1 day\(s\) missing"):
        choose_windows(date(2018, 4, 3), date(2018, 5, 30), delay_days=7, train_days=10,
                       eval_days=5)
    w = choose_windows(date(2018, 4, 30), date(2018, 5, 30), delay_days=7, train_days=10,
                       eval_days=5, history_days=9)
    assert w.history_start == date(2018, 4, 30)


def test_the_gate_promotes_a_challenger_that_wins_by_more_than_the_margin():
    better = {**CHAMPION, "card_precision_at_100": 0.050}
    verdict = decide(better, CHAMPION, GateRule())
    assert verdict.promote and verdict.reason.startswith("promoted: card_precision_at_100 0.0500")
    assert [c.metric for c in verdict.checks] == ["card_precision_at_100", "auc_roc",
                                                  "average_precision"]
    assert not decide(better, CHAMPION, GateRule(margin=0.02)).promote


def test_a_tie_keeps_the_champion():
    verdict = decide(dict(CHAMPION), CHAMPION, GateRule())
    assert not verdict.promote
    assert "card_precision_at_100 0.0400 vs champion 0.0400 (+0.0000, needs > +0)" in verdict.reason


def test_a_drop_beyond_the_tolerance_on_another_metric_keeps_the_champion():
    lopsided = {**CHAMPION, "card_precision_at_100": 0.060, "auc_roc": 0.85}
    verdict = decide(lopsided, CHAMPION, GateRule(tolerance=0.01))
    assert not verdict.promote
    assert verdict.reason.startswith("kept the champion: auc_roc 0.8500 vs champion 0.9000")
    assert decide(lopsided, CHAMPION, GateRule(tolerance=0.06)).promote


def test_a_degraded_challenger_is_refused_on_the_chosen_metric():
    shuffled = {"card_precision_at_100": 0.009, "auc_roc": 0.09, "average_precision": 0.003}
    verdict = decide(shuffled, CHAMPION, GateRule())
    assert not verdict.promote
    assert "card_precision_at_100 0.0090 vs champion 0.0400" in verdict.reason
    assert "auc_roc" in verdict.reason and "average_precision" in verdict.reason


def test_another_metric_can_be_chosen_and_missing_figures_never_pass():
    rule = GateRule(metric="average_precision")
    assert rule.others == ("card_precision_at_100", "auc_roc")
    assert decide({**CHAMPION, "average_precision": 0.7}, CHAMPION, rule).promote
    broken = {**CHAMPION, "card_precision_at_100": 0.5, "auc_roc": math.nan}
    verdict = decide(broken, CHAMPION, GateRule())
    assert not verdict.promote and "auc_roc is missing or not a number" in verdict.reason
    assert not decide({"auc_roc": 1.0}, CHAMPION, GateRule()).promote


def test_no_champion_means_the_first_champion():
    verdict = decide({"auc_roc": 0.1}, None, GateRule())
    assert verdict.promote and "first stable version" in verdict.reason


@pytest.mark.parametrize("kwargs", [{"metric": "f1"}, {"margin": -0.1}, {"tolerance": math.inf}])
def test_a_bad_rule_is_refused(kwargs):
    with pytest.raises(ValueError):
        GateRule(**kwargs)


def _bank(days: int):
    from ingest.simulator import SimulationConfig, simulate

    return simulate(SimulationConfig(customers=20, terminals=40, days=days, seed=2)).table


def test_the_days_of_a_lake_partitions_and_a_file(tmp_path):
    from ingest import lake
    from ingest.writers import write_transactions

    table = _bank(5)
    first, newest = date(2018, 4, 1), date(2018, 4, 5)
    root = tmp_path / "lake"
    lake.create(root)
    lake.write_batch(root, lake.Batch("transactions", 0, 0, table.num_rows - 1),
                     table.drop_columns(["is_fraud"]), None, [])
    assert data_days(root) == (first, newest)
    write_transactions(table, tmp_path / "parts")
    assert data_days(tmp_path / "parts") == (first, newest)
    write_transactions(table, tmp_path / "all.parquet")
    assert data_days(tmp_path / "all.parquet") == (first, newest)
    with pytest.raises(InputError, match="not found"):
        data_days(tmp_path / "nothing")
