"""Case actions: claim, next, release, reassign, decide, approve, return, reopen, bulk close.

Every change is a compare-and-set: the alert is read, the action is checked
against what was read, and the UPDATE only applies while the row still holds
those values (``WHERE id = ? AND status = ? AND assigned_to IS ? ...``). A
concurrent change makes it touch no row, and the action answers
:class:`Conflict` (HTTP 409) instead of overwriting someone else's work. The
audit entries (:mod:`scoring.db.audit`) are appended last, in the same
transaction.

"Next alert" claims the highest-scored (then oldest) open, unassigned alert
in one step: ``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL, a single
conditional ``UPDATE ... RETURNING`` on SQLite (one writer at a time), so two
analysts asking at the same moment never get the same alert.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, select, update
from sqlalchemy.orm import Session

from features.errors import InputError
from scoring.db import audit
from scoring.db.models import Alert, AlertStatus
from scoring.db.repository import alert_state, record_review
from scoring.db.workbench_models import User
from scoring.workbench.auth import PERMISSIONS, Perm, Principal
from scoring.workbench.queue import Forbidden, clean_text

DISPOSITIONS = (AlertStatus.CONFIRMED_FRAUD.value, AlertStatus.FALSE_POSITIVE.value)
MAX_NOTE = 2000
MAX_BULK = 1000


class NotFound(LookupError):  # noqa: N818 - maps to HTTP 404
    """No alert with this id (HTTP 404)."""


class Conflict(Exception):  # noqa: N818 - maps to HTTP 409
    """The alert is held by someone else, or its state does not allow this (HTTP 409)."""


@dataclass(frozen=True)
class Outcome:
    """What an action did: the alert afterwards, and whether the decision is final."""

    alert: Alert
    final: bool = True
    message: str = ""


def _now() -> datetime:
    return datetime.now(UTC)


def load(session: Session, alert_id: int) -> Alert:
    """The alert, read fresh from the database; :class:`NotFound` if none."""
    if not 0 < alert_id < 2**31:
        raise NotFound(f"no alert with id {alert_id}")
    alert = session.scalar(
        select(Alert).where(Alert.id == alert_id).execution_options(populate_existing=True)
    )
    if alert is None:
        raise NotFound(f"no alert with id {alert_id}")
    return alert


def _require(who: Principal, perm: Perm) -> None:
    if not who.can(perm):
        raise Forbidden(f"the {who.role.value} role may not do this")


def _cas(session: Session, alert: Alert, seen: dict[str, Any], values: dict[str, Any]) -> None:
    """Apply ``values`` to the alert if it still holds what was ``seen``; else :class:`Conflict`."""
    guard = [Alert.id == alert.id]
    for name in ("status", "assigned_to", "proposed_status", "proposed_by"):
        guard.append(getattr(Alert, name).is_not_distinct_from(seen[name]))
    result = session.execute(
        update(Alert).where(and_(*guard)).values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict(f"alert {alert.id} was changed by someone else meanwhile; reload it")
    session.flush()
    session.refresh(alert)


def _note(note: str | None) -> str | None:
    return clean_text(note, "note", MAX_NOTE)


# --- claiming ------------------------------------------------------------------------------------


def claim(session: Session, who: Principal, alert_id: int) -> Outcome:
    """Assign an open alert to ``who``; :class:`Conflict` if someone else holds it."""
    _require(who, Perm.WORK)
    alert = load(session, alert_id)
    seen = alert_state(alert)
    if alert.status != AlertStatus.OPEN:
        raise Conflict(f"alert {alert_id} is decided ({alert.status}); reopen it first")
    if alert.assigned_to == who.name:
        return Outcome(alert, message="already yours")
    if alert.assigned_to is not None:
        raise Conflict(f"alert {alert_id} is assigned to {alert.assigned_to}")
    now = _now()
    _cas(session, alert, seen, {"assigned_to": who.name, "assigned_at": now})
    audit.append(session, [audit.Event(who.name, "claim", alert.id, seen, alert_state(alert))],
                 at=now)
    return Outcome(alert)


def next_alert(session: Session, who: Principal) -> Alert | None:
    """Claim the highest-scored, then oldest, open unassigned alert for ``who``; None if none."""
    _require(who, Perm.WORK)
    now = _now()
    candidates = (
        select(Alert.id)
        .where(Alert.status == AlertStatus.OPEN.value, Alert.assigned_to.is_(None))
        .order_by(Alert.score.desc(), Alert.id.asc())
        .limit(1)
    )
    if session.get_bind().dialect.name == "postgresql":
        picked = session.scalar(candidates.with_for_update(skip_locked=True))
        if picked is None:
            return None
        stmt = (update(Alert).where(Alert.id == picked, Alert.assigned_to.is_(None))
                .values(assigned_to=who.name, assigned_at=now).returning(Alert.id))
    else:  # one statement: SQLite takes the write lock before it reads
        stmt = (update(Alert)
                .where(Alert.id == candidates.scalar_subquery(), Alert.assigned_to.is_(None))
                .values(assigned_to=who.name, assigned_at=now).returning(Alert.id))
    claimed = session.execute(stmt.execution_options(synchronize_session=False)).scalar()
    if claimed is None:
        return None
    alert = load(session, claimed)
    before = {**alert_state(alert), "assigned_to": None}
    audit.append(session, [audit.Event(who.name, "claim_next", alert.id, before,
                                       alert_state(alert))], at=now)
    return alert


def release(session: Session, who: Principal, alert_id: int) -> Outcome:
    """Put an alert back in the pool: its holder, or a supervisor for anyone's."""
    _require(who, Perm.WORK)
    alert = load(session, alert_id)
    seen = alert_state(alert)
    if alert.status != AlertStatus.OPEN or alert.assigned_to is None:
        raise Conflict(f"alert {alert_id} is not assigned to anyone")
    if alert.assigned_to != who.name and not who.can(Perm.SUPERVISE):
        raise Forbidden("only a supervisor can release another analyst's alert")
    now = _now()
    _cas(session, alert, seen, {"assigned_to": None, "assigned_at": None,
                                **_no_proposal()})
    audit.append(session, [audit.Event(who.name, "release", alert.id, seen, alert_state(alert))],
                 at=now)
    return Outcome(alert)


def assign(session: Session, who: Principal, alert_id: int, assignee: str) -> Outcome:
    """A supervisor gives an open alert to an active user who can work alerts."""
    _require(who, Perm.SUPERVISE)
    name = clean_text(assignee, "assignee")
    user = session.scalar(select(User).where(User.name == name)) if name else None
    if user is None or user.disabled or Perm.WORK not in PERMISSIONS[_role(user.role)]:
        raise InputError(f"{assignee!r} is not an active user who can work alerts")
    alert = load(session, alert_id)
    seen = alert_state(alert)
    if alert.status != AlertStatus.OPEN:
        raise Conflict(f"alert {alert_id} is decided ({alert.status})")
    if alert.assigned_to == user.name:
        return Outcome(alert, message=f"already assigned to {user.name}")
    now = _now()
    _cas(session, alert, seen, {"assigned_to": user.name, "assigned_at": now, **_no_proposal()})
    audit.append(session, [audit.Event(who.name, "assign", alert.id, seen, alert_state(alert))],
                 at=now)
    return Outcome(alert)


def _role(value: str) -> Any:
    from scoring.db.workbench_models import Role

    return Role(value)


def _no_proposal() -> dict[str, Any]:
    return {"proposed_status": None, "proposed_by": None, "proposed_note": None,
            "proposed_at": None}


# --- deciding ------------------------------------------------------------------------------------


def decide(
    session: Session, who: Principal, alert_id: int, status: str, note: str | None,
    *, four_eyes: bool,
) -> Outcome:
    """Record a disposition (or ``open``: reopen a decided alert).

    Without four-eyes a disposition is final at once. With four-eyes it is a
    proposal that a supervisor other than its author approves or returns.
    An open alert held by someone else answers :class:`Conflict`; an
    unassigned one is claimed by the decision.
    """
    _require(who, Perm.WORK)
    note = _note(note)
    if status == AlertStatus.OPEN.value:
        return reopen(session, who, alert_id, note, four_eyes=four_eyes)
    if status not in DISPOSITIONS:
        raise InputError(f"status must be one of {', '.join(DISPOSITIONS)} or open")
    alert = load(session, alert_id)
    seen = alert_state(alert)
    if alert.status != AlertStatus.OPEN:
        raise Conflict(f"alert {alert_id} is decided already ({alert.status}); reopen it first")
    if alert.assigned_to not in (None, who.name):
        raise Conflict(f"alert {alert_id} is assigned to {alert.assigned_to}")
    if alert.proposed_status is not None and alert.proposed_by != who.name:
        raise Conflict(f"alert {alert_id} has a decision by {alert.proposed_by} "
                       "waiting for approval")
    now = _now()
    if four_eyes:
        _cas(session, alert, seen, {
            "assigned_to": who.name, "assigned_at": alert.assigned_at or now,
            "proposed_status": status, "proposed_by": who.name, "proposed_note": note,
            "proposed_at": now,
        })
        audit.append(session, [audit.Event(who.name, "propose", alert.id, seen,
                                           alert_state(alert))], at=now)
        return Outcome(alert, final=False, message="waiting for a supervisor's approval")
    _finalise(session, alert, seen, status, who.name, note, now, approved_by=None)
    audit.append(session, [audit.Event(who.name, "decide", alert.id, seen, alert_state(alert))],
                 at=now)
    return Outcome(alert)


def _finalise(
    session: Session, alert: Alert, seen: dict[str, Any], status: str, analyst: str,
    note: str | None, now: datetime, approved_by: str | None,
) -> None:
    _cas(session, alert, seen, {
        "status": status, "reviewed_at": now, "reviewed_by": analyst, "note": note,
        "assigned_to": None, "assigned_at": None, **_no_proposal(),
    })
    record_review(session, alert, status, analyst, note, now, approved_by=approved_by)


def reopen(
    session: Session, who: Principal, alert_id: int, note: str | None, *, four_eyes: bool
) -> Outcome:
    """Reopen a decided alert (with four-eyes on, a supervisor's action)."""
    _require(who, Perm.WORK)
    if four_eyes and not who.can(Perm.SUPERVISE):
        raise Forbidden("with four-eyes on, only a supervisor can reopen a decided alert")
    alert = load(session, alert_id)
    seen = alert_state(alert)
    if alert.status == AlertStatus.OPEN:
        raise Conflict(f"alert {alert_id} is open already")
    now = _now()
    _cas(session, alert, seen, {"status": AlertStatus.OPEN.value, "reviewed_at": None,
                                "reviewed_by": None, "note": _note(note), "assigned_to": None,
                                "assigned_at": None})
    record_review(session, alert, AlertStatus.OPEN.value, who.name, note, now)
    audit.append(session, [audit.Event(who.name, "reopen", alert.id, seen, alert_state(alert))],
                 at=now)
    return Outcome(alert)


def approve(session: Session, who: Principal, alert_id: int) -> Outcome:
    """A supervisor makes a proposed disposition final (never their own)."""
    _require(who, Perm.SUPERVISE)
    alert = load(session, alert_id)
    seen = alert_state(alert)
    if alert.status != AlertStatus.OPEN or alert.proposed_status is None:
        raise Conflict(f"alert {alert_id} has no decision waiting for approval")
    if alert.proposed_by == who.name:
        raise Forbidden("four-eyes: a decision needs another person's approval")
    now = _now()
    proposer, status, note = alert.proposed_by or "", alert.proposed_status, alert.proposed_note
    _finalise(session, alert, seen, status, proposer, note, now, approved_by=who.name)
    audit.append(session, [audit.Event(who.name, "approve", alert.id, seen, alert_state(alert))],
                 at=now)
    return Outcome(alert)


def return_decision(session: Session, who: Principal, alert_id: int,
                    comment: str | None) -> Outcome:
    """A supervisor sends a proposed disposition back to its analyst with a comment."""
    _require(who, Perm.SUPERVISE)
    comment = _note(comment)
    alert = load(session, alert_id)
    seen = alert_state(alert)
    if alert.status != AlertStatus.OPEN or alert.proposed_status is None:
        raise Conflict(f"alert {alert_id} has no decision waiting for approval")
    now = _now()
    _cas(session, alert, seen, _no_proposal())
    after = {**alert_state(alert), "comment": comment}
    audit.append(session, [audit.Event(who.name, "return", alert.id, seen, after)], at=now)
    return Outcome(alert, message="returned to " + str(seen["proposed_by"]))


@dataclass(frozen=True)
class BulkOutcome:
    """What a bulk close did to a card's open alerts."""

    decided: list[int]
    skipped: list[int]
    final: bool


def close_card(
    session: Session, who: Principal, customer_id: str, status: str, note: str | None,
    *, four_eyes: bool,
) -> BulkOutcome:
    """One decision for every open alert of a card that is unassigned or ``who``'s.

    Alerts held by someone else, or with another analyst's decision waiting
    for approval, are skipped and reported.
    """
    _require(who, Perm.WORK)
    card = clean_text(customer_id, "customer_id")
    if card is None:
        raise InputError("customer_id is required")
    if status not in DISPOSITIONS:
        raise InputError(f"status must be one of {', '.join(DISPOSITIONS)}")
    note = _note(note)
    alerts = list(session.scalars(
        select(Alert).where(Alert.customer_id == card, Alert.status == AlertStatus.OPEN.value)
        .order_by(Alert.id).limit(MAX_BULK).execution_options(populate_existing=True)
    ))
    now = _now()
    events: list[audit.Event] = []
    decided: list[int] = []
    skipped: list[int] = []
    for alert in alerts:
        mine = alert.assigned_to in (None, who.name)
        free = alert.proposed_status is None or alert.proposed_by == who.name
        if not (mine and free):
            skipped.append(alert.id)
            continue
        seen = alert_state(alert)
        if four_eyes:
            _cas(session, alert, seen, {
                "assigned_to": who.name, "assigned_at": alert.assigned_at or now,
                "proposed_status": status, "proposed_by": who.name, "proposed_note": note,
                "proposed_at": now,
            })
            events.append(audit.Event(who.name, "propose", alert.id, seen, alert_state(alert)))
        else:
            _finalise(session, alert, seen, status, who.name, note, now, approved_by=None)
            events.append(audit.Event(who.name, "decide", alert.id, seen, alert_state(alert)))
        decided.append(alert.id)
    audit.append(session, events, at=now)
    return BulkOutcome(decided, skipped, final=not four_eyes)
