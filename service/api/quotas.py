"""What one tenant may hold at once: active and queued jobs, and GPU-hours used. A submission
over a quota is a 429 that names it (QuotaExceededError); what is already queued runs on."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..errors import QuotaExceededError
from ..settings import Settings
from ..store import JobStatus
from ..store.models import Job, utcnow

__all__ = ["check_quotas", "gpu_hours"]

_ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.CANCELLING)


def check_quotas(session: Session, *, tenant_id: str, settings: Settings) -> None:
    """Raise QuotaExceededError when the tenant is at a quota a new job would pass."""
    counts = dict(
        session.execute(
            select(Job.status, func.count())
            .where(Job.tenant_id == tenant_id, Job.status.in_([s.value for s in _ACTIVE]))
            .group_by(Job.status)
        ).all()
    )
    active, queued = sum(counts.values()), counts.get(JobStatus.QUEUED.value, 0)
    if settings.quota_active_jobs is not None and active >= settings.quota_active_jobs:
        raise QuotaExceededError(
            f"Quota active_jobs: this tenant has {active} queued, running or cancelling jobs (sweep trials "
            f"included) and may have {settings.quota_active_jobs}; wait for some to finish or cancel some"
        )
    if settings.quota_queued_jobs is not None and queued >= settings.quota_queued_jobs:
        raise QuotaExceededError(
            f"Quota queued_jobs: this tenant has {queued} jobs waiting in the queue and may have "
            f"{settings.quota_queued_jobs}; wait for them to start or cancel some"
        )
    if settings.quota_gpu_hours is not None:
        used = gpu_hours(session, tenant_id=tenant_id)
        if used >= settings.quota_gpu_hours:
            raise QuotaExceededError(
                f"Quota gpu_hours: this tenant's jobs have used {used:.1f} GPU-hours of "
                f"{settings.quota_gpu_hours:g}; ask the operator for more"
            )


def gpu_hours(session: Session, *, tenant_id: str) -> float:
    """GPU-hours the tenant's jobs have used: GPUs × time since start (to the end, or now)."""
    now = utcnow()
    rows = session.execute(
        select(Job.gpus, Job.started_at, Job.finished_at).where(
            Job.tenant_id == tenant_id, Job.gpus > 0, Job.started_at.is_not(None)
        )
    ).all()
    return sum(
        gpus * ((finished or now) - started).total_seconds() / 3600
        for gpus, started, finished in rows
        if started is not None
    )
