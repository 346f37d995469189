"""Which controller drives a sweep or a study: rows carry an owner and a heartbeat."""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from .models import utcnow
from .status import SweepStatus

__all__ = ["claim_active"]

T = TypeVar("T")

_ACTIVE = [SweepStatus.QUEUED, SweepStatus.RUNNING, SweepStatus.CANCELLING]


def claim_active(*, session: Session, model: type[T], owner: str, stale_before: datetime) -> list[T]:
    """Active rows of `model` (sweeps, studies) this controller owns, or that nobody owns, or whose
    owner went quiet before `stale_before`; they become this owner's, heartbeat now. On
    PostgreSQL rows another controller is claiming right now are skipped (SKIP LOCKED)."""
    table: Any = model
    query = (
        select(model)
        .where(
            table.status.in_(_ACTIVE),
            or_(
                table.owner == owner,
                table.owner.is_(None),
                table.heartbeat_at.is_(None),
                table.heartbeat_at < stale_before,
            ),
        )
        .order_by(table.created_at)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    claimed = list(session.scalars(query))
    now = utcnow()
    for row in claimed:
        row_: Any = row
        row_.owner, row_.heartbeat_at = owner, now
    return claimed
