"""Optuna's RDB storage in the store's own database: one per database URL and process.

On SQLite, Optuna's engine is configured as the store's is (`configure_sqlite`): every
transaction starts with BEGIN IMMEDIATE, so it takes the write lock up front and waits for it
(busy timeout) instead of failing. Left to the sqlite3 module, Optuna's read-then-write
transactions (tell: read the trial, then update it) would have to upgrade a read lock while the
scheduler or the API writes, and SQLite answers that with an immediate "database is locked",
whatever the timeout. RDBStorage passes `engine_kwargs` to create_engine but has no hook for
connection events, so they are attached to its engine right after it is built.
"""

from __future__ import annotations

import threading

import optuna
from sqlalchemy.engine import make_url

from ..store.db import SQLITE_CONNECT_ARGS, configure_sqlite

__all__ = ["optuna_storage"]

_storages: dict[str, optuna.storages.RDBStorage] = {}
_lock = threading.Lock()


def optuna_storage(url: str) -> optuna.storages.RDBStorage:
    """The process's Optuna storage for `url`, created on first use (which creates Optuna's
    tables if they are missing: let the scheduler's sweep controller be the first user)."""
    # One storage per URL, behind a lock: the API's threads and the scheduler's thread share it,
    # and two RDBStorage constructors creating Optuna's schema at once fail.
    with _lock:
        if url not in _storages:
            _storages[url] = _create(url)
        return _storages[url]


def _create(url: str) -> optuna.storages.RDBStorage:
    if make_url(url).get_backend_name() != "sqlite":
        return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
    storage = optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": SQLITE_CONNECT_ARGS})
    configure_sqlite(storage.engine)
    # The constructor's connections (schema check) predate the listeners: start afresh.
    storage.engine.dispose()
    return storage
