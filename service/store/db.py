"""Engines and transactions. The store owns transactions: `session_scope()` commits, rolls back,
and wraps SQLAlchemy's errors in a StoreError."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from ..errors import StoreError

__all__ = [
    "SQLITE_BUSY_TIMEOUT_MS",
    "SQLITE_CONNECT_ARGS",
    "SessionFactory",
    "configure_sqlite",
    "make_engine",
    "read_only",
    "session_scope",
]

SessionFactory = sessionmaker[Session]

SQLITE_BUSY_TIMEOUT_MS = 30_000
SQLITE_CONNECT_ARGS = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False}
# An execution option of the engine that read-only sessions use (see `read_only`).
_READ_ONLY = "symopt_read_only"


def make_engine(url: str, **options: Any) -> Engine:
    """An engine for `url`; SQLite files get WAL, a busy timeout, foreign keys and IMMEDIATE writes."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20, **options)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    # As many pooled connections as the API has threads (anyio's 40): a connection beyond the
    # pool would be opened, configured (PRAGMAs) and closed again for one request.
    # Last in, first out: a few connections serve a light load, their page caches warm (first
    # in, first out would hand each request the coldest of the 40).
    options = {"pool_size": 40, "max_overflow": 10, "pool_use_lifo": True, **options}
    engine = create_engine(url, connect_args=SQLITE_CONNECT_ARGS, **options)
    configure_sqlite(engine)
    return engine


def configure_sqlite(engine: Engine) -> None:
    """How every SQLite engine of the service runs its transactions (the store's and Optuna's):
    WAL, a busy timeout, foreign keys, and BEGIN emitted by SQLAlchemy (deferred for reads,
    IMMEDIATE for writes). Attach before the engine's first connection."""

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, record: Any) -> None:
        # Let SQLAlchemy emit BEGIN itself (below) instead of the sqlite3 module's deferred one.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoints; safe with WAL
        cursor.close()
        record.info["query_only"] = False

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        read = bool(connection.get_execution_options().get(_READ_ONLY))
        info = connection.connection.info  # per pooled DBAPI connection, kept across checkouts
        if info.get("query_only") != read:
            # Outside any transaction (autocommit mode above); PRAGMA query_only makes a write in
            # a read-only session fail at once instead of waiting for the write lock.
            connection.exec_driver_sql(f"PRAGMA query_only={int(read)}")
            info["query_only"] = read
        # A read takes a deferred BEGIN: in WAL mode it reads a snapshot and never waits for the
        # writer. A write takes IMMEDIATE, the write lock at BEGIN: it never has to upgrade a read
        # lock, which SQLite refuses with "database is locked" instead of waiting for the busy timeout.
        connection.exec_driver_sql("BEGIN" if read else "BEGIN IMMEDIATE")


def read_only(engine: Engine) -> Engine:
    """The same engine (and pool) for read-only transactions: a deferred BEGIN with
    `PRAGMA query_only` on SQLite, `SET TRANSACTION READ ONLY` on PostgreSQL."""
    if engine.dialect.name == "sqlite":
        return engine.execution_options(**{_READ_ONLY: True})
    if engine.dialect.name == "postgresql":
        return engine.execution_options(postgresql_readonly=True)
    return engine


@contextmanager
def session_scope(factory: SessionFactory) -> Iterator[Session]:
    """A session in one transaction: committed on success, rolled back on any error."""
    session = factory()
    try:
        yield session
        session.commit()
    except SQLAlchemyError as error:
        session.rollback()
        raise StoreError(f"database error: {type(error).__name__}: {str(error).splitlines()[0]}") from error
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
