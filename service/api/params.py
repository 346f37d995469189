"""Query parameters, headers and request bodies shared by routes."""

from __future__ import annotations

from enum import StrEnum
from types import UnionType
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

from fastapi import Header, Query
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, PlainValidator, ValidationError

from symopt_core.errors import did_you_mean

__all__ = [
    "MAX_EVENT_ID",
    "MAX_STEP",
    "IdempotencyKey",
    "csv",
    "documented_as",
    "located",
    "status_filter",
    "statuses",
    "validated",
]

# The database columns the integer query parameters are compared with: a value beyond them is a
# 422 here, not an overflow in the driver (a 500 on SQLite, a 503 "database error" on PostgreSQL,
# which clients retry as an outage). Steps are int4 on PostgreSQL; event ids are int8 everywhere.
MAX_STEP = 2**31 - 1
MAX_EVENT_ID = 2**63 - 1

Model = TypeVar("Model", bound=BaseModel)

IdempotencyKey = Annotated[
    str | None,
    Header(
        max_length=200,
        description="retrying a POST with the same key within 24 h returns what the first one created",
    ),
]


def csv(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def status_filter(kind: type[StrEnum]) -> Any:
    """The `status` query of a list route: comma-separated values of `kind`, declared in the
    OpenAPI schema as a pattern over them. The route checks it with `statuses` (a 422 that names
    the valid ones, which a pattern mismatch would not)."""
    names = "|".join(member.value for member in kind)
    return Query(
        alias="status",
        description=f"comma-separated statuses: {', '.join(member.value for member in kind)}",
        json_schema_extra={"pattern": f"^(({names})(,({names}))*)?$"},
    )


def statuses(value: str | None, kind: type[StrEnum]) -> list[str]:
    """Comma-separated statuses of `kind`; a 422 naming the valid ones for anything else."""
    chosen = csv(value)
    unknown = [s for s in chosen if s not in kind._value2member_map_]
    if unknown:
        valid = ", ".join(member.value for member in kind)
        message = f"unknown status {unknown[0]!r}; valid statuses: {valid}"
        raise RequestValidationError([{"loc": ("query", "status"), "msg": message, "type": "value_error"}])
    return chosen


def _as_sent(value: Any) -> Any:
    return value


def documented_as(model: type[BaseModel]) -> PlainValidator:
    """Metadata for a `Body()` parameter that OpenAPI documents as `model` but that FastAPI hands
    over as parsed JSON, unvalidated: `Annotated[Any, documented_as(Spec), Body()]`.

    FastAPI validates a body on the event loop, before the route runs: a spec whose validators do
    real work (a sweep checks a job spec per search-space bound) would stall every other request,
    and fail before the route's rate limiter sees it. Such routes are sync (they run in the thread
    pool), authenticate and rate-limit first, and then call `validated`."""
    return PlainValidator(_as_sent, json_schema_input_type=model)


def validated(model: type[Model], body: Any, context: dict[str, Any] | None = None) -> Model:
    """`body` as `model`; a 422 like FastAPI's own (each problem located under `body`) if not."""
    try:
        return model.model_validate(body, context=context)
    except ValidationError as error:
        raise RequestValidationError(located(error, model)) from None


def located(error: ValidationError, model: type[BaseModel]) -> list[dict[str, Any]]:
    """`error`'s problems as FastAPI reports a body's (each located under `body`), in plain
    values that pickle and serialize; an unknown field names the closest field of its model."""
    problems = []
    for problem in error.errors(include_url=False):
        message = problem["msg"]
        if problem["type"] == "extra_forbidden" and problem["loc"]:
            *parents, name = problem["loc"]
            message += did_you_mean(name, fields_at(model, parents))
        problems.append({"loc": ("body", *problem["loc"]), "msg": message, "type": problem["type"]})
    return problems


def fields_at(model: type[BaseModel], path: list[Any]) -> list[str]:
    """The field names of the model found at `path` inside `model` (through optional, list and
    mapping fields), or none when the path leaves the models."""
    annotation: Any = model
    for key in path:
        nested = _model_in(annotation)
        if nested is not None and isinstance(key, str) and key in nested.model_fields:
            annotation = nested.model_fields[key].annotation
        elif get_origin(annotation) in (dict, list, Union, UnionType) or isinstance(key, int):
            annotation = next((a for a in get_args(annotation)[::-1] if _model_in(a) is not None), None)
        else:
            return []
    found = _model_in(annotation)
    return list(found.model_fields) if found is not None else []


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in get_args(annotation):
        found = _model_in(argument)
        if found is not None:
            return found
    return None
