"""Alembic from Python: upgrade, downgrade, and where a database stands."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from ..errors import DatabaseBehindError
from .db import make_engine

__all__ = ["MIGRATIONS", "current_revision", "downgrade", "ensure_schema", "head_revision", "upgrade"]

# migrations/ sits beside the service package in the source tree (and in the Docker image).
MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"
VERSION_TABLE = "symopt_alembic_version"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["url"] = url
    return config


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(url), revision)


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config("")).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()


def ensure_schema(url: str, *, migrate: bool) -> None:
    """Bring the database to head (migrate=True, the embedded default), or refuse to run on one
    that is behind (production), saying which command upgrades it."""
    if migrate:
        upgrade(url)
        return
    engine = make_engine(url)
    try:
        current, head = current_revision(engine), head_revision()
    finally:
        engine.dispose()
    if current != head:
        raise DatabaseBehindError(
            f"The database is at revision {current or 'none (empty)'}, this code needs {head}. Upgrade it "
            "with `symopt migrate` (or `alembic upgrade head`) with SYMOPT_DATABASE_URL set to it."
        )
