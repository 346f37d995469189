"""Reading the objects a tenant owns (sweeps, studies): one by id, or a page of them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from ..errors import NotFoundError

__all__ = ["get_owned", "page_of"]

T = TypeVar("T")


def get_owned(session: Session, model: type[T], *, tenant_id: str | None, object_id: str, kind: str) -> T:
    """The `kind` (for the message) `object_id` of the tenant (tenant_id=None: any tenant); a
    NotFoundError otherwise: another tenant's objects are not found either."""
    table: Any = model
    query = select(model).where(table.id == object_id)
    if tenant_id is not None:
        query = query.where(table.tenant_id == tenant_id)
    found = session.scalar(query)
    if found is None:
        raise NotFoundError(f"No {kind} {object_id}")
    return found


def page_of(
    session: Session,
    query: Select[Any],
    model: type[T],
    *,
    statuses: Sequence[str],
    limit: int,
    offset: int,
) -> tuple[list[T], int]:
    """A page of `query` newest first, and how many rows match in all; `statuses` filter it."""
    table: Any = model
    if statuses:
        query = query.where(table.status.in_(list(statuses)))
    count = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    page = session.scalars(
        query.order_by(table.created_at.desc(), table.id.desc()).limit(limit).offset(offset)
    )
    return list(page), count
