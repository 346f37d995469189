"""The SQL store: models, migrations, transactions and keyword-only store functions."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from .db import SessionFactory, make_engine, read_only, session_scope
from .status import JobStatus, SweepStatus, check_transition

__all__ = [
    "JobStatus",
    "SessionFactory",
    "Store",
    "SweepStatus",
    "check_transition",
    "make_engine",
    "read_only",
    "session_scope",
]


@dataclass
class Store:
    """An engine and its sessions; `transaction()` and `read()` are the ways to talk to the database."""

    engine: Engine
    sessions: SessionFactory
    read_sessions: SessionFactory = field(init=False, repr=False)  # same pool, read-only transactions

    def __post_init__(self) -> None:
        self.read_sessions = sessionmaker(read_only(self.engine), expire_on_commit=False)

    @classmethod
    def connect(cls, url: str) -> Store:
        engine = make_engine(url)
        return cls(engine, sessionmaker(engine, expire_on_commit=False))

    def transaction(self) -> AbstractContextManager[Session]:
        """A read-write transaction (on SQLite it holds the write lock from BEGIN to commit)."""
        return session_scope(self.sessions)

    def read(self) -> AbstractContextManager[Session]:
        """A read-only transaction: on SQLite it takes no lock and runs beside a writer (WAL
        snapshot), so GET requests never queue behind the scheduler's writes; any write in it
        fails (StoreError) on SQLite and PostgreSQL alike."""
        return session_scope(self.read_sessions)

    def close(self) -> None:
        self.engine.dispose()
