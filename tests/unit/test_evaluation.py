"""Metrics of training.evaluation against hand-computed values (Handbook chapter 4)."""

from __future__ import annotations

import numpy as np
import pytest

from training import evaluation as ev

D1, D2, D3, D4 = (np.datetime64(d, "D") for d in ("2018-07-01", "2018-07-02", "2018-07-03",
                                                   "2018-07-04"))


def test_roc_auc_of_a_small_example():
    # 4 pairs (pos, neg): (0.35 vs 0.1) win, (0.35 vs 0.4) loss, 0.8 wins both -> 3/4.
    assert ev.roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)


def test_roc_auc_counts_a_tie_as_half():
    # pos {0.5, 0.9}, neg {0.5, 0.2}: 0.5 + 1 + 1 + 1 = 3.5 of 4 pairs.
    assert ev.roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9]) == pytest.approx(0.875)


def test_average_precision_of_a_small_example():
    # thresholds 0.8: P=1 R=.5; 0.4: P=1/2 R=.5; 0.35: P=2/3 R=1 -> .5*1 + .5*2/3.
    assert ev.average_precision([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(5 / 6)


def test_average_precision_groups_tied_scores_into_one_threshold():
    # 0.5 (one fraud, one genuine together): P=1/2 R=1/2; 0.1: P=2/3 R=1.
    # Taking the tied fraud first would give 1/2*1 + 1/2*2/3 = 5/6 instead.
    assert ev.average_precision([1, 0, 1], [0.5, 0.5, 0.1]) == pytest.approx(7 / 12)


def test_auc_and_ap_match_their_definitions_on_random_data_with_ties():
    rng = np.random.default_rng(7)
    labels = (rng.random(300) < 0.2).astype(int)
    scores = np.round(rng.random(300) * 0.6 + labels * 0.3, 1)  # coarse: many ties
    pos, neg = scores[labels == 1], scores[labels == 0]
    pairwise = ((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean()
    per_fraud_precision = [labels[scores >= t].mean() for t in pos]
    assert ev.roc_auc(labels, scores) == pytest.approx(pairwise, abs=1e-12)
    assert ev.average_precision(labels, scores) == pytest.approx(
        np.mean(per_fraud_precision), abs=1e-12
    )


def test_auc_and_ap_need_both_classes():
    with pytest.raises(ValueError, match="one fraud and one genuine"):
        ev.roc_auc([0, 0], [0.1, 0.2])
    with pytest.raises(ValueError, match="one fraud and one genuine"):
        ev.average_precision([1, 1], [0.1, 0.2])


def test_curves_end_at_full_recall():
    fpr, tpr = ev.roc_curve([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    assert list(fpr) == [0.0, 0.0, 0.5, 0.5, 1.0]
    assert list(tpr) == [0.0, 0.5, 0.5, 1.0, 1.0]
    precision, recall = ev.precision_recall_curve([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    assert list(recall) == [0.5, 0.5, 1.0, 1.0]
    assert list(precision) == pytest.approx([1.0, 0.5, 2 / 3, 0.5])


def test_threshold_metrics_alert_on_greater_or_equal():
    m = ev.threshold_metrics([0, 1, 1, 0, 1], [0.9, 0.5, 0.2, 0.1, 0.5], threshold=0.5)
    assert (m.alerts, m.true_positives) == (3, 2)
    assert m.precision == pytest.approx(2 / 3)
    assert m.recall == pytest.approx(2 / 3)


def test_threshold_metrics_without_alerts_has_precision_one_as_in_the_handbook():
    m = ev.threshold_metrics([0, 1], [0.1, 0.2], threshold=0.9)
    assert (m.alerts, m.precision, m.recall) == (0, 1.0, 0.0)


def _cp(rows, k):
    days, cards, labels, scores = zip(*rows, strict=True)
    return ev.card_precision_top_k(np.array(days), np.array(cards), labels, scores, k=k)


def test_card_precision_removes_cards_detected_on_earlier_days():
    rows = [
        # day 1: top 2 = A (fraud), C (fraud) -> 2/2; A and C are now known compromised
        (D1, "A", 1, 0.9), (D1, "C", 1, 0.8), (D1, "B", 0, 0.7), (D1, "D", 1, 0.1),
        # day 2: A and C removed; top 2 = B (genuine), E (fraud) -> 1/2
        # (without the removal it would be A, C -> 2/2)
        (D2, "A", 1, 0.95), (D2, "C", 1, 0.6), (D2, "B", 0, 0.5), (D2, "E", 1, 0.3),
        (D2, "H", 0, 0.2),
        # day 3: one card, fewer than k: max score 0.99 and max label 1 -> 1 fraud card / k=2
        (D3, "G", 1, 0.05), (D3, "G", 0, 0.99),
    ]
    result = _cp(rows, k=2)
    assert result.days == (D1, D2, D3)
    assert result.per_day == (1.0, 0.5, 0.5)
    assert result.mean == pytest.approx(2 / 3)
    assert result.detected_cards_per_day == (("A", "C"), ("E",), ("G",))
    # compromised cards still in play each day: D1 {A, C, D}; D2 {E} (A, C removed); D3 {G}
    assert result.compromised_cards_per_day == (3, 1, 1)


def test_card_precision_keeps_cards_that_were_only_missed():
    # D was compromised on day 1 but not in the top 1: it stays in the day-2 ranking.
    rows = [(D1, "A", 0, 0.9), (D1, "D", 1, 0.1), (D2, "D", 1, 0.8), (D2, "A", 0, 0.2)]
    assert _cp(rows, k=1).per_day == (0.0, 1.0)


def test_card_precision_averages_only_over_days_with_transactions():
    rows = [(D1, "A", 1, 0.9), (D4, "B", 0, 0.9)]
    result = _cp(rows, k=1)
    assert result.days == (D1, D4)
    assert result.mean == pytest.approx(0.5)


def test_card_precision_breaks_score_ties_by_card_id():
    assert _cp([(D1, "b", 1, 0.5), (D1, "a", 0, 0.5)], k=1).per_day == (0.0,)
    assert _cp([(D1, "b", 0, 0.5), (D1, "a", 1, 0.5)], k=1).per_day == (1.0,)


def test_card_precision_counts_a_card_once_per_day():
    # three fraudulent transactions of one card are one detected card, not three
    rows = [(D1, "A", 1, 0.9), (D1, "A", 1, 0.8), (D1, "A", 1, 0.7), (D1, "B", 0, 0.6)]
    assert _cp(rows, k=3).per_day == (pytest.approx(1 / 3),)


def test_daily_counts_fills_days_without_rows_with_zero():
    counts = ev.daily_counts(
        np.array([D1, D1, D3]), np.array([True, True, False]), np.array([D1, D2, D3])
    )
    assert list(counts) == [2, 0, 0]


def test_known_compromised_follows_the_label_delay_from_the_training_start():
    d0 = np.datetime64("2018-06-30", "D")
    rows = [
        (D1, "a", 1), (D2, "a", 0), (D3, "a", 0), (D4, "a", 0),  # fraud D1 known from D1+1+1
        (d0, "b", 1), (D3, "b", 0),  # fraud before the training start: never "known"
        (D3, "c", 1), (D4, "c", 1),  # fraud D3 known only from D5
        (D4, "d", 0),
    ]
    days, cards, labels = (np.array(c) for c in zip(*rows, strict=True))
    known = ev.known_compromised(days, cards, labels, since=D1, delay_days=1)
    assert known.tolist() == [False, False, True, True, False, False, False, False, False]
    # with no delay, a fraud is known the next day
    known = ev.known_compromised(days, cards, labels, since=D1, delay_days=0)
    assert known.tolist() == [False, True, True, True, False, False, False, True, False]


def test_period_subset_keeps_rows_aligned():
    period = ev.PeriodScores(np.array(["t1", "t2", "t3"], dtype=object), np.array([D1, D1, D2]),
                             np.array(["a", "b", "a"], dtype=object), np.array([0, 1, 1]),
                             np.array([0.1, 0.2, 0.3], dtype=np.float32))
    kept = period.subset(np.array([True, False, True]))
    assert kept.transaction_ids.tolist() == ["t1", "t3"] and kept.labels.tolist() == [0, 1]
    assert kept.scores.tolist() == pytest.approx([0.1, 0.3])


def test_known_compromised_without_any_fraud_is_all_false():
    days = np.array([D1, D2], dtype="datetime64[D]")
    assert ev.known_compromised(days, ["a", "b"], [0, 0], D1, 7).tolist() == [False, False]
    empty = np.array([], dtype="datetime64[D]")
    assert ev.known_compromised(empty, [], [], D1, 7).size == 0
