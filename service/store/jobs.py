"""Jobs and their event log: keyword-only functions; routes and the scheduler never write SQL."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from symopt_core.spec import JobSpec

from ..errors import ConflictError, NotFoundError
from .idempotency import add_once
from .models import Job, JobEvent, utcnow
from .status import JobStatus, check_transition

__all__ = [
    "NewEvent",
    "append_events",
    "create_job",
    "delete_job",
    "get_job",
    "list_jobs",
    "read_events",
    "request_cancel",
    "transition",
]


@dataclass(frozen=True)
class NewEvent:
    kind: str  # status | eval | checkpoint | log | metrics | result
    step: int | None = None
    message: str = ""
    data: dict[str, Any] = field(default_factory=dict)


def create_job(
    *,
    session: Session,
    tenant_id: str,
    spec: JobSpec,
    idempotency_key: str | None = None,
    sweep_id: str | None = None,
    trial_number: int | None = None,
    max_attempts: int = 3,
    executor: str = "service",
) -> tuple[Job, bool]:
    """Queue a job; returns (job, created). The same idempotency key within 24 h returns the
    job it created first, with created=False. executor "agents": an agent claims it, not Ray."""
    job, created = add_once(
        session,
        Job(
            tenant_id=tenant_id,
            name=spec.name,
            status=JobStatus.QUEUED,
            spec=spec.model_dump(mode="json"),
            gpus=spec.resources.gpus,
            cpus=spec.resources.total_cpus,
            sweep_id=sweep_id,
            trial_number=trial_number,
            idempotency_key=idempotency_key,
            max_attempts=max_attempts,
            executor=executor,
        ),
        tenant_id=tenant_id,
        key=idempotency_key,
    )
    if not created:
        return job, False
    message = "queued for an agent" if executor == "agents" else "queued"
    append_events(
        session=session, job_id=job.id, events=[NewEvent("status", 0, message, {"status": "queued"})]
    )
    return job, True


def get_job(*, session: Session, tenant_id: str | None, job_id: str, for_update: bool = False) -> Job:
    """The job `job_id` of the tenant (tenant_id=None: any tenant, for the scheduler)."""
    query = select(Job).where(Job.id == job_id)
    if tenant_id is not None:
        query = query.where(Job.tenant_id == tenant_id)
    if for_update:
        query = query.with_for_update()
    job = session.scalar(query)
    if job is None:
        raise NotFoundError(f"No job {job_id}")
    return job


def list_jobs(
    *,
    session: Session,
    tenant_id: str,
    statuses: Sequence[str] = (),
    name: str | None = None,
    sweep_id: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[Job], int]:
    """Newest first, and how many match in all."""
    query = select(Job).where(Job.tenant_id == tenant_id)
    if statuses:
        query = query.where(Job.status.in_(list(statuses)))
    if name is not None:
        query = query.where(Job.name == name)
    if sweep_id is not None:
        query = query.where(Job.sweep_id == sweep_id)
    count = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    page = session.scalars(query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit).offset(offset))
    return list(page), count


def transition(*, session: Session, job: Job, to: JobStatus, message: str = "", **fields: Any) -> Job:
    """Move `job` to status `to` (checked against the state machine), set `fields`, log an event.
    A sweep trial's cancellation after its pruner stopped it (`pruned_at` set) ends it `pruned`."""
    if to == JobStatus.CANCELLED and job.pruned_at is not None:
        to = JobStatus.PRUNED
        message = f"pruned at {job.pruned_at:,} tokens"
    check_transition(JobStatus(job.status), to)
    now = utcnow()
    job.status = to
    if to == JobStatus.RUNNING and job.started_at is None:
        job.started_at = now
    if to.terminal:
        job.finished_at = now
    for key, value in fields.items():
        setattr(job, key, value)
    append_events(
        session=session, job_id=job.id, events=[NewEvent("status", job.step, message or to, {"status": to})]
    )
    return job


def request_cancel(*, session: Session, tenant_id: str, job_id: str) -> Job:
    """A queued job is cancelled at once; a running one becomes `cancelling` until its task stops."""
    job = get_job(session=session, tenant_id=tenant_id, job_id=job_id, for_update=True)
    status = JobStatus(job.status)
    if status == JobStatus.CANCELLING:
        return job
    if status.terminal:
        raise ConflictError(f"Job {job_id} already finished ({status}); there is nothing to cancel")
    target = JobStatus.CANCELLED if status == JobStatus.QUEUED else JobStatus.CANCELLING
    return transition(session=session, job=job, to=target, message="cancel requested")


def delete_job(*, session: Session, tenant_id: str, job_id: str) -> None:
    """Delete a finished job with its metrics and events."""
    job = get_job(session=session, tenant_id=tenant_id, job_id=job_id, for_update=True)
    if not JobStatus(job.status).terminal:
        raise ConflictError(
            f"Job {job_id} is {job.status}; cancel it and wait until it has stopped before deleting"
        )
    session.delete(job)


def append_events(*, session: Session, job_id: str, events: Iterable[NewEvent]) -> None:
    session.add_all(
        JobEvent(job_id=job_id, kind=e.kind, step=e.step, message=e.message, data=e.data) for e in events
    )


def read_events(
    *, session: Session, job_id: str, after_id: int = 0, kinds: Sequence[str] = (), limit: int = 1000
) -> list[JobEvent]:
    """Events of a job after event id `after_id`, oldest first."""
    query = select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.id > after_id)
    if kinds:
        query = query.where(JobEvent.kind.in_(list(kinds)))
    return list(session.scalars(query.order_by(JobEvent.id).limit(limit)))
