"""Alembic environment of symopt's store.

Our version table is `symopt_alembic_version` and only `symopt_*` tables are compared, because
Optuna keeps its own tables and its own `alembic_version` in the same database.
"""

from __future__ import annotations

import os
from typing import Any

from alembic import context

from service.store.db import make_engine
from service.store.models import Base

VERSION_TABLE = "symopt_alembic_version"


def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    if type_ == "table":
        return bool(name and name.startswith("symopt_"))
    return True


def database_url() -> str:
    url = context.config.attributes.get("url") or context.config.get_main_option("sqlalchemy.url")
    url = url or os.environ.get("SYMOPT_DATABASE_URL")
    if not url:
        raise RuntimeError(
            "No database URL: set SYMOPT_DATABASE_URL (e.g. postgresql+psycopg://user@host/db)"
        )
    return str(url)


def configure(**options: Any) -> None:
    context.configure(
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        include_object=include_object,
        render_as_batch=True,  # SQLite alters tables by copying them
        compare_type=True,
        **options,
    )


if context.is_offline_mode():
    configure(url=database_url(), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
    else:
        engine = make_engine(database_url())
        with engine.connect() as connection:
            configure(connection=connection)
            with context.begin_transaction():
                context.run_migrations()
        engine.dispose()
