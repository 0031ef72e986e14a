"""CSRF protection: a synchronizer token per session, checked on every state-changing form.

Pages put the session's token in a hidden ``csrf_token`` field (htmx sends it
as the ``X-CSRF-Token`` header); a POST whose token does not match the
session's is refused with 403. The sign-in form, before any session exists,
uses a random token in a short-lived cookie that the form must repeat.
The JSON API takes bearer tokens only, never cookies, so it needs none.
"""

from __future__ import annotations

import hmac
import secrets

FIELD = "csrf_token"
HEADER = "x-csrf-token"
LOGIN_COOKIE = "wb_login_csrf"


def matches(expected: str | None, given: str | None) -> bool:
    """Constant-time comparison; a missing token never matches."""
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


def new_token() -> str:
    """A fresh random token."""
    return secrets.token_urlsafe(32)
