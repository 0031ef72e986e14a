"""The JSON API under ``/api/v1``: the same service calls as the pages, as JSON.

``Authorization: Bearer <token>`` (``fraud users token NAME``); the role rules
are the pages'. Errors are ``{"detail": ...}`` with 401, 403, 404, 409 or 422.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Path, Query
from pydantic import BaseModel, Field

from scoring.db.models import Alert
from scoring.workbench import cases, stats
from scoring.workbench import queue as q
from scoring.workbench.audit_view import audit_entries
from scoring.workbench.auth import Perm
from scoring.workbench.deps import Ctx, api_ctx, needs

router = APIRouter(prefix="/api/v1")

Reader = Annotated[Ctx, Depends(needs(Perm.READ, api_ctx))]
Worker = Annotated[Ctx, Depends(needs(Perm.WORK, api_ctx))]
Supervisor = Annotated[Ctx, Depends(needs(Perm.SUPERVISE, api_ctx))]
AlertId = Annotated[int, Path(ge=1, le=2**31 - 1, description="The alert's id.")]


class Error(BaseModel):
    """Every error's body."""

    detail: Any


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": Error, "description": text}
    for code, text in {401: "no valid API token", 403: "the role may not do this",
                       404: "no such alert", 409: "conflicting claim or decision",
                       422: "invalid parameters"}.items()
}


class Reason(BaseModel):
    """One reason code: an input group and how much it raised the score."""

    group: str
    contribution: float
    text: str


class AlertOut(BaseModel):
    """An alert as the API returns it."""

    id: int
    transaction_id: str
    customer_id: str
    terminal_id: str
    amount: float
    event_time: str
    score: float
    threshold: float
    model_version: int
    status: str
    created_at: str
    reviewed_at: str | None
    reviewed_by: str | None
    note: str | None
    assigned_to: str | None
    assigned_at: str | None
    proposed_status: str | None
    proposed_by: str | None
    proposed_note: str | None
    reasons: list[Reason]
    age_hours: float
    sla_state: str
    features: dict[str, Any] | None = None


class AlertList(BaseModel):
    """One page of alerts and the cursor of the next page (null on the last)."""

    items: list[AlertOut]
    next_cursor: str | None


class AuditOut(BaseModel):
    """One audit entry."""

    id: int
    seq: int
    at: str
    actor: str
    action: str
    alert_id: int | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    hash: str


class AlertDetail(BaseModel):
    """An alert with its reasons, the card's and the terminal's other alerts, its audit."""

    alert: AlertOut
    card_alerts: list[AlertOut]
    terminal_alerts: list[AlertOut]
    audit: list[AuditOut]
    four_eyes: bool


class ActionOut(BaseModel):
    """The alert after an action; ``final`` is false for a decision waiting for approval."""

    alert: AlertOut
    final: bool
    message: str


class DecisionIn(BaseModel):
    """A disposition (or ``open`` to reopen) with a note for the audit trail."""

    status: Literal["confirmed_fraud", "false_positive", "open"]
    note: str | None = Field(default=None, max_length=cases.MAX_NOTE)


class AssignIn(BaseModel):
    """Whom a supervisor gives the alert to."""

    assignee: str = Field(min_length=1, max_length=64)


class ReturnIn(BaseModel):
    """Why a supervisor sends a decision back."""

    comment: str | None = Field(default=None, max_length=cases.MAX_NOTE)


class BulkIn(BaseModel):
    """One decision for every open alert of a card."""

    customer_id: str = Field(min_length=1, max_length=255)
    status: Literal["confirmed_fraud", "false_positive"]
    note: str | None = Field(default=None, max_length=cases.MAX_NOTE)


class BulkOut(BaseModel):
    """Which alerts the bulk close decided, and which it skipped (held by others)."""

    decided: list[int]
    skipped: list[int]
    final: bool


def alert_out(alert: Alert, ctx: Ctx, with_features: bool = False) -> AlertOut:
    """An alert as JSON, with its ageing against the service level."""
    data = alert.to_dict()
    age = q.ageing(alert, ctx.settings.sla_hours)
    data.update(age_hours=round(age.hours, 3), sla_state=age.state,
                reasons=[r for r in data["reasons"] if isinstance(r, dict)])
    if not with_features:
        data["features"] = None
    return AlertOut.model_validate(data)


def _action(outcome: cases.Outcome, ctx: Ctx) -> ActionOut:
    return ActionOut(alert=alert_out(outcome.alert, ctx), final=outcome.final,
                     message=outcome.message)


FiniteFloat = Annotated[float | None, Query(allow_inf_nan=False)]


@router.get("/alerts", response_model=AlertList, responses=ERRORS)
def list_alerts(
    ctx: Reader,
    status: Annotated[Literal["open", "confirmed_fraud", "false_positive", "all"] | None,
                      Query(description="Default: open.")] = "open",
    assignee: Annotated[str | None, Query(max_length=64,
                                          description="me, none, anyone or a user name")] = None,
    from_: Annotated[datetime | None, Query(alias="from",
                                            description="event time at or after")] = None,
    to: Annotated[datetime | None, Query(description="event time before")] = None,
    min_score: Annotated[float | None, Query(ge=0, le=1)] = None,
    min_amount: FiniteFloat = None,
    max_amount: FiniteFloat = None,
    customer_id: Annotated[str | None, Query(max_length=255)] = None,
    terminal_id: Annotated[str | None, Query(max_length=255)] = None,
    model_version: Annotated[int | None, Query(ge=0, le=2**31 - 1)] = None,
    pending: Annotated[bool, Query(description="only decisions waiting for approval")] = False,
    sort: Literal["score", "time", "amount"] = "score",
    cursor: Annotated[str | None, Query(max_length=400)] = None,
    limit: Annotated[int, Query(ge=1, le=q.MAX_LIMIT)] = 50,
) -> AlertList:
    """Alerts by score (highest first), time (oldest first) or amount, a page at a time."""
    f = q.make_filter(status=status, assignee=assignee, start=from_, end=to,
                      min_score=min_score, min_amount=min_amount, max_amount=max_amount,
                      customer_id=customer_id, terminal_id=terminal_id,
                      model_version=model_version, pending=pending, sort=sort, cursor=cursor,
                      limit=limit)
    with ctx.tx() as session:
        page = q.queue_page(session, ctx.who, f)
        items = [alert_out(a, ctx) for a in page.alerts]
    return AlertList(items=items, next_cursor=page.next_cursor)


@router.post("/alerts/next", response_model=ActionOut, responses=ERRORS)
def next_alert(ctx: Worker) -> ActionOut:
    """Claim the highest-scored (then oldest) open, unassigned alert; 404 when there is none."""
    with ctx.tx() as session:
        alert = cases.next_alert(session, ctx.who)
        if alert is None:
            raise cases.NotFound("no open, unassigned alert")
        return ActionOut(alert=alert_out(alert, ctx), final=True, message="claimed")


@router.get("/alerts/{alert_id}", response_model=AlertDetail, responses=ERRORS)
def get_alert(ctx: Reader, alert_id: AlertId) -> AlertDetail:
    """An alert with its reason codes, features, the card's and terminal's other alerts."""
    with ctx.tx() as session:
        alert = cases.load(session, alert_id)
        card, terminal = q.related(session, alert, ctx.settings.related_alerts)
        entries = audit_entries(session, alert_id=alert.id, limit=200)
        return AlertDetail(
            alert=alert_out(alert, ctx, with_features=True),
            card_alerts=[alert_out(a, ctx) for a in card],
            terminal_alerts=[alert_out(a, ctx) for a in terminal],
            audit=[AuditOut.model_validate(e.to_dict()) for e in entries],
            four_eyes=ctx.settings.four_eyes,
        )


@router.post("/alerts/{alert_id}/claim", response_model=ActionOut, responses=ERRORS)
def claim(ctx: Worker, alert_id: AlertId) -> ActionOut:
    """Assign the alert to the caller; 409 if someone else holds it."""
    with ctx.tx() as session:
        return _action(cases.claim(session, ctx.who, alert_id), ctx)


@router.post("/alerts/{alert_id}/release", response_model=ActionOut, responses=ERRORS)
def release(ctx: Worker, alert_id: AlertId) -> ActionOut:
    """Put the alert back in the pool (its holder, or a supervisor)."""
    with ctx.tx() as session:
        return _action(cases.release(session, ctx.who, alert_id), ctx)


@router.post("/alerts/{alert_id}/assign", response_model=ActionOut, responses=ERRORS)
def assign(ctx: Supervisor, alert_id: AlertId, body: AssignIn) -> ActionOut:
    """A supervisor gives the alert to another analyst."""
    with ctx.tx() as session:
        return _action(cases.assign(session, ctx.who, alert_id, body.assignee), ctx)


@router.post("/alerts/{alert_id}/decision", response_model=ActionOut, responses=ERRORS)
def decide(ctx: Worker, alert_id: AlertId, body: DecisionIn) -> ActionOut:
    """Decide the alert (``open`` reopens it); with four-eyes, a proposal until approved."""
    with ctx.tx() as session:
        outcome = cases.decide(session, ctx.who, alert_id, body.status, body.note,
                               four_eyes=ctx.settings.four_eyes)
        return _action(outcome, ctx)


@router.post("/alerts/{alert_id}/approve", response_model=ActionOut, responses=ERRORS)
def approve(ctx: Supervisor, alert_id: AlertId) -> ActionOut:
    """A supervisor makes another analyst's proposed decision final."""
    with ctx.tx() as session:
        return _action(cases.approve(session, ctx.who, alert_id), ctx)


@router.post("/alerts/{alert_id}/return", response_model=ActionOut, responses=ERRORS)
def return_decision(ctx: Supervisor, alert_id: AlertId,
                    body: Annotated[ReturnIn, Body()]) -> ActionOut:
    """A supervisor sends a proposed decision back with a comment."""
    with ctx.tx() as session:
        return _action(cases.return_decision(session, ctx.who, alert_id, body.comment), ctx)


@router.post("/cards/close", response_model=BulkOut, responses=ERRORS)
def close_card(ctx: Worker, body: BulkIn) -> BulkOut:
    """One decision for all open alerts of a card (unassigned or the caller's)."""
    with ctx.tx() as session:
        out = cases.close_card(session, ctx.who, body.customer_id, body.status, body.note,
                               four_eyes=ctx.settings.four_eyes)
    return BulkOut(decided=out.decided, skipped=out.skipped, final=out.final)


@router.get("/audit", response_model=list[AuditOut], responses=ERRORS)
def audit(
    ctx: Reader,
    alert_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[AuditOut]:
    """Audit entries, newest first: of one alert (any reader), or all (supervisor, admin)."""
    if alert_id is None and not ctx.who.can(Perm.AUDIT):
        raise q.Forbidden("only supervisors and admins read the whole audit trail")
    with ctx.tx() as session:
        if alert_id is not None:
            cases.load(session, alert_id)
        entries = audit_entries(session, alert_id=alert_id, limit=limit)
        return [AuditOut.model_validate(e.to_dict()) for e in entries]


@router.get("/stats", responses=ERRORS)
def get_stats(ctx: Reader) -> dict[str, Any]:
    """The dashboard's figures; ``workload`` for supervisors and admins only."""
    with ctx.tx() as session:
        return stats.summary(session, ctx.who.can(Perm.AUDIT))

