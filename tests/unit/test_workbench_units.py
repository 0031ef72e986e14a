"""Workbench pieces without a server: cursors, ageing, the audit chain, passwords, figures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from features.errors import InputError
from scoring.db import audit
from scoring.db import repository as repo
from scoring.db.models import Alert, Base
from scoring.workbench import auth, stats
from scoring.workbench import queue as q
from scoring.workbench.reason_texts import display


def alert(**values: object) -> Alert:
    base = dict(id=7, score=0.81, amount=12.5, status="open",
                created_at=datetime(2024, 6, 1, 8, 0, 0, tzinfo=UTC), reviewed_at=None)
    base.update(values)
    return Alert(**base)


@pytest.mark.parametrize("sort", q.SORTS)
def test_cursors_round_trip_and_refuse_other_orders_or_edits(sort: str) -> None:
    cursor = q.encode_cursor(sort, alert())
    key, alert_id = q.decode_cursor(cursor, sort)
    assert alert_id == 7
    assert key == {"score": 0.81, "amount": 12.5,
                   "time": datetime(2024, 6, 1, 8, 0, tzinfo=UTC)}[sort]
    other = next(s for s in q.SORTS if s != sort)
    with pytest.raises(InputError):
        q.decode_cursor(cursor, other)
    for bad in ("", "!!!", cursor[:-3], "WzEsMiwzXQ"):
        with pytest.raises(InputError):
            q.decode_cursor(bad, sort)


def test_sqlite_timestamps_are_written_as_sqlite_stores_them() -> None:
    assert q.sqlite_timestamp(datetime(2024, 6, 1, 8, 0, tzinfo=UTC)) == "2024-06-01 08:00:00"
    assert q.sqlite_timestamp(datetime(2024, 6, 1, 8, 0, 0, 5, tzinfo=UTC)) == (
        "2024-06-01 08:00:00.000005")


def test_ageing_against_the_service_level() -> None:
    now = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
    assert q.ageing(alert(), 8, now).state == "ok"
    assert q.ageing(alert(), 5, now).state == "due"        # 4 h of 5
    overdue = q.ageing(alert(), 2, now)
    assert (overdue.state, overdue.label) == ("overdue", "4.0 h")
    decided = alert(status="false_positive", reviewed_at=datetime(2024, 6, 1, 8, 30, tzinfo=UTC))
    assert q.ageing(decided, 1, now).hours == pytest.approx(0.5)


def test_filters_refuse_bad_values() -> None:
    for kwargs in ({"sort": "size"}, {"limit": 0}, {"limit": 501}, {"status": "maybe"},
                   {"min_amount": float("nan")}, {"customer_id": "a\x00b"},
                   {"customer_id": "x" * 256}, {"model_version": -1}):
        with pytest.raises(InputError):
            q.make_filter(**kwargs)  # type: ignore[arg-type]
    assert q.make_filter(status="all").status is None
    assert q.make_filter(customer_id="  ").customer_id is None


@pytest.fixture
def session() -> Session:
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    return Session(engine)


def test_the_audit_chain_links_every_entry_and_finds_an_edit(session: Session) -> None:
    events = [audit.Event("alice", "claim", 1, {"assigned_to": None}, {"assigned_to": "alice"}),
              audit.Event("alice", "decide", 1, {"status": "open"}, {"status": "false_positive"}),
              audit.Event("bob", "claim", 2, None, {"at": datetime(2024, 1, 1, tzinfo=UTC)})]
    hashes = audit.append(session, events[:2]) + audit.append(session, events[2:])
    assert len(set(hashes)) == 3
    assert audit.verify(session) == audit.Verification(True, 3)
    session.execute(text("UPDATE audit SET after = '{\"status\": \"confirmed_fraud\"}' "
                         "WHERE seq = 2"))
    broken = audit.verify(session)
    assert (broken.ok, broken.broken_seq) == (False, 2) and "edited" in broken.reason


def test_entry_hash_covers_every_field() -> None:
    at = datetime(2024, 1, 1, tzinfo=UTC)
    args = (1, at, "alice", "claim", 5, {"a": 1}, {"a": 2}, audit.GENESIS)
    digest = audit.entry_hash(*args)
    for i, changed in enumerate((2, at + timedelta(microseconds=1), "bob", "release", 6,
                                 {"a": 0}, {"a": 3}, "1" * 64)):
        assert audit.entry_hash(*args[:i], changed, *args[i + 1:]) != digest  # type: ignore[arg-type]


def test_passwords_are_argon2id_and_names_checked() -> None:
    stored = auth.hash_password("a long password here")
    assert stored.startswith("$argon2id$")
    assert auth.check_password(stored, "a long password here")
    assert not auth.check_password(stored, "a long password herE")
    assert not auth.check_password("garbage", "x")
    for bad in ("", "a b", "é", "x" * 65, "a/b"):
        with pytest.raises(InputError):
            auth.validate_name(bad)
    assert auth.PERMISSIONS[auth.Role.ADMIN] & {auth.Perm.WORK} == set()


def test_threshold_capacity_from_the_decided_history(session: Session) -> None:
    rows = [repo.NewAlert(f"t{i}", "C", "T", 10.0, datetime(2024, 1, 1, tzinfo=UTC),
                          score, 0.5, 1, {}) for i, score in enumerate((0.55, 0.65, 0.75, 0.95))]
    repo.insert_alerts(session, rows)
    for alert_id, status in ((1, "false_positive"), (2, "false_positive"),
                             (3, "confirmed_fraud"), (4, "confirmed_fraud")):
        repo.label_alert(session, alert_id, status, "alice")
    table = stats.threshold_capacity(session, datetime.now(UTC) + timedelta(hours=1), days=30)
    by_t = {round(r["threshold"], 2): r for r in table["rows"]}
    assert min(by_t) == 0.5 and 0.45 not in by_t  # nothing below the scorer's threshold
    assert by_t[0.5]["decided"] == 4 and by_t[0.5]["precision"] == 0.5
    assert by_t[0.7]["decided"] == 2 and by_t[0.7]["precision"] == 1.0
    assert by_t[1.0]["decided"] == 0 and by_t[1.0]["precision"] is None
    assert by_t[0.5]["alerts_per_day"] > by_t[0.7]["alerts_per_day"]
    hist = stats.score_histograms(session, bins=10)
    assert hist["confirmed_fraud"][7] == hist["confirmed_fraud"][9] == 1
    assert sum(hist["false_positive"]) == 2


def test_reason_display_scales_bars_to_the_strongest() -> None:
    shown = display([{"group": "amount", "contribution": 0.4, "text": "a"},
                     {"group": "terminal_risk", "contribution": 0.1, "text": "b"}, "junk"])  # type: ignore[list-item]
    assert [(r["label"], r["width"]) for r in shown] == [("Amount", 100), ("Terminal risk", 25)]
    assert display(None) == []
