"""One exception per meaning of an API answer, each carrying the server's message."""

from __future__ import annotations

from typing import Any

from symopt_core.errors import SymoptError

__all__ = [
    "ApiError",
    "AuthError",
    "ConflictError",
    "CredentialsError",
    "NotFoundError",
    "PayloadTooLargeError",
    "RateLimitedError",
    "ServerError",
    "ValidationError",
    "error_for",
]


class CredentialsError(SymoptError):
    """No API key was found: none passed, none in $SYMOPT_API_KEY, none saved by `symopt login`."""


class ApiError(SymoptError):
    """The service answered with an error status; `status` and the server's `message`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class AuthError(ApiError):
    """401: no key, or the key was rejected."""


class NotFoundError(ApiError):
    """404: no such job or sweep for this key's tenant."""


class ConflictError(ApiError):
    """409: the object is in the wrong state (cancel a finished job, delete a running one)."""


class ValidationError(ApiError, ValueError):
    """422: the spec or a parameter is invalid; `errors` are the server's field errors
    ({loc, msg, type}), `message` says them in one line."""

    def __init__(self, status: int, message: str, errors: list[dict[str, Any]]) -> None:
        super().__init__(status, message)
        self.errors = errors


class PayloadTooLargeError(ApiError):
    """413: the request body is over the service's limit."""


class RateLimitedError(ApiError):
    """429 that stayed after the retries; `retry_after` is in seconds."""

    def __init__(self, status: int, message: str, retry_after: float) -> None:
        super().__init__(status, message)
        self.retry_after = retry_after


class ServerError(ApiError):
    """5xx that stayed after the retries."""


_BY_STATUS: dict[int, type[ApiError]] = {
    401: AuthError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
}


def error_for(status: int, body: Any, headers: dict[str, str]) -> ApiError:
    """The exception for an error answer: the server's `message` (or `detail`) and its kind."""
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(body, dict):
        message = str(body.get("message") or detail or f"HTTP {status}")
    else:
        message = str(body or f"HTTP {status}")
    if status == 422:
        return ValidationError(status, message, detail if isinstance(detail, list) else [])
    if status == 429:
        try:
            retry_after = float(headers.get("retry-after", "1"))
        except ValueError:
            retry_after = 1.0
        return RateLimitedError(status, message, retry_after)
    if status >= 500:
        return ServerError(status, message)
    return _BY_STATUS.get(status, ApiError)(status, message)
