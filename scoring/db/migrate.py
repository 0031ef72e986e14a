"""Create or migrate the alerts schema with the Alembic scripts shipped in the package.

No ``alembic.ini`` is needed in the user's directory: the configuration is
built here and points at ``scoring/migrations`` wherever the package is installed.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from features.errors import InputError
from scoring.db.engine import in_memory, safe_url

#: The installed Alembic environment and revisions.
MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config() -> Config:
    """Build an Alembic configuration for the packaged migrations."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def head_revision() -> str:
    """Return the newest revision shipped with this version of the code."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError(f"no migrations found in {MIGRATIONS_DIR}")
    return head


def current_revision(engine: Engine) -> str | None:
    """Return the revision the database is at; ``None`` if it was never migrated."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> str:
    """Migrate the database to ``revision`` and return where it now stands.

    Idempotent: at the head already, nothing is executed.
    """
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
    current = current_revision(engine)
    if current is None:
        raise RuntimeError("the migration left no revision in alembic_version")
    return current


def require_schema(engine: Engine) -> None:
    """Fail with a clear :class:`InputError` unless the database is at the head revision.

    A SQLite file that does not exist is reported, not silently created.
    """
    url = engine.url
    missing_file = url.database and not in_memory(url) and not Path(url.database).exists()
    if url.get_backend_name() == "sqlite" and missing_file:
        raise InputError(f"no database file {url.database}; {_upgrade_hint(engine)}")
    current, head = current_revision(engine), head_revision()
    if current != head:
        raise InputError(
            f"the alerts schema of {safe_url(url)} is at revision {current or 'none'}, "
            f"this version of the code needs {head}; {_upgrade_hint(engine)}"
        )


def _upgrade_hint(engine: Engine) -> str:
    return f"run `fraud db upgrade --db {safe_url(engine.url)}`"
