"""Comparison studies: stored specs and status, their tuning sweeps and their confirmation runs."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.study_spec import StudySpec
from service.sweep_spec import SweepSpec
from symopt_core.spec import JobSpec

from ..errors import ConflictError
from .idempotency import add_once
from .jobs import create_job, request_cancel
from .models import Job, Study, Sweep, utcnow
from .owned import get_owned, page_of
from .ownership import claim_active
from .status import JobStatus, SweepStatus, check_transition
from .sweeps import create_sweep, request_cancel_sweep

__all__ = [
    "StudyStatus",
    "claim_studies",
    "create_confirmation_job",
    "create_study",
    "create_study_sweep",
    "finished_trials",
    "get_study",
    "list_studies",
    "request_cancel_study",
    "set_study_status",
    "study_runs",
    "study_sweeps",
]

# A study moves through the same states as a sweep (its `stage` says tuning or confirming).
StudyStatus = SweepStatus


def create_study(
    *, session: Session, tenant_id: str, spec: StudySpec, idempotency_key: str | None = None
) -> tuple[Study, bool]:
    """Store a study; returns (study, created) (a replayed idempotency key: the first one)."""
    return add_once(
        session,
        Study(
            tenant_id=tenant_id,
            name=spec.name,
            status=StudyStatus.QUEUED,
            stage="tuning",
            spec=spec.model_dump(mode="json"),
            idempotency_key=idempotency_key,
        ),
        tenant_id=tenant_id,
        key=idempotency_key,
    )


def get_study(*, session: Session, tenant_id: str | None, study_id: str) -> Study:
    return get_owned(session, Study, tenant_id=tenant_id, object_id=study_id, kind="study")


def list_studies(
    *, session: Session, tenant_id: str, statuses: Sequence[str] = (), limit: int = 50, offset: int = 0
) -> tuple[list[Study], int]:
    """Newest first, and how many match in all."""
    query = select(Study).where(Study.tenant_id == tenant_id)
    return page_of(session, query, Study, statuses=statuses, limit=limit, offset=offset)


def study_sweeps(*, session: Session, study_id: str) -> dict[str, Sweep]:
    """The study's tuning sweeps by candidate name."""
    found = session.scalars(select(Sweep).where(Sweep.study_id == study_id))
    return {str(sweep.study_candidate): sweep for sweep in found}


def study_runs(*, session: Session, study_id: str) -> dict[tuple[str, int], Job]:
    """The study's confirmation runs by (candidate, seed)."""
    found = session.scalars(select(Job).where(Job.study_id == study_id, Job.study_seed.is_not(None)))
    return {(str(job.study_candidate), int(job.study_seed or 0)): job for job in found}


def finished_trials(*, session: Session, sweep_ids: Sequence[str]) -> dict[str, int]:
    """How many trials of each sweep have finished, by sweep id (one query)."""
    if not sweep_ids:
        return {}
    terminal = [status.value for status in JobStatus if status.terminal]
    rows = session.execute(
        select(Job.sweep_id, func.count())
        .where(Job.sweep_id.in_(list(sweep_ids)), Job.status.in_(terminal))
        .group_by(Job.sweep_id)
    )
    return {str(sweep_id): int(count) for sweep_id, count in rows}


def create_study_sweep(
    *, session: Session, study: Study, candidate: str, spec: SweepSpec, resolved_space: dict[str, Any]
) -> Sweep:
    """Stage 1 of `candidate`; (study, candidate) is unique, so a candidate is never tuned twice."""
    existing = study_sweeps(session=session, study_id=study.id).get(candidate)
    if existing is not None:
        return existing
    sweep, _ = create_sweep(
        session=session, tenant_id=study.tenant_id, spec=spec, resolved_space=resolved_space
    )
    sweep.study_id, sweep.study_candidate = study.id, candidate
    session.flush()
    return sweep


def create_confirmation_job(
    *, session: Session, study: Study, candidate: str, seed: int, spec: JobSpec, max_attempts: int
) -> Job:
    """Stage 2: one run of `candidate`'s tuned configuration on `seed`; (study, candidate, seed)
    is unique, so a restarted controller never runs it twice."""
    existing = study_runs(session=session, study_id=study.id).get((candidate, seed))
    if existing is not None:
        return existing
    named = spec.model_copy(update={"name": f"{study.name or 'study'}-{candidate}-seed{seed}", "seed": seed})
    job, _ = create_job(
        session=session,
        tenant_id=study.tenant_id,
        spec=named,
        max_attempts=max_attempts,
        executor=str(study.spec.get("executor", "service")),
    )
    job.study_id, job.study_candidate, job.study_seed = study.id, candidate, seed
    session.flush()
    return job


def request_cancel_study(*, session: Session, tenant_id: str, study_id: str) -> Study:
    """Cancel a study with its running sweeps and runs; what has finished stays readable."""
    study = get_study(session=session, tenant_id=tenant_id, study_id=study_id)
    status = StudyStatus(study.status)
    if status.terminal:
        raise ConflictError(f"Study {study_id} already finished ({status}); there is nothing to cancel")
    for sweep in study_sweeps(session=session, study_id=study.id).values():
        if not SweepStatus(sweep.status).terminal and sweep.status != SweepStatus.CANCELLING:
            request_cancel_sweep(session=session, tenant_id=tenant_id, sweep_id=sweep.id)
    for job in study_runs(session=session, study_id=study.id).values():
        if not JobStatus(job.status).terminal and job.status != JobStatus.CANCELLING:
            request_cancel(session=session, tenant_id=tenant_id, job_id=job.id)
    if status != StudyStatus.CANCELLING:
        target = StudyStatus.CANCELLED if status == StudyStatus.QUEUED else StudyStatus.CANCELLING
        set_study_status(session=session, study=study, to=target)
    return study


def set_study_status(*, session: Session, study: Study, to: SweepStatus, error: str | None = None) -> None:
    check_transition(StudyStatus(study.status), to)
    study.status = to
    if to.terminal:
        study.finished_at, study.owner = utcnow(), None
    if error is not None:
        study.error = error


def claim_studies(*, session: Session, owner: str, stale_before: datetime) -> list[Study]:
    """Active studies this controller owns, or that nobody owns, or whose owner went quiet."""
    return claim_active(session=session, model=Study, owner=owner, stale_before=stale_before)
