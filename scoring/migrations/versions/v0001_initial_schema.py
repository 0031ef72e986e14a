"""Initial schema: alerts, their review audit, scorer checkpoints.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATUS_CHECK = "status IN ('open', 'confirmed_fraud', 'false_positive')"


def _json() -> sa.types.TypeEngine[object]:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def _timestamp() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create the three tables and their indexes."""
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("transaction_id", sa.String(length=255), nullable=False),
        sa.Column("customer_id", sa.String(length=255), nullable=False),
        sa.Column("terminal_id", sa.String(length=255), nullable=False),
        sa.Column("amount", sa.Numeric(precision=18, scale=4, asdecimal=False), nullable=False),
        sa.Column("event_time", _timestamp(), nullable=False),
        sa.Column("score", sa.Double(), nullable=False),
        sa.Column("threshold", sa.Double(), nullable=False),
        sa.Column("model_version", sa.Integer(), nullable=False),
        sa.Column("features", _json(), nullable=False),
        sa.Column("status", sa.String(length=20), server_default="open", nullable=False),
        sa.Column("created_at", _timestamp(), server_default=sa.func.now(), nullable=False),
        sa.Column("reviewed_at", _timestamp(), nullable=True),
        sa.Column("reviewed_by", sa.String(length=255), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.CheckConstraint(STATUS_CHECK, name=op.f("ck_alerts_status")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
        sa.UniqueConstraint("transaction_id", name=op.f("uq_alerts_transaction_id")),
    )
    op.create_index("ix_alerts_customer_id", "alerts", ["customer_id"])
    op.create_index("ix_alerts_reviewed_at", "alerts", ["reviewed_at"])
    op.create_index("ix_alerts_status_created_at", "alerts", ["status", "created_at"])
    op.create_table(
        "scorer_checkpoints",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("consumer_group", sa.String(length=255), nullable=False),
        sa.Column("partition_key", sa.String(length=255), nullable=False),
        sa.Column("offsets", _json(), nullable=False),
        sa.Column("state", sa.LargeBinary(), nullable=False),
        sa.Column("model_version", sa.Integer(), nullable=True),
        sa.Column("updated_at", _timestamp(), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scorer_checkpoints")),
        sa.UniqueConstraint(
            "consumer_group",
            "partition_key",
            name=op.f("uq_scorer_checkpoints_consumer_group_partition_key"),
        ),
    )
    op.create_table(
        "alert_reviews",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("alert_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("analyst", sa.String(length=255), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("at", _timestamp(), nullable=False),
        sa.CheckConstraint(STATUS_CHECK, name=op.f("ck_alert_reviews_status")),
        sa.ForeignKeyConstraint(
            ["alert_id"],
            ["alerts.id"],
            name=op.f("fk_alert_reviews_alert_id_alerts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_reviews")),
    )
    op.create_index(op.f("ix_alert_reviews_alert_id"), "alert_reviews", ["alert_id"])


def downgrade() -> None:
    """Drop everything the upgrade created."""
    op.drop_table("alert_reviews")
    op.drop_table("scorer_checkpoints")
    op.drop_table("alerts")
