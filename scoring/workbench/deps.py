"""Request plumbing shared by the pages and the API: the database, who is asking, errors.

Each request works in explicit transactions (``with ctx.tx() as session:``),
committed before the response is built, so a response never reports a
change that is not committed yet.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from scoring.workbench import sessions as web_sessions
from scoring.workbench.auth import Perm, Principal, user_for_token
from scoring.workbench.queue import Forbidden
from scoring.workbench.settings import WorkbenchSettings


class NotSignedIn(Exception):  # noqa: N818 - maps to 401 / the sign-in page
    """No valid session cookie or API token."""


class CsrfRefused(Exception):  # noqa: N818 - maps to 403
    """A state-changing form without the session's CSRF token."""


@dataclass
class Services:
    """What the application holds for its requests (``app.state.services``)."""

    settings: WorkbenchSettings
    sessions: sessionmaker[Session]
    #: Short-lived derived values (the dashboard's figures), per application.
    cache: dict[Any, Any] = field(default_factory=dict)

    @contextmanager
    def tx(self) -> Iterator[Session]:
        """A session in a transaction, committed on success, rolled back on error."""
        with self.sessions.begin() as session:
            yield session


def services(request: Request) -> Services:
    """The application's services."""
    found: Services = request.app.state.services
    return found


@dataclass(frozen=True)
class Ctx:
    """One request's principal and services (and the CSRF token of its session)."""

    who: Principal
    svc: Services
    csrf_token: str = ""

    @property
    def settings(self) -> WorkbenchSettings:
        """The application's settings."""
        return self.svc.settings

    def tx(self) -> AbstractContextManager[Session]:
        """See :meth:`Services.tx`."""
        return self.svc.tx()


def client_address(request: Request) -> str:
    """The client's address (for throttling only; never logged)."""
    return request.client.host if request.client else "unknown"


BEARER = HTTPBearer(auto_error=False, description="an API token from `fraud users token NAME`")


def api_ctx(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Depends(BEARER),  # noqa: B008
    svc: Services = Depends(services),  # noqa: B008
) -> Ctx:
    """The API caller, from ``Authorization: Bearer <token>``; 401 otherwise."""
    token = credentials.credentials.strip() if credentials else None
    if token is None or len(token) > 200:
        raise NotSignedIn("an API token is required (Authorization: Bearer <token>)")
    with svc.tx() as session:
        who = user_for_token(session, token)
    if who is None:
        raise NotSignedIn("unknown, revoked or disabled API token")
    request.state.user = who.name
    return Ctx(who, svc)


def page_ctx(request: Request, svc: Services = Depends(services)) -> Ctx:  # noqa: B008
    """The signed-in browser user, from the session cookie; otherwise the sign-in page."""
    token = request.cookies.get(web_sessions.COOKIE)
    if not token or len(token) > 200:
        raise NotSignedIn("sign in first")
    with svc.tx() as session:
        signed = web_sessions.load_session(session, token, svc.settings.session_idle_seconds)
    if signed is None:
        raise NotSignedIn("your session has ended; sign in again")
    request.state.user = signed.principal.name
    return Ctx(signed.principal, svc, signed.csrf_token)


def needs(perm: Perm, source: Callable[..., Ctx]) -> Callable[..., Ctx]:
    """A dependency: the request's context, when its principal holds ``perm``; else 403."""

    def check(ctx: Ctx = Depends(source)) -> Ctx:  # noqa: B008
        if not ctx.who.can(perm):
            raise Forbidden(f"the {ctx.who.role.value} role may not do this")
        return ctx

    return check
