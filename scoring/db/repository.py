"""Reads and writes of the alerts database; every function takes a ``Session``.

The caller owns the transaction: the streaming scorer inserts a batch's alerts
and saves its checkpoint in one ``with session.begin():`` block, so offsets,
behavioural state and alerts commit together or not at all. Inserts are
idempotent on ``transaction_id`` — a replay after a crash writes nothing twice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Table, func, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from features.errors import InputError
from scoring.db import audit
from scoring.db.models import (
    Alert,
    AlertReview,
    AlertStatus,
    PartitionCheckpoint,
    ScorerCheckpoint,
)
from scoring.db.workbench_models import Decision

#: Dialects with ``INSERT ... ON CONFLICT``; others take the portable path.
_ON_CONFLICT_INSERT: dict[str, Callable[[Table], Any]] = {
    "postgresql": postgresql.insert,
    "sqlite": sqlite.insert,
}

#: Statuses that are a decision, i.e. a label for training.
DECIDED = (AlertStatus.CONFIRMED_FRAUD, AlertStatus.FALSE_POSITIVE)

ALERTS = cast(Table, Alert.__table__)
CHECKPOINTS = cast(Table, ScorerCheckpoint.__table__)
PARTITION_ROWS = cast(Table, PartitionCheckpoint.__table__)


class UnknownAlertError(InputError, LookupError):
    """No alert has the requested id."""


@dataclass(frozen=True)
class NewAlert:
    """An alert the scorer wants written; ``features`` is what the model saw."""

    transaction_id: str
    customer_id: str
    terminal_id: str
    amount: float
    event_time: datetime
    score: float
    threshold: float
    model_version: int
    features: Mapping[str, Any]
    #: Reason codes (``scoring.reasons.reason_codes``), empty when not computed.
    reasons: Sequence[Mapping[str, Any]] = ()

    def row(self) -> dict[str, Any]:
        """Column values for the ``alerts`` insert."""
        return {
            "transaction_id": self.transaction_id,
            "customer_id": self.customer_id,
            "terminal_id": self.terminal_id,
            "amount": self.amount,
            "event_time": self.event_time,
            "score": self.score,
            "threshold": self.threshold,
            "model_version": self.model_version,
            "features": dict(self.features),
            "reasons": [dict(r) for r in self.reasons],
        }


@dataclass(frozen=True)
class Checkpoint:
    """What a scorer saved for one partition: offsets, behavioural state, model."""

    consumer_group: str
    partition_key: str
    offsets: dict[str, int]
    state: bytes
    model_version: int | None
    updated_at: datetime


@dataclass(frozen=True)
class ReviewedLabel:
    """An analyst's decision on an alert, as a training label."""

    transaction_id: str
    customer_id: str
    terminal_id: str
    event_time: datetime
    is_fraud: int
    reviewed_at: datetime

    def to_record(self, source: str = "analyst") -> dict[str, Any]:
        """Return the label in the ``fraud-labels`` format of ``docs/contracts.md`` §2.2."""
        return {
            "transaction_id": self.transaction_id,
            "is_fraud": self.is_fraud,
            "timestamp": self.event_time.isoformat(),
            "customer_id": self.customer_id,
            "terminal_id": self.terminal_id,
            "labelled_at": self.reviewed_at.isoformat(),
            "source": source,
        }


def parse_status(value: str) -> AlertStatus:
    """Return the status named ``value``, or raise an :class:`InputError` listing the valid ones."""
    try:
        return AlertStatus(value)
    except ValueError:
        valid = ", ".join(s.value for s in AlertStatus)
        raise InputError(f"unknown status {value!r}; expected one of {valid}") from None


# --- alerts ------------------------------------------------------------------


def insert_alerts(session: Session, alerts: Sequence[NewAlert]) -> int:
    """Insert the alerts whose ``transaction_id`` is new; return how many were inserted.

    One batched ``INSERT ... ON CONFLICT (transaction_id) DO NOTHING RETURNING``
    on SQLite and PostgreSQL, so replayed or duplicated transactions are skipped
    by the database itself, even under concurrent scorers.
    """
    if not alerts:
        return 0
    rows = [alert.row() for alert in alerts]
    table = ALERTS
    make_insert = _ON_CONFLICT_INSERT.get(session.get_bind().dialect.name)
    if make_insert is None:
        return _insert_missing_alerts(session, rows)
    stmt = (
        make_insert(table)
        .on_conflict_do_nothing(index_elements=[table.c.transaction_id])
        .returning(table.c.id)
    )
    return len(session.execute(stmt, rows).all())


def _insert_missing_alerts(session: Session, rows: list[dict[str, Any]]) -> int:
    """Portable insert-if-absent; the unique constraint still guards against races."""
    fresh: dict[str, dict[str, Any]] = {}
    for row in rows:
        fresh.setdefault(row["transaction_id"], row)
    existing = session.scalars(
        select(Alert.transaction_id).where(Alert.transaction_id.in_(list(fresh)))
    )
    for transaction_id in existing:
        del fresh[transaction_id]
    if fresh:
        session.execute(insert(ALERTS), list(fresh.values()))
    return len(fresh)


def get_alert(session: Session, alert_id: int, *, for_update: bool = False) -> Alert:
    """Return the alert with ``alert_id``; raise :class:`UnknownAlertError` if there is none."""
    alert = session.get(Alert, alert_id, with_for_update=for_update)
    if alert is None:
        raise UnknownAlertError(f"no alert with id {alert_id}")
    return alert


def list_alerts(
    session: Session,
    status: str | None = None,
    limit: int = 50,
    offset: int = 0,
    customer_id: str | None = None,
) -> list[Alert]:
    """Alerts, newest first, optionally only one status and/or one customer."""
    if limit < 1:
        raise InputError(f"limit must be at least 1, got {limit}")
    if offset < 0:
        raise InputError(f"offset must not be negative, got {offset}")
    stmt = select(Alert).order_by(Alert.created_at.desc(), Alert.id.desc())
    if status is not None:
        stmt = stmt.where(Alert.status == parse_status(status).value)
    if customer_id is not None:
        stmt = stmt.where(Alert.customer_id == customer_id)
    return list(session.scalars(stmt.limit(limit).offset(offset)))


def label_alert(
    session: Session,
    alert_id: int,
    status: str,
    analyst: str,
    note: str | None = None,
) -> Alert:
    """Record an analyst's decision on an alert and append it to the audit trail.

    ``confirmed_fraud`` and ``false_positive`` mark the alert reviewed by
    ``analyst`` now; ``open`` reopens a decided alert and clears its review.
    """
    target = parse_status(status)
    if not analyst.strip():
        raise InputError("analyst must not be empty")
    alert = get_alert(session, alert_id, for_update=True)
    if target is AlertStatus.OPEN and alert.status == AlertStatus.OPEN:
        raise InputError(f"alert {alert_id} is already open")
    before = alert_state(alert)
    now = datetime.now(UTC)
    decided = target is not AlertStatus.OPEN
    alert.status = target.value
    alert.reviewed_at = now if decided else None
    alert.reviewed_by = analyst if decided else None
    alert.note = note
    alert.assigned_to = None if decided else alert.assigned_to
    alert.proposed_status = alert.proposed_by = alert.proposed_note = None
    alert.proposed_at = None
    session.flush()
    record_review(session, alert, target.value, analyst, note, now)
    audit.append(session, [audit.Event(
        analyst, "decide" if decided else "reopen", alert.id, before, alert_state(alert),
    )], at=now)
    return alert


#: The alert fields the audit trail records before and after each change.
AUDITED_FIELDS = ("status", "assigned_to", "proposed_status", "proposed_by", "reviewed_by", "note")


def alert_state(alert: Alert) -> dict[str, Any]:
    """The audited fields of ``alert`` as a dict."""
    return {name: getattr(alert, name) for name in AUDITED_FIELDS}


def record_review(
    session: Session, alert: Alert, status: str, analyst: str, note: str | None,
    at: datetime, approved_by: str | None = None,
) -> None:
    """Append the review row and, for a disposition, the ``decisions`` row a publisher reads."""
    session.add(AlertReview(alert_id=alert.id, status=status, analyst=analyst, note=note, at=at))
    if status != AlertStatus.OPEN:
        session.add(Decision(
            alert_id=alert.id, transaction_id=alert.transaction_id,
            customer_id=alert.customer_id, terminal_id=alert.terminal_id,
            event_time=alert.event_time, status=status, analyst=analyst,
            approved_by=approved_by, note=note, decided_at=at,
        ))
    session.flush()


def decisions_after(session: Session, after_id: int, limit: int = 1000) -> list[Decision]:
    """Final decisions with an id above ``after_id``, oldest first: a label publisher's feed.

    A publisher stores the last id it sent (with the broker's acknowledgement)
    and asks for the next ones, so each decision reaches ``fraud-labels`` once.
    """
    stmt = select(Decision).where(Decision.id > after_id).order_by(Decision.id).limit(limit)
    return list(session.scalars(stmt))


def labels_since(session: Session, since: datetime) -> list[ReviewedLabel]:
    """Decided alerts reviewed at or after ``since``, oldest review first."""
    stmt = (
        select(
            Alert.transaction_id,
            Alert.customer_id,
            Alert.terminal_id,
            Alert.event_time,
            Alert.status,
            Alert.reviewed_at,
        )
        .where(Alert.status.in_([s.value for s in DECIDED]), Alert.reviewed_at >= since)
        .order_by(Alert.reviewed_at, Alert.id)
    )
    return [
        ReviewedLabel(
            transaction_id=row.transaction_id,
            customer_id=row.customer_id,
            terminal_id=row.terminal_id,
            event_time=row.event_time,
            is_fraud=int(row.status == AlertStatus.CONFIRMED_FRAUD),
            reviewed_at=row.reviewed_at,
        )
        for row in session.execute(stmt)
    ]


# --- scorer checkpoints --------------------------------------------------------


def save_checkpoint(
    session: Session,
    consumer_group: str,
    partition_key: str,
    offsets: Mapping[str, int],
    state: bytes,
    model_version: int | None,
) -> None:
    """Create or replace the checkpoint of ``(consumer_group, partition_key)``."""
    values = {
        "consumer_group": consumer_group,
        "partition_key": partition_key,
        "offsets": dict(offsets),
        "state": state,
        "model_version": model_version,
    }
    table = CHECKPOINTS
    make_insert = _ON_CONFLICT_INSERT.get(session.get_bind().dialect.name)
    if make_insert is None:
        _save_checkpoint_portable(session, values)
        return
    stmt = make_insert(table).values(values)
    stmt = stmt.on_conflict_do_update(
        index_elements=[table.c.consumer_group, table.c.partition_key],
        set_={
            "offsets": stmt.excluded.offsets,
            "state": stmt.excluded.state,
            "model_version": stmt.excluded.model_version,
            "updated_at": func.now(),
        },
    )
    session.execute(stmt)


def _save_checkpoint_portable(session: Session, values: dict[str, Any]) -> None:
    """Select-then-write upsert for databases without ``ON CONFLICT``."""
    current = session.scalars(
        select(ScorerCheckpoint)
        .where(
            ScorerCheckpoint.consumer_group == values["consumer_group"],
            ScorerCheckpoint.partition_key == values["partition_key"],
        )
        .with_for_update()
    ).one_or_none()
    if current is None:
        session.add(ScorerCheckpoint(**values))
    else:
        for key in ("offsets", "state", "model_version"):
            setattr(current, key, values[key])
    session.flush()


def load_checkpoints(session: Session, consumer_group: str) -> dict[str, Checkpoint]:
    """Every checkpoint of ``consumer_group``, by partition key."""
    rows = session.scalars(
        select(ScorerCheckpoint)
        .where(ScorerCheckpoint.consumer_group == consumer_group)
        .execution_options(populate_existing=True)  # upserts bypass the identity map
    )
    return {
        row.partition_key: Checkpoint(
            consumer_group=row.consumer_group,
            partition_key=row.partition_key,
            offsets={str(k): int(v) for k, v in row.offsets.items()},
            state=bytes(row.state),
            model_version=row.model_version,
            updated_at=row.updated_at,
        )
        for row in rows
    }

