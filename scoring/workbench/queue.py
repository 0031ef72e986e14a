"""The alert queue: filters, sort orders and keyset (cursor) paging.

Each sort order walks an index whose leading column is ``status`` —
``(status, score, id)``, ``(status, created_at, id)``, ``(status, amount, id)``
— and a page continues strictly after the last row of the previous one
(``(key, id) < (last_key, last_id)``), so page 10,000 costs what page 1 does.
The cursor is opaque to clients: base64 of the sort, the last key and id.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Select, String, and_, literal, select, tuple_
from sqlalchemy.orm import Session

from features.errors import InputError
from scoring.db.models import Alert, AlertStatus
from scoring.workbench.auth import Perm, Principal

SORTS = ("score", "time", "amount")
MAX_LIMIT = 500
MAX_TEXT = 255


class Forbidden(Exception):  # noqa: N818 - maps to HTTP 403
    """The principal may not do or see this."""


@dataclass(frozen=True)
class QueueFilter:
    """What the queue shows. ``assignee``: ``me``, ``none``, ``anyone`` or a user name."""

    status: str | None = AlertStatus.OPEN.value
    assignee: str = "anyone"
    start: datetime | None = None
    end: datetime | None = None
    min_amount: float | None = None
    max_amount: float | None = None
    min_score: float | None = None
    customer_id: str | None = None
    terminal_id: str | None = None
    model_version: int | None = None
    pending: bool = False
    sort: str = "score"
    cursor: str | None = None
    limit: int = 50

    def without_cursor(self) -> QueueFilter:
        """The same filter from the first page."""
        return replace(self, cursor=None)


def clean_text(value: str | None, name: str, max_length: int = MAX_TEXT) -> str | None:
    """A text parameter: stripped, at most ``max_length``, no control characters."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if len(value) > max_length:
        raise InputError(f"{name} is longer than {max_length} characters")
    if any(ord(c) < 32 and c not in "\n\r\t" for c in value) or not _encodable(value):
        raise InputError(f"{name} holds characters that are not allowed")
    return value


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _finite(value: float | None, name: str) -> float | None:
    if value is not None and not math.isfinite(value):
        raise InputError(f"{name} must be a finite number")
    return value


def make_filter(
    *, status: str | None = "open", assignee: str | None = None,
    start: datetime | None = None, end: datetime | None = None,
    min_amount: float | None = None, max_amount: float | None = None,
    min_score: float | None = None, customer_id: str | None = None,
    terminal_id: str | None = None, model_version: int | None = None,
    pending: bool = False, sort: str | None = None, cursor: str | None = None,
    limit: int | None = None, default_limit: int = 50,
) -> QueueFilter:
    """A validated :class:`QueueFilter`; :class:`InputError` (HTTP 422) when a value is bad."""
    if status in ("", "all", "any"):
        status = None
    if status is not None and status not in {s.value for s in AlertStatus}:
        raise InputError(f"unknown status {status!r}")
    sort = sort or "score"
    if sort not in SORTS:
        raise InputError(f"sort must be one of {', '.join(SORTS)}")
    limit = default_limit if limit is None else limit
    if not 1 <= limit <= MAX_LIMIT:
        raise InputError(f"limit must be between 1 and {MAX_LIMIT}")
    if model_version is not None and not 0 <= model_version < 2**31:
        raise InputError("model_version is out of range")
    return QueueFilter(
        status=status,
        assignee=clean_text(assignee, "assignee") or "anyone",
        start=_aware(start), end=_aware(end),
        min_amount=_finite(min_amount, "min_amount"),
        max_amount=_finite(max_amount, "max_amount"),
        min_score=_finite(min_score, "min_score"),
        customer_id=clean_text(customer_id, "customer_id"),
        terminal_id=clean_text(terminal_id, "terminal_id"),
        model_version=model_version, pending=pending, sort=sort,
        cursor=clean_text(cursor, "cursor", 400), limit=limit,
    )


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise InputError("date out of range") from None


def _sort_column(sort: str) -> Any:
    return {"score": Alert.score, "time": Alert.created_at, "amount": Alert.amount}[sort]


def encode_cursor(sort: str, alert: Alert) -> str:
    """The cursor that continues after ``alert`` in ``sort`` order."""
    key: Any = {"score": alert.score, "time": alert.created_at.isoformat(),
                "amount": float(alert.amount)}[sort]
    raw = json.dumps([sort, key, alert.id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, sort: str) -> tuple[Any, int]:
    """The (key, id) a cursor continues after; :class:`InputError` for a bad or foreign one."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        kind, key, alert_id = json.loads(raw)
        if kind != sort or not isinstance(alert_id, int) or isinstance(alert_id, bool):
            raise ValueError
        if sort == "time":
            key = datetime.fromisoformat(key)
            if key.tzinfo is None:
                raise ValueError
        elif not isinstance(key, int | float) or isinstance(key, bool) or not math.isfinite(key):
            raise ValueError
        if not 0 <= alert_id < 2**31:
            raise ValueError
    except (ValueError, TypeError, json.JSONDecodeError, UnicodeDecodeError):
        raise InputError("invalid cursor (it belongs to another sort order, or was altered)")\
            from None
    return key, alert_id


def assignee_clause(who: Principal, assignee: str) -> Any:
    """The SQL condition of an ``assignee`` filter; :class:`Forbidden` for others' names."""
    if assignee == "anyone":
        return None
    if assignee == "me":
        return Alert.assigned_to == who.name
    if assignee == "none":
        return Alert.assigned_to.is_(None)
    if assignee != who.name and not who.can(Perm.SUPERVISE):
        raise Forbidden("only a supervisor can list another analyst's alerts")
    return Alert.assigned_to == assignee


def sqlite_timestamp(value: datetime) -> str:
    """A UTC time as SQLite's ``CURRENT_TIMESTAMP`` stores it (``created_at``'s default).

    SQLite compares timestamps as text: a cursor key must be written the way
    the column's values are, or ``08:00:00`` sorts before ``08:00:00.000000``.
    """
    text = value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    return text + (f".{value.microsecond:06d}" if value.microsecond else "")


def queue_statement(who: Principal, f: QueueFilter,
                    dialect: str = "postgresql") -> Select[tuple[Alert]]:
    """The SELECT of one page (``limit + 1`` rows: the extra one says a next page exists)."""
    column = _sort_column(f.sort)
    stmt = select(Alert)
    # SQLite: keep its planner on the sort order's index (see sqlite_keeps_sort_index) by
    # hiding the other range columns from it (``+ 0`` is SQLite's "do not index this").
    hide = dialect == "sqlite" and sqlite_keeps_sort_index(f)

    def ranged(col: Any, name: str) -> Any:
        return col + 0 if hide and name != f.sort else col

    conditions: list[Any] = []
    if f.status is not None:
        conditions.append(Alert.status == f.status)
    clause = assignee_clause(who, f.assignee)
    if clause is not None:
        conditions.append(clause)
    if f.start is not None:
        conditions.append(Alert.event_time >= f.start)
    if f.end is not None:
        conditions.append(Alert.event_time < f.end)
    if f.min_amount is not None:
        conditions.append(ranged(Alert.amount, "amount") >= f.min_amount)
    if f.max_amount is not None:
        conditions.append(ranged(Alert.amount, "amount") <= f.max_amount)
    if f.min_score is not None:
        conditions.append(ranged(Alert.score, "score") >= f.min_score)
    if f.customer_id is not None:
        conditions.append(Alert.customer_id == f.customer_id)
    if f.terminal_id is not None:
        conditions.append(Alert.terminal_id == f.terminal_id)
    if f.model_version is not None:
        conditions.append(Alert.model_version == f.model_version)
    if f.pending:
        conditions.append(Alert.proposed_status.is_not(None))
    ascending = f.sort == "time"  # oldest first: the service level is about waiting time
    if f.cursor is not None:
        key, last_id = decode_cursor(f.cursor, f.sort)
        if f.sort == "time" and dialect == "sqlite":
            bound = literal(sqlite_timestamp(key), String())
        else:
            bound = literal(key, column.type)
        after = tuple_(bound, literal(last_id, Alert.id.type))
        keys = tuple_(column, Alert.id)
        conditions.append(keys > after if ascending else keys < after)
    if conditions:
        stmt = stmt.where(and_(*conditions))
    order = (column.asc(), Alert.id.asc()) if ascending else (column.desc(), Alert.id.desc())
    return stmt.order_by(*order).limit(f.limit + 1)


def sqlite_keeps_sort_index(f: QueueFilter) -> bool:
    """Whether SQLite must be kept on the sort order's index for this page.

    Given a range on another column (an amount range while sorting by
    score), SQLite's planner prefers that range's index and sorts every
    matching row (350 ms with a million alerts); walking the sort order's
    index and stopping after one page takes ~5 ms. Selective filters (a
    card, a terminal, one analyst's alerts) keep their own, better index.
    """
    return (f.status is not None and f.customer_id is None and f.terminal_id is None
            and f.assignee in ("anyone", "none"))


@dataclass(frozen=True)
class QueuePage:
    """One page of the queue and the cursor of the next (None on the last page)."""

    alerts: list[Alert]
    next_cursor: str | None


def queue_page(session: Session, who: Principal, f: QueueFilter) -> QueuePage:
    """One page of alerts for ``who`` under filter ``f``."""
    dialect = session.get_bind().dialect.name
    rows = list(session.scalars(queue_statement(who, f, dialect)))
    more = len(rows) > f.limit
    rows = rows[: f.limit]
    cursor = encode_cursor(f.sort, rows[-1]) if more and rows else None
    return QueuePage(rows, cursor)


@dataclass(frozen=True)
class Ageing:
    """How long an alert has waited against the service-level target."""

    hours: float
    fraction: float
    state: str  # "ok", "due" (past 75% of the target) or "overdue"

    @property
    def label(self) -> str:
        """``3.2 h of 4 h``-style text."""
        if self.hours < 1:
            return f"{self.hours * 60:.0f} min"
        if self.hours < 48:
            return f"{self.hours:.1f} h"
        return f"{self.hours / 24:.1f} d"


def ageing(alert: Alert, sla_hours: float, now: datetime | None = None) -> Ageing:
    """The age of an open alert (time since it was raised; decided ones: until decided)."""
    end = alert.reviewed_at if alert.status != AlertStatus.OPEN and alert.reviewed_at else None
    waited = (end or now or datetime.now(UTC)) - alert.created_at
    hours = max(waited / timedelta(hours=1), 0.0)
    fraction = hours / sla_hours if sla_hours > 0 else 0.0
    state = "overdue" if fraction >= 1 else "due" if fraction >= 0.75 else "ok"
    return Ageing(hours, fraction, state)


def related(session: Session, alert: Alert, limit: int) -> tuple[list[Alert], list[Alert]]:
    """The card's and the terminal's other alerts, newest first."""
    base = select(Alert).where(Alert.id != alert.id).order_by(Alert.created_at.desc(),
                                                              Alert.id.desc()).limit(limit)
    card = list(session.scalars(base.where(Alert.customer_id == alert.customer_id)))
    terminal = list(session.scalars(base.where(Alert.terminal_id == alert.terminal_id)))
    return card, terminal

