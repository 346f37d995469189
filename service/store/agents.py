"""Agent trials: jobs that a user's own training script claims over HTTP and holds under a lease.

A job of an `executor: agents` sweep or study is queued like any other, but the scheduler never
launches it. An agent claims it (queued -> running, a fresh lease token whose SHA-256 is kept),
reports metric points into the same table as the service's runs (each report renews the lease),
and finishes it. A lease that runs out ends that attempt: the job goes back to the queue for the
next agent (a failure counted against `max_attempts`), its points after the resume step dropped
so that the next attempt's history is the run's; a cancelling job is cancelled. A report or finish
with a token that is not the job's current one is a 409: its holder lost the trial.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session

from ..errors import ConflictError
from .jobs import NewEvent, append_events, get_job, transition
from .metrics import Point, note_progress, record_metrics
from .models import Job, MetricPoint, Sweep, utcnow
from .results import JobResult
from .status import JobStatus

__all__ = [
    "AGENTS",
    "DIVERGENCE_METRICS",
    "Claim",
    "LeaseError",
    "ReportOutcome",
    "claim_trial",
    "claimable_scope",
    "expire_leases",
    "extend_leases",
    "finish_trial",
    "has_expired_leases",
    "held_job",
    "record_report",
    "run_result",
    "tokens_per_step",
]

AGENTS = "agents"  # Job.executor of a job that agents run
# A non-finite value of one of these ends the trial `diverged`, as the service's loop does.
DIVERGENCE_METRICS = frozenset({"loss", "train_loss", "val_loss"})
_HELD = (JobStatus.RUNNING, JobStatus.CANCELLING)


class LeaseError(ConflictError):
    """The presented lease is not the job's current one, or it has run out (409)."""


@dataclass(frozen=True)
class Claim:
    job: Job
    token: str  # shown once, to the claiming agent
    resume_step: int | None  # the step of the checkpoint it resumes from; None: from scratch


@dataclass(frozen=True)
class ReportOutcome:
    stored: int
    new_val_losses: bool
    diverged_at: int | None


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def tokens_per_step(job: Job) -> int:
    return int(job.spec["batch"]["size"]) * int(job.spec["data"]["seq_len"])


def claimable_scope(*, sweep_id: str | None = None, study_id: str | None = None) -> Any:
    """The SQL condition on jobs of a sweep, or of a study (its tuning sweeps and its runs)."""
    if sweep_id is not None:
        return Job.sweep_id == sweep_id
    sweeps = select(Sweep.id).where(Sweep.study_id == study_id)
    return or_(Job.study_id == study_id, Job.sweep_id.in_(sweeps))


def claim_trial(
    *, session: Session, tenant_id: str, scope: Any, lease_seconds: int, host: str, now: datetime
) -> Claim | None:
    """The oldest queued agent job in `scope`, now running under a new lease; None when none waits.
    On PostgreSQL a row another agent is claiming is skipped; SQLite serialises writers."""
    query = (
        select(Job)
        .where(Job.tenant_id == tenant_id, Job.executor == AGENTS, Job.status == JobStatus.QUEUED, scope)
        .order_by(Job.created_at, Job.id)
        .limit(1)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    job = session.scalar(query)
    if job is None:
        return None
    token = secrets.token_urlsafe(32)
    resume = job.checkpoint_step
    transition(
        session=session,
        job=job,
        to=JobStatus.RUNNING,
        message=f"attempt {job.attempt + 1} claimed by an agent on {host}"
        + (f", resuming from its checkpoint at step {resume}" if resume is not None else ""),
        attempt=job.attempt + 1,
        owner=f"agent:{host}"[:64],
        agent_host=host,
        heartbeat_at=now,
        queued_reason=None,
        lease_token_hash=_hash(token),
        lease_seconds=lease_seconds,
        lease_expires_at=now + timedelta(seconds=lease_seconds),
    )
    return Claim(job, token, resume)


def held_job(*, session: Session, tenant_id: str, job_id: str, token: str, now: datetime) -> Job:
    """The job `token` holds, locked for this transaction: 404 when the tenant has no such job,
    409 (LeaseError) when the token is not its current lease or that lease has run out."""
    job = get_job(session=session, tenant_id=tenant_id, job_id=job_id, for_update=True)
    if job.executor != AGENTS:
        raise ConflictError(f"Job {job_id} is run by the service, not by an agent: it takes no reports")
    if job.lease_token_hash is None or not hmac.compare_digest(_hash(token), job.lease_token_hash):
        raise LeaseError(
            f"This lease no longer holds job {job_id} (it is {job.status}, attempt {job.attempt}): its "
            "lease ran out and the trial went to another agent, or it was never this one's; stop this run"
        )
    expires = job.lease_expires_at
    if JobStatus(job.status) in _HELD and expires is not None and expires < now:
        raise LeaseError(
            f"The lease on job {job_id} ran out at {expires.isoformat()} (no report or heartbeat for "
            f"{job.lease_seconds} s): the trial goes to the next agent; stop this run"
        )
    return job


def _renew(job: Job, now: datetime) -> None:
    if JobStatus(job.status) in _HELD:
        job.lease_expires_at = now + timedelta(seconds=job.lease_seconds or 60)
        job.heartbeat_at = now


def record_report(*, session: Session, job: Job, points: Sequence[Point], now: datetime) -> ReportOutcome:
    """Store `points` (idempotent on (name, step): a retried report rewrites the same rows),
    keep the job's progress, renew its lease, and end it `diverged` at the first non-finite loss."""
    if JobStatus(job.status).terminal:
        raise ConflictError(f"Job {job.id} already finished ({job.status}); it takes no more reports")
    record_metrics(session=session, job_id=job.id, points=points)
    val_losses = [p for p in points if p.name == "val_loss"]
    if points:
        finite = [p.value for p in val_losses if math.isfinite(p.value)]
        note_progress(
            session=session,
            job=job,
            step=max(p.step for p in points),
            best_val_loss=min(finite, default=None),
        )
    per_step = tokens_per_step(job)
    append_events(
        session=session,
        job_id=job.id,
        events=[
            NewEvent(
                "eval",
                p.step,
                f"val_loss {p.value}",
                {"val_loss": _json(p.value), "tokens": p.step * per_step},
            )
            for p in val_losses
        ],
    )
    bad = sorted(p.step for p in points if p.name in DIVERGENCE_METRICS and not math.isfinite(p.value))
    if bad:
        transition(
            session=session,
            job=job,
            to=JobStatus.DIVERGED,
            message=f"diverged at step {bad[0]}: a non-finite loss was reported",
            diverged_at=bad[0],
            result=run_result(session, job),
            lease_expires_at=None,
        )
        return ReportOutcome(len(points), bool(val_losses), bad[0])
    _renew(job, now)
    return ReportOutcome(len(points), bool(val_losses), None)


def _json(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)


def run_result(session: Session, job: Job, objective: float | None = None) -> dict[str, Any]:
    """What an agent's run reported, as the service's own runs' results read: the last and the
    best validation loss, every evaluation with its tokens, and the objective if the agent gave one."""
    rows = session.execute(
        select(MetricPoint.step, MetricPoint.value, MetricPoint.kind)
        .where(MetricPoint.job_id == job.id, MetricPoint.name == "val_loss")
        .order_by(MetricPoint.step)
    ).all()
    per_step = tokens_per_step(job)
    evals = [
        {"step": step, "tokens": step * per_step, "val_loss": kind or value} for step, value, kind in rows
    ]
    finite = [value for _, value, kind in rows if not kind and value is not None]
    result: dict[str, Any] = {
        "val_loss": evals[-1]["val_loss"] if evals else None,
        "best_val_loss": min(finite) if finite else None,
        "evals": evals,
        "steps": job.step,
        "tokens": job.step * per_step,
        "executor": AGENTS,
        # from the first claim: an attempt lost to an expired lease counts, as a crashed worker's does
        "wall_time_s": (utcnow() - job.started_at).total_seconds() if job.started_at is not None else None,
    }
    if objective is not None:
        result["objective"] = objective
    return JobResult.model_validate(result).to_json()  # the shape the service's own runs store


def finish_trial(
    *,
    session: Session,
    job: Job,
    outcome: str,
    objective: float | None,
    error: str | None,
) -> Job:
    """End the held job as the agent says: succeeded (with an objective, given or from its
    validation losses), failed (with the error), or pruned (only when the sweep's pruner did).
    A job that has already finished is returned as it is: a retried finish changes nothing."""
    status = JobStatus(job.status)
    if status.terminal:
        return job
    if outcome == "pruned":
        if job.pruned_at is None:
            raise ConflictError(
                f"The sweep's pruner has not pruned job {job.id}; finish it as succeeded or failed "
                "(should_prune in the answer to a report says when it does)"
            )
        return transition(session=session, job=job, to=JobStatus.CANCELLED, message="pruned",
                          result=run_result(session, job), lease_expires_at=None)  # fmt: skip
    if outcome == "failed":
        target = JobStatus.CANCELLED if status == JobStatus.CANCELLING else JobStatus.FAILED
        return transition(session=session, job=job, to=target, error=error or "the agent reported a failure",
                          result=run_result(session, job), lease_expires_at=None)  # fmt: skip
    result = run_result(session, job, objective)
    if objective is None and result["best_val_loss"] is None:
        raise ConflictError(
            f"Job {job.id} cannot succeed without an objective: report val_loss points, or finish it "
            "with an objective (trial.finish(objective=...))"
        )
    return transition(session=session, job=job, to=JobStatus.SUCCEEDED, result=result, lease_expires_at=None)


def _expired(now: datetime) -> Any:
    return (Job.executor == AGENTS) & Job.status.in_(list(_HELD)) & (Job.lease_expires_at < now)


def extend_leases(*, session: Session, now: datetime) -> int:
    """Give every held lease its full length from `now`: called when a scheduler starts, so that
    agents whose reports failed while no service answered do not lose their trials to the
    downtime. Returns how many leases it extended."""
    held = session.scalars(select(Job).where(Job.executor == AGENTS, Job.status.in_(list(_HELD)))).all()
    for job in held:
        renewed = now + timedelta(seconds=job.lease_seconds or 60)
        if job.lease_expires_at is None or job.lease_expires_at < renewed:
            job.lease_expires_at = renewed
    return len(held)


def has_expired_leases(*, session: Session, now: datetime) -> bool:
    """Whether any lease ran out (a read: the scheduler writes only when one did)."""
    return session.scalar(select(Job.id).where(_expired(now)).limit(1)) is not None


def expire_leases(*, session: Session, now: datetime) -> list[str]:
    """End every attempt whose lease ran out: requeued (resuming from its stored checkpoint, or
    from scratch) while failures remain, failed after `max_attempts`; a cancelling job is cancelled.
    Returns the ids of the jobs it touched."""
    query = select(Job).where(_expired(now))
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    touched = []
    for job in session.scalars(query):
        touched.append(job.id)
        holder = f"the lease of attempt {job.attempt} (an agent on {job.agent_host}) ran out"
        if job.status == JobStatus.CANCELLING:
            transition(session=session, job=job, to=JobStatus.CANCELLED, message=f"cancelled: {holder}",
                       lease_expires_at=None, lease_token_hash=None)  # fmt: skip
            continue
        failures = job.failures + 1
        if failures >= job.max_attempts:
            transition(
                session=session,
                job=job,
                to=JobStatus.FAILED,
                failures=failures,
                error=f"{holder}; {failures} of {job.max_attempts} attempts were lost this way",
                result=run_result(session, job),
                lease_expires_at=None,
                lease_token_hash=None,
            )
            continue
        resume = job.checkpoint_step
        _drop_points_after(session, job, -1 if resume is None else resume)
        start = f"its checkpoint at step {resume}" if resume is not None else "scratch"
        transition(
            session=session,
            job=job,
            to=JobStatus.QUEUED,
            failures=failures,
            owner=None,
            lease_token_hash=None,
            lease_expires_at=None,
            queued_reason=f"waiting for an agent: {holder} ({failures} of {job.max_attempts}); "
            f"it resumes from {start}",
            message=f"{holder}; requeued to resume from {start}",
        )
    return touched


def _drop_points_after(session: Session, job: Job, step: int) -> None:
    """The next attempt re-reports what follows its resume step: the lost attempt's later points
    go, so the stored history is one run's."""
    session.execute(delete(MetricPoint).where(MetricPoint.job_id == job.id, MetricPoint.step > step))
    job.step = max(0, step)
    remaining = session.scalars(
        select(MetricPoint.value).where(
            MetricPoint.job_id == job.id, MetricPoint.name == "val_loss", MetricPoint.kind == ""
        )
    ).all()
    job.best_val_loss = min((v for v in remaining if v is not None), default=None)
