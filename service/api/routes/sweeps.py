"""Sweeps: create, list, read (with the best trial so far), trials, history, importances, cancel."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Response, status

from service.sweep_spec import SweepSpec

from ...store.status import SweepStatus
from ...store.sweeps import create_sweep, get_sweep, list_sweeps, request_cancel_sweep
from ...sweeps.space import check_sampler, resolved_spaces
from ...sweeps.stored_transfer import stored_transfer
from ..deps import (
    KeyDep,
    LimiterDep,
    PrincipalDep,
    SettingsDep,
    SpecCheckerDep,
    StoreDep,
    json_response,
    read_as,
)
from ..errors import error_responses
from ..params import IdempotencyKey, documented_as, status_filter, statuses
from ..schemas import SweepHistoryPublic, SweepPublic, SweepsPublic, TrialsPublic
from ..submission import check_submission
from ..views.sweeps import history, importances, sweep_trials

router = APIRouter(prefix="/v1/sweeps", tags=["sweeps"], responses=error_responses(400, 401, 422, 503))


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=SweepPublic,
    responses=error_responses(413, 429)
    | {200: {"model": SweepPublic, "description": "Replayed: the sweep this Idempotency-Key created"}},
)
def create_sweep_route(
    body: Annotated[Any, documented_as(SweepSpec), Body()],
    principal: PrincipalDep,
    store: StoreDep,
    limiter: LimiterDep,
    checker: SpecCheckerDep,
    settings: SettingsDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> SweepPublic:
    """Queue a sweep: a base job, a search space, a sampler, a pruner and a trial budget (201);
    a replayed Idempotency-Key returns the first sweep (200)."""
    # Rate-limited before validation (an invalid spec takes a token too; an empty bucket is a 429
    # before the body is read), and validated here, in the thread pool, or in the spec checker's
    # process when checking the search space builds many job specs (spec_checks.py).
    limiter.check(principal.key_id, "sweep submissions")
    spec = checker.validated(SweepSpec, body)
    check_sampler(spec.sampler)
    with store.read() as session:
        check_submission(
            session, tenant_id=principal.tenant_id, spec=spec.base, settings=settings, executor=spec.executor
        )
    with store.transaction() as session:
        sweep, created = create_sweep(
            session=session,
            tenant_id=principal.tenant_id,
            spec=spec,
            resolved_space=resolved_spaces(spec),
            idempotency_key=idempotency_key,
        )
        if not created:
            response.status_code = status.HTTP_200_OK
        return SweepPublic.of(sweep, sweep_trials(session, sweep))


@router.get("", response_model=SweepsPublic)
def list_sweeps_route(
    principal: PrincipalDep,
    store: StoreDep,
    status_: Annotated[str | None, status_filter(SweepStatus)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> SweepsPublic:
    """This tenant's sweeps, newest first."""
    chosen = statuses(status_, SweepStatus)
    with store.read() as session:
        sweeps, count = list_sweeps(
            session=session, tenant_id=principal.tenant_id, statuses=chosen, limit=limit, offset=offset
        )
        return SweepsPublic(data=[SweepPublic.of(s, sweep_trials(session, s)) for s in sweeps], count=count)


@router.get("/{sweep_id}", response_model=SweepPublic, responses=error_responses(404))
def get_sweep_route(sweep_id: str, principal: PrincipalDep, store: StoreDep) -> SweepPublic:
    """A sweep's status, progress and best trial so far."""
    with store.read() as session:
        sweep = get_sweep(session=session, tenant_id=principal.tenant_id, sweep_id=sweep_id)
        return SweepPublic.of(sweep, sweep_trials(session, sweep))


@router.get("/{sweep_id}/trials", response_model=TrialsPublic, responses=error_responses(404))
def list_trials_route(sweep_id: str, key: KeyDep, store: StoreDep) -> Response:
    """Every trial of a sweep: its job, parameters, state and objective."""
    with read_as(store, key) as (principal, session):
        sweep = get_sweep(session=session, tenant_id=principal.tenant_id, sweep_id=sweep_id)
        found = sweep_trials(session, sweep)
    return json_response(TrialsPublic(data=found, count=len(found)))


@router.post(
    "/{sweep_id}/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=SweepPublic,
    responses=error_responses(404, 409, 413),
)
def cancel_sweep_route(sweep_id: str, principal: PrincipalDep, store: StoreDep) -> SweepPublic:
    """Cancel a sweep and its unfinished trials; finished trials stay readable."""
    with store.transaction() as session:
        sweep = request_cancel_sweep(session=session, tenant_id=principal.tenant_id, sweep_id=sweep_id)
        return SweepPublic.of(sweep, sweep_trials(session, sweep))


@router.get(
    "/{sweep_id}/importances", response_model=dict[str, dict[str, float]], responses=error_responses(404)
)
def get_importances_route(
    sweep_id: str, principal: PrincipalDep, store: StoreDep, settings: SettingsDep
) -> dict[str, dict[str, float]]:
    """Parameter importances per compared preset (Optuna's default evaluator); empty until a
    preset has two finished trials."""
    with store.read() as session:
        sweep = get_sweep(session=session, tenant_id=principal.tenant_id, sweep_id=sweep_id)
        return importances(session, sweep, settings.resolved_database_url())


@router.get("/{sweep_id}/history", response_model=SweepHistoryPublic, responses=error_responses(404))
def get_history_route(
    sweep_id: str, principal: PrincipalDep, store: StoreDep, settings: SettingsDep
) -> SweepHistoryPublic:
    """Per compared preset, the finished trials in completion order (objective, best so far,
    params) and every trial's intermediate values, read from Optuna."""
    with store.read() as session:
        sweep = get_sweep(session=session, tenant_id=principal.tenant_id, sweep_id=sweep_id)
        return history(session, sweep, settings.resolved_database_url())


@router.get("/{sweep_id}/transfer", response_model=dict[str, Any] | None, responses=error_responses(404))
def get_transfer_route(sweep_id: str, principal: PrincipalDep, store: StoreDep) -> dict[str, Any] | None:
    """A proxy sweep's best lr per width, the slope of log(lr) on log(width) with its interval, the
    recommended full-size lr and the confirmation runs (null for a sweep without a proxy)."""
    with store.read() as session:
        sweep = get_sweep(session=session, tenant_id=principal.tenant_id, sweep_id=sweep_id)
        return stored_transfer(session, sweep)
