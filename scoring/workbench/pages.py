"""The server-rendered pages: the same service calls as the API, as HTML (Jinja2 + htmx).

Every POST carries the session's CSRF token (a hidden field, or htmx's
``X-CSRF-Token`` header) and answers with a redirect (post/redirect/get);
the pages work without JavaScript, htmx only spares full reloads.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from features.errors import InputError
from scoring.db.models import AlertStatus
from scoring.workbench import auth, cases, charts, csrf, stats
from scoring.workbench import queue as q
from scoring.workbench import sessions as web_sessions
from scoring.workbench.audit_view import audit_entries
from scoring.workbench.auth import Perm
from scoring.workbench.deps import (
    CsrfRefused,
    Ctx,
    Services,
    client_address,
    needs,
    page_ctx,
    services,
)
from scoring.workbench.reason_texts import display as reasons_display

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
router = APIRouter()

Reader = Annotated[Ctx, Depends(needs(Perm.READ, page_ctx))]
Auditor = Annotated[Ctx, Depends(needs(Perm.AUDIT, page_ctx))]
Admin = Annotated[Ctx, Depends(needs(Perm.USERS, page_ctx))]


async def form_ctx(request: Request, ctx: Ctx = Depends(page_ctx)) -> Ctx:  # noqa: B008
    """The signed-in user of a form post whose CSRF token matches the session's."""
    form = await request.form()
    given = form.get(csrf.FIELD) or request.headers.get(csrf.HEADER)
    if not csrf.matches(ctx.csrf_token, given if isinstance(given, str) else None):
        raise CsrfRefused("the form's security token is missing or stale; reload the page")
    return ctx


Poster = Annotated[Ctx, Depends(form_ctx)]


def render(request: Request, name: str, ctx: Ctx | None, status_code: int = 200,
           **values: Any) -> HTMLResponse:
    """A page with the common context (user, permissions, CSRF token, settings)."""
    context = {
        "request": request, "who": ctx.who if ctx else None,
        "can": (lambda p: ctx.who.can(Perm(p))) if ctx else (lambda p: False),
        "csrf_token": ctx.csrf_token if ctx else "",
        "settings": ctx.settings if ctx else None,
        "msg": request.query_params.get("msg", "")[:300], **values,
    }
    return TEMPLATES.TemplateResponse(request, name, context, status_code=status_code)


def _local(path: str | None, default: str) -> str:
    """A redirect target on this site only."""
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path:
        return default
    return path


def _back(path: str, msg: str = "") -> RedirectResponse:
    if msg:
        path += ("&" if "?" in path else "?") + urlencode({"msg": msg})
    return RedirectResponse(path, status_code=303)


# --- sign-in -------------------------------------------------------------------------------------


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request) -> HTMLResponse:
    """The sign-in form (its CSRF token rides in a short-lived cookie)."""
    token = csrf.new_token()
    response = render(request, "login.html", None, login_csrf=token,
                      next=_local(request.query_params.get("next"), "/queue"))
    secure = request.app.state.services.settings.secure_cookies
    response.set_cookie(csrf.LOGIN_COOKIE, token, max_age=600, httponly=True, samesite="lax",
                        secure=secure, path="/login")
    return response


@router.post("/login", response_model=None)
def login(
    request: Request,
    username: Annotated[str, Form(max_length=255)],
    password: Annotated[str, Form(max_length=1024)],
    csrf_token: Annotated[str, Form(max_length=200)] = "",
    next: Annotated[str, Form(max_length=500)] = "/queue",
    svc: Services = Depends(services),  # noqa: B008
) -> Response:
    """Check the password (throttled); start a session; go where the user was going."""
    if not csrf.matches(request.cookies.get(csrf.LOGIN_COOKIE), csrf_token):
        raise CsrfRefused("the sign-in form expired; reload it")
    settings = svc.settings
    try:
        with svc.tx() as session:
            who = auth.authenticate(
                session, username, password, client_address(request),
                window_seconds=settings.login_window_seconds,
                max_per_account=settings.max_failures_per_account,
                max_per_client=settings.max_failures_per_client,
            )
            cookie = None
            if who is not None:
                cookie, _ = web_sessions.start_session(session, who,
                                                       settings.session_absolute_seconds)
    except auth.LoginThrottled as err:
        return _login_again(request, str(err), 429)
    if who is None or cookie is None:
        return _login_again(request, "wrong user name or password", 401)
    response = RedirectResponse(_local(next, "/queue"), status_code=303)
    response.set_cookie(web_sessions.COOKIE, cookie, httponly=True, samesite="lax",
                        secure=settings.secure_cookies,
                        max_age=settings.session_absolute_seconds, path="/")
    response.delete_cookie(csrf.LOGIN_COOKIE, path="/login")
    return response


def _login_again(request: Request, error: str, status_code: int) -> HTMLResponse:
    token = csrf.new_token()
    response = render(request, "login.html", None, status_code=status_code, error=error,
                      login_csrf=token, next="/queue")
    response.set_cookie(csrf.LOGIN_COOKIE, token, max_age=600, httponly=True, samesite="lax",
                        secure=request.app.state.services.settings.secure_cookies,
                        path="/login")
    return response


@router.post("/logout")
def logout(request: Request, ctx: Poster) -> RedirectResponse:
    """End the session."""
    token = request.cookies.get(web_sessions.COOKIE, "")
    with ctx.tx() as session:
        web_sessions.end_session(session, token)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(web_sessions.COOKIE, path="/")
    return response


# --- the queue -----------------------------------------------------------------------------------


@router.get("/")
def home() -> RedirectResponse:
    """The queue is the start page."""
    return RedirectResponse("/queue", status_code=303)


def _float(value: str | None, name: str) -> float | None:
    if value is None or not value.strip():
        return None
    try:
        return float(value)
    except ValueError:
        raise InputError(f"{name} must be a number") from None


def _int(value: str | None, name: str) -> int | None:
    if value is None or not value.strip():
        return None
    try:
        return int(value)
    except ValueError:
        raise InputError(f"{name} must be a whole number") from None


def _date(value: str | None, name: str) -> datetime | None:
    if value is None or not value.strip():
        return None
    try:
        return datetime.fromisoformat(value.strip())
    except ValueError:
        raise InputError(f"{name} must be a date (YYYY-MM-DD)") from None


@router.get("/queue", response_class=HTMLResponse)
def queue_page(request: Request, ctx: Reader) -> HTMLResponse:
    """Alerts with filters, sort and cursor paging; ageing against the service level."""
    p = request.query_params
    pending = p.get("pending") == "1"
    f = q.make_filter(
        status=p.get("status", "open"), assignee=p.get("assignee"),
        start=_date(p.get("from"), "from"), end=_date(p.get("to"), "to"),
        min_amount=_float(p.get("min_amount"), "min_amount"),
        max_amount=_float(p.get("max_amount"), "max_amount"),
        min_score=_float(p.get("min_score"), "min_score"),
        customer_id=p.get("customer_id"), terminal_id=p.get("terminal_id"),
        model_version=_int(p.get("model_version"), "model_version"), pending=pending,
        sort=p.get("sort"), cursor=p.get("cursor"), default_limit=ctx.settings.page_size,
    )
    with ctx.tx() as session:
        page = q.queue_page(session, ctx.who, f)
        now = datetime.now(UTC)
        rows = [(a, q.ageing(a, ctx.settings.sla_hours, now)) for a in page.alerts]
    params = {k: v for k, v in p.items() if k not in ("cursor", "msg") and v}
    next_url = None
    if page.next_cursor:
        next_url = "/queue?" + urlencode({**params, "cursor": page.next_cursor})
    first_url = "/queue?" + urlencode(params) if f.cursor else None
    return render(request, "queue.html", ctx, rows=rows, f=f, params=params,
                  next_url=next_url, first_url=first_url, pending=pending,
                  here=request.url.path + ("?" + request.url.query if request.url.query else ""))


@router.get("/approvals")
def approvals(request: Request, ctx: Reader) -> RedirectResponse:
    """Decisions waiting for a supervisor's approval (the queue, filtered)."""
    return RedirectResponse("/queue?pending=1&assignee=anyone", status_code=303)


@router.post("/queue/next")
def take_next(ctx: Poster) -> RedirectResponse:
    """Claim the next alert and open it."""
    with ctx.tx() as session:
        alert = cases.next_alert(session, ctx.who)
        target = None if alert is None else alert.id
    if target is None:
        return _back("/queue", "No open, unassigned alert is left.")
    return _back(f"/alerts/{target}", "Assigned to you.")


# --- one alert -----------------------------------------------------------------------------------


@router.get("/alerts/{alert_id}", response_class=HTMLResponse)
def alert_page(request: Request, ctx: Reader, alert_id: int) -> HTMLResponse:
    """The transaction, its score and reasons, the card's and terminal's other alerts."""
    with ctx.tx() as session:
        alert = cases.load(session, alert_id)
        card, terminal = q.related(session, alert, ctx.settings.related_alerts)
        entries = audit_entries(session, alert_id=alert.id, limit=100)
        workers = []
        if ctx.who.can(Perm.SUPERVISE):
            workers = [u.name for u in auth.list_users(session)
                       if not u.disabled and Perm.WORK in auth.PERMISSIONS[auth.parse_role(u.role)]]
    lake_rows: list[dict[str, Any]] | None = None
    lake_error = ""
    if ctx.settings.lake is not None:
        from scoring.workbench.lake_view import card_transactions

        try:
            lake_rows = card_transactions(ctx.settings.lake, alert.customer_id,
                                          alert.event_time.date(), ctx.settings.lake_days)
        except (OSError, InputError, ValueError) as err:
            lake_error = f"the lake could not be read: {type(err).__name__}"
    now = datetime.now(UTC)
    return render(
        request, "alert.html", ctx, alert=alert, age=q.ageing(alert, ctx.settings.sla_hours, now),
        reasons=reasons_display(alert.reasons), card=card, terminal=terminal, entries=entries,
        workers=workers, lake_rows=lake_rows, lake_error=lake_error,
        features=sorted((alert.features or {}).items()), here=f"/alerts/{alert.id}",
        mine=alert.assigned_to == ctx.who.name, statuses=AlertStatus,
    )


@router.post("/alerts/{alert_id}/claim")
def claim(ctx: Poster, alert_id: int,
          next: Annotated[str, Form(max_length=500)] = "") -> RedirectResponse:
    """Assign to me."""
    with ctx.tx() as session:
        outcome = cases.claim(session, ctx.who, alert_id)
    return _back(_local(next, f"/alerts/{alert_id}"), outcome.message or "Assigned to you.")


@router.post("/alerts/{alert_id}/release")
def release(ctx: Poster, alert_id: int) -> RedirectResponse:
    """Back to the pool."""
    with ctx.tx() as session:
        cases.release(session, ctx.who, alert_id)
    return _back(f"/alerts/{alert_id}", "Released to the pool.")


@router.post("/alerts/{alert_id}/assign")
def assign(ctx: Poster, alert_id: int,
           assignee: Annotated[str, Form(max_length=64)]) -> RedirectResponse:
    """A supervisor reassigns."""
    with ctx.tx() as session:
        cases.assign(session, ctx.who, alert_id, assignee)
    return _back(f"/alerts/{alert_id}", f"Assigned to {assignee}.")


@router.post("/alerts/{alert_id}/decision")
def decide(ctx: Poster, alert_id: int, status: Annotated[str, Form(max_length=20)],
           note: Annotated[str, Form(max_length=cases.MAX_NOTE)] = "") -> RedirectResponse:
    """Confirm fraud, mark a false positive, or reopen."""
    with ctx.tx() as session:
        outcome = cases.decide(session, ctx.who, alert_id, status, note or None,
                               four_eyes=ctx.settings.four_eyes)
    msg = outcome.message or ("Reopened." if status == "open" else "Decision recorded.")
    return _back(f"/alerts/{alert_id}", msg)


@router.post("/alerts/{alert_id}/approve")
def approve(ctx: Poster, alert_id: int) -> RedirectResponse:
    """A supervisor approves (four-eyes)."""
    with ctx.tx() as session:
        cases.approve(session, ctx.who, alert_id)
    return _back(f"/alerts/{alert_id}", "Approved: the decision is final.")


@router.post("/alerts/{alert_id}/return")
def return_decision(ctx: Poster, alert_id: int,
                    comment: Annotated[str, Form(max_length=cases.MAX_NOTE)] = ""
                    ) -> RedirectResponse:
    """A supervisor returns a proposed decision with a comment."""
    with ctx.tx() as session:
        outcome = cases.return_decision(session, ctx.who, alert_id, comment or None)
    return _back(f"/alerts/{alert_id}", outcome.message)


@router.post("/cards/close")
def close_card(ctx: Poster, customer_id: Annotated[str, Form(max_length=255)],
               status: Annotated[str, Form(max_length=20)],
               note: Annotated[str, Form(max_length=cases.MAX_NOTE)] = "",
               back: Annotated[str, Form(max_length=500)] = "/queue") -> RedirectResponse:
    """One decision for every open alert of the card."""
    with ctx.tx() as session:
        out = cases.close_card(session, ctx.who, customer_id, status, note or None,
                               four_eyes=ctx.settings.four_eyes)
    word = "decided" if out.final else "proposed for approval"
    msg = f"{len(out.decided)} alert(s) of the card {word}"
    if out.skipped:
        msg += f"; {len(out.skipped)} held by someone else left alone"
    return _back(_local(back, "/queue"), msg + ".")


# --- dashboard, audit, users ---------------------------------------------------------------------


#: How long the dashboard's figures are reused: one page view draws seven charts from them.
FIGURES_TTL_SECONDS = 15.0
_FIGURES_LOCK = threading.Lock()


def _figures(ctx: Ctx) -> dict[str, Any]:
    """The dashboard's figures, computed at most every few seconds per visibility."""
    key = ("figures", ctx.who.can(Perm.AUDIT))
    now = time.monotonic()
    with _FIGURES_LOCK:
        cached = ctx.svc.cache.get(key)
        if cached is not None and now - cached[0] < FIGURES_TTL_SECONDS:
            return cached[1]
    with ctx.tx() as session:
        figures = stats.summary(session, key[1])
    with _FIGURES_LOCK:
        ctx.svc.cache[key] = (now, figures)
    return figures


@router.get("/dashboard", response_class=HTMLResponse)
def dashboard(request: Request, ctx: Reader) -> HTMLResponse:
    """Charts and the threshold-versus-capacity table."""
    figures = _figures(ctx)
    names = [c for c in charts.CHARTS if c != "workload" or "workload" in figures]
    return render(request, "dashboard.html", ctx, s=figures, charts=names)


@router.get("/dashboard/charts/{name}.svg")
def chart(ctx: Reader, name: str) -> Response:
    """One chart as SVG."""
    if name not in charts.CHARTS or (name == "workload" and not ctx.who.can(Perm.AUDIT)):
        raise cases.NotFound(f"no chart {name!r}")
    return Response(charts.render(name, _figures(ctx)), media_type="image/svg+xml",
                    headers={"Cache-Control": "private, max-age=30"})


@router.get("/audit", response_class=HTMLResponse)
def audit_page(request: Request, ctx: Auditor) -> HTMLResponse:
    """The latest audit entries (optionally of one alert)."""
    alert_id = _int(request.query_params.get("alert_id"), "alert_id")
    with ctx.tx() as session:
        entries = audit_entries(session, alert_id=alert_id, limit=300)
    return render(request, "audit.html", ctx, entries=entries, alert_id=alert_id)


@router.get("/users", response_class=HTMLResponse)
def users_page(request: Request, ctx: Admin) -> HTMLResponse:
    """Users: add, disable, issue API tokens (admins only)."""
    with ctx.tx() as session:
        users = auth.list_users(session)
    return render(request, "users.html", ctx, users=users,
                  token=request.query_params.get("token_for", ""))


def _admin(ctx: Ctx) -> None:
    if not ctx.who.can(Perm.USERS):
        raise q.Forbidden("only an admin manages users")


@router.post("/users")
def add_user(ctx: Poster, name: Annotated[str, Form(max_length=64)],
             role: Annotated[str, Form(max_length=20)],
             password: Annotated[str, Form(max_length=1024)]) -> RedirectResponse:
    """Create a user."""
    _admin(ctx)
    with ctx.tx() as session:
        auth.add_user(session, name, role, password, ctx.who.name)
    return _back("/users", f"User {name} added.")


@router.post("/users/{name}/disable")
def disable_user(ctx: Poster, name: str) -> RedirectResponse:
    """Disable a user (their sessions and tokens stop at once)."""
    _admin(ctx)
    if name == ctx.who.name:
        raise InputError("you cannot disable yourself")
    with ctx.tx() as session:
        auth.disable_user(session, name, ctx.who.name)
    return _back("/users", f"User {name} disabled.")


@router.post("/users/{name}/token", response_class=HTMLResponse)
def new_token(request: Request, ctx: Poster, name: str) -> HTMLResponse:
    """Issue an API token, shown once on this page (never in a URL)."""
    _admin(ctx)
    with ctx.tx() as session:
        token = auth.create_token(session, name, ctx.who.name)
        users = auth.list_users(session)
    return render(request, "users.html", ctx, users=users, new_token=token, token_user=name)


@router.get("/healthz")
def healthz(svc: Services = Depends(services)) -> dict[str, str]:  # noqa: B008
    """Liveness and database reachability (no sign-in needed)."""
    from sqlalchemy import text

    with svc.tx() as session:
        session.execute(text("SELECT 1"))
    return {"status": "ok"}


def login_redirect(path: str) -> RedirectResponse:
    """Where an unauthenticated page request goes."""
    return RedirectResponse("/login?next=" + quote(path, safe="/?=&"), status_code=303)
