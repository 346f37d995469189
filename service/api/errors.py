"""Errors -> HTTP: each service error has one status, and every body says what to fix."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import Scope

from symopt_core.errors import ConfigError

from ..errors import (
    AuthError,
    ConflictError,
    DatabaseBehindError,
    ForbiddenError,
    NotFoundError,
    OverloadedError,
    PayloadTooLargeError,
    RateLimitedError,
    ServiceError,
    StoreError,
)
from .schemas import ErrorPublic, ValidationErrorPublic

__all__ = ["error_responses", "install_error_handlers"]

_STATUS: list[tuple[type[Exception], int]] = [
    (NotFoundError, 404),
    (ConflictError, 409),
    (PayloadTooLargeError, 413),
    (AuthError, 401),
    (ForbiddenError, 403),
    (RateLimitedError, 429),
    (StoreError, 503),
    (DatabaseBehindError, 503),
    (OverloadedError, 503),
    (ServiceError, 400),
]


_DESCRIPTIONS = {
    400: "A request the service cannot carry out (a control character in the URL, ...)",
    401: "Missing, malformed, unknown or revoked API key",
    403: "A valid key that may not do this",
    404: "No such object for this tenant",
    409: "The object is in the wrong state for this request (e.g. already finished)",
    413: "The request body is larger than the service accepts",
    422: "The request, its query or its spec does not validate: `message` says what to fix",
    429: "Too many submissions for this API key: retry after `Retry-After` seconds",
    503: "The database is unreachable or its schema is behind this service's, or the service is overloaded",
}
_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}},
    429: {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}},
}


def error_responses(*codes: int, by_reference: bool = False) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the error statuses a route may answer with, and their JSON bodies.

    `by_reference`: for a route that answers a file or an event stream. FastAPI would declare a
    `model` under the route's own media type, so these name the schema instead (other routes'
    `model`s put it in the components)."""
    responses: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        model = ValidationErrorPublic if code == 422 else ErrorPublic
        body: dict[str, Any] = (
            {"content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}
            if by_reference
            else {"model": model}
        )
        responses[code] = {"description": _DESCRIPTIONS[code], **body, **_headers(code)}
    return responses


def _headers(code: int) -> dict[str, Any]:
    return {"headers": _HEADERS[code]} if code in _HEADERS else {}


def _validation_errors(error: RequestValidationError, body: bytes) -> tuple[list[dict[str, Any]], str]:
    problems: list[dict[str, Any]] = []
    for item in error.errors():
        if item.get("type") == "json_invalid":  # FastAPI's "1: JSON decode error" said nowhere
            problems.append({"loc": [], "msg": _json_error(item, body), "type": "json_invalid"})
            continue
        where = [str(part) for part in item.get("loc", ()) if part != "body"]
        message = str(item.get("msg", "")).removeprefix("Value error, ")
        problems.append({"loc": where, "msg": message, "type": item.get("type", "")})
    summary = "; ".join(f"{'.'.join(p['loc']) or 'body'}: {p['msg']}" for p in problems)
    return problems, summary


def _json_error(item: dict[str, Any], body: bytes) -> str:
    """Where a body stops being JSON: line and column (from FastAPI's character offset)."""
    reason = str((item.get("ctx") or {}).get("error") or "JSON decode error")
    offset = next((part for part in item.get("loc", ()) if isinstance(part, int)), None)
    if offset is None:
        return f"not valid JSON: {reason}"
    text = body.decode("utf-8", "replace")[:offset]
    line, column = text.count("\n") + 1, offset - (text.rfind("\n") + 1) + 1
    return f"not valid JSON: {reason} at line {line}, column {column} (character {offset})"


def install_error_handlers(app: FastAPI, redact: Callable[[str], str]) -> None:
    """Every error answers `{"message": what to fix, "detail": ...}`: a 422's detail lists its
    problems by field, any other's repeats the message. `redact` takes the server's own paths out
    of messages (a spec check may name a file under the data or model root)."""

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        problems, summary = _validation_errors(error, await request.body())
        for problem in problems:
            problem["msg"] = redact(str(problem["msg"]))
        return JSONResponse({"detail": problems, "message": redact(summary)}, status_code=422)

    @app.exception_handler(ConfigError)
    async def invalid_configuration(request: Request, error: ConfigError) -> JSONResponse:
        # The shape of every other 422: one problem, at no particular field.
        message = redact(str(error))
        problem = {"loc": [], "msg": message, "type": "value_error"}
        return JSONResponse({"detail": [problem], "message": message}, status_code=422)

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, error: ServiceError) -> JSONResponse:
        status = next(code for kind, code in _STATUS if isinstance(error, kind))
        headers = {}
        if isinstance(error, AuthError):
            headers["WWW-Authenticate"] = "Bearer"
        if isinstance(error, RateLimitedError):
            headers["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
        message = redact(str(error))
        return JSONResponse({"detail": message, "message": message}, status_code=status, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        # Starlette's own answers (an unknown route, a method the route lacks), in the same shape.
        # A 405's Allow names the methods of every route at the path (Starlette's names only the
        # first route's), and OPTIONS, which no route declares, answers them with a 204.
        headers = dict(error.headers or {})
        if error.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request.app, request.scope))
            if request.method == "OPTIONS":
                return Response(status_code=204, headers=headers)
        message = str(error.detail)
        if error.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}; allowed: {headers['Allow']}"
        return JSONResponse({"detail": message, "message": message}, status_code=error.status_code,
                            headers=headers)  # fmt: skip


_METHODS = ("DELETE", "GET", "HEAD", "PATCH", "POST", "PUT")


def allowed_methods(app: FastAPI, scope: Scope) -> list[str]:
    """The methods some route answers at the request's path (asked of the router's own
    matching, per method), and OPTIONS."""
    found = {
        method
        for method in _METHODS
        if any(route.matches({**scope, "method": method})[0] == Match.FULL for route in app.router.routes)
    }
    return sorted(found | {"OPTIONS"})
