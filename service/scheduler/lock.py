"""One scheduler per SQLite database, enforced with an exclusive lock on a file beside it."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from sqlalchemy.engine import make_url

from ..errors import ConflictError

__all__ = ["SchedulerLock"]


class SchedulerLock:
    """exclusive=True: this scheduler is the only one (SQLite); False: PostgreSQL, no lock needed
    (schedulers share the queue through FOR UPDATE SKIP LOCKED)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._handle: int | None = None

    @property
    def exclusive(self) -> bool:
        return self.path is not None

    @classmethod
    def for_url(cls, url: str) -> SchedulerLock:
        parsed = make_url(url)
        if parsed.get_backend_name() != "sqlite" or not parsed.database:
            return cls(None)
        return cls(Path(parsed.database).expanduser().with_suffix(".scheduler.lock"))

    def acquire(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(handle)
            raise ConflictError(
                f"Another scheduler already runs on this SQLite database (lock {self.path}); SQLite allows "
                "one. Stop it, or use PostgreSQL to run several."
            ) from None
        os.write(handle, str(os.getpid()).encode())
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            os.close(self._handle)
            self._handle = None
