"""Fraud-detection metrics exactly as the Fraud Detection Handbook defines them.

Le Borgne, Siblini, Lebichot, Bontempi, *Reproducible Machine Learning for
Credit Card Fraud Detection - Practical Handbook* (ULB / Worldline), chapter 4
"Performance metrics": threshold-based metrics (4.1), threshold-free metrics
AUC-ROC and average precision (4.3) and card precision top-k (4.2). The
Handbook computes the first two with scikit-learn; the functions here give the
same numbers (ties included) with numpy alone, so evaluation needs no extra
dependency.

Everything is pure: arrays in, figures out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

FloatArray = npt.NDArray[np.float64]

#: The Handbook's operational metric: cards an investigator team checks per day.
DEFAULT_TOP_K = 100


def _as_labels_scores(
    labels: npt.ArrayLike, scores: npt.ArrayLike
) -> tuple[npt.NDArray[np.int64], FloatArray]:
    y = np.asarray(labels).astype(np.int64)
    s = np.asarray(scores).astype(np.float64)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError(f"labels {y.shape} and scores {s.shape} must be 1-D of equal length")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    return y, s


def _require_both_classes(y: npt.NDArray[np.int64]) -> None:
    positives = int(y.sum())
    if positives == 0 or positives == y.size:
        raise ValueError("need at least one fraud and one genuine transaction")


def roc_auc(labels: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Area under the ROC curve (Handbook 4.3; ``sklearn.metrics.roc_auc_score``).

    Computed as the Mann-Whitney statistic with mid-ranks for tied scores, which
    equals the trapezoidal area under the ROC curve scikit-learn integrates.
    """
    y, s = _as_labels_scores(labels, scores)
    _require_both_classes(y)
    ranks = pd.Series(s).rank(method="average").to_numpy()
    positives = int(y.sum())
    negatives = y.size - positives
    rank_sum = float(ranks[y == 1].sum())
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def _cumulative_counts(
    y: npt.NDArray[np.int64], s: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(thresholds, true positives, false positives) at each distinct score, descending."""
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    last_of_each_score = np.r_[np.flatnonzero(np.diff(s_sorted)), y.size - 1]
    tps = np.cumsum(y_sorted)[last_of_each_score].astype(np.float64)
    fps = (last_of_each_score + 1) - tps
    return s_sorted[last_of_each_score], tps, fps


def average_precision(labels: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Average precision (Handbook 4.3; ``sklearn.metrics.average_precision_score``).

    ``AP = sum_n (R_n - R_{n-1}) P_n`` over the distinct score thresholds in
    decreasing order: the step-wise area under the precision-recall curve, no
    interpolation.
    """
    y, s = _as_labels_scores(labels, scores)
    _require_both_classes(y)
    _, tps, fps = _cumulative_counts(y, s)
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def roc_curve(labels: npt.ArrayLike, scores: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Return (false positive rates, true positive rates) from (0, 0), for plotting."""
    y, s = _as_labels_scores(labels, scores)
    _require_both_classes(y)
    _, tps, fps = _cumulative_counts(y, s)
    return np.r_[0.0, fps / fps[-1]], np.r_[0.0, tps / tps[-1]]


def precision_recall_curve(
    labels: npt.ArrayLike, scores: npt.ArrayLike
) -> tuple[FloatArray, FloatArray]:
    """Return (precisions, recalls) at each distinct threshold, decreasing, for plotting."""
    y, s = _as_labels_scores(labels, scores)
    _require_both_classes(y)
    _, tps, fps = _cumulative_counts(y, s)
    return tps / (tps + fps), tps / tps[-1]


@dataclass(frozen=True)
class ThresholdMetrics:
    """Alert-level figures at one decision threshold (Handbook 4.1)."""

    threshold: float
    alerts: int
    true_positives: int
    precision: float
    recall: float


def threshold_metrics(
    labels: npt.ArrayLike, scores: npt.ArrayLike, threshold: float
) -> ThresholdMetrics:
    """Precision and recall when every transaction with ``score >= threshold`` is an alert.

    ``>=`` is the scorer's alerting rule. As in the Handbook's
    ``threshold_based_metrics``, precision is 1 when there is no alert at all.
    """
    y, s = _as_labels_scores(labels, scores)
    frauds = int(y.sum())
    if frauds == 0:
        raise ValueError("recall needs at least one fraud")
    alerted = s >= threshold
    alerts = int(alerted.sum())
    tp = int(y[alerted].sum())
    precision = tp / alerts if alerts else 1.0
    return ThresholdMetrics(float(threshold), alerts, tp, precision, tp / frauds)


@dataclass(frozen=True)
class CardPrecision:
    """Card precision top-k: the per-day values and their mean (the reported figure)."""

    k: int
    days: tuple[np.datetime64, ...]
    per_day: tuple[float, ...]
    compromised_cards_per_day: tuple[int, ...]
    detected_cards_per_day: tuple[tuple[str, ...], ...]

    @property
    def mean(self) -> float:
        """Mean of the daily card precisions over the days that have transactions."""
        return float(np.mean(self.per_day))


def card_precision_top_k(
    days: npt.ArrayLike,
    cards: npt.ArrayLike,
    labels: npt.ArrayLike,
    scores: npt.ArrayLike,
    k: int = DEFAULT_TOP_K,
) -> CardPrecision:
    """Card precision top-k, Handbook section 4.2 "Precision top-k metrics".

    Reproduces the Handbook's shared functions ``card_precision_top_k`` and
    ``card_precision_top_k_day`` (with ``remove_detected_compromised_cards=True``):

    * days are the distinct days present in the data, in increasing order;
      the result is the mean of the daily values over those days;
    * each day, transactions of cards already *detected* as compromised on a
      previous day (cards that were true positives of an earlier day's top k)
      are removed first — investigators would have blocked them;
    * the remaining transactions are grouped per card, taking the card's
      maximum score and maximum label of the day, and ranked by decreasing
      score; the card precision is the number of fraudulent cards among the
      top ``k`` divided by ``k`` — by ``k`` even when the day has fewer than
      ``k`` cards.

    Ties: cards are grouped in increasing card id order and sorted by score
    with a stable sort, so equal scores rank by card id. (The Handbook's pandas
    ``sort_values`` uses an unstable quicksort and leaves that order
    unspecified; this makes it deterministic.)
    """
    if k < 1:
        raise ValueError("k must be >= 1")
    y, s = _as_labels_scores(labels, scores)
    frame = pd.DataFrame(
        {"day": np.asarray(days), "card": np.asarray(cards).astype(str), "label": y, "score": s}
    )
    detected: set[str] = set()
    day_keys: list[np.datetime64] = []
    per_day: list[float] = []
    compromised: list[int] = []
    detected_per_day: list[tuple[str, ...]] = []
    for day, day_frame in frame.groupby("day", sort=True):
        remaining = day_frame[~day_frame["card"].isin(detected)]
        compromised.append(int(remaining.loc[remaining["label"] == 1, "card"].nunique()))
        per_card = remaining.groupby("card", sort=True)[["score", "label"]].max()
        top = per_card.sort_values("score", ascending=False, kind="stable").head(k)
        found = tuple(top.index[top["label"] == 1])
        detected.update(found)
        day_keys.append(np.datetime64(day, "D"))
        per_day.append(len(found) / k)
        detected_per_day.append(found)
    if not day_keys:
        raise ValueError("card precision needs at least one transaction")
    return CardPrecision(k, tuple(day_keys), tuple(per_day), tuple(compromised),
                         tuple(detected_per_day))


def known_compromised(
    days: npt.NDArray[np.datetime64],
    cards: npt.ArrayLike,
    labels: npt.ArrayLike,
    since: np.datetime64,
    delay_days: int,
) -> npt.NDArray[np.bool_]:
    """Rows whose card was already known compromised on the row's day.

    The Handbook's test sets (shared function ``get_train_test_set``, used for
    every published figure) drop, on each test day ``T``, the transactions of
    cards with a fraud on a day in ``[since, T - delay - 1]`` — ``since`` being
    the start of the training window: those labels are known by ``T`` and the
    card would be blocked. ``days`` are calendar days (``datetime64[D]``).
    """
    day = np.asarray(days).astype("datetime64[D]")
    card = pd.Series(np.asarray(cards).astype(str))
    fraud = (np.asarray(labels) == 1) & (day >= since)
    if not fraud.any():
        return np.zeros(day.shape, dtype=bool)
    first_fraud = pd.Series(day[fraud]).groupby(card[fraud].to_numpy()).min()
    known_from = card.map(first_fraud).to_numpy(dtype="datetime64[D]")
    return day >= known_from + np.timedelta64(delay_days + 1, "D")  # NaT compares False


def daily_counts(
    days: npt.ArrayLike, flags: npt.ArrayLike, all_days: npt.ArrayLike
) -> npt.NDArray[np.int64]:
    """Per day of ``all_days``, how many rows have a true flag (0 for days with no rows)."""
    counts = pd.Series(np.asarray(flags).astype(np.int64)).groupby(np.asarray(days)).sum()
    return counts.reindex(np.asarray(all_days), fill_value=0).to_numpy(dtype=np.int64)


@dataclass(frozen=True)
class PeriodScores:
    """The scored transactions of an evaluation period, one entry per transaction."""

    transaction_ids: npt.NDArray[np.object_]
    days: npt.NDArray[np.datetime64]
    cards: npt.NDArray[np.object_]
    labels: npt.NDArray[np.int64]
    scores: npt.NDArray[np.float32]

    def subset(self, keep: npt.NDArray[np.bool_]) -> PeriodScores:
        """Keep the transactions where ``keep`` is true."""
        return PeriodScores(self.transaction_ids[keep], self.days[keep], self.cards[keep],
                            self.labels[keep], self.scores[keep])


@dataclass(frozen=True)
class Summary:
    """Every figure of an evaluation, plus the daily series the report plots."""

    transactions: int
    frauds: int
    auc_roc: float
    average_precision: float
    card_precision: CardPrecision
    at_threshold: ThresholdMetrics
    all_days: npt.NDArray[np.datetime64]
    alerts_per_day: npt.NDArray[np.int64]
    fraud_alerts_per_day: npt.NDArray[np.int64]

    @property
    def mean_alerts_per_day(self) -> float:
        """Alerts per calendar day of the period (days without transactions count)."""
        return float(self.alerts_per_day.mean())

    def figures(self) -> dict[str, float | int]:
        """Return the headline figures, JSON-ready."""
        return {
            "auc_roc": self.auc_roc,
            "average_precision": self.average_precision,
            f"card_precision_at_{self.card_precision.k}": self.card_precision.mean,
            "transactions": self.transactions,
            "frauds": self.frauds,
            "recall_at_threshold": self.at_threshold.recall,
            "precision_at_threshold": self.at_threshold.precision,
            "alerts_per_day": self.mean_alerts_per_day,
            "threshold": self.at_threshold.threshold,
        }


def summarize(
    period: PeriodScores,
    threshold: float,
    all_days: npt.NDArray[np.datetime64],
    k: int = DEFAULT_TOP_K,
) -> Summary:
    """All metrics of a scored period; ``all_days`` are its calendar days, in order."""
    scores = period.scores.astype(np.float64)
    at_threshold = threshold_metrics(period.labels, scores, threshold)
    alerted = scores >= threshold
    return Summary(
        transactions=int(period.labels.size),
        frauds=int(period.labels.sum()),
        auc_roc=roc_auc(period.labels, scores),
        average_precision=average_precision(period.labels, scores),
        card_precision=card_precision_top_k(period.days, period.cards, period.labels, scores, k),
        at_threshold=at_threshold,
        all_days=all_days,
        alerts_per_day=daily_counts(period.days, alerted, all_days),
        fraud_alerts_per_day=daily_counts(period.days, alerted & (period.labels == 1), all_days),
    )
