"""The alerts repository on a real SQLite file (no services needed)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session

from features.errors import InputError
from scoring.db import repository as repo
from scoring.db.engine import make_engine, make_sessionmaker, safe_url
from scoring.db.export import write_labels
from scoring.db.models import Alert, AlertReview, Base, ScorerCheckpoint

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def new_alert(i: int, customer: str | None = None) -> repo.NewAlert:
    return repo.NewAlert(
        transaction_id=f"tx-{i}",
        customer_id=customer or f"cust-{i % 3}",
        terminal_id=f"term-{i % 5}",
        amount=10.0 + i,
        event_time=T0 + timedelta(minutes=i),
        score=0.5 + i / 1000,
        threshold=0.5,
        model_version=3,
        features={"customer_nb_tx_1d": float(i), "tx_hour": 12.0},
    )


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'alerts.db'}")
    Base.metadata.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with make_sessionmaker(engine)() as session:
        yield session


def count(session: Session, model: type[Base]) -> int:
    return session.scalar(select(func.count()).select_from(model)) or 0


# --- insert_alerts ---------------------------------------------------------------


def test_same_batch_twice_is_inserted_once(session: Session) -> None:
    batch = [new_alert(i) for i in range(100)]
    assert repo.insert_alerts(session, batch) == 100
    session.commit()
    assert repo.insert_alerts(session, batch) == 0
    session.commit()
    assert count(session, Alert) == 100


def test_partial_overlap_inserts_only_new_transactions(session: Session) -> None:
    assert repo.insert_alerts(session, [new_alert(i) for i in range(60)]) == 60
    assert repo.insert_alerts(session, [new_alert(i) for i in range(40, 100)]) == 40
    ids = session.scalars(select(Alert.transaction_id)).all()
    assert sorted(ids) == sorted(f"tx-{i}" for i in range(100))


def test_duplicates_inside_one_batch_are_inserted_once(session: Session) -> None:
    assert repo.insert_alerts(session, [new_alert(1), new_alert(2), new_alert(1)]) == 2
    assert count(session, Alert) == 2


def test_empty_batch_inserts_nothing(session: Session) -> None:
    assert repo.insert_alerts(session, []) == 0


def test_first_write_wins_on_replay(session: Session) -> None:
    repo.insert_alerts(session, [new_alert(7)])
    replay = repo.NewAlert(**{**new_alert(7).__dict__, "score": 0.99, "model_version": 4})
    assert repo.insert_alerts(session, [replay]) == 0
    stored = session.scalars(select(Alert)).one()
    assert (stored.score, stored.model_version) == (new_alert(7).score, 3)


def test_alert_values_round_trip(session: Session) -> None:
    paris = timezone(timedelta(hours=2))
    alert = repo.NewAlert(
        transaction_id="tx-rt",
        customer_id="c",
        terminal_id="t",
        amount=1234.5678,
        event_time=datetime(2024, 5, 1, 14, 30, 15, 250000, tzinfo=paris),
        score=0.875,
        threshold=0.42,
        model_version=12,
        features={"np_float": np.float32(0.25), "np_vec": np.arange(3), "when": T0, "s": "x"},
    )
    repo.insert_alerts(session, [alert])
    session.commit()
    stored = session.scalars(select(Alert)).one()
    assert stored.event_time == datetime(2024, 5, 1, 12, 30, 15, 250000, tzinfo=UTC)
    assert stored.event_time.tzinfo is UTC
    assert stored.amount == pytest.approx(1234.5678)
    assert (stored.score, stored.threshold, stored.model_version) == (0.875, 0.42, 12)
    assert stored.features == {
        "np_float": 0.25, "np_vec": [0, 1, 2], "when": T0.isoformat(), "s": "x",
    }
    assert stored.status == "open"
    assert stored.created_at.tzinfo is UTC
    assert abs(stored.created_at - datetime.now(UTC)) < timedelta(minutes=1)
    assert (stored.reviewed_at, stored.reviewed_by, stored.note) == (None, None, None)
    as_json = json.loads(json.dumps(stored.to_dict()))
    assert as_json["event_time"] == "2024-05-01T12:30:15.250000+00:00"


def test_naive_event_time_means_utc(session: Session) -> None:
    naive = repo.NewAlert(**{**new_alert(1).__dict__, "event_time": datetime(2024, 1, 2, 3, 4, 5)})
    repo.insert_alerts(session, [naive])
    stored = session.scalars(select(Alert.event_time)).one()
    assert stored == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_portable_insert_path_is_idempotent_too(session: Session) -> None:
    rows = [new_alert(i).row() for i in (1, 2, 2, 3)]
    assert repo._insert_missing_alerts(session, rows) == 3
    assert repo._insert_missing_alerts(session, [new_alert(i).row() for i in (3, 4)]) == 1
    assert count(session, Alert) == 4


# --- label_alert -------------------------------------------------------------------


def test_label_transitions_are_recorded_and_audited(session: Session) -> None:
    repo.insert_alerts(session, [new_alert(1)])
    alert_id = session.scalars(select(Alert.id)).one()

    before = datetime.now(UTC)
    confirmed = repo.label_alert(session, alert_id, "confirmed_fraud", "alice", "card stolen")
    session.commit()
    assert confirmed.status == "confirmed_fraud"
    assert confirmed.reviewed_by == "alice"
    assert confirmed.note == "card stolen"
    assert confirmed.reviewed_at is not None and confirmed.reviewed_at >= before
    first_reviewed_at = confirmed.reviewed_at

    flipped = repo.label_alert(session, alert_id, "false_positive", "bob", "customer called")
    assert (flipped.status, flipped.reviewed_by) == ("false_positive", "bob")

    reopened = repo.label_alert(session, alert_id, "open", "carol", "needs a second look")
    session.commit()
    assert reopened.status == "open"
    assert (reopened.reviewed_at, reopened.reviewed_by) == (None, None)

    reviews = session.scalars(select(AlertReview).order_by(AlertReview.id)).all()
    assert [(r.alert_id, r.status, r.analyst, r.note) for r in reviews] == [
        (alert_id, "confirmed_fraud", "alice", "card stolen"),
        (alert_id, "false_positive", "bob", "customer called"),
        (alert_id, "open", "carol", "needs a second look"),
    ]
    assert reviews[0].at == first_reviewed_at
    assert reviews[0].at <= reviews[1].at <= reviews[2].at
    assert all(r.at.tzinfo is UTC for r in reviews)


def test_reopening_an_open_alert_is_refused(session: Session) -> None:
    repo.insert_alerts(session, [new_alert(1)])
    alert_id = session.scalars(select(Alert.id)).one()
    with pytest.raises(InputError, match=f"alert {alert_id} is already open"):
        repo.label_alert(session, alert_id, "open", "alice")
    assert count(session, AlertReview) == 0


def test_bad_status_is_refused_and_changes_nothing(session: Session) -> None:
    repo.insert_alerts(session, [new_alert(1)])
    alert_id = session.scalars(select(Alert.id)).one()
    with pytest.raises(InputError, match="unknown status 'fraud'; expected one of open, "):
        repo.label_alert(session, alert_id, "fraud", "alice")
    assert session.get(Alert, alert_id).status == "open"  # type: ignore[union-attr]
    assert count(session, AlertReview) == 0


def test_unknown_alert_id_is_a_clear_error(session: Session) -> None:
    with pytest.raises(repo.UnknownAlertError, match="no alert with id 42"):
        repo.label_alert(session, 42, "confirmed_fraud", "alice")
    assert issubclass(repo.UnknownAlertError, InputError)


def test_empty_analyst_is_refused(session: Session) -> None:
    repo.insert_alerts(session, [new_alert(1)])
    with pytest.raises(InputError, match="analyst"):
        repo.label_alert(session, 1, "confirmed_fraud", "  ")


# --- list_alerts --------------------------------------------------------------------


def test_list_filters_orders_and_pages(session: Session) -> None:
    repo.insert_alerts(session, [new_alert(i, customer="a" if i < 4 else "b") for i in range(10)])
    session.commit()
    ids = {a.transaction_id: a.id for a in session.scalars(select(Alert))}
    repo.label_alert(session, ids["tx-2"], "confirmed_fraud", "alice")
    repo.label_alert(session, ids["tx-5"], "false_positive", "alice")
    session.commit()

    def listed(**kwargs: object) -> list[str]:
        return [a.transaction_id for a in repo.list_alerts(session, **kwargs)]  # type: ignore[arg-type]

    assert listed() == [f"tx-{i}" for i in range(9, -1, -1)]
    assert listed(status="open", customer_id="a") == ["tx-3", "tx-1", "tx-0"]
    assert listed(status="confirmed_fraud") == ["tx-2"]
    assert listed(status="false_positive") == ["tx-5"]
    assert listed(limit=4) + listed(limit=4, offset=4) == [f"tx-{i}" for i in range(9, 1, -1)]
    assert listed(customer_id="nobody") == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"status": "closed"}, "unknown status 'closed'"),
        ({"limit": 0}, "limit must be at least 1"),
        ({"offset": -1}, "offset must not be negative"),
    ],
)
def test_list_rejects_bad_arguments(session: Session, kwargs: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        repo.list_alerts(session, **kwargs)


# --- labels_since and export -------------------------------------------------------------


def test_labels_since_returns_decisions_only(session: Session) -> None:
    repo.insert_alerts(session, [new_alert(i) for i in range(4)])
    ids = {a.transaction_id: a.id for a in session.scalars(select(Alert))}
    repo.label_alert(session, ids["tx-0"], "confirmed_fraud", "alice")
    repo.label_alert(session, ids["tx-1"], "false_positive", "alice")
    repo.label_alert(session, ids["tx-2"], "confirmed_fraud", "alice")
    repo.label_alert(session, ids["tx-2"], "open", "bob")
    session.commit()

    labels = repo.labels_since(session, T0)
    assert [(lb.transaction_id, lb.is_fraud) for lb in labels] == [("tx-0", 1), ("tx-1", 0)]
    record = labels[0].to_record()
    assert record == {
        "transaction_id": "tx-0",
        "is_fraud": 1,
        "timestamp": T0.isoformat(),
        "customer_id": "cust-0",
        "terminal_id": "term-0",
        "labelled_at": labels[0].reviewed_at.isoformat(),
        "source": "analyst",
    }
    assert repo.labels_since(session, datetime.now(UTC) + timedelta(seconds=5)) == []


def test_write_labels_jsonl_and_csv(session: Session, tmp_path: Path) -> None:
    repo.insert_alerts(session, [new_alert(i) for i in range(3)])
    repo.label_alert(session, 1, "confirmed_fraud", "alice")
    repo.label_alert(session, 2, "false_positive", "alice")
    labels = repo.labels_since(session, T0)

    assert write_labels(labels, tmp_path / "out" / "labels.jsonl") == 2
    lines = (tmp_path / "out" / "labels.jsonl").read_text().splitlines()
    assert [json.loads(line)["is_fraud"] for line in lines] == [1, 0]

    assert write_labels(labels, tmp_path / "labels.csv") == 2
    with (tmp_path / "labels.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["transaction_id"], r["is_fraud"], r["source"]) for r in rows] == [
        ("tx-0", "1", "analyst"), ("tx-1", "0", "analyst"),
    ]
    with pytest.raises(InputError, match=r"labels\.txt: unknown labels file type '\.txt'"):
        write_labels(labels, tmp_path / "labels.txt")


# --- checkpoints ------------------------------------------------------------------------


def test_checkpoint_upsert_and_load(session: Session) -> None:
    repo.save_checkpoint(session, "scorer", "transactions:0", {"transactions:0": 10}, b"s0", 1)
    repo.save_checkpoint(session, "scorer", "transactions:1", {"transactions:1": 5}, b"s1", None)
    repo.save_checkpoint(session, "other", "transactions:0", {"transactions:0": 99}, b"x", 2)
    session.commit()
    first = repo.load_checkpoints(session, "scorer")["transactions:0"]

    state = bytes(range(256)) * 10
    repo.save_checkpoint(session, "scorer", "transactions:0", {"transactions:0": 1234}, state, 2)
    session.commit()

    loaded = repo.load_checkpoints(session, "scorer")
    assert set(loaded) == {"transactions:0", "transactions:1"}
    assert loaded["transactions:0"].offsets == {"transactions:0": 1234}
    assert loaded["transactions:0"].state == state
    assert loaded["transactions:0"].model_version == 2
    assert loaded["transactions:0"].updated_at >= first.updated_at
    assert loaded["transactions:1"].model_version is None
    other = repo.load_checkpoints(session, "other")
    assert other["transactions:0"].offsets == {"transactions:0": 99}
    assert repo.load_checkpoints(session, "nobody") == {}
    assert count(session, ScorerCheckpoint) == 3


def test_portable_checkpoint_upsert(session: Session) -> None:
    values = {"consumer_group": "g", "partition_key": "p", "offsets": {"t:0": 1},
              "state": b"a", "model_version": 1}
    repo._save_checkpoint_portable(session, values)
    repo._save_checkpoint_portable(session, {**values, "offsets": {"t:0": 2}, "state": b"b"})
    assert count(session, ScorerCheckpoint) == 1
    assert repo.load_checkpoints(session, "g")["p"].offsets == {"t:0": 2}


def test_alerts_and_checkpoint_roll_back_together(engine: Engine) -> None:
    sessions = make_sessionmaker(engine)
    with pytest.raises(RuntimeError), sessions.begin() as session:
        repo.insert_alerts(session, [new_alert(1)])
        repo.save_checkpoint(session, "g", "p", {"t:0": 1}, b"state", 1)
        raise RuntimeError("scorer crashed before commit")
    with sessions() as session:
        assert count(session, Alert) == 0
        assert repo.load_checkpoints(session, "g") == {}


# --- engine ---------------------------------------------------------------------------------


def test_sqlite_engine_uses_wal_busy_timeout_and_foreign_keys(engine: Engine) -> None:
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA busy_timeout")).scalar() == 30000
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1


def test_a_reader_is_not_blocked_by_an_open_writer(engine: Engine) -> None:
    sessions = make_sessionmaker(engine)
    with sessions() as writer, sessions() as reader:
        repo.insert_alerts(writer, [new_alert(1)])
        writer.flush()  # the write transaction is open and holds the lock
        assert repo.list_alerts(reader) == []
        writer.commit()
        assert [a.transaction_id for a in repo.list_alerts(reader)] == ["tx-1"]


def test_urls_are_masked_and_validated() -> None:
    assert safe_url("postgresql://fraud:s3cret@db:5432/alerts") == "postgresql://fraud:***@db:5432/alerts"
    with pytest.raises(InputError, match="invalid database URL"):
        make_engine("not a url")
