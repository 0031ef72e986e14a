"""Reason codes: which groups of a transaction's inputs raised its score, in words.

The method is occlusion against a baseline. For each *input group* (the
amount; the card's spending windows; the card's novelty flags and the time
since its previous transaction; the terminal's risk windows and fraud streak;
the calendar; the categorical fields) the group's inputs are replaced by the
training baseline recorded in the export (``ModelMetadata.details["baseline"]``:
medians of the numeric inputs and modes of the string inputs over genuine
training rows) while every other input keeps its value. The group's
*contribution* is the score minus the score with that group at its baseline:
how much of the alert this group accounts for, all else equal.

:func:`reason_codes` builds one batch of ``rows x (groups + 1)`` rows (the
originals, then each group set to the baseline) and scores it in **one**
call to the model, so the cost is one request per alert batch, whatever the
number of groups. The texts are derived from the feature values themselves
("amount 6.2x the card's 30-day mean"), so an analyst reads facts about the
transaction, not model internals.

Limits: a group's contribution is measured with the others at their actual
values, so contributions of interacting groups do not add up to the score;
a group whose value equals the baseline contributes nothing by construction.
Pure numpy: no TensorFlow import here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from features import spec
from features.input_groups import baseline_of, input_groups

__all__ = ["baseline_of", "describe", "input_groups", "reason_codes"]

Predict = Callable[[Mapping[str, np.ndarray]], np.ndarray]

#: Group name -> the words an analyst sees as its heading.
GROUP_LABELS: dict[str, str] = {
    "amount": "Amount",
    "customer_spending": "Card's spending pattern",
    "customer_novelty": "New for this card",
    "terminal_risk": "Terminal risk",
    "calendar": "Time of day / week",
    "categorical": "Merchant, country, channel",
}

#: Contributions below this are noise, not a reason.
MIN_CONTRIBUTION = 1e-4


def reason_codes(
    predict: Predict,
    inputs: Mapping[str, np.ndarray],
    baseline: Mapping[str, Any],
    top_k: int = 3,
) -> list[list[dict[str, Any]]]:
    """Per row of ``inputs``, the ``top_k`` groups that raised its score most, best first.

    ``predict`` scores a batch of named 1-D arrays (the serving signature's
    inputs) and is called exactly once. Each reason is ``{"group",
    "contribution", "text"}``; only groups with a positive contribution are
    returned. Groups with an input missing from ``baseline`` are skipped.
    """
    names = list(inputs)
    rows = len(next(iter(inputs.values()))) if names else 0
    if rows == 0:
        return []
    groups = {
        g: cols for g, cols in input_groups().items() if all(c in baseline for c in cols)
    }
    batch: dict[str, np.ndarray] = {}
    for name in names:
        column = np.asarray(inputs[name])
        copies = [column]
        for cols in groups.values():
            if name in cols:
                copies.append(np.full(rows, baseline[name], dtype=column.dtype))
            else:
                copies.append(column)
        batch[name] = np.concatenate(copies)
    scores = np.asarray(predict(batch), dtype=np.float64).reshape(-1)
    if scores.size != rows * (len(groups) + 1):
        raise ValueError(f"predict returned {scores.size} scores for {rows * (len(groups) + 1)}")
    original = scores[:rows]
    occluded = scores[rows:].reshape(len(groups), rows)
    contributions = original[None, :] - occluded
    group_names = list(groups)
    out: list[list[dict[str, Any]]] = []
    for r in range(rows):
        row = {n: np.asarray(inputs[n])[r] for n in names}
        order = np.argsort(-contributions[:, r], kind="stable")
        reasons: list[dict[str, Any]] = []
        for g in order[:top_k]:
            value = float(contributions[g, r])
            if value < MIN_CONTRIBUTION:
                break
            group = group_names[g]
            reasons.append({
                "group": group,
                "contribution": round(value, 4),
                "text": describe(group, row, baseline),
            })
        out.append(reasons)
    return out


# --- texts ---------------------------------------------------------------------------------------


def _num(row: Mapping[str, Any], name: str, default: float = 0.0) -> float:
    try:
        value = float(row.get(name, default))
    except (TypeError, ValueError):
        return default
    return value if np.isfinite(value) else default


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _windows() -> Sequence[int]:
    return spec.WINDOWS_DAYS


def describe(group: str, row: Mapping[str, Any], baseline: Mapping[str, Any]) -> str:
    """The facts of ``row`` behind a group's contribution, in an analyst's words."""
    return _DESCRIBERS.get(group, _generic)(row, baseline)


def _amount(row: Mapping[str, Any], baseline: Mapping[str, Any]) -> str:
    amount = _num(row, spec.AMOUNT)
    longest = max(_windows())
    ratio = _num(row, f"customer_amount_ratio_{longest}d", 1.0)
    mean = _num(row, f"customer_avg_amount_{longest}d")
    if mean > 0 and ratio > 0:
        return f"amount {amount:,.2f}: {ratio:.1f}x the card's {longest}-day mean ({mean:,.2f})"
    typical = _num(baseline, spec.AMOUNT)
    return f"amount {amount:,.2f} on a card with no spending in {longest} days " \
           f"(typical amount {typical:,.2f})"


def _spending(row: Mapping[str, Any], baseline: Mapping[str, Any]) -> str:
    parts = []
    for w in _windows():
        count = _num(row, f"customer_nb_tx_{w}d")
        usual = _num(baseline, f"customer_nb_tx_{w}d")
        ratio = _num(row, f"customer_amount_ratio_{w}d", 1.0)
        parts.append((abs(count - usual) / (usual + 1.0), w, count, usual, ratio))
    _, w, count, usual, ratio = max(parts)
    text = f"{count:.0f} transaction(s) on the card in {w} day(s) (typically {usual:.0f})"
    shortest = min(_windows())
    short_ratio = _num(row, f"customer_amount_ratio_{shortest}d", 1.0)
    if short_ratio >= 2:
        text += f"; amount {short_ratio:.1f}x its {shortest}-day mean"
    return text


def _novelty(row: Mapping[str, Any], baseline: Mapping[str, Any]) -> str:
    facts = []
    for name in row:
        if name.startswith("customer_terminal_seen_") and _num(row, name, 1.0) < 0.5:
            facts.append(f"first use of this terminal by the card in {name.rsplit('_', 1)[1][:-1]}"
                         " days")
        if name.startswith("customer_merchant_category_seen_") and _num(row, name, 1.0) < 0.5:
            facts.append(f"merchant category new for the card in {name.rsplit('_', 1)[1][:-1]}"
                         " days")
    since = _num(row, "customer_seconds_since_prev_tx", -1.0)
    usual = _num(baseline, "customer_seconds_since_prev_tx", -1.0)
    if since >= 0 and (usual < 0 or since < usual):
        facts.append(f"{_duration(since)} after the card's previous transaction "
                     f"(typically {_duration(usual)})" if usual >= 0 else
                     f"{_duration(since)} after the card's previous transaction")
    return "; ".join(facts) or "the card's usual terminals and merchants differ from this one"


def _terminal(row: Mapping[str, Any], baseline: Mapping[str, Any]) -> str:
    facts = []
    best: tuple[float, int, int, int] | None = None
    for w in _windows():
        count = round(_num(row, f"terminal_nb_tx_{w}d"))
        frauds = round(_num(row, f"terminal_risk_{w}d") * count)
        if frauds and (best is None or frauds / count > best[0]):
            best = (frauds / count, w, frauds, count)
    if best is not None:
        _, w, frauds, count = best
        facts.append(f"terminal: {frauds} of its {count} known transactions "
                     f"of a {w}-day window were fraud")
    streak = int(_num(row, "terminal_fraud_streak"))
    if streak:
        facts.append(f"its last {streak} known transaction(s) were all fraud")
    if not facts:
        longest = max(_windows())
        known = _num(row, f"terminal_nb_tx_{longest}d")
        facts.append(f"terminal with {known:.0f} known transactions in {longest} days "
                     f"(typically {_num(baseline, f'terminal_nb_tx_{longest}d'):.0f})")
    return "; ".join(facts)


def _calendar(row: Mapping[str, Any], baseline: Mapping[str, Any]) -> str:
    hour = int(_num(row, "tx_hour"))
    facts = [f"at {hour:02d}:00 UTC"]
    if _num(row, "tx_is_night") >= 0.5:
        facts.append("at night")
    if _num(row, "tx_is_weekend") >= 0.5:
        facts.append("on a weekend")
    return ", ".join(facts)


def _categorical(row: Mapping[str, Any], baseline: Mapping[str, Any]) -> str:
    facts = []
    for name in spec.CATEGORICAL_FIELDS:
        value, usual = str(row.get(name, "")), str(baseline.get(name, ""))
        if value != usual:
            facts.append(f"{name.replace('_', ' ')} {value} (most common: {usual})")
    return "; ".join(facts) or "merchant category, country and channel"


def _generic(row: Mapping[str, Any], baseline: Mapping[str, Any]) -> str:
    return "these inputs differ from a typical genuine transaction"


_DESCRIBERS: dict[str, Callable[[Mapping[str, Any], Mapping[str, Any]], str]] = {
    "amount": _amount,
    "customer_spending": _spending,
    "customer_novelty": _novelty,
    "terminal_risk": _terminal,
    "calendar": _calendar,
    "categorical": _categorical,
}
