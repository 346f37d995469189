"""Exceptions of the service: one base, each mapped to one HTTP status by the API."""

from __future__ import annotations

from symopt_core.errors import SymoptError

__all__ = [
    "AuthError",
    "ConflictError",
    "DatabaseBehindError",
    "ForbiddenError",
    "InvalidTransitionError",
    "NotFoundError",
    "OverloadedError",
    "PayloadTooLargeError",
    "QuotaExceededError",
    "RateLimitedError",
    "ServiceError",
    "StoreError",
]


class ServiceError(SymoptError):
    """Base class of the service's deliberate errors."""


class NotFoundError(ServiceError):
    """No such object for this tenant (404; another tenant's objects are not found either)."""


class ConflictError(ServiceError):
    """The object exists but is in the wrong state for the request (409)."""


class InvalidTransitionError(ConflictError):
    """A job or sweep status change the state machine does not allow."""


class PayloadTooLargeError(ServiceError):
    """An upload over the service's size limit (413)."""


class AuthError(ServiceError):
    """Missing, unknown or revoked API key (401)."""


class ForbiddenError(ServiceError):
    """A valid key that may not do this (403): an admin-only route called with a tenant's key."""


class RateLimitedError(ServiceError):
    """Too many requests for this key (429); `retry_after` is in seconds."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    @classmethod
    def for_key(cls, what: str, retry_after: float) -> RateLimitedError:
        return cls(f"Too many {what} for this API key; retry in {retry_after:.1f} s", retry_after=retry_after)


class QuotaExceededError(RateLimitedError):
    """A tenant's quota is used up (429): the message names the quota, its value and the usage.
    Retrying soon does not help until jobs finish, so clients do not retry it on their own."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retry_after=60.0)


class StoreError(ServiceError):
    """The database failed (connection lost, constraint violated): a wrapped SQLAlchemyError."""


class OverloadedError(ServiceError):
    """The service could not do this in time (503): a spec check that waited too long for its
    worker process, or whose worker died. Retrying later may succeed."""


class DatabaseBehindError(ServiceError):
    """The database schema is older than this code's migrations."""
