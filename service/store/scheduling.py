"""What the scheduler asks of the store: claim queued jobs, own running ones, find orphans."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from .jobs import transition
from .models import Job, utcnow
from .status import JobStatus

__all__ = [
    "SERVICE",
    "claim_queued",
    "heartbeat",
    "orphaned",
    "requeue",
    "start_attempt",
    "wanted_cancellations",
]

SERVICE = "service"  # Job.executor of the jobs the scheduler runs on Ray


def claim_queued(*, session: Session, limit: int) -> list[Job]:
    """The oldest queued jobs, locked for this transaction; on PostgreSQL rows another scheduler
    holds are skipped (FOR UPDATE SKIP LOCKED). SQLite runs one scheduler (a file lock)."""
    query = (
        select(Job)
        .where(Job.status == JobStatus.QUEUED, Job.executor == SERVICE)
        .order_by(Job.created_at, Job.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return list(session.scalars(query))


def start_attempt(*, session: Session, job: Job, owner: str) -> Job:
    return transition(
        session=session,
        job=job,
        to=JobStatus.RUNNING,
        message=f"attempt {job.attempt + 1} started",
        attempt=job.attempt + 1,
        owner=owner,
        heartbeat_at=utcnow(),
        queued_reason=None,
    )


def heartbeat(*, session: Session, owner: str, job_ids: Sequence[str]) -> None:
    if job_ids:
        session.execute(
            update(Job).where(Job.id.in_(list(job_ids)), Job.owner == owner).values(heartbeat_at=utcnow())
        )


def orphaned(*, session: Session, owner: str, stale_before: datetime) -> list[Job]:
    """Running or cancelling jobs of other schedulers whose heartbeat stopped before `stale_before`."""
    query = select(Job).where(
        Job.status.in_([JobStatus.RUNNING, JobStatus.CANCELLING]),
        Job.executor == SERVICE,  # an agent's job lives by its lease (store/agents.py)
        or_(Job.owner.is_(None), Job.owner != owner),
        or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < stale_before),
    )
    return list(session.scalars(query.with_for_update()))


def wanted_cancellations(*, session: Session, owner: str) -> list[str]:
    """Ids of this scheduler's jobs that a user asked to cancel."""
    query = select(Job.id).where(Job.owner == owner, Job.status == JobStatus.CANCELLING)
    return list(session.scalars(query))


def requeue(*, session: Session, job: Job, reason: str) -> Job:
    """Put a running job back in the queue, unowned; its next attempt resumes from a checkpoint."""
    return transition(session=session, job=job, to=JobStatus.QUEUED, owner=None,
                      message=f"requeued: {reason}; it resumes from its newest checkpoint")  # fmt: skip
