"""Sweeps: stored specs, their status, and their trials (the jobs linked to them)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from symopt_core.sweep_spec import SweepSpec

from ..errors import ConflictError, NotFoundError
from .jobs import request_cancel
from .models import Job, Sweep, new_id, utcnow
from .status import JobStatus, SweepStatus, check_transition

__all__ = [
    "Trial",
    "create_sweep",
    "get_sweep",
    "list_sweeps",
    "objective_of",
    "request_cancel_sweep",
    "trials",
]


@dataclass(frozen=True)
class Trial:
    job: Job
    params: dict[str, Any]
    objective: float | None


def create_sweep(*, session: Session, tenant_id: str, spec: SweepSpec) -> Sweep:
    sweep_id = new_id()
    presets = len(spec.presets or [None])
    sweep = Sweep(
        id=sweep_id,
        tenant_id=tenant_id,
        name=spec.name,
        status=SweepStatus.QUEUED,
        spec=spec.model_dump(mode="json"),
        study_name=f"symopt-{sweep_id}",
        n_trials=spec.n_trials * presets,
    )
    session.add(sweep)
    session.flush()
    return sweep


def get_sweep(*, session: Session, tenant_id: str | None, sweep_id: str) -> Sweep:
    query = select(Sweep).where(Sweep.id == sweep_id)
    if tenant_id is not None:
        query = query.where(Sweep.tenant_id == tenant_id)
    sweep = session.scalar(query)
    if sweep is None:
        raise NotFoundError(f"No sweep {sweep_id}")
    return sweep


def list_sweeps(
    *, session: Session, tenant_id: str, statuses: Sequence[str] = (), limit: int = 50, offset: int = 0
) -> tuple[list[Sweep], int]:
    query = select(Sweep).where(Sweep.tenant_id == tenant_id)
    if statuses:
        query = query.where(Sweep.status.in_(list(statuses)))
    count = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    page = session.scalars(
        query.order_by(Sweep.created_at.desc(), Sweep.id.desc()).limit(limit).offset(offset)
    )
    return list(page), count


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
    if objective == "final_val_loss":
        value = result.get("val_loss")
    elif objective == "tokens_to_target":
        reached = [
            e["tokens"]
            for e in result.get("evals", [])
            if target_loss is not None and e["val_loss"] <= target_loss
        ]
        value = min(reached) if reached else None
    else:
        value = result.get("best_val_loss")
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def trials(*, session: Session, sweep: Sweep) -> list[Trial]:
    """The sweep's jobs with the searched parameters (read from each job's spec) and objective."""
    spec = SweepSpec.model_validate(sweep.spec)
    paths = list(spec.search_space or {}) + (["optimizer.preset"] if spec.presets else [])
    return [
        Trial(
            job,
            {path: _value_at(job.spec, path) for path in paths},
            objective_of(job, spec.objective, spec.target_loss),
        )
        for job in _jobs(session, sweep.id)
    ]
