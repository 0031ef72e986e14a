"""The analyst workbench's tables: users, API tokens, sessions, login attempts, audit, decisions.

They share :class:`scoring.db.models.Base` (one metadata, one migration
history). ``audit`` is append-only and tamper-evident (``scoring.db.audit``):
each row carries the SHA-256 of its content chained to the previous row's
hash; ``audit_head`` holds the newest sequence number and hash, so appends
are serialised on one row lock and a truncated tail is detected too.
``decisions`` records every final disposition once, with an increasing id a
label publisher can keep its position in.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    false,
    func,
)
from sqlalchemy.orm import Mapped, mapped_column

from scoring.db.models import ID_LENGTH, Base, JSONDocument, UTCDateTime

#: A SHA-256 in hex.
HASH_LENGTH = 64


class Role(StrEnum):
    """What a workbench user may do (``scoring.workbench.auth.PERMISSIONS``)."""

    ANALYST = "analyst"
    SUPERVISOR = "supervisor"
    ADMIN = "admin"


_ROLE_VALUES = ", ".join(f"'{r.value}'" for r in Role)

#: BIGINT on PostgreSQL, INTEGER (the rowid alias) on SQLite, so ids autoincrement on both.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class User(Base):
    """A person who signs in to the workbench (or a service using its API token)."""

    __tablename__ = "users"
    __table_args__ = (CheckConstraint(f"role IN ({_ROLE_VALUES})", name="role"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(ID_LENGTH), unique=True)
    role: Mapped[str] = mapped_column(String(20))
    #: argon2id hash (argon2-cffi's encoded form); never the password.
    password_hash: Mapped[str] = mapped_column(String(255))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), server_default=func.now())


class ApiToken(Base):
    """An API token: only its SHA-256 is stored (the token is random, 256 bits)."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(HASH_LENGTH), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), server_default=func.now())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class WebSession(Base):
    """A signed-in browser: the cookie's SHA-256, its CSRF token and its time limits."""

    __tablename__ = "web_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(HASH_LENGTH), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(HASH_LENGTH))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
    #: Absolute limit: the session ends then, however active.
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())


class LoginAttempt(Base):
    """One sign-in attempt, for throttling per account and per client address."""

    __tablename__ = "login_attempts"
    __table_args__ = (
        Index("ix_login_attempts_account_at", "account", "at"),
        Index("ix_login_attempts_client_at", "client", "at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    account: Mapped[str] = mapped_column(String(ID_LENGTH))
    #: SHA-256 of the client address (the address itself is not kept).
    client: Mapped[str] = mapped_column(String(HASH_LENGTH))
    ok: Mapped[bool] = mapped_column(Boolean)
    at: Mapped[datetime] = mapped_column(UTCDateTime())


class AuditEntry(Base):
    """One change, never updated or deleted: who, when, what, before, after, and the chain."""

    __tablename__ = "audit"
    __table_args__ = (Index("ix_audit_alert_id_seq", "alert_id", "seq"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    #: 1, 2, 3, ... without gaps: the position in the chain.
    seq: Mapped[int] = mapped_column(BigInteger, unique=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor: Mapped[str] = mapped_column(String(ID_LENGTH))
    action: Mapped[str] = mapped_column(String(40))
    alert_id: Mapped[int | None] = mapped_column(Integer)
    before: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument)
    prev_hash: Mapped[str] = mapped_column(String(HASH_LENGTH))
    hash: Mapped[str] = mapped_column(String(HASH_LENGTH))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values."""
        return {
            "id": self.id, "seq": self.seq, "at": self.at.isoformat(), "actor": self.actor,
            "action": self.action, "alert_id": self.alert_id, "before": self.before,
            "after": self.after, "hash": self.hash,
        }


class AuditHead(Base):
    """The newest audit entry's sequence number and hash (one row, id 1)."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(HASH_LENGTH))


class Decision(Base):
    """A final disposition of an alert, once; ``id`` only grows (a publisher's position)."""

    __tablename__ = "decisions"
    __table_args__ = (
        CheckConstraint("status IN ('confirmed_fraud', 'false_positive')", name="status"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id", ondelete="CASCADE"), index=True)
    transaction_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    customer_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    terminal_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    event_time: Mapped[datetime] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(20))
    analyst: Mapped[str] = mapped_column(String(ID_LENGTH))
    #: The supervisor who approved it (four-eyes), else None.
    approved_by: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    note: Mapped[str | None] = mapped_column(Text)
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)

    def to_record(self, source: str = "analyst") -> dict[str, Any]:
        """The decision in the ``fraud-labels`` record format (``docs/contracts.md`` §2.2)."""
        return {
            "transaction_id": self.transaction_id,
            "is_fraud": int(self.status == "confirmed_fraud"),
            "timestamp": self.event_time.isoformat(),
            "customer_id": self.customer_id,
            "terminal_id": self.terminal_id,
            "labelled_at": self.decided_at.isoformat(),
            "source": source,
        }


class LabelPublisherPosition(Base):
    """Where a label publisher (``fraud labels publish``) is in ``decisions``.

    ``last_id``: every decision up to it reached the labels topic (acknowledged),
    except the ids in ``gaps``: ids below ``last_id`` not seen yet (a
    transaction still open when its successors committed), each with when it
    was first missed; they are looked for again until ``gap_seconds`` passed.
    """

    __tablename__ = "label_publisher_positions"

    name: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    last_id: Mapped[int] = mapped_column(BigInteger)
    gaps: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    published: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
