"""Dependencies of the routes: the store, the settings, and the authenticated principal."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..settings import Settings
from ..store import Store
from ..store.keys import Principal, authenticate
from .limits import RateLimiter
from .spec_checks import SpecChecker

__all__ = ["LimiterDep", "PrincipalDep", "SettingsDep", "SpecCheckerDep", "StoreDep"]

_bearer = HTTPBearer(auto_error=False, description="an API key: `symopt keys create --tenant NAME`")


def get_store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_limiter(request: Request) -> RateLimiter:
    limiter: RateLimiter = request.app.state.limiter
    return limiter


def get_spec_checker(request: Request) -> SpecChecker:
    checker: SpecChecker = request.app.state.spec_checker
    return checker


StoreDep = Annotated[Store, Depends(get_store)]
SpecCheckerDep = Annotated[SpecChecker, Depends(get_spec_checker)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
LimiterDep = Annotated[RateLimiter, Depends(get_limiter)]


def get_principal(
    store: StoreDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    """Who is calling: a 401 for a missing, malformed, unknown or revoked key, alike."""
    with store.read() as session:
        return authenticate(session=session, presented=credentials.credentials if credentials else None)


PrincipalDep = Annotated[Principal, Depends(get_principal)]
