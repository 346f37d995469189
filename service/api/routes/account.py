"""Who a key acts for (`symopt login` checks a key with it); new keys from an admin key, and
listing and revoking keys (an admin key: every tenant's; a tenant's key: its own tenant's)."""

from __future__ import annotations

from fastapi import APIRouter, status

from ...errors import ForbiddenError
from ...store.keys import create_api_key, get_or_create_tenant, list_api_keys, revoke_api_key
from ..deps import LimiterDep, PrincipalDep, StoreDep
from ..errors import error_responses
from ..schemas import ApiKeyCreate, ApiKeyCreatedPublic, ApiKeyPublic, ApiKeysPublic, PrincipalPublic

router = APIRouter(prefix="/v1", tags=["account"], responses=error_responses(400, 401, 503))


@router.get("/me", response_model=PrincipalPublic)
def read_me_route(principal: PrincipalDep) -> PrincipalPublic:
    """The tenant and key this request's API key belongs to."""
    return PrincipalPublic(tenant=principal.tenant_name, key_id=principal.key_id, is_admin=principal.is_admin)


@router.post(
    "/keys",
    status_code=status.HTTP_201_CREATED,
    response_model=ApiKeyCreatedPublic,
    responses=error_responses(403, 422, 429),
)
def create_key_route(
    body: ApiKeyCreate, principal: PrincipalDep, store: StoreDep, limiter: LimiterDep
) -> ApiKeyCreatedPublic:
    """A new API key for a tenant, created if new (admin keys only; the key is shown once)."""
    if not principal.is_admin:
        raise ForbiddenError(
            "Creating API keys needs an admin API key; create one on the server with "
            "`symopt keys create --tenant NAME --admin`"
        )
    limiter.check(principal.key_id, "key creations")
    with store.transaction() as session:
        tenant = get_or_create_tenant(session=session, name=body.tenant)
        key = create_api_key(session=session, tenant_id=tenant.id, name=body.name, is_admin=body.admin)
    return ApiKeyCreatedPublic(tenant=body.tenant, key_id=key.split("_")[1], api_key=key, is_admin=body.admin)


@router.get("/keys", response_model=ApiKeysPublic)
def list_keys_route(principal: PrincipalDep, store: StoreDep) -> ApiKeysPublic:
    """Keys without their secrets: every tenant's for an admin key, else the key's own tenant's."""
    with store.read() as session:
        keys = list_api_keys(session=session, by=principal)
    return ApiKeysPublic(data=[ApiKeyPublic.model_validate(key) for key in keys], count=len(keys))


@router.post("/keys/{key_id}/revoke", response_model=ApiKeyPublic, responses=error_responses(403, 404, 409))
def revoke_key_route(key_id: str, principal: PrincipalDep, store: StoreDep) -> ApiKeyPublic:
    """Revoke a key at once (409 if already revoked, or if it is the last active admin key)."""
    with store.transaction() as session:
        revoked = revoke_api_key(session=session, key_id=key_id, by=principal)
    return ApiKeyPublic.model_validate(revoked)
