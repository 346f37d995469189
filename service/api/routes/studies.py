"""Comparison studies: create, list, read (with the result so far), cancel."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Response, status

from service.study_spec import StudySpec

from ...store.status import SweepStatus
from ...store.studies import create_study, get_study, list_studies, request_cancel_study
from ..deps import LimiterDep, PrincipalDep, SettingsDep, SpecCheckerDep, StoreDep
from ..errors import error_responses
from ..params import IdempotencyKey, documented_as, status_filter, statuses
from ..schemas import StudiesPublic, StudyPublic
from ..submission import check_submission
from ..views.studies import study_public

router = APIRouter(prefix="/v1/studies", tags=["studies"], responses=error_responses(400, 401, 422, 503))


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=StudyPublic,
    responses=error_responses(413, 429)
    | {200: {"model": StudyPublic, "description": "Replayed: the study this Idempotency-Key created"}},
)
def create_study_route(
    body: Annotated[Any, documented_as(StudySpec), Body()],
    principal: PrincipalDep,
    store: StoreDep,
    limiter: LimiterDep,
    checker: SpecCheckerDep,
    settings: SettingsDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> StudyPublic:
    """Queue a study: candidates tuned with equal budgets, then re-run on k seeds (201); a
    replayed Idempotency-Key returns the first study (200)."""
    # As a sweep's: rate-limited first, then validated in the thread pool or the spec checker's
    # process (each candidate's search space is checked job spec by job spec).
    limiter.check(principal.key_id, "study submissions")
    spec = checker.validated(StudySpec, body)
    with store.read() as session:
        check_submission(
            session, tenant_id=principal.tenant_id, spec=spec.base, settings=settings, executor=spec.executor
        )
    with store.transaction() as session:
        study, created = create_study(
            session=session, tenant_id=principal.tenant_id, spec=spec, idempotency_key=idempotency_key
        )
        if not created:
            response.status_code = status.HTTP_200_OK
        return study_public(session, study)


@router.get("", response_model=StudiesPublic)
def list_studies_route(
    principal: PrincipalDep,
    store: StoreDep,
    status_: Annotated[str | None, status_filter(SweepStatus)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> StudiesPublic:
    """This tenant's studies, newest first (the result of finished ones)."""
    chosen = statuses(status_, SweepStatus)
    with store.read() as session:
        found, count = list_studies(
            session=session, tenant_id=principal.tenant_id, statuses=chosen, limit=limit, offset=offset
        )
        return StudiesPublic(data=[study_public(session, s, with_result=False) for s in found], count=count)


@router.get("/{study_id}", response_model=StudyPublic, responses=error_responses(404))
def get_study_route(study_id: str, principal: PrincipalDep, store: StoreDep) -> StudyPublic:
    """A study's progress and result (so far): per candidate the tuned configuration, the
    objective on each seed with mean, spread and intervals; paired differences and verdicts."""
    with store.read() as session:
        return study_public(
            session, get_study(session=session, tenant_id=principal.tenant_id, study_id=study_id)
        )


@router.post(
    "/{study_id}/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=StudyPublic,
    responses=error_responses(404, 409, 413),
)
def cancel_study_route(study_id: str, principal: PrincipalDep, store: StoreDep) -> StudyPublic:
    """Cancel a study, its sweeps and its runs; what has finished stays readable."""
    with store.transaction() as session:
        study = request_cancel_study(session=session, tenant_id=principal.tenant_id, study_id=study_id)
        return study_public(session, study)
