"""Sweeps: create, list, read (with the best trial so far), trials, cancel."""

from __future__ import annotations

from typing import Annotated

import optuna
from fastapi import APIRouter, Query, status
from sqlalchemy.orm import Session

from symopt_core.sweep_spec import SweepSpec

from ...store.models import Sweep
from ...store.status import JobStatus, SweepStatus
from ...store.sweeps import create_sweep, get_sweep, list_sweeps, request_cancel_sweep, trials
from ...sweeps.controller import study_names
from ...sweeps.space import search_space
from ..deps import LimiterDep, PrincipalDep, SettingsDep, StoreDep
from ..params import statuses
from ..schemas import SweepPublic, SweepsPublic, TrialPublic, TrialsPublic

router = APIRouter(prefix="/v1/sweeps", tags=["sweeps"])


def _trials(session: Session, sweep: Sweep) -> list[TrialPublic]:
    return [
        TrialPublic(
            job_id=t.job.id,
            trial_number=t.job.trial_number,
            study=t.job.trial_study,
            preset=t.job.spec["optimizer"]["preset"],
            status=JobStatus(t.job.status),
            state="pruned" if t.job.pruned_at is not None else JobStatus(t.job.status).value,
            pruned_at_tokens=t.job.pruned_at,
            params=t.params,
            objective=t.objective,
            finished_at=t.job.finished_at,
        )
        for t in trials(session=session, sweep=sweep)
    ]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=SweepPublic)
def create_sweep_route(
    spec: SweepSpec, principal: PrincipalDep, store: StoreDep, limiter: LimiterDep
) -> SweepPublic:
    """Queue a sweep: a base job, a search space, a sampler, a pruner and a trial budget."""
    limiter.check(principal.key_id, "sweep submissions")
    presets: list[str | None] = [*spec.presets] if spec.presets else [None]
    resolved = {
        preset or "default": {
            path: r.model_dump(exclude_none=True)
            for path, r in search_space(spec, preset or spec.base.optimizer.preset).items()
        }
        for preset in presets
    }
    with store.transaction() as session:
        sweep = create_sweep(
            session=session, tenant_id=principal.tenant_id, spec=spec, resolved_space=resolved
        )
        return SweepPublic.of(sweep, [])


@router.get("", response_model=SweepsPublic)
def list_sweeps_route(
    principal: PrincipalDep,
    store: StoreDep,
    status_: Annotated[str | None, Query(alias="status", description="comma-separated statuses")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> SweepsPublic:
    """This tenant's sweeps, newest first."""
    chosen = statuses(status_, SweepStatus)
    with store.transaction() as session:
        sweeps, count = list_sweeps(
            session=session, tenant_id=principal.tenant_id, statuses=chosen, limit=limit, offset=offset
        )
        return SweepsPublic(data=[SweepPublic.of(s, _trials(session, s)) for s in sweeps], count=count)


@router.get("/{sweep_id}", response_model=SweepPublic)
def get_sweep_route(sweep_id: str, principal: PrincipalDep, store: StoreDep) -> SweepPublic:
    """A sweep's status, progress and best trial so far."""
    with store.transaction() as session:
        sweep = get_sweep(session=session, tenant_id=principal.tenant_id, sweep_id=sweep_id)
        return SweepPublic.of(sweep, _trials(session, sweep))


@router.get("/{sweep_id}/trials", response_model=TrialsPublic)
def list_trials_route(sweep_id: str, principal: PrincipalDep, store: StoreDep) -> TrialsPublic:
    """Every trial of a sweep: its job, parameters, state and objective."""
    with store.transaction() as session:
        sweep = get_sweep(session=session, tenant_id=principal.tenant_id, sweep_id=sweep_id)
        found = _trials(session, sweep)
    return TrialsPublic(data=found, count=len(found))


@router.post("/{sweep_id}/cancel", status_code=status.HTTP_202_ACCEPTED, response_model=SweepPublic)
def cancel_sweep_route(sweep_id: str, principal: PrincipalDep, store: StoreDep) -> SweepPublic:
    """Cancel a sweep and its unfinished trials; finished trials stay readable."""
    with store.transaction() as session:
        sweep = request_cancel_sweep(session=session, tenant_id=principal.tenant_id, sweep_id=sweep_id)
        return SweepPublic.of(sweep, _trials(session, sweep))


@router.get("/{sweep_id}/importances", response_model=dict[str, dict[str, float]])
def get_importances_route(
    sweep_id: str, principal: PrincipalDep, store: StoreDep, settings: SettingsDep
) -> dict[str, dict[str, float]]:
    """Parameter importances per compared preset (Optuna's default evaluator); empty until a
    preset has two finished trials."""
    with store.transaction() as session:
        sweep = get_sweep(session=session, tenant_id=principal.tenant_id, sweep_id=sweep_id)
        done = [t for t in _trials(session, sweep) if t.objective is not None]
    names = study_names(sweep, SweepSpec.model_validate(sweep.spec))
    result: dict[str, dict[str, float]] = {}
    for name, preset in names.items():
        key = preset or sweep.spec["base"].get("optimizer", {}).get("preset", "symmetric")
        if sum(1 for t in done if t.study == name) < 2:
            result[key] = {}
            continue
        study = optuna.load_study(study_name=name, storage=settings.resolved_database_url())
        result[key] = {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}
    return result
