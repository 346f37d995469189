"""Query parameters and headers shared by routes."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from fastapi import Header
from fastapi.exceptions import RequestValidationError

__all__ = ["IdempotencyKey", "csv", "statuses"]

IdempotencyKey = Annotated[
    str | None,
    Header(
        max_length=200,
        description="retrying a POST with the same key within 24 h returns what the first one created",
    ),
]


def csv(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def statuses(value: str | None, kind: type[StrEnum]) -> list[str]:
    """Comma-separated statuses of `kind`; a 422 naming the valid ones for anything else."""
    chosen = csv(value)
    unknown = [s for s in chosen if s not in kind._value2member_map_]
    if unknown:
        valid = ", ".join(member.value for member in kind)
        message = f"unknown status {unknown[0]!r}; valid statuses: {valid}"
        raise RequestValidationError([{"loc": ("query", "status"), "msg": message, "type": "value_error"}])
    return chosen
