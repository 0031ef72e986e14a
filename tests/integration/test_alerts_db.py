"""The alerts database on real PostgreSQL and SQLite: migrations, repository, CLI."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, inspect, select, text

from scoring.db import repository as repo
from scoring.db.engine import make_engine, make_sessionmaker
from scoring.db.migrate import alembic_config, head_revision, upgrade
from scoring.db.models import Alert, AlertReview, Base

pytestmark = pytest.mark.integration

FRAUD = Path(sys.executable).with_name("fraud")
T0 = datetime(2024, 6, 1, 8, 0, tzinfo=UTC)
TABLES = {
    "alerts", "alert_reviews", "scorer_checkpoints", "partition_checkpoints", "users",
    "api_tokens", "web_sessions", "login_attempts", "audit", "audit_head", "decisions",
    "label_publisher_positions",
}


def new_alert(i: int) -> repo.NewAlert:
    return repo.NewAlert(
        transaction_id=f"tx-{i}",
        customer_id=f"cust-{i % 4}",
        terminal_id=f"term-{i % 7}",
        amount=round(3.5 * i, 2),
        event_time=T0 + timedelta(seconds=i),
        score=0.9,
        threshold=0.5,
        model_version=1,
        features={"customer_nb_tx_1d": float(i)},
    )


def insert(url: str, alerts: list[repo.NewAlert]) -> int:
    engine = make_engine(url)
    try:
        with make_sessionmaker(engine).begin() as session:
            return repo.insert_alerts(session, alerts)
    finally:
        engine.dispose()


def schema_diff(url: str) -> list[object]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"compare_type": True, "compare_server_default": True}
            )
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


# --- migrations ----------------------------------------------------------------------------------


def test_upgrade_creates_exactly_the_orm_schema_and_is_idempotent(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        assert upgrade(engine) == head_revision()
        assert set(inspect(engine).get_table_names()) >= TABLES
        assert schema_diff(db_url) == []
        insert(db_url, [new_alert(1)])

        assert upgrade(engine) == head_revision()  # a second run changes nothing
        with engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
            assert connection.execute(text("SELECT count(*) FROM alerts")).scalar() == 1
    finally:
        engine.dispose()


def test_schema_comparison_detects_drift(alerts_db_url: str) -> None:
    engine = make_engine(alerts_db_url)
    try:
        with engine.begin() as connection:
            connection.execute(text("DROP INDEX ix_alerts_customer_id"))
    finally:
        engine.dispose()
    diff = schema_diff(alerts_db_url)
    assert [d[0] for d in diff] == ["add_index"]  # type: ignore[index]


def test_downgrade_then_upgrade_again(alerts_db_url: str) -> None:
    engine = make_engine(alerts_db_url)
    try:
        config = alembic_config()
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "base")
        assert not TABLES & set(inspect(engine).get_table_names())
        assert upgrade(engine) == head_revision()
        assert schema_diff(alerts_db_url) == []
    finally:
        engine.dispose()


# --- repository on both databases ----------------------------------------------------------------


def test_repository_round_trip(alerts_db_url: str) -> None:
    engine = make_engine(alerts_db_url)
    sessions = make_sessionmaker(engine)
    try:
        batch = [new_alert(i) for i in range(50)]
        with sessions.begin() as session:
            assert repo.insert_alerts(session, batch) == 50
        with sessions.begin() as session:
            overlap = batch[25:] + [new_alert(i) for i in range(50, 60)]
            assert repo.insert_alerts(session, overlap) == 10

        with sessions.begin() as session:
            listed = repo.list_alerts(session, limit=100)
            assert [a.transaction_id for a in listed] == [f"tx-{i}" for i in range(59, -1, -1)]
            assert listed[0].event_time == T0 + timedelta(seconds=59)
            assert listed[0].amount == pytest.approx(3.5 * 59)
            target = listed[-1].id
            repo.label_alert(session, target, "confirmed_fraud", "alice", "stolen card")
        with sessions.begin() as session:
            repo.label_alert(session, target, "false_positive", "bob")
        with sessions() as session:
            alert = repo.get_alert(session, target)
            assert (alert.status, alert.reviewed_by, alert.note) == ("false_positive", "bob", None)
            assert [(r.status, r.analyst) for r in alert.reviews] == [
                ("confirmed_fraud", "alice"), ("false_positive", "bob"),
            ]
            assert [lb.transaction_id for lb in repo.labels_since(session, T0)] == ["tx-0"]
            assert repo.list_alerts(session, status="false_positive")[0].id == target
            with pytest.raises(repo.UnknownAlertError):
                repo.label_alert(session, 10**6, "confirmed_fraud", "alice")

        with sessions.begin() as session:
            repo.save_checkpoint(session, "g", "transactions:0", {"transactions:0": 1}, b"\x00a", 1)
        with sessions.begin() as session:
            repo.save_checkpoint(session, "g", "transactions:0", {"transactions:0": 9}, b"\x00b", 2)
        with sessions() as session:
            saved = repo.load_checkpoints(session, "g")["transactions:0"]
            assert (saved.offsets, saved.state, saved.model_version) == (
                {"transactions:0": 9}, b"\x00b", 2,
            )
    finally:
        engine.dispose()


def test_concurrent_writers_insert_each_transaction_once(alerts_db_url: str) -> None:
    """Scorers replaying overlapping batches at the same time never duplicate an alert."""
    inserted: list[int] = []
    errors: list[BaseException] = []

    def scorer(start: int) -> None:
        try:
            for chunk in range(4):
                first = start + chunk * 100
                batch = [new_alert(i) for i in range(first, first + 300)]
                inserted.append(insert(alerts_db_url, batch))
        except BaseException as err:  # surfaced by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=scorer, args=(s,)) for s in (0, 100, 200)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    engine = make_engine(alerts_db_url)
    try:
        with engine.connect() as connection:
            distinct_ids = func.count(Alert.transaction_id.distinct())
            total, distinct = connection.execute(select(func.count(), distinct_ids)).one()
    finally:
        engine.dispose()
    assert total == distinct == 800  # ids 0..799
    assert sum(inserted) == 800


# --- the command line ----------------------------------------------------------------------------


def fraud(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(FRAUD), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=False,
    )


def last_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_cli_upgrade_list_label_export(db_url: str, tmp_path: Path) -> None:
    refused = fraud("alerts", "list", "--db", db_url)
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and "fraud db upgrade" in refused.stderr

    assert last_line(fraud("db", "upgrade", "--db", db_url)) == head_revision()
    assert last_line(fraud("db", "upgrade", env={"FRAUD_DB_URL": db_url})) == head_revision()
    assert json.loads(last_line(fraud("alerts", "list", "--json", "--db", db_url))) == []

    insert(db_url, [new_alert(i) for i in range(3)])
    listed = json.loads(last_line(fraud("alerts", "list", "--json", env={"FRAUD_DB_URL": db_url})))
    assert [a["transaction_id"] for a in listed] == ["tx-2", "tx-1", "tx-0"]
    assert listed[0]["event_time"] == (T0 + timedelta(seconds=2)).isoformat()
    assert all(a["status"] == "open" for a in listed)
    ids = {a["transaction_id"]: a["id"] for a in listed}
    table = fraud("alerts", "list", "--db", db_url)
    assert table.returncode == 0 and "tx-1" in table.stdout and "3 alert(s)" in table.stdout

    confirmed = json.loads(last_line(fraud(
        "alerts", "label", str(ids["tx-0"]), "--status", "confirmed_fraud",
        "--analyst", "alice", "--note", "card reported stolen", "--db", db_url,
    )))
    assert (confirmed["status"], confirmed["reviewed_by"], confirmed["note"]) == (
        "confirmed_fraud", "alice", "card reported stolen",
    )
    assert confirmed["reviewed_at"] is not None
    flagged = json.loads(last_line(fraud(
        "alerts", "label", str(ids["tx-1"]), "--status", "false_positive", "--db", db_url,
        env={"USER": "bob"},
    )))
    assert (flagged["status"], flagged["reviewed_by"]) == ("false_positive", "bob")

    still_open = json.loads(last_line(fraud("alerts", "list", "--status", "open", "--json",
                                            "--db", db_url)))
    assert [a["transaction_id"] for a in still_open] == ["tx-2"]

    unknown = fraud("alerts", "label", "999999", "--status", "confirmed_fraud", "--db", db_url)
    assert (unknown.returncode, unknown.stderr) == (2, "error: no alert with id 999999\n")
    bad = fraud("alerts", "label", str(ids["tx-2"]), "--status", "fraud", "--db", db_url)
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: unknown status 'fraud'") and bad.stderr.count("\n") == 1

    out = tmp_path / "labels.jsonl"
    summary = json.loads(last_line(fraud(
        "labels", "export", "--since", "2000-01-01", "--out", str(out), "--db", db_url,
    )))
    assert summary == {"labels": 2, "frauds": 1, "out": str(out)}
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["transaction_id"], r["is_fraud"], r["source"]) for r in records] == [
        ("tx-0", 1, "analyst"), ("tx-1", 0, "analyst"),
    ]

    engine = make_engine(db_url)
    try:
        with make_sessionmaker(engine)() as session:
            audit = session.scalars(select(AlertReview).order_by(AlertReview.id)).all()
            assert [(r.alert_id, r.status, r.analyst) for r in audit] == [
                (ids["tx-0"], "confirmed_fraud", "alice"), (ids["tx-1"], "false_positive", "bob"),
            ]
    finally:
        engine.dispose()


def test_cli_reports_an_unreachable_database_in_one_line() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = fraud("alerts", "list", "--db", f"postgresql://fraud:secret@127.0.0.1:{port}/alerts")
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: database postgresql://fraud:***@127.0.0.1:{port}/alerts")
    assert result.stderr.count("\n") == 1 and "secret" not in result.stderr


# --- the scorer's forked checkpoint writer ------------------------------------------------------


def test_the_forked_checkpoint_writer_reaches_every_backend(alerts_db_url: str) -> None:
    """The child opens the store on its own connections (no pool): SQLite and PostgreSQL."""
    from scoring.stream.checkpoints import ForkedCheckpoints
    from scoring.stream.ports import SavedState
    from scoring.stream.sql_store import SqlAlertStore

    engine = make_engine(alerts_db_url)
    upgrade(engine)
    store = SqlAlertStore(engine, "scorer")
    saved = SavedState(b"behavioural state", {("transactions", 0): 41}, 2)
    checkpoints = ForkedCheckpoints(store.reopened)

    assert checkpoints.start(lambda store: store.write([], saved), dict(saved.positions))
    outcome = checkpoints.wait()

    assert outcome is not None and outcome.written, outcome and outcome.error
    assert store.load() == saved
    engine.dispose()
