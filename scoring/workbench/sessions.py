"""Browser sessions: a random cookie, stored as its SHA-256, with idle and absolute limits.

The cookie is HttpOnly, SameSite=Lax and Secure unless the server listens on
loopback only. Each session carries its own CSRF token (:mod:`csrf`).
A session ends after ``session_idle_seconds`` without a request or
``session_absolute_seconds`` after sign-in, whichever comes first; signing
out, or the user being disabled, ends it at once.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from scoring.db.workbench_models import User, WebSession
from scoring.workbench.auth import Principal, principal_of, sha256_hex

COOKIE = "wb_session"
#: ``last_seen_at`` is written at most this often (one write per request would be waste).
TOUCH_EVERY = timedelta(seconds=30)


@dataclass(frozen=True)
class SignedIn:
    """A valid session: who, and the CSRF token its forms must carry."""

    principal: Principal
    csrf_token: str
    session_id: int


def start_session(
    session: Session, principal: Principal, absolute_seconds: int, now: datetime | None = None
) -> tuple[str, SignedIn]:
    """Create a session for ``principal``; return the cookie value and the session."""
    when = now or datetime.now(UTC)
    token = secrets.token_urlsafe(32)
    row = WebSession(
        token_hash=sha256_hex(token), user_id=principal.user_id,
        csrf_token=secrets.token_urlsafe(32), created_at=when, last_seen_at=when,
        expires_at=when + timedelta(seconds=absolute_seconds),
    )
    session.add(row)
    session.flush()
    return token, SignedIn(principal, row.csrf_token, row.id)


def load_session(
    session: Session, token: str, idle_seconds: int, now: datetime | None = None
) -> SignedIn | None:
    """The session of a cookie value, or None when unknown, expired, idle or disabled."""
    when = now or datetime.now(UTC)
    found = session.execute(
        select(WebSession, User).join(User, User.id == WebSession.user_id)
        .where(WebSession.token_hash == sha256_hex(token))
    ).one_or_none()
    if found is None:
        return None
    row, user = found
    idle_limit = row.last_seen_at + timedelta(seconds=idle_seconds)
    if user.disabled or when >= row.expires_at or when >= idle_limit:
        session.execute(delete(WebSession).where(WebSession.id == row.id))
        return None
    if when - row.last_seen_at >= TOUCH_EVERY:
        session.execute(update(WebSession).where(WebSession.id == row.id)
                        .values(last_seen_at=when))
    return SignedIn(principal_of(user), row.csrf_token, row.id)


def end_session(session: Session, token: str) -> None:
    """Sign out: forget the session of this cookie value."""
    session.execute(delete(WebSession).where(WebSession.token_hash == sha256_hex(token)))


def end_all_sessions(session: Session, user_id: int) -> None:
    """End every session of a user."""
    session.execute(delete(WebSession).where(WebSession.user_id == user_id))
