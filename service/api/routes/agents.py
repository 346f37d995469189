"""Agents: users' own training scripts claim the trials of `executor: agents` sweeps and studies,
report metric points into them, store checkpoints and finish them (store/agents.py).

Every route but the claim names the trial's job and carries the claim's lease token in the
`Symopt-Lease` header; a token that no longer holds the job is a 409, whatever the request.
"""

from __future__ import annotations

import os
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, status
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from service.sweep_spec import SweepSpec

from ...errors import ConflictError
from ...settings import Settings
from ...store import JobStatus, Store, SweepStatus
from ...store.agents import (
    AGENTS,
    Claim,
    claim_trial,
    claimable_scope,
    finish_trial,
    held_job,
    record_report,
)
from ...store.jobs import NewEvent, append_events, get_job, transition
from ...store.metrics import Point
from ...store.models import Job, Study, Sweep, utcnow
from ...store.studies import StudyStatus, get_study
from ...store.sweeps import get_sweep, searched_paths, trial_params
from ...sweeps.agent_pruning import prune_verdict
from ...uploads import receive_body
from ..agent_schemas import (
    AgentTrialPublic,
    ClaimIn,
    ClaimPublic,
    FinishIn,
    LeasePublic,
    ReportIn,
    ReportPublic,
)
from ..deps import PrincipalDep, SettingsDep, StoreDep
from ..errors import error_responses
from ..schemas import JobPublic
from .jobs import visible_job

router = APIRouter(tags=["agents"], responses=error_responses(400, 401, 404, 409, 422, 503))


def visible_sweep(sweep_id: str, principal: PrincipalDep, store: StoreDep) -> Sweep:
    """The sweep, once this tenant may see it: another tenant's sweep is a 404 whatever the
    request's body, query or headers (FastAPI validates those after the dependencies)."""
    with store.read() as session:
        return get_sweep(session=session, tenant_id=principal.tenant_id, sweep_id=sweep_id)


def visible_study(study_id: str, principal: PrincipalDep, store: StoreDep) -> Study:
    with store.read() as session:
        return get_study(session=session, tenant_id=principal.tenant_id, study_id=study_id)


# Each route's object is looked up before its input is validated: 404 first, as everywhere else.
VisibleSweep = Annotated[Sweep, Depends(visible_sweep)]
VisibleStudy = Annotated[Study, Depends(visible_study)]
VisibleJob = Annotated[str, Depends(visible_job)]

LeaseToken = Annotated[
    str,
    Header(alias="Symopt-Lease", min_length=8, max_length=200, description="the lease token of the claim"),
]
_KEEP_CHECKPOINTS = 2


# -- claim --------------------------------------------------------------------------------------


@router.post("/v1/sweeps/{sweep_id}/claim", response_model=ClaimPublic)
def claim_sweep_trial_route(
    sweep: VisibleSweep, body: ClaimIn, principal: PrincipalDep, store: StoreDep, settings: SettingsDep
) -> ClaimPublic:
    """Claim the next trial of an `executor: agents` sweep: its parameters, its whole job spec and
    a lease; `trial` is null when none waits now (ask again after `retry_after`), `done` once the
    sweep has finished."""
    _runs_on_agents(sweep.spec, f"Sweep {sweep.id}")
    state = SweepStatus(sweep.status)
    scope = claimable_scope(sweep_id=sweep.id)
    with store.read() as session:
        waiting = _waiting(session, principal.tenant_id, scope)
    parallelism = int(sweep.spec.get("parallelism", 1))
    return _claim(store, settings, principal.tenant_id, body, scope, state, waiting, parallelism)


@router.post("/v1/studies/{study_id}/claim", response_model=ClaimPublic)
def claim_study_trial_route(
    study: VisibleStudy, body: ClaimIn, principal: PrincipalDep, store: StoreDep, settings: SettingsDep
) -> ClaimPublic:
    """Claim the next run of an `executor: agents` study: a tuning trial of any candidate, or a
    seeded confirmation run, as the study reaches them."""
    _runs_on_agents(study.spec, f"Study {study.id}")
    state = StudyStatus(study.status)
    scope = claimable_scope(study_id=study.id)
    with store.read() as session:
        waiting = _waiting(session, principal.tenant_id, scope)
    parallelism = int(study.spec.get("tuning", {}).get("parallelism", 2))
    return _claim(store, settings, principal.tenant_id, body, scope, state, waiting, parallelism)


def _runs_on_agents(spec: dict[str, Any], what: str) -> None:
    if spec.get("executor", "service") != AGENTS:
        raise ConflictError(
            f"{what} runs its trials on the service's workers (executor: service): agents can claim "
            "trials only of a sweep or study submitted with `executor: agents`"
        )


def _waiting(session: Session, tenant_id: str, scope: Any) -> int:
    query = select(func.count()).where(
        Job.tenant_id == tenant_id, Job.executor == AGENTS, Job.status == JobStatus.QUEUED, scope
    )
    return int(session.scalar(query) or 0)


def _claim(
    store: Store,
    settings: Settings,
    tenant_id: str,
    body: ClaimIn,
    scope: Any,
    state: SweepStatus | StudyStatus,
    waiting: int,
    parallelism: int,
) -> ClaimPublic:
    retry = settings.agent_poll_seconds
    if state.terminal:
        return ClaimPublic(trial=None, done=True, status=state, retry_after=retry, reason=f"it has {state}")
    if waiting == 0:  # the common answer to a poll: no write transaction for it
        reason = (
            "it is being cancelled"
            if state in (SweepStatus.CANCELLING, StudyStatus.CANCELLING)
            else f"every trial it runs at once (parallelism {parallelism}) is out: held by agents, or "
            "being asked of the sampler; raise parallelism to keep more agents busy"
        )
        return ClaimPublic(trial=None, done=False, status=state, retry_after=retry, reason=reason)
    seconds = body.lease_seconds or settings.agent_lease_seconds
    with store.transaction() as session:
        now = utcnow()
        claim = claim_trial(
            session=session, tenant_id=tenant_id, scope=scope, lease_seconds=seconds, host=body.host or "?",
            now=now,
        )  # fmt: skip
        if claim is None:  # another agent was quicker
            return ClaimPublic(
                trial=None, done=False, status=state, retry_after=retry, reason="claimed by another"
            )
        return ClaimPublic(trial=_trial(session, claim), done=False, status=state, retry_after=retry)


def _trial(session: Session, claim: Claim) -> AgentTrialPublic:
    job = claim.job
    sweep = session.get(Sweep, job.sweep_id) if job.sweep_id is not None else None
    if sweep is None and job.study_id is not None:  # a confirmation run: its candidate's tuning sweep
        sweep = session.scalar(
            select(Sweep).where(Sweep.study_id == job.study_id, Sweep.study_candidate == job.study_candidate)
        )
    params = trial_params(job, searched_paths(sweep, SweepSpec.model_validate(sweep.spec))) if sweep else {}
    assert job.lease_expires_at is not None
    assert job.lease_seconds is not None
    return AgentTrialPublic(
        job_id=job.id,
        name=job.name,
        kind="trial" if job.sweep_id is not None else "confirmation",
        sweep_id=job.sweep_id,
        study_id=job.study_id or (sweep.study_id if sweep is not None else None),
        number=job.trial_number,
        candidate=job.study_candidate or (sweep.study_candidate if sweep is not None else None),
        preset=job.spec["optimizer"]["preset"],
        params=params,
        optimizer=job.spec["optimizer"],
        spec=job.spec,
        attempt=job.attempt,
        resume_step=claim.resume_step,
        lease=LeasePublic(token=claim.token, expires_at=job.lease_expires_at, seconds=job.lease_seconds),
    )


# -- report and finish --------------------------------------------------------------------------


@router.post("/v1/jobs/{job_id}/report", response_model=ReportPublic)
def report_route(
    job_id: VisibleJob,
    body: ReportIn,
    lease: LeaseToken,
    principal: PrincipalDep,
    store: StoreDep,
    settings: SettingsDep,
) -> ReportPublic:
    """Store a batch of metric points of a held trial and renew its lease (no points: a heartbeat).
    The answer says whether to stop: pruned by the sweep's pruner, cancelled, or diverged (a
    non-finite loss ends the trial `diverged`). A point reported again overwrites itself."""
    now = utcnow()
    points = {(p.name, p.step): Point(p.name, p.step, p.number, now.timestamp()) for p in body.points}
    with store.transaction() as session:
        job = held_job(session=session, tenant_id=principal.tenant_id, job_id=job_id, token=lease, now=now)
        outcome = record_report(session=session, job=job, points=list(points.values()), now=now)
        judge = outcome.new_val_losses and job.status == JobStatus.RUNNING and job.sweep_id is not None
    if judge:
        pruned_at = prune_verdict(store, settings, job_id)
        if pruned_at is not None:
            with store.transaction() as session:
                job = get_job(session=session, tenant_id=principal.tenant_id, job_id=job_id, for_update=True)
                if job.status == JobStatus.RUNNING:
                    transition(session=session, job=job, to=JobStatus.CANCELLING, pruned_at=pruned_at,
                               message=f"pruned by the sweep's pruner at {pruned_at:,} tokens")  # fmt: skip
    return _answer(job, outcome.stored)


def _answer(job: Job, stored: int) -> ReportPublic:
    state = JobStatus(job.status)
    pruned = job.pruned_at is not None
    cancelling = state == JobStatus.CANCELLING and not pruned
    return ReportPublic(
        stored=stored,
        status=state,
        should_prune=pruned,
        cancel_requested=cancelling or state in (JobStatus.CANCELLED, JobStatus.PRUNED),
        stop=pruned or state != JobStatus.RUNNING,
        pruned_at_tokens=job.pruned_at,
        diverged_at=job.diverged_at,
        lease_expires_at=job.lease_expires_at,
    )


@router.post("/v1/jobs/{job_id}/finish", response_model=JobPublic)
def finish_route(
    job_id: VisibleJob, body: FinishIn, lease: LeaseToken, principal: PrincipalDep, store: StoreDep
) -> JobPublic:
    """End a held trial: succeeded (with `objective`, or its reported val_loss), failed (with
    `error`), or pruned (once a report said should_prune). Finishing a finished trial again
    answers it as it is."""
    with store.transaction() as session:
        job = held_job(
            session=session, tenant_id=principal.tenant_id, job_id=job_id, token=lease, now=utcnow()
        )
        finish_trial(
            session=session, job=job, outcome=body.status, objective=body.objective, error=body.error
        )
        return JobPublic.of(job)


# -- checkpoints --------------------------------------------------------------------------------


@router.put(
    "/v1/jobs/{job_id}/checkpoint",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(413),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def upload_checkpoint_route(
    request: Request,
    job_id: VisibleJob,
    lease: LeaseToken,
    principal: PrincipalDep,
    store: StoreDep,
    settings: SettingsDep,
    step: Annotated[int, Query(ge=0, le=2**31 - 1, description="the training step it was saved after")],
) -> None:
    """Store a held trial's checkpoint (the body, any bytes: `torch.save` of its state). When its
    lease runs out, the next agent resumes from the newest one (`resume_step` of its claim,
    GET /v1/jobs/{id}/checkpoint); the points reported after it are dropped then."""

    def holds() -> None:
        with store.transaction() as session:
            job = held_job(
                session=session, tenant_id=principal.tenant_id, job_id=job_id, token=lease, now=utcnow()
            )
            _still_running(job)

    await run_in_threadpool(holds)  # before the body: a lost holder's upload is refused unread
    received = await receive_body(request, settings.resolved_artifact_root(), settings.max_upload_bytes, None)
    try:

        def place() -> None:
            with store.transaction() as session:
                job = held_job(
                    session=session, tenant_id=principal.tenant_id, job_id=job_id, token=lease, now=utcnow()
                )
                _still_running(job)
                directory = settings.job_run_dir(job_id) / "checkpoints"
                directory.mkdir(parents=True, exist_ok=True)
                target = directory / f"step_{step:09d}.pt"
                os.replace(received.path, target)
                for old in [p for p in sorted(directory.glob("step_*.pt")) if p != target][
                    : -_KEEP_CHECKPOINTS + 1
                ]:
                    old.unlink(missing_ok=True)
                job.checkpoint_step = step
                append_events(session=session, job_id=job_id, events=[
                    NewEvent("checkpoint", step, f"checkpoint at step {step} ({received.size:,} bytes)",
                             {"bytes": received.size, "by": "agent"})
                ])  # fmt: skip

        await run_in_threadpool(place)
    finally:
        received.path.unlink(missing_ok=True)


def _still_running(job: Job) -> None:
    if JobStatus(job.status).terminal:
        raise ConflictError(f"Job {job.id} already finished ({job.status}); it takes no checkpoints")
