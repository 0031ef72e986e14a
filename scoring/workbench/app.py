"""The application factory: routes, error handling, security headers, access log."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from features.errors import InputError
from scoring.db.engine import make_engine, make_sessionmaker
from scoring.db.repository import UnknownAlertError
from scoring.workbench import api, pages
from scoring.workbench.auth import LoginThrottled
from scoring.workbench.cases import Conflict, NotFound
from scoring.workbench.deps import CsrfRefused, NotSignedIn, Services
from scoring.workbench.queue import Forbidden
from scoring.workbench.settings import WorkbenchSettings

ACCESS_LOG = logging.getLogger("fraud.workbench.access")
STATIC = Path(__file__).parent / "static"

#: Content-Security-Policy of every response: this site's own scripts, styles and images only.
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")

_STATUS = {
    NotSignedIn: 401, Forbidden: 403, CsrfRefused: 403, NotFound: 404, UnknownAlertError: 404,
    Conflict: 409, InputError: 422, LoginThrottled: 429,
}


def create_app(settings: WorkbenchSettings) -> FastAPI:
    """The workbench over ``settings.db_url`` (migrated to the current schema)."""
    from scoring.db.migrate import require_schema

    engine = make_engine(settings.db_url)
    require_schema(engine)
    app = FastAPI(
        title="Fraud workbench API", version="1",
        description="The analyst workbench's JSON API: the queue, case actions, audit, figures.",
        openapi_url="/api/v1/openapi.json", docs_url=None, redoc_url=None,
    )
    app.state.services = Services(settings, make_sessionmaker(engine))
    app.state.engine = engine
    app.include_router(api.router)
    app.include_router(pages.router, include_in_schema=False)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    for kind, code in _STATUS.items():
        app.add_exception_handler(kind, _handler(code))
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http_error)

    @app.middleware("http")
    async def headers_and_log(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "same-origin"
        if not request.url.path.startswith("/static/"):
            response.headers.setdefault("Cache-Control", "no-store")
        # The path only, never the query string (card ids, amounts); never a body.
        ACCESS_LOG.info("%s %s %d %.1fms user=%s", request.method, request.url.path,
                        response.status_code, 1000 * (time.perf_counter() - started),
                        getattr(request.state, "user", "-"))
        return response

    @app.on_event("shutdown")
    def _dispose() -> None:
        engine.dispose()

    return app


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def _handler(code: int) -> Callable[[Request, Exception], Awaitable[Response]]:
    async def handle(request: Request, exc: Exception) -> Response:
        detail = str(exc) or exc.__class__.__name__
        if _wants_json(request):
            headers = {"WWW-Authenticate": "Bearer"} if code == 401 else None
            return JSONResponse({"detail": detail}, status_code=code, headers=headers)
        if code == 401:
            target = request.url.path if request.method == "GET" else "/queue"
            return pages.login_redirect(target)
        return pages.render(request, "error.html", None, status_code=code, code=code,
                            detail=detail)

    return handle


async def _validation(request: Request, exc: Exception) -> Response:
    errors = list(exc.errors()) if isinstance(exc, RequestValidationError) else []
    if _wants_json(request):
        return JSONResponse({"detail": _plain(errors)}, status_code=422)
    text = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ())[1:])}: {e.get('msg')}"
                     for e in errors)
    return pages.render(request, "error.html", None, status_code=422, code=422, detail=text)


def _plain(errors: list[Any]) -> list[dict[str, object]]:
    """Validation errors without the offending input echoed back (it may be a card id)."""
    return [{"loc": e.get("loc"), "msg": e.get("msg"), "type": e.get("type")} for e in errors]


async def _http_error(request: Request, exc: Exception) -> Response:
    code = exc.status_code if isinstance(exc, StarletteHTTPException) else 500
    detail = exc.detail if isinstance(exc, StarletteHTTPException) else "error"
    if _wants_json(request) or code not in (403, 404, 405):
        return JSONResponse({"detail": detail}, status_code=code,
                            headers=getattr(exc, "headers", None))
    return pages.render(request, "error.html", None, status_code=code, code=code, detail=detail)
