"""The label publisher's position in ``decisions`` (``fraud labels publish``).

Revision ID: 0103
Revises: 0101
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0103"
down_revision: str | None = "0101"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``label_publisher_positions``."""
    op.create_table(
        "label_publisher_positions",
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("last_id", sa.BigInteger(), nullable=False),
        sa.Column("gaps", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
                  nullable=False),
        sa.Column("published", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_label_publisher_positions")),
    )


def downgrade() -> None:
    """Drop ``label_publisher_positions``."""
    op.drop_table("label_publisher_positions")
