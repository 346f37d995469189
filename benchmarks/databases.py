"""A database of its own for one benchmark run: a fresh SQLite file, or a PostgreSQL database
created on the given server and dropped afterwards."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

__all__ = ["scratch_database"]


@contextmanager
def scratch_database(server_url: str | None, directory: Path) -> Iterator[str]:
    """The URL of an empty database: SQLite in `directory` when `server_url` is None, else a new
    database on that PostgreSQL server (dropped on exit)."""
    if not server_url or not server_url.startswith("postgresql"):
        yield server_url or f"sqlite:///{directory / 'symopt.db'}"
        return
    server, name = make_url(server_url), f"symopt_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
