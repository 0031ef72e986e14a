"""Alembic environment of the alerts database.

Run programmatically by :func:`scoring.db.migrate.upgrade`, which passes an open
connection in ``config.attributes["connection"]``; from the command line
(``alembic -c scoring/migrations/alembic.ini ...``) the URL comes from
``FRAUD_DB_URL`` or ``sqlalchemy.url``.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy.engine import Connection

from scoring.db import DEFAULT_DB_URL
from scoring.db.engine import make_engine
from scoring.db.models import Base

config = context.config
target_metadata = Base.metadata


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        # SQLite cannot ALTER most things: migrations rebuild tables in batch mode.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    """Emit the migration SQL for the configured URL without connecting."""
    context.configure(
        url=_url(), target_metadata=target_metadata, literal_binds=True, compare_type=True
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Migrate over the caller's connection, or over a new one to the configured URL."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        return
    engine = make_engine(_url())
    try:
        with engine.connect() as new_connection:
            _configure(new_connection)
    finally:
        engine.dispose()


def _url() -> str:
    configured = config.get_main_option("sqlalchemy.url")
    return os.environ.get("FRAUD_DB_URL") or configured or DEFAULT_DB_URL


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
