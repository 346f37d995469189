"""Tenants and API keys. A key is `sym_<id>_<secret>`: the id is stored plain for lookup, the
secret only as a SHA-256 hash (keys are random, so a fast hash suffices), compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from ..errors import AuthError, ConflictError, ForbiddenError, NotFoundError
from .models import ApiKey, Tenant, utcnow

__all__ = [
    "ApiKeyInfo",
    "Principal",
    "authenticate",
    "create_api_key",
    "create_tenant",
    "get_or_create_tenant",
    "home_admin_key",
    "list_api_keys",
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


@dataclass(frozen=True)
class ApiKeyInfo:
    """What may be shown of a key: never its secret nor the secret's hash."""

    key_id: str
    tenant: str
    name: str
    is_admin: bool
    created_at: datetime
    revoked_at: datetime | None


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


def home_admin_key(
    *, session: Session, saved: str | None, name: str, only_on_first_start: bool
) -> tuple[str | None, bool]:
    """The admin key a local home (`~/.symopt`'s credentials) uses with this database, and whether
    it was made now. The saved key when the database knows it; otherwise a new admin key of the
    tenant "default" named `name`, or, with `only_on_first_start`, one only while the database
    holds no key at all (`symopt serve`: a second start never mints keys), else None."""
    if saved:
        try:
            authenticate(session=session, presented=saved)
            return saved, False
        except AuthError:
            pass
    if only_on_first_start and session.scalar(select(ApiKey.id).limit(1)) is not None:
        return None, False
    tenant = get_or_create_tenant(session=session, name="default")
    return create_api_key(session=session, tenant_id=tenant.id, name=name, is_admin=True), True


def list_api_keys(*, session: Session, by: Principal | None = None) -> list[ApiKeyInfo]:
    """Keys, oldest first: every tenant's for an admin key or the server's operator (`by` None),
    only its own tenant's for a tenant's key."""
    query = select(ApiKey, Tenant.name).join(Tenant, Tenant.id == ApiKey.tenant_id)
    if by is not None and not by.is_admin:
        query = query.where(ApiKey.tenant_id == by.tenant_id)
    rows = session.execute(query.order_by(ApiKey.created_at, ApiKey.id))
    return [_info(key, tenant) for key, tenant in rows]


def revoke_api_key(*, session: Session, key_id: str, by: Principal | None = None) -> ApiKeyInfo:
    """Revoke a key: its next request gets a 401. `by` None is the server's operator; an admin key
    may revoke any key, a tenant's key only its own tenant's keys that are not admin keys (another
    tenant's keys are not found). A revoked key is a conflict, as is the last active admin key."""
    key = session.get(ApiKey, key_id, with_for_update=True)
    if key is None or (by is not None and not by.is_admin and key.tenant_id != by.tenant_id):
        raise NotFoundError(f"No API key {key_id}; `symopt keys list` shows the keys you may see")
    if by is not None and not by.is_admin and key.is_admin:
        raise ForbiddenError(f"API key {key_id} is an admin key: only an admin key may revoke it")
    if key.revoked_at is not None:
        raise ConflictError(
            f"API key {key_id} was already revoked (at {key.revoked_at:%Y-%m-%d %H:%M:%S} UTC)"
        )
    if key.is_admin:
        # Lock every active admin key before counting them: two admins revoking each other's keys
        # at once would otherwise both see two left (PostgreSQL re-checks `revoked_at` after the
        # wait; SQLite's writers take turns anyway).
        admins = session.scalars(
            select(ApiKey.id).where(ApiKey.is_admin, ApiKey.revoked_at.is_(None)).with_for_update()
        ).all()
        if list(admins) == [key_id]:
            raise ConflictError(
                f"API key {key_id} is the last active admin key: without one no key could be created "
                "or revoked over the API. Create another first (`symopt keys create --tenant NAME "
                "--admin`), then revoke this one"
            )
    key.revoked_at = utcnow()
    tenant = session.get(Tenant, key.tenant_id)
    assert tenant is not None
    return _info(key, tenant.name)


def _info(key: ApiKey, tenant: str) -> ApiKeyInfo:
    return ApiKeyInfo(key.id, tenant, key.name, key.is_admin, key.created_at, key.revoked_at)


def presented_key_id(presented: str | None) -> str | None:
    """The key id a presented key names (`sym_<id>_<secret>`), unchecked; None when malformed."""
    prefix, _, rest = (presented or "").partition("_")
    key_id, _, secret = rest.partition("_")
    return key_id if prefix == _PREFIX and key_id and secret else None


# A key and its tenant's name, in one query built once (every request of a client runs it).
_KEY_AND_TENANT = (
    select(ApiKey.secret_hash, ApiKey.revoked_at, ApiKey.tenant_id, ApiKey.is_admin, Tenant.name)
    .join(Tenant, Tenant.id == ApiKey.tenant_id)
    .where(ApiKey.id == bindparam("key_id"))
)


def authenticate(*, session: Session, presented: str | None) -> Principal:
    """The principal of a presented key; AuthError (without details) for anything else."""
    failure = AuthError("Invalid or missing API key")
    key_id = presented_key_id(presented)
    if key_id is None:
        raise failure
    secret = (presented or "").split("_", 2)[2]
    found = session.execute(_KEY_AND_TENANT, {"key_id": key_id}).one_or_none()
    expected = found.secret_hash if found is not None else _DUMMY_HASH
    if not hmac.compare_digest(expected, _hash(secret)) or found is None or found.revoked_at is not None:
        raise failure
    return Principal(
        tenant_id=found.tenant_id, tenant_name=found.name, key_id=key_id, is_admin=found.is_admin
    )
