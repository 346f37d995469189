"""Idempotent creation: a POST retried with the same Idempotency-Key within 24 h gets the object
the first one created, never a second one (a lost response must not queue the same work twice)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .models import utcnow

__all__ = ["IDEMPOTENCY_WINDOW", "add_once"]

IDEMPOTENCY_WINDOW = timedelta(hours=24)

T = TypeVar("T")


def _by_key(session: Session, model: type[T], tenant_id: str, key: str) -> T | None:
    table: Any = model
    return session.scalar(select(model).where(table.tenant_id == tenant_id, table.idempotency_key == key))


def add_once(session: Session, new: T, *, tenant_id: str, key: str | None) -> tuple[T, bool]:
    """Add `new` (its `idempotency_key` set to `key`) unless the tenant used `key` in the last
    24 h: then return that object. Returns (object, created). A key older than the window is
    released for reuse. Models need `tenant_id`, `idempotency_key` (unique per tenant) and
    `created_at`."""
    model = type(new)
    if key is not None:
        existing: Any = _by_key(session, model, tenant_id, key)
        if existing is not None:
            if existing.created_at >= utcnow() - IDEMPOTENCY_WINDOW:
                return existing, False
            existing.idempotency_key = None  # expired: the key may name a new object
    try:
        with session.begin_nested():
            session.add(new)
    except IntegrityError:
        # A concurrent request with the same key won the race: answer with its object.
        raced = _by_key(session, model, tenant_id, key or "")
        if raced is None:
            raise
        return raced, False
    return new, True
