"""Analyst workbench: reason codes, claims and four-eyes on alerts; users, tokens, sessions,
login attempts, the tamper-evident audit trail and decisions; queue indexes.

Revision ID: 0101
Revises: 0002
Create Date: 2026-12-01

On PostgreSQL, ``audit`` refuses UPDATE, DELETE and TRUNCATE through a
trigger (the application's role additionally needs no more than
``GRANT SELECT, INSERT ON audit`` — see docs/workbench.md); SQLite gets the
same triggers.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0101"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GENESIS = "0" * 64
ALERT_COLUMNS = (
    "reasons", "assigned_to", "assigned_at", "proposed_status", "proposed_by",
    "proposed_note", "proposed_at",
)
ALERT_INDEXES = {
    "ix_alerts_status_score_id": ["status", "score", "id"],
    "ix_alerts_status_created_at_id": ["status", "created_at", "id"],
    "ix_alerts_status_amount_id": ["status", "amount", "id"],
    "ix_alerts_status_assigned_to_score_id": ["status", "assigned_to", "score", "id"],
    "ix_alerts_terminal_id": ["terminal_id"],
}

PG_APPEND_ONLY = """
CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'audit entries are append-only: % refused', TG_OP
    USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_no_update_delete BEFORE UPDATE OR DELETE ON audit
  FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
  FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
"""
SQLITE_APPEND_ONLY = (
    "CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit "
    "BEGIN SELECT RAISE(ABORT, 'audit entries are append-only: UPDATE refused'); END",
    "CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit "
    "BEGIN SELECT RAISE(ABORT, 'audit entries are append-only: DELETE refused'); END",
)


def _json() -> sa.types.TypeEngine[object]:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _big_id() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Add the alert columns and indexes, the workbench's tables and the audit triggers."""
    op.add_column("alerts", sa.Column("reasons", _json(), nullable=True))
    op.add_column("alerts", sa.Column("assigned_to", sa.String(255), nullable=True))
    op.add_column("alerts", sa.Column("assigned_at", _ts(), nullable=True))
    op.add_column("alerts", sa.Column("proposed_status", sa.String(20), nullable=True))
    op.add_column("alerts", sa.Column("proposed_by", sa.String(255), nullable=True))
    op.add_column("alerts", sa.Column("proposed_note", sa.Text(), nullable=True))
    op.add_column("alerts", sa.Column("proposed_at", _ts(), nullable=True))
    for name, columns in ALERT_INDEXES.items():
        op.create_index(name, "alerts", columns)

    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("disabled", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("created_at", _ts(), server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint("role IN ('analyst', 'supervisor', 'admin')", name=op.f("ck_users_role")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("name", name=op.f("uq_users_name")),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", _ts(), server_default=sa.func.now(), nullable=False),
        sa.Column("last_used_at", _ts(), nullable=True),
        sa.Column("revoked_at", _ts(), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_api_tokens_user_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_api_tokens_token_hash")),
    )
    op.create_index(op.f("ix_api_tokens_user_id"), "api_tokens", ["user_id"])
    op.create_table(
        "web_sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("last_seen_at", _ts(), nullable=False),
        sa.Column("expires_at", _ts(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"],
                                name=op.f("fk_web_sessions_user_id_users"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_web_sessions")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_web_sessions_token_hash")),
    )
    op.create_index(op.f("ix_web_sessions_user_id"), "web_sessions", ["user_id"])
    op.create_table(
        "login_attempts",
        sa.Column("id", _big_id(), nullable=False),
        sa.Column("account", sa.String(255), nullable=False),
        sa.Column("client", sa.String(64), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_login_attempts")),
    )
    op.create_index("ix_login_attempts_account_at", "login_attempts", ["account", "at"])
    op.create_index("ix_login_attempts_client_at", "login_attempts", ["client", "at"])
    op.create_table(
        "audit",
        sa.Column("id", _big_id(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("at", _ts(), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("alert_id", sa.Integer(), nullable=True),
        sa.Column("before", _json(), nullable=True),
        sa.Column("after", _json(), nullable=True),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit")),
        sa.UniqueConstraint("seq", name=op.f("uq_audit_seq")),
    )
    op.create_index("ix_audit_alert_id_seq", "audit", ["alert_id", "seq"])
    head = op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_head")),
    )
    op.bulk_insert(head, [{"id": 1, "seq": 0, "hash": GENESIS}])
    op.create_table(
        "decisions",
        sa.Column("id", _big_id(), nullable=False),
        sa.Column("alert_id", sa.Integer(), nullable=False),
        sa.Column("transaction_id", sa.String(255), nullable=False),
        sa.Column("customer_id", sa.String(255), nullable=False),
        sa.Column("terminal_id", sa.String(255), nullable=False),
        sa.Column("event_time", _ts(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("analyst", sa.String(255), nullable=False),
        sa.Column("approved_by", sa.String(255), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("decided_at", _ts(), nullable=False),
        sa.CheckConstraint("status IN ('confirmed_fraud', 'false_positive')",
                           name=op.f("ck_decisions_status")),
        sa.ForeignKeyConstraint(["alert_id"], ["alerts.id"],
                                name=op.f("fk_decisions_alert_id_alerts"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_decisions")),
    )
    op.create_index(op.f("ix_decisions_alert_id"), "decisions", ["alert_id"])
    op.create_index(op.f("ix_decisions_decided_at"), "decisions", ["decided_at"])

    if op.get_bind().dialect.name == "postgresql":
        op.execute(PG_APPEND_ONLY)
    elif op.get_bind().dialect.name == "sqlite":
        for statement in SQLITE_APPEND_ONLY:
            op.execute(statement)


def downgrade() -> None:
    """Drop what the upgrade created."""
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_no_truncate ON audit")
        op.execute("DROP TRIGGER IF EXISTS audit_no_update_delete ON audit")
        op.execute("DROP FUNCTION IF EXISTS audit_append_only()")
    elif dialect == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS audit_no_update")
        op.execute("DROP TRIGGER IF EXISTS audit_no_delete")
    for table in ("decisions", "audit_head", "audit", "login_attempts", "web_sessions",
                  "api_tokens", "users"):
        op.drop_table(table)
    for name in ALERT_INDEXES:
        op.drop_index(name, table_name="alerts")
    # Plain ALTER TABLE ... DROP COLUMN (SQLite >= 3.35 has it): no table rebuild, so the
    # alerts table keeps its CHECK constraint on SQLite.
    for column in reversed(ALERT_COLUMNS):
        op.execute(f"ALTER TABLE alerts DROP COLUMN {column}")
