"""Reason codes with a fake model: one predict call, contributions, order, texts."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest

from features import spec
from scoring.reasons import baseline_of, input_groups, reason_codes


def test_groups_cover_every_used_model_input_once() -> None:
    groups = input_groups()
    flat = [name for cols in groups.values() for name in cols]
    assert len(flat) == len(set(flat))
    unused = {spec.TRANSACTION_ID, spec.TIMESTAMP, spec.CUSTOMER_ID, spec.TERMINAL_ID}
    assert set(flat) == set(spec.MODEL_INPUTS) - unused
    assert set(groups) == {"amount", "customer_spending", "customer_novelty", "terminal_risk",
                           "calendar", "categorical"}


def genuine_inputs(rows: int) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name, dtype in spec.model_input_dtypes().items():
        if dtype == "string":
            out[name] = np.array([f"{name}-{i}" for i in range(rows)], dtype=object)
        else:
            out[name] = np.zeros(rows, dtype=np.float32)
    for name in spec.CATEGORICAL_FIELDS:
        out[name] = np.array(["5411" if name == spec.MERCHANT_CATEGORY else "usual"] * rows,
                             dtype=object)
    out[spec.AMOUNT][:] = 40.0
    out["customer_amount_ratio_30d"][:] = 1.0
    out["customer_avg_amount_30d"][:] = 40.0
    out["customer_terminal_seen_30d"][:] = 1.0
    out["customer_merchant_category_seen_30d"][:] = 1.0
    out["customer_seconds_since_prev_tx"][:] = 86400.0
    out["tx_hour"][:] = 14
    return out


class FakeModel:
    """score = 0.01 + 0.001 * amount + 0.3 * terminal_risk_30d + 0.1 * night; counts calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.rows: list[int] = []

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        self.calls += 1
        self.rows.append(len(inputs[spec.AMOUNT]))
        return (0.01 + 0.001 * inputs[spec.AMOUNT].astype(np.float64)
                + 0.3 * inputs["terminal_risk_30d"] + 0.1 * inputs["tx_is_night"]).astype(
            np.float32)


def test_reason_codes_rank_groups_by_the_score_they_add_in_one_call() -> None:
    base_rows = genuine_inputs(50)
    baseline = baseline_of(base_rows, np.ones(50, dtype=bool))
    assert baseline[spec.AMOUNT] == 40.0 and baseline[spec.MERCHANT_CATEGORY] == "5411"
    assert spec.TRANSACTION_ID not in baseline  # identifiers are not inputs of the model

    alerts = genuine_inputs(2)
    alerts[spec.AMOUNT][:] = [540.0, 48.0]
    alerts["customer_amount_ratio_30d"][:] = [13.5, 1.2]
    alerts["terminal_risk_30d"][:] = [0.0, 4 / 9]
    alerts["terminal_nb_tx_30d"][:] = [20, 9]
    alerts["terminal_fraud_streak"][:] = [0, 3]
    alerts["tx_is_night"][:] = [1.0, 0.0]
    model = FakeModel()

    reasons = reason_codes(model, alerts, baseline, top_k=3)

    assert model.calls == 1
    assert model.rows == [2 * (len(input_groups()) + 1)]
    first, second = reasons
    assert [r["group"] for r in first] == ["amount", "calendar"]
    assert first[0]["contribution"] == pytest.approx(0.5, abs=1e-4)
    assert first[0]["text"] == "amount 540.00: 13.5x the card's 30-day mean (40.00)"
    assert first[1]["contribution"] == pytest.approx(0.1, abs=1e-4)
    assert "at night" in first[1]["text"]
    assert [r["group"] for r in second] == ["terminal_risk", "amount"]
    assert second[0]["text"] == ("terminal: 4 of its 9 known transactions of a 30-day window "
                                 "were fraud; its last 3 known transaction(s) were all fraud")
    assert second[0]["contribution"] == pytest.approx(0.3 * 4 / 9, abs=1e-4)


def test_top_k_and_no_positive_reason() -> None:
    alerts = genuine_inputs(1)
    baseline = baseline_of(genuine_inputs(3), np.ones(3, dtype=bool))
    assert reason_codes(FakeModel(), alerts, baseline) == [[]]
    alerts[spec.AMOUNT][:] = 1000.0
    alerts["tx_is_night"][:] = 1.0
    assert len(reason_codes(FakeModel(), alerts, baseline, top_k=1)[0]) == 1
    assert reason_codes(FakeModel(), {k: v[:0] for k, v in alerts.items()}, baseline) == []


def test_a_model_returning_the_wrong_number_of_scores_is_an_error() -> None:
    alerts = genuine_inputs(2)
    baseline = baseline_of(alerts, np.ones(2, dtype=bool))
    with pytest.raises(ValueError, match="scores"):
        reason_codes(lambda inputs: np.zeros(3), alerts, baseline)
