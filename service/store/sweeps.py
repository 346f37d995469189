"""Sweeps: stored specs, their status, and their trials (the jobs linked to them)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.sweep_spec import SweepSpec
from symopt_core.spec import JobSpec

from ..errors import ConflictError
from .idempotency import add_once
from .jobs import create_job, request_cancel
from .models import Job, Sweep, new_id, utcnow
from .owned import get_owned, page_of
from .ownership import claim_active
from .status import JobStatus, SweepStatus, check_transition

__all__ = [
    "Trial",
    "create_sweep",
    "get_sweep",
    "list_sweeps",
    "objective_of",
    "request_cancel_sweep",
    "searched_paths",
    "trial_params",
    "trials",
]


@dataclass(frozen=True)
class Trial:
    job: Job
    params: dict[str, Any]
    objective: float | None


def create_sweep(
    *,
    session: Session,
    tenant_id: str,
    spec: SweepSpec,
    resolved_space: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
) -> tuple[Sweep, bool]:
    """Store a sweep; `resolved_space` is {preset: {path: range}} with "auto" worked out.
    Returns (sweep, created): the same idempotency key within 24 h returns the first sweep."""
    sweep_id = new_id()
    presets = len(spec.presets or [None])
    jobs = spec.n_trials * presets
    if spec.proxy is not None:  # a study per preset and width, then the planned full-size runs
        confirm = spec.proxy.confirm
        runs = len(confirm.factors) * len(confirm.seeds_for(spec.base.seed)) if confirm is not None else 0
        jobs = (spec.n_trials * len(spec.proxy.width) + runs) * presets
    return add_once(
        session,
        Sweep(
            id=sweep_id,
            tenant_id=tenant_id,
            name=spec.name,
            status=SweepStatus.QUEUED,
            spec=spec.model_dump(mode="json"),
            study_name=f"symopt-{sweep_id}",
            n_trials=jobs,
            resolved_space=resolved_space,
            idempotency_key=idempotency_key,
        ),
        tenant_id=tenant_id,
        key=idempotency_key,
    )


def get_sweep(*, session: Session, tenant_id: str | None, sweep_id: str) -> Sweep:
    return get_owned(session, Sweep, tenant_id=tenant_id, object_id=sweep_id, kind="sweep")


def list_sweeps(
    *, session: Session, tenant_id: str, statuses: Sequence[str] = (), limit: int = 50, offset: int = 0
) -> tuple[list[Sweep], int]:
    """Newest first, and how many match in all."""
    query = select(Sweep).where(Sweep.tenant_id == tenant_id)
    return page_of(session, query, Sweep, statuses=statuses, limit=limit, offset=offset)


def request_cancel_sweep(*, session: Session, tenant_id: str, sweep_id: str) -> Sweep:
    """Cancel a sweep and every trial that has not finished; finished trials stay readable."""
    sweep = get_sweep(session=session, tenant_id=tenant_id, sweep_id=sweep_id)
    status = SweepStatus(sweep.status)
    if status.terminal:
        raise ConflictError(f"Sweep {sweep_id} already finished ({status}); there is nothing to cancel")
    active = [j for j in _jobs(session, sweep.id) if not JobStatus(j.status).terminal]
    for job in active:
        if job.status != JobStatus.CANCELLING:
            request_cancel(session=session, tenant_id=tenant_id, job_id=job.id)
    target = SweepStatus.CANCELLED if status == SweepStatus.QUEUED else SweepStatus.CANCELLING
    if status != SweepStatus.CANCELLING:
        check_transition(status, target)
        sweep.status = target
    if target == SweepStatus.CANCELLED:
        sweep.finished_at = utcnow()
    return sweep


def _jobs(session: Session, sweep_id: str) -> list[Job]:
    return list(
        session.scalars(select(Job).where(Job.sweep_id == sweep_id).order_by(Job.trial_number, Job.id))
    )


def _value_at(tree: Any, path: str) -> Any:
    for key in path.split("."):
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def objective_of(job: Job, objective: str, target_loss: float | None = None) -> float | None:
    """The sweep objective of a finished job (lower is better); None when it has none."""
    result = job.result or {}
    given = result.get("objective")  # an agent that finished its trial with an objective of its own
    if isinstance(given, int | float) and math.isfinite(given):
        return float(given)
    if objective == "final_val_loss":
        value = result.get("val_loss")
    elif objective == "tokens_to_target":
        reached = [
            e["tokens"]
            for e in result.get("evals", [])
            if target_loss is not None and _finite_at_most(e.get("val_loss"), target_loss)
        ]
        value = min(reached) if reached else None
    else:
        value = result.get("best_val_loss")
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def _finite_at_most(value: object, bound: float) -> bool:
    """A stored eval's loss may be a non-finite float or its string ("nan"): never a hit."""
    return isinstance(value, int | float) and math.isfinite(value) and value <= bound


def searched_paths(sweep: Sweep, spec: SweepSpec) -> list[str]:
    """The spec paths a sweep's trials differ in (the preset too, when presets are compared)."""
    spaces = (sweep.resolved_space or {}).values()
    paths = sorted({path for space in spaces for path in space} | set(spec.search_space or {}))
    return paths + (["optimizer.preset"] if spec.presets else [])


def trial_params(job: Job, paths: Sequence[str]) -> dict[str, Any]:
    return {path: _value_at(job.spec, path) for path in paths}


def trials(*, session: Session, sweep: Sweep) -> list[Trial]:
    """The sweep's jobs with the searched parameters (read from each job's spec) and objective."""
    spec = SweepSpec.model_validate(sweep.spec)
    paths = searched_paths(sweep, spec)
    return [
        Trial(job, trial_params(job, paths), objective_of(job, spec.objective, spec.target_loss))
        for job in _jobs(session, sweep.id)
    ]


def claim_sweeps(*, session: Session, owner: str, stale_before: datetime) -> list[Sweep]:
    """Active sweeps this controller owns, or that nobody owns, or whose owner went quiet."""
    return claim_active(session=session, model=Sweep, owner=owner, stale_before=stale_before)


def trial_jobs(*, session: Session, sweep_id: str) -> dict[tuple[str | None, int | None], Job]:
    """The sweep's jobs by (Optuna study, trial number)."""
    return {(job.trial_study, job.trial_number): job for job in _jobs(session, sweep_id)}


def trial_name(sweep: Sweep, study: str, number: int) -> str:
    """`<sweep name>#<n>`, or `<sweep name>/<preset>#<n>` where presets are compared (their
    Optuna studies are `<study name>.<preset>`)."""
    preset = study.removeprefix(sweep.study_name).removeprefix(".")
    return f"{sweep.name or 'sweep'}{'/' + preset if preset else ''}#{number}"


def create_trial_job(
    *,
    session: Session,
    sweep: Sweep,
    study: str,
    number: int,
    spec: JobSpec,
    max_attempts: int,
    name: str | None = None,
) -> Job:
    """The job of one trial (or of a proxy sweep's confirmation run, `study` its `<preset>@full`
    key); (sweep, study, number) is unique, so a trial never gets two jobs."""
    existing = session.scalar(
        select(Job).where(Job.sweep_id == sweep.id, Job.trial_study == study, Job.trial_number == number)
    )
    if existing is not None:
        return existing
    named = spec.model_copy(update={"name": name or trial_name(sweep, study, number)})
    job, _ = create_job(
        session=session,
        tenant_id=sweep.tenant_id,
        spec=named,
        sweep_id=sweep.id,
        trial_number=number,
        max_attempts=max_attempts,
        executor=str(sweep.spec.get("executor", "service")),
    )
    job.trial_study = study
    return job


def set_sweep_status(*, session: Session, sweep: Sweep, to: SweepStatus, error: str | None = None) -> None:
    check_transition(SweepStatus(sweep.status), to)
    sweep.status = to
    if to.terminal:
        sweep.finished_at, sweep.owner = utcnow(), None
    if error is not None:
        sweep.error = error
