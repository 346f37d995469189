"""Tenants and API keys. A key is `sym_<id>_<secret>`: the id is stored plain for lookup, the
secret only as a SHA-256 hash (keys are random, so a fast hash suffices), compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..errors import AuthError, ConflictError, NotFoundError
from .models import ApiKey, Tenant, utcnow

__all__ = [
    "Principal",
    "authenticate",
    "create_api_key",
    "create_tenant",
    "get_or_create_tenant",
    "presented_key_id",
    "revoke_api_key",
]

_PREFIX = "sym"
# Compared against when the key id is unknown, so that lookups take the same time either way.
_DUMMY_HASH = hashlib.sha256(b"symopt-no-such-key").hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who a request acts for."""

    tenant_id: str
    tenant_name: str
    key_id: str
    is_admin: bool


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_tenant(*, session: Session, name: str) -> Tenant:
    if session.scalar(select(Tenant).where(Tenant.name == name)) is not None:
        raise ConflictError(f"Tenant {name!r} already exists")
    tenant = Tenant(name=name)
    session.add(tenant)
    session.flush()
    return tenant


def get_or_create_tenant(*, session: Session, name: str) -> Tenant:
    tenant = session.scalar(select(Tenant).where(Tenant.name == name))
    return tenant if tenant is not None else create_tenant(session=session, name=name)


def create_api_key(*, session: Session, tenant_id: str, name: str = "", is_admin: bool = False) -> str:
    """Store a new key for the tenant and return it in plain text (the only time it exists)."""
    if session.get(Tenant, tenant_id) is None:
        raise NotFoundError(f"No tenant {tenant_id}")
    key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    session.add(
        ApiKey(id=key_id, tenant_id=tenant_id, name=name, secret_hash=_hash(secret), is_admin=is_admin)
    )
    session.flush()
    return f"{_PREFIX}_{key_id}_{secret}"


def revoke_api_key(*, session: Session, key_id: str) -> None:
    key = session.get(ApiKey, key_id)
    if key is None:
        raise NotFoundError(f"No API key {key_id}")
    key.revoked_at = utcnow()


def presented_key_id(presented: str | None) -> str | None:
    """The key id a presented key names (`sym_<id>_<secret>`), unchecked; None when malformed."""
    prefix, _, rest = (presented or "").partition("_")
    key_id, _, secret = rest.partition("_")
    return key_id if prefix == _PREFIX and key_id and secret else None


def authenticate(*, session: Session, presented: str | None) -> Principal:
    """The principal of a presented key; AuthError (without details) for anything else."""
    failure = AuthError("Invalid or missing API key")
    key_id = presented_key_id(presented)
    if key_id is None:
        raise failure
    secret = (presented or "").split("_", 2)[2]
    key = session.get(ApiKey, key_id)
    expected = key.secret_hash if key is not None else _DUMMY_HASH
    if not hmac.compare_digest(expected, _hash(secret)) or key is None or key.revoked_at is not None:
        raise failure
    tenant = session.get(Tenant, key.tenant_id)
    assert tenant is not None
    return Principal(tenant_id=tenant.id, tenant_name=tenant.name, key_id=key.id, is_admin=key.is_admin)
