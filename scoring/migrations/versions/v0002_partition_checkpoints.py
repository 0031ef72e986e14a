"""Per-partition, incremental customer-state checkpoints of the streaming scorers.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``partition_checkpoints``."""
    op.create_table(
        "partition_checkpoints",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("consumer_group", sa.String(length=255), nullable=False),
        sa.Column("topic", sa.String(length=255), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("state", sa.LargeBinary(), nullable=False),
        sa.Column("next_offset", sa.BigInteger(), nullable=False),
        sa.Column("watermark_us", sa.BigInteger(), nullable=True),
        sa.Column("model_version", sa.Integer(), nullable=True),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint("kind IN ('base', 'delta')", name=op.f("ck_partition_checkpoints_kind")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_partition_checkpoints")),
        sa.UniqueConstraint(
            "consumer_group",
            "topic",
            "partition",
            "seq",
            name=op.f("uq_partition_checkpoints_consumer_group_topic_partition_seq"),
        ),
    )


def downgrade() -> None:
    """Drop ``partition_checkpoints``."""
    op.drop_table("partition_checkpoints")
