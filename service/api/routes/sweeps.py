"""Sweeps: create, list, read (with the best trial so far), trials, history, importances, cancel."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Annotated, Any

import optuna
from fastapi import APIRouter, Body, Query, Response, status
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.orm import Session

from symopt_core.sweep_spec import SweepSpec

from ...store.models import Sweep
from ...store.status import JobStatus, SweepStatus
from ...store.sweeps import create_sweep, get_sweep, list_sweeps, request_cancel_sweep, trial_jobs, trials
from ...sweeps.controller import study_names
from ...sweeps.space import check_sampler, resolved_spaces
from ...sweeps.storage import optuna_storage
from ..deps import LimiterDep, PrincipalDep, SettingsDep, SpecCheckerDep, StoreDep
from ..errors import error_responses
from ..params import IdempotencyKey, documented_as, status_filter, statuses
from ..schemas import (
    HistoryTrialPublic,
    IntermediatePublic,
    StudyHistoryPublic,
    SweepHistoryPublic,
    SweepPublic,
    SweepsPublic,
    TrialPublic,
    TrialsPublic,
)
from ..submission import check_submission

router = APIRouter(prefix="/v1/sweeps", tags=["sweeps"], responses=error_responses(400, 401, 422, 503))


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
            agent_host=t.job.agent_host,
        )
        for t in trials(session=session, sweep=sweep)
    ]


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
        return SweepPublic.of(sweep, _trials(session, sweep))


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
        return SweepsPublic(data=[SweepPublic.of(s, _trials(session, s)) for s in sweeps], count=count)


@router.get("/{sweep_id}", response_model=SweepPublic, responses=error_responses(404))
def get_sweep_route(sweep_id: str, principal: PrincipalDep, store: StoreDep) -> SweepPublic:
    """A sweep's status, progress and best trial so far."""
    with store.read() as session:
        sweep = get_sweep(session=session, tenant_id=principal.tenant_id, sweep_id=sweep_id)
        return SweepPublic.of(sweep, _trials(session, sweep))


@router.get("/{sweep_id}/trials", response_model=TrialsPublic, responses=error_responses(404))
def list_trials_route(sweep_id: str, principal: PrincipalDep, store: StoreDep) -> TrialsPublic:
    """Every trial of a sweep: its job, parameters, state and objective."""
    with store.read() as session:
        sweep = get_sweep(session=session, tenant_id=principal.tenant_id, sweep_id=sweep_id)
        found = _trials(session, sweep)
    return TrialsPublic(data=found, count=len(found))


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
        return SweepPublic.of(sweep, _trials(session, sweep))


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
        done = [t for t in _trials(session, sweep) if t.objective is not None]
    names = study_names(sweep, SweepSpec.model_validate(sweep.spec))
    result: dict[str, dict[str, float]] = {}
    for name, preset in names.items():
        key = preset or sweep.spec["base"].get("optimizer", {}).get("preset", "symmetric")
        if sum(1 for t in done if t.study == name) < 2:
            result[key] = {}
            continue
        study = optuna.load_study(study_name=name, storage=optuna_storage(settings.resolved_database_url()))
        result[key] = {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}
    return result


_STATES = {
    TrialState.COMPLETE: "complete",
    TrialState.PRUNED: "pruned",
    TrialState.FAIL: "failed",
    TrialState.RUNNING: "running",
}


@router.get("/{sweep_id}/history", response_model=SweepHistoryPublic, responses=error_responses(404))
def get_history_route(
    sweep_id: str, principal: PrincipalDep, store: StoreDep, settings: SettingsDep
) -> SweepHistoryPublic:
    """Per compared preset, the finished trials in completion order (objective, best so far,
    params) and every trial's intermediate values, read from Optuna."""
    with store.read() as session:
        sweep = get_sweep(session=session, tenant_id=principal.tenant_id, sweep_id=sweep_id)
        jobs = {key: job.id for key, job in trial_jobs(session=session, sweep_id=sweep.id).items()}
    data = []
    for name, preset in study_names(sweep, SweepSpec.model_validate(sweep.spec)).items():
        found: list[FrozenTrial] = []
        # A study has trials only once the controller gave one a job; before that, Optuna's
        # tables may not even exist, and the API does not create them.
        if any(study == name for study, _ in jobs):
            storage = optuna_storage(settings.resolved_database_url())
            with contextlib.suppress(KeyError):
                study_id = storage.get_study_id_from_name(name)
                found = storage.get_all_trials(study_id, deepcopy=False)
        data.append(
            StudyHistoryPublic(
                preset=preset or sweep.spec["base"].get("optimizer", {}).get("preset", "symmetric"),
                study=name,
                **_history(found, {number: job for (study, number), job in jobs.items() if study == name}),
            )
        )
    return SweepHistoryPublic(sweep_id=sweep.id, data=data)


def _history(found: list[FrozenTrial], jobs: dict[int | None, str]) -> dict[str, list[HistoryTrialPublic]]:
    """{finished: in completion order with the best so far, running: by number}."""
    finished = sorted(
        (t for t in found if t.state.is_finished() and t.state in _STATES),
        key=lambda t: (t.datetime_complete or t.datetime_start or datetime.min, t.number),
    )
    best: float | None = None
    history = []
    for trial in finished:
        value = trial.value if trial.state == TrialState.COMPLETE else None
        if value is not None and (best is None or value < best):
            best = value
        history.append(_trial(trial, jobs, value, best))
    running = [
        _trial(t, jobs, None, None)
        for t in sorted(found, key=lambda t: t.number)
        if t.state == TrialState.RUNNING
    ]
    return {"finished": history, "running": running}


def _aware(moment: datetime | None) -> datetime | None:
    """Optuna stores its trials' times naive, in the local time of the process that wrote them;
    the API's times carry their offset (RFC 3339), as every other time it answers does."""
    return moment.astimezone(UTC) if moment is not None else None


def _trial(
    trial: FrozenTrial, jobs: dict[int | None, str], value: float | None, best: float | None
) -> HistoryTrialPublic:
    return HistoryTrialPublic(
        number=trial.number,
        job_id=jobs.get(trial.number),
        state=_STATES[trial.state],
        params=dict(trial.params),
        objective=value,
        best_so_far=best,
        completed_at=_aware(trial.datetime_complete),
        intermediate=[
            IntermediatePublic(tokens=int(tokens), value=float(v))
            for tokens, v in sorted(trial.intermediate_values.items())
        ],
    )
