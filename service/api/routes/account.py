"""Who a key acts for: `symopt login` checks a key with it."""

from __future__ import annotations

from fastapi import APIRouter

from ..deps import PrincipalDep
from ..errors import error_responses
from ..schemas import PrincipalPublic

router = APIRouter(prefix="/v1", tags=["account"], responses=error_responses(400, 401, 503))


@router.get("/me", response_model=PrincipalPublic)
def read_me_route(principal: PrincipalDep) -> PrincipalPublic:
    """The tenant and key this request's API key belongs to."""
    return PrincipalPublic(tenant=principal.tenant_name, key_id=principal.key_id, is_admin=principal.is_admin)
