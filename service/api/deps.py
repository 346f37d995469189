"""Dependencies of the routes: the store, the settings, and the authenticated principal."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

from fastapi import Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from sqlalchemy.orm import Session

from ..errors import AuthError
from ..settings import Settings
from ..store import Store
from ..store.keys import Principal, authenticate, presented_key_id
from .limits import RateLimiter
from .spec_checks import SpecChecker

__all__ = [
    "KeyDep",
    "LimiterDep",
    "PrincipalDep",
    "SettingsDep",
    "SpecCheckerDep",
    "StoreDep",
    "json_response",
    "read_as",
]

_bearer = HTTPBearer(auto_error=False, description="an API key: `symopt keys create --tenant NAME`")


async def get_store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_limiter(request: Request) -> RateLimiter:
    limiter: RateLimiter = request.app.state.limiter
    return limiter


async def get_spec_checker(request: Request) -> SpecChecker:
    checker: SpecChecker = request.app.state.spec_checker
    return checker


StoreDep = Annotated[Store, Depends(get_store)]
SpecCheckerDep = Annotated[SpecChecker, Depends(get_spec_checker)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
LimiterDep = Annotated[RateLimiter, Depends(get_limiter)]


# The app's own objects are read on the event loop: a plain `def` dependency would cost each
# request a round trip through the thread pool for an attribute lookup.


def get_principal(
    store: StoreDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    """Who is calling: a 401 for a missing, malformed, unknown or revoked key, alike."""
    with store.read() as session:
        return authenticate(session=session, presented=credentials.credentials if credentials else None)


PrincipalDep = Annotated[Principal, Depends(get_principal)]


async def presented_key(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The presented API key, checked only in form (a 401 before any database work when it is
    missing or malformed); `read_as` checks it in the route's own read transaction."""
    presented = credentials.credentials if credentials else None
    if presented is None or presented_key_id(presented) is None:
        raise AuthError("Invalid or missing API key")
    return presented


KeyDep = Annotated[str, Depends(presented_key)]


@contextmanager
def read_as(store: Store, key: str) -> Iterator[tuple[Principal, Session]]:
    """One read transaction for a read route: the caller's key checked (a 401 for an unknown or
    revoked one, as PrincipalDep gives) and the route's reads, in one thread-pool call and one
    transaction instead of two of each. For the routes that clients poll."""
    with store.read() as session:
        yield authenticate(session=session, presented=key), session


def json_response(model: BaseModel) -> Response:
    """The model as its JSON, ready: FastAPI would validate a returned model against the route's
    response_model again (which documents the answer) before serializing it."""
    return Response(model.model_dump_json(), media_type="application/json")
