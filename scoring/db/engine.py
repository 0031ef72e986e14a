"""Engines and sessions for the alerts database, tuned per backend.

SQLite (the default, one file) runs in WAL mode with a busy timeout so the
streaming scorer and the analyst's command line can share the file;
PostgreSQL (production) gets a pre-pinged, recycled connection pool and
time limits on everything that could otherwise wait forever: connecting,
each statement, waiting for a lock, an idle transaction, and TCP keepalives
that detect a half-open connection (:data:`POSTGRES_DEFAULTS`; any of them
can be overridden in the URL's query). Credentials come only from the URL,
which comes from the caller or ``FRAUD_DB_URL``; statements are logged and
raised without their parameters (card ids, amounts).
"""

from __future__ import annotations

import json
from datetime import date, datetime
from functools import partial
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.engine import URL
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker

from features.errors import InputError

#: How long a SQLite writer waits for another writer's lock, in milliseconds.
SQLITE_BUSY_TIMEOUT_MS = 30_000

#: libpq connection parameters set unless the URL's query sets them.
POSTGRES_DEFAULTS: dict[str, object] = {
    "connect_timeout": 10,
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    # Unacknowledged data on a dead connection fails within this (ms), not ~15 minutes.
    "tcp_user_timeout": 30_000,
}
#: Server-side limits (``SET`` at connect), unless the URL's ``options`` sets any.
POSTGRES_LIMITS = {
    "statement_timeout": "120s",
    "lock_timeout": "30s",
    "idle_in_transaction_session_timeout": "300s",
}


def parse_url(url: str | URL) -> URL:
    """Parse a database URL, turning a malformed one into an :class:`InputError`.

    The message never repeats the URL: a malformed one may still hold a password.
    """
    try:
        return make_url(url)
    except (ArgumentError, ValueError):
        raise InputError(
            "invalid database URL (expected e.g. sqlite:///fraud.db or "
            "postgresql://user@host:5432/db)"
        ) from None


def safe_url(url: str | URL) -> str:
    """Render the URL with its password masked, for messages and logs."""
    return parse_url(url).render_as_string(hide_password=True)


def make_engine(url: str | URL, **kwargs: Any) -> Engine:
    """Create an engine for ``url`` with the pool and connection settings of its backend.

    Extra keyword arguments go to :func:`sqlalchemy.create_engine` and win over
    the defaults chosen here.
    """
    parsed = parse_url(url)
    options: dict[str, Any] = {
        "json_serializer": partial(json.dumps, default=_json_default),
        "hide_parameters": True,
    }
    if parsed.get_backend_name() == "sqlite":
        options["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
    else:
        if parsed.get_backend_name() == "postgresql":
            options["connect_args"] = postgres_connect_args(parsed)
        if "poolclass" not in kwargs:  # pool sizing only applies to the default queue pool
            options.update(pool_pre_ping=True, pool_recycle=1800, pool_size=5, max_overflow=10)
    options.update(kwargs)
    engine = create_engine(parsed, **options)
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", partial(_configure_sqlite, wal=not in_memory(parsed)))
    return engine


def postgres_connect_args(url: URL) -> dict[str, object]:
    """The libpq parameters for ``url``: the defaults above, less what its query sets."""
    args = {k: v for k, v in POSTGRES_DEFAULTS.items() if k not in url.query}
    if "options" not in url.query:
        args["options"] = " ".join(f"-c {k}={v}" for k, v in POSTGRES_LIMITS.items())
    return args


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Create a session factory whose objects stay readable after commit."""
    return sessionmaker(engine, expire_on_commit=False)


def in_memory(url: URL) -> bool:
    """Tell whether ``url`` is an in-memory SQLite database."""
    return url.database in (None, "", ":memory:") or "mode=memory" in str(url)


def _configure_sqlite(dbapi_connection: Any, _record: Any, *, wal: bool) -> None:
    """WAL lets readers and one writer work at once; foreign keys enforce the audit link."""
    cursor = dbapi_connection.cursor()
    try:
        if wal:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def _json_default(value: Any) -> Any:
    """Serialise what feature snapshots commonly hold: numpy scalars and timestamps."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
