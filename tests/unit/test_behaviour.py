"""Behavioural features against hand-computed expectations on a small, tricky history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest

from features import spec
from features.behaviour import BehaviourConfig, BehaviourState, compute_features

DAY0 = datetime(2024, 1, 1, tzinfo=UTC)  # a Monday


def tx(txid, when, customer="C1", terminal="T1", amount=10.0, mcc="5411", fraud=0):
    return {
        "transaction_id": txid,
        "timestamp": when,
        "customer_id": customer,
        "terminal_id": terminal,
        "amount": amount,
        "merchant_category": mcc,
        "country": "BE",
        "channel": "pos",
        "is_fraud": fraud,
    }


def table(rows):
    return pa.Table.from_pylist(rows, schema=spec.arrow_schema(labelled=True))


def features_by_id(rows, features):
    ids = [r["transaction_id"] for r in rows]
    return {i: {k: v[n] for k, v in features.to_pydict().items()} for n, i in enumerate(ids)}


def d(days, hours=0, micros=0):
    return DAY0 + timedelta(days=days, hours=hours, microseconds=micros)


def test_customer_windows_include_the_event_and_exclude_the_left_edge():
    rows = [
        tx("1", d(0), amount=10.0, terminal="T1", mcc="A"),
        tx("2", d(0, 12), amount=20.0, terminal="T2", mcc="A"),
        tx("3", d(1), amount=30.0, terminal="T1", mcc="B"),  # exactly 1 day after #1
        tx("4", d(31), amount=40.0, terminal="T3", mcc="A"),  # exactly 30 days after #3
    ]
    f = features_by_id(rows, compute_features(table(rows)))
    first = f["1"]
    assert first["customer_nb_tx_1d"] == 1 and first["customer_avg_amount_1d"] == 10.0
    assert first["customer_amount_ratio_30d"] == 1.0
    assert first["customer_seconds_since_prev_tx"] == 30 * 86400  # no previous: capped
    assert first["customer_terminal_seen_30d"] == 0.0

    third = f["3"]
    assert third["customer_nb_tx_1d"] == 2  # (day0 00:00, day1 00:00] drops #1
    assert third["customer_avg_amount_1d"] == 25.0
    assert third["customer_amount_ratio_1d"] == pytest.approx(1.2)
    assert third["customer_nb_tx_7d"] == 3 and third["customer_avg_amount_7d"] == 20.0
    assert third["customer_amount_ratio_7d"] == pytest.approx(1.5)
    assert third["customer_seconds_since_prev_tx"] == 12 * 3600
    assert third["customer_terminal_seen_30d"] == 1.0  # T1 used by #1
    assert third["customer_merchant_category_seen_30d"] == 0.0  # first "B"

    fourth = f["4"]
    assert fourth["customer_nb_tx_30d"] == 1  # #3 is exactly 30 days back: outside
    assert fourth["customer_seconds_since_prev_tx"] == 30 * 86400
    assert fourth["customer_merchant_category_seen_30d"] == 0.0


def test_terminal_risk_uses_only_transactions_older_than_the_delay():
    rows = [
        tx("a", d(0), customer="C1", fraud=1),
        tx("b", d(1), customer="C2", fraud=0),
        tx("c", d(7), customer="C3"),  # window end = day0 00:00: sees "a" only
        tx("e", d(7, micros=-1), customer="C5"),  # window end just before "a"
        tx("f", d(8), customer="C4"),  # window end = day1: 1d sees "b", 7d sees both
    ]
    f = features_by_id(rows, compute_features(table(rows), BehaviourConfig(delay_days=7)))
    assert f["a"]["terminal_nb_tx_30d"] == 0 and f["a"]["terminal_risk_30d"] == 0.0
    assert f["e"]["terminal_nb_tx_30d"] == 0
    assert f["c"]["terminal_nb_tx_1d"] == 1 and f["c"]["terminal_risk_1d"] == 1.0
    assert f["f"]["terminal_nb_tx_1d"] == 1 and f["f"]["terminal_risk_1d"] == 0.0
    assert f["f"]["terminal_nb_tx_7d"] == 2 and f["f"]["terminal_risk_7d"] == 0.5


def test_terminal_fraud_streak_counts_the_latest_known_frauds_in_a_row():
    rows = [
        tx("g1", d(0), customer="C1", fraud=0),
        tx("f1", d(1), customer="C2", fraud=1),
        tx("f2", d(2), customer="C3", fraud=1),
        tx("x", d(9, 1), customer="C4"),  # knows up to day 2, 01:00: two frauds last
        tx("y", d(8, 12), customer="C5"),  # knows up to day 1, 12:00: one fraud last
        tx("g2", d(3), customer="C6", fraud=0),
        tx("z", d(10, 1), customer="C7"),  # knows "g2": the compromise looks over
    ]
    f = features_by_id(rows, compute_features(table(rows), BehaviourConfig(delay_days=7)))
    assert f["x"]["terminal_fraud_streak"] == 2
    assert f["y"]["terminal_fraud_streak"] == 1
    assert f["z"]["terminal_fraud_streak"] == 0
    assert f["g1"]["terminal_fraud_streak"] == 0  # nothing known yet


def test_terminal_fraud_streak_stops_at_the_longest_window():
    rows = [tx(str(k), d(k), customer=f"C{k}", fraud=1) for k in range(5)]
    rows.append(tx("mid", d(37, 1), customer="C8"))  # 30-day window (day 0 01:00, day 30 01:00]
    rows.append(tx("late", d(40, 1), customer="C9"))  # (day 3 01:00, day 33 01:00]: day 4 only
    f = features_by_id(rows, compute_features(table(rows), BehaviourConfig(delay_days=7)))
    assert f["mid"]["terminal_fraud_streak"] == 4  # day 0 is outside the window
    assert f["mid"]["terminal_nb_tx_30d"] == 4
    assert f["late"]["terminal_fraud_streak"] == 1


def test_calendar_flags():
    rows = [tx("1", d(5, 3)), tx("2", d(2, 7))]  # Saturday 03:00, Wednesday 07:00
    f = features_by_id(rows, compute_features(table(rows)))
    assert (f["1"]["tx_hour"], f["1"]["tx_is_weekend"], f["1"]["tx_is_night"]) == (3, 1, 1)
    assert (f["2"]["tx_hour"], f["2"]["tx_is_weekend"], f["2"]["tx_is_night"]) == (7, 0, 0)


def test_unseen_keys_get_empty_windows():
    state = BehaviourState()
    state.warm(table([tx("1", d(0), customer="C1", terminal="T1", fraud=1)]))
    out = state.update_and_read(table([tx("2", d(9), customer="C9", terminal="T9")]))
    row = {k: v[0] for k, v in out.to_pydict().items()}
    assert row["customer_nb_tx_30d"] == 1 and row["customer_amount_ratio_30d"] == 1.0
    assert row["terminal_nb_tx_30d"] == 0 and row["terminal_risk_30d"] == 0.0


def test_late_event_is_placed_at_its_event_time():
    state = BehaviourState()
    state.update_and_read(table([tx("1", d(0), amount=10.0), tx("3", d(0, 10), amount=30.0)]))
    late = state.update_and_read(table([tx("2", d(0, 5), amount=20.0)]))
    # As of 05:00 only "1" and itself are in the window; "3" (10:00) is in the future.
    assert late.column("customer_nb_tx_1d")[0].as_py() == 2
    assert late.column("customer_avg_amount_1d")[0].as_py() == 15.0
    assert late.column("customer_seconds_since_prev_tx")[0].as_py() == 5 * 3600
    after = state.update_and_read(table([tx("4", d(0, 11), amount=40.0)]))
    assert after.column("customer_nb_tx_1d")[0].as_py() == 4  # sees the late one


def test_labels_arriving_separately_feed_terminal_risk_once_the_delay_passed():
    state = BehaviourState()
    state.update_and_read(table([tx("a", d(0))]))
    labels = pa.table(
        {
            "transaction_id": ["a", "z"],
            "terminal_id": ["T1", "T1"],
            "timestamp": pa.array([d(0), d(1)], pa.timestamp("us", tz="UTC")),
            "is_fraud": [1, 1],
        }
    )
    assert state.apply_labels(labels) == 1  # "z" has not arrived yet: kept pending
    assert state.size()["pending_labels"] == 1
    state.update_and_read(table([tx("z", d(1), customer="C2")]))
    assert state.size()["pending_labels"] == 0
    out = state.update_and_read(table([tx("q", d(8, 1), customer="C3")]))
    assert out.column("terminal_nb_tx_7d")[0].as_py() == 2
    assert out.column("terminal_risk_7d")[0].as_py() == 1.0
    assert out.column("terminal_fraud_streak")[0].as_py() == 2


def test_state_round_trips_and_continues_identically():
    rows = [
        tx(
            str(i),
            d(i % 40, i % 24),
            customer=f"C{i % 3}",
            terminal=f"T{i % 5}",
            amount=float(i),
            fraud=int(i % 7 == 0),
        )
        for i in range(200)
    ]
    rows.sort(key=lambda r: r["timestamp"])
    history, live = table(rows[:150]), table(rows[150:])
    a = BehaviourState()
    a.warm(history)
    b = BehaviourState.from_bytes(a.to_bytes())
    assert b.size() == a.size() and b.watermark_us == a.watermark_us
    assert a.update_and_read(live).equals(b.update_and_read(live))


def test_warming_twice_with_the_same_history_counts_nothing_twice():
    rows = [tx(str(i), d(0, i), amount=1.0) for i in range(5)]
    state = BehaviourState()
    assert state.warm(table(rows)) == 5
    restored = BehaviourState.from_bytes(state.to_bytes())
    assert restored.warm(table(rows)) == 0
    out = restored.update_and_read(table([tx("x", d(0, 6))]))
    assert out.column("customer_nb_tx_1d")[0].as_py() == 6


def test_state_is_bounded_by_the_longest_lookback():
    state = BehaviourState(BehaviourConfig(late_tolerance_hours=0))
    for day in range(120):
        state.update_and_read(table([tx(f"{day}", d(day), customer=f"C{day}", terminal=f"T{day}")]))
    size = state.size()
    # Customers keep 30 days, terminals 30 + 7 days (+ at most one sweep interval).
    assert size["customers"] <= 32 and size["terminals"] <= 39


def test_batch_output_is_aligned_with_unsorted_input():
    rows = [tx("late", d(2)), tx("early", d(1))]
    f = features_by_id(rows, compute_features(table(rows)))
    assert f["early"]["customer_nb_tx_7d"] == 1 and f["late"]["customer_nb_tx_7d"] == 2


def test_config_is_validated():
    with pytest.raises(ValueError, match="windows"):
        BehaviourConfig(windows_days=(1, 2))
    with pytest.raises(ValueError):
        BehaviourConfig(delay_days=-1)


def test_feature_table_has_the_contract_schema():
    out = compute_features(table([tx("1", d(0))]))
    assert out.schema.equals(spec.features_arrow_schema())
    assert np.isfinite(np.stack([c.to_numpy() for c in out.columns])).all()


def test_expiry_floor_keeps_terminal_history_for_a_partition_running_behind():
    """One Kafka partition days ahead of another must not expire the other's window history."""
    history = [tx(f"h{day}", d(day), customer=f"H{day}") for day in range(0, 40)]
    ahead = tx("ahead", d(60), customer="A")  # partition A, weeks ahead
    behind = tx("behind", d(40), customer="B")  # partition B, still at day 40
    expected = compute_features(table([*history, behind]))
    state = BehaviourState()
    state.warm(table(history))
    state.expiry_floor_us = int(d(40).timestamp() * 1_000_000)  # the slow partition's time
    state.update_and_read(table([ahead]))
    got = state.update_and_read(table([behind]))
    assert (
        got.column("terminal_nb_tx_30d")[0].as_py()
        == expected.column("terminal_nb_tx_30d")[-1].as_py()
        == 30
    )
    assert state.terminals.too_late == 1  # counted: it arrived well behind its terminal
