"""The alerts schema as SQLAlchemy 2.0 typed ORM models (``docs/contracts.md`` §5).

``alerts`` holds one row per scored transaction at or above the threshold,
``alert_reviews`` is the append-only audit of analysts' decisions,
``partition_checkpoints`` is where each streaming scorer keeps the customer
state of the partitions it owns (incrementally), and ``scorer_checkpoints``
the terminal stage's state and input positions.
Schema changes go through the Alembic migrations in ``scoring/migrations``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Dialect,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

#: Longest accepted identifier (transaction, customer, terminal, analyst).
ID_LENGTH = 255


class AlertStatus(StrEnum):
    """Where an alert stands in the analyst's triage."""

    OPEN = "open"
    CONFIRMED_FRAUD = "confirmed_fraud"
    FALSE_POSITIVE = "false_positive"


_STATUS_VALUES = ", ".join(f"'{s.value}'" for s in AlertStatus)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware timestamp that always comes back in UTC.

    PostgreSQL stores ``timestamptz``; SQLite has no time zones, so values are
    stored as UTC and read back with ``tzinfo=UTC``. Naive inputs mean UTC, as
    in the transaction contract.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Normalise to UTC; drop the offset where the database cannot keep it."""
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Return an aware UTC datetime whatever the database gave back."""
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


#: JSON everywhere, binary ``jsonb`` on PostgreSQL.
JSONDocument = JSON().with_variant(JSONB(), "postgresql")

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base whose constraint names are the same on every database."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Alert(Base):
    """A transaction scored at or above the threshold, waiting for (or past) review."""

    __tablename__ = "alerts"
    __table_args__ = (
        CheckConstraint(f"status IN ({_STATUS_VALUES})", name="status"),
        Index("ix_alerts_status_created_at", "status", "created_at"),
        Index("ix_alerts_customer_id", "customer_id"),
        Index("ix_alerts_reviewed_at", "reviewed_at"),
        # The workbench's queue (keyset paging per sort order) and "next alert".
        Index("ix_alerts_status_score_id", "status", "score", "id"),
        Index("ix_alerts_status_created_at_id", "status", "created_at", "id"),
        Index("ix_alerts_status_amount_id", "status", "amount", "id"),
        Index("ix_alerts_status_assigned_to_score_id", "status", "assigned_to", "score", "id"),
        Index("ix_alerts_terminal_id", "terminal_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    transaction_id: Mapped[str] = mapped_column(String(ID_LENGTH), unique=True)
    customer_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    terminal_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    amount: Mapped[float] = mapped_column(Numeric(18, 4, asdecimal=False))
    event_time: Mapped[datetime] = mapped_column(UTCDateTime())
    score: Mapped[float] = mapped_column(Double())
    threshold: Mapped[float] = mapped_column(Double())
    model_version: Mapped[int] = mapped_column(Integer)
    features: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    status: Mapped[str] = mapped_column(
        String(20), default=AlertStatus.OPEN.value, server_default=AlertStatus.OPEN.value
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), server_default=func.now())
    reviewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    reviewed_by: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    note: Mapped[str | None] = mapped_column(Text)
    #: Reason codes computed at alert time (``scoring.reasons``): [{group, contribution, text}].
    reasons: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONDocument)
    #: The analyst working the alert (the workbench's claim), and since when.
    assigned_to: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    assigned_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    #: Four-eyes: a disposition waiting for a supervisor's approval.
    proposed_status: Mapped[str | None] = mapped_column(String(20))
    proposed_by: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    proposed_note: Mapped[str | None] = mapped_column(Text)
    proposed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    reviews: Mapped[list[AlertReview]] = relationship(
        back_populates="alert", order_by="AlertReview.id", passive_deletes=True
    )

    def to_dict(self) -> dict[str, Any]:
        """Return the alert as JSON-ready values (timestamps in ISO-8601 UTC)."""
        return {
            "id": self.id,
            "transaction_id": self.transaction_id,
            "customer_id": self.customer_id,
            "terminal_id": self.terminal_id,
            "amount": float(self.amount),
            "event_time": _iso(self.event_time),
            "score": self.score,
            "threshold": self.threshold,
            "model_version": self.model_version,
            "features": self.features,
            "status": self.status,
            "created_at": _iso(self.created_at),
            "reviewed_at": _iso(self.reviewed_at),
            "reviewed_by": self.reviewed_by,
            "note": self.note,
            "reasons": self.reasons or [],
            "assigned_to": self.assigned_to,
            "assigned_at": _iso(self.assigned_at),
            "proposed_status": self.proposed_status,
            "proposed_by": self.proposed_by,
            "proposed_note": self.proposed_note,
            "proposed_at": _iso(self.proposed_at),
        }


class AlertReview(Base):
    """One analyst decision on an alert; rows are only ever appended."""

    __tablename__ = "alert_reviews"
    __table_args__ = (CheckConstraint(f"status IN ({_STATUS_VALUES})", name="status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alert_id: Mapped[int] = mapped_column(
        ForeignKey("alerts.id", ondelete="CASCADE"), index=True
    )
    status: Mapped[str] = mapped_column(String(20))
    analyst: Mapped[str] = mapped_column(String(ID_LENGTH))
    note: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime())

    alert: Mapped[Alert] = relationship(back_populates="reviews")


class ScorerCheckpoint(Base):
    """A scorer's consumed offsets and behavioural state for one partition."""

    __tablename__ = "scorer_checkpoints"
    __table_args__ = (UniqueConstraint("consumer_group", "partition_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    consumer_group: Mapped[str] = mapped_column(String(ID_LENGTH))
    partition_key: Mapped[str] = mapped_column(String(ID_LENGTH))
    offsets: Mapped[dict[str, int]] = mapped_column(JSONDocument)
    state: Mapped[bytes] = mapped_column(LargeBinary)
    model_version: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), server_default=func.now(), onupdate=func.now()
    )


class PartitionCheckpoint(Base):
    """One checkpoint row of one partition's customer state: a full base or a delta.

    A partition's state is its newest ``base`` plus every ``delta`` written
    after it (``seq`` orders them); each row records the next offset to read
    and the partition's event-time watermark at that point.
    """

    __tablename__ = "partition_checkpoints"
    __table_args__ = (
        UniqueConstraint("consumer_group", "topic", "partition", "seq"),
        CheckConstraint("kind IN ('base', 'delta')", name="kind"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    consumer_group: Mapped[str] = mapped_column(String(ID_LENGTH))
    topic: Mapped[str] = mapped_column(String(ID_LENGTH))
    partition: Mapped[int] = mapped_column(Integer)
    seq: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(8))
    state: Mapped[bytes] = mapped_column(LargeBinary)
    next_offset: Mapped[int] = mapped_column(BigInteger)
    watermark_us: Mapped[int | None] = mapped_column(BigInteger)
    model_version: Mapped[int | None] = mapped_column(Integer)
    #: The scorer process that wrote the row (rows of a former owner are refused).
    owner: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), server_default=func.now())
# The workbench's tables (users, sessions, audit, decisions) share this Base.
from scoring.db import workbench_models as _workbench_models  # noqa: E402, F401


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()
