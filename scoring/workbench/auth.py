"""Users, roles, passwords (argon2id), API tokens and throttled sign-in.

Passwords are hashed with argon2-cffi's defaults (argon2id); API tokens are
256 random bits shown once, stored as their SHA-256 (a fast hash is enough
for a secret with that much entropy, and makes the lookup an index probe).
Sign-in is throttled per account and per client address over a window,
counted in ``login_attempts`` (the address is kept only as a hash), so the
limit holds across restarts and server processes.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from features.errors import InputError
from scoring.db import audit
from scoring.db.workbench_models import ApiToken, LoginAttempt, Role, User

_HASHER = PasswordHasher()
#: Verified against when the account does not exist, so both cases take as long.
_DUMMY_HASH = _HASHER.hash("not a password")
MIN_PASSWORD_LENGTH = 10
MAX_NAME_LENGTH = 64


class Perm(StrEnum):
    """Permissions; each role holds a set of them (:data:`PERMISSIONS`)."""

    READ = "read"            # queue, alert pages, dashboard, the audit of one alert
    WORK = "work"            # claim, next, decide, reopen, bulk close
    SUPERVISE = "supervise"  # reassign, release others' alerts, approve, return, everyone's work
    AUDIT = "audit"          # the whole audit trail
    USERS = "users"          # manage users


PERMISSIONS: dict[Role, frozenset[Perm]] = {
    Role.ANALYST: frozenset({Perm.READ, Perm.WORK}),
    Role.SUPERVISOR: frozenset({Perm.READ, Perm.WORK, Perm.SUPERVISE, Perm.AUDIT}),
    # Separation of duties: who manages accounts does not decide cases.
    Role.ADMIN: frozenset({Perm.READ, Perm.AUDIT, Perm.USERS}),
}


@dataclass(frozen=True)
class Principal:
    """The signed-in user of a request."""

    user_id: int
    name: str
    role: Role

    @property
    def perms(self) -> frozenset[Perm]:
        """What this user may do."""
        return PERMISSIONS[self.role]

    def can(self, perm: Perm) -> bool:
        """Whether the user holds ``perm``."""
        return perm in self.perms


class LoginThrottled(Exception):  # noqa: N818 - a refusal, not a failure
    """Too many failed sign-ins for this account or from this client; try later."""


def principal_of(user: User) -> Principal:
    """The principal of a user row."""
    return Principal(user.id, user.name, Role(user.role))


def hash_password(password: str) -> str:
    """The argon2id hash of ``password``."""
    return _HASHER.hash(password)


def check_password(stored: str, password: str) -> bool:
    """Whether ``password`` matches the stored argon2 hash."""
    try:
        return _HASHER.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


def sha256_hex(value: str) -> str:
    """SHA-256 of a text, hex."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def validate_name(name: str) -> str:
    """A user name: 1-64 letters, digits, ``.``, ``_``, ``-`` or ``@``."""
    if not 0 < len(name) <= MAX_NAME_LENGTH or not all(
        c.isalnum() or c in "._-@" for c in name
    ) or not name.isascii():
        raise InputError("user names are 1-64 ASCII letters, digits, '.', '_', '-' or '@'")
    return name


def parse_role(value: str) -> Role:
    """The role named ``value``, or :class:`InputError`."""
    try:
        return Role(value)
    except ValueError:
        raise InputError(f"unknown role {value!r}; expected analyst, supervisor or admin") from None


def add_user(session: Session, name: str, role: str, password: str, actor: str) -> User:
    """Create a user; :class:`InputError` for a taken name, a bad role or a short password."""
    validate_name(name)
    parsed = parse_role(role)
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InputError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    if session.scalar(select(User.id).where(User.name == name)) is not None:
        raise InputError(f"user {name!r} exists already")
    user = User(name=name, role=parsed.value, password_hash=hash_password(password),
                disabled=False)
    session.add(user)
    session.flush()
    audit.append(session, [audit.Event(actor, "user_add", None, None,
                                       {"user": name, "role": parsed.value})])
    return user


def list_users(session: Session) -> list[User]:
    """Every user, by name."""
    return list(session.scalars(select(User).order_by(User.name)))


def get_user(session: Session, name: str) -> User:
    """The user named ``name``, or :class:`InputError`."""
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        raise InputError(f"no user {name!r}")
    return user


def disable_user(session: Session, name: str, actor: str) -> User:
    """Disable a user: their sessions end and their tokens stop working at once."""
    user = get_user(session, name)
    if not user.disabled:
        session.execute(update(User).where(User.id == user.id).values(disabled=True))
        from scoring.workbench.sessions import end_all_sessions

        end_all_sessions(session, user.id)
        now = datetime.now(UTC)
        session.execute(update(ApiToken).where(ApiToken.user_id == user.id,
                                               ApiToken.revoked_at.is_(None))
                        .values(revoked_at=now))
        audit.append(session, [audit.Event(actor, "user_disable", None,
                                           {"user": name, "disabled": False},
                                           {"user": name, "disabled": True})])
        session.refresh(user)
    return user


def create_token(session: Session, name: str, actor: str) -> str:
    """A new API token for ``name``: returned once, stored hashed."""
    user = get_user(session, name)
    if user.disabled:
        raise InputError(f"user {name!r} is disabled")
    token = "fwb_" + secrets.token_urlsafe(32)
    session.add(ApiToken(user_id=user.id, token_hash=sha256_hex(token)))
    session.flush()
    audit.append(session, [audit.Event(actor, "token_create", None, None, {"user": name})])
    return token


def user_for_token(session: Session, token: str) -> Principal | None:
    """The active user an API token belongs to, or None."""
    row = session.execute(
        select(User, ApiToken.id)
        .join(ApiToken, ApiToken.user_id == User.id)
        .where(ApiToken.token_hash == sha256_hex(token), ApiToken.revoked_at.is_(None),
               User.disabled.is_(False))
    ).one_or_none()
    return None if row is None else principal_of(row[0])


def authenticate(
    session: Session, name: str, password: str, client: str, *,
    window_seconds: int, max_per_account: int, max_per_client: int,
    now: datetime | None = None,
) -> Principal | None:
    """Check a sign-in; record the attempt; None when it fails.

    Raises :class:`LoginThrottled` before checking the password when the
    account has ``max_per_account`` failures since its last success within
    the window, or the client ``max_per_client`` failures within it.
    """
    when = now or datetime.now(UTC)
    since = when - timedelta(seconds=window_seconds)
    client_key = sha256_hex(client)
    account = name[:255]
    last_ok = session.scalar(
        select(func.max(LoginAttempt.at)).where(LoginAttempt.account == account,
                                                LoginAttempt.ok.is_(True))
    )
    account_since = max(since, last_ok) if last_ok is not None else since
    account_failures = session.scalar(
        select(func.count()).select_from(LoginAttempt).where(
            LoginAttempt.account == account, LoginAttempt.ok.is_(False),
            LoginAttempt.at > account_since)
    ) or 0
    client_failures = session.scalar(
        select(func.count()).select_from(LoginAttempt).where(
            LoginAttempt.client == client_key, LoginAttempt.ok.is_(False),
            LoginAttempt.at > since)
    ) or 0
    if account_failures >= max_per_account or client_failures >= max_per_client:
        raise LoginThrottled("too many failed sign-ins; wait a few minutes")
    user = session.scalar(select(User).where(User.name == account))
    ok = check_password(user.password_hash if user else _DUMMY_HASH, password)
    ok = ok and user is not None and not user.disabled
    session.add(LoginAttempt(account=account, client=client_key, ok=ok, at=when))
    session.flush()
    if ok and user is not None:
        if _HASHER.check_needs_rehash(user.password_hash):
            user.password_hash = hash_password(password)
        return principal_of(user)
    return None
