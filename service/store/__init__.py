"""The SQL store: models, migrations, transactions and keyword-only store functions."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from .db import SessionFactory, make_engine, session_scope
from .status import JobStatus, SweepStatus, check_transition

__all__ = [
    "JobStatus",
    "SessionFactory",
    "Store",
    "SweepStatus",
    "check_transition",
    "make_engine",
    "session_scope",
]


@dataclass
class Store:
    """An engine and its sessions; `transaction()` is the one way to talk to the database."""

    engine: Engine
    sessions: SessionFactory

    @classmethod
    def connect(cls, url: str) -> Store:
        engine = make_engine(url)
        return cls(engine, sessionmaker(engine, expire_on_commit=False))

    def transaction(self) -> AbstractContextManager[Session]:
        return session_scope(self.sessions)

    def close(self) -> None:
        self.engine.dispose()
