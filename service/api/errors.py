"""Errors -> HTTP: each service error has one status, and every body says what to fix."""

from __future__ import annotations

import math

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from symopt_core.errors import ConfigError

from ..errors import (
    AuthError,
    ConflictError,
    DatabaseBehindError,
    ForbiddenError,
    NotFoundError,
    RateLimitedError,
    ServiceError,
    StoreError,
)

__all__ = ["install_error_handlers"]

_STATUS: list[tuple[type[Exception], int]] = [
    (NotFoundError, 404),
    (ConflictError, 409),
    (AuthError, 401),
    (ForbiddenError, 403),
    (RateLimitedError, 429),
    (StoreError, 503),
    (DatabaseBehindError, 503),
    (ServiceError, 400),
]


def _validation_errors(error: RequestValidationError) -> tuple[list[dict[str, object]], str]:
    problems = []
    for item in error.errors():
        where = [str(part) for part in item.get("loc", ()) if part != "body"]
        message = str(item.get("msg", "")).removeprefix("Value error, ")
        problems.append({"loc": where, "msg": message, "type": item.get("type", "")})
    summary = "; ".join(f"{'.'.join(p['loc']) or 'body'}: {p['msg']}" for p in problems)
    return problems, summary


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        problems, summary = _validation_errors(error)
        return JSONResponse({"detail": problems, "message": summary}, status_code=422)

    @app.exception_handler(ConfigError)
    async def invalid_configuration(request: Request, error: ConfigError) -> JSONResponse:
        return JSONResponse({"detail": str(error), "message": str(error)}, status_code=422)

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, error: ServiceError) -> JSONResponse:
        status = next(code for kind, code in _STATUS if isinstance(error, kind))
        headers = {}
        if isinstance(error, AuthError):
            headers["WWW-Authenticate"] = "Bearer"
        if isinstance(error, RateLimitedError):
            headers["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
        return JSONResponse({"detail": str(error)}, status_code=status, headers=headers)
