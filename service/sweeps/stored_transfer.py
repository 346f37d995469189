"""A proxy sweep's transfer result read from the store: its trials' lrs and objectives, and its
confirmation runs (service/sweeps/transfer.py computes the result; the API and the study
controller both read it here)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from service.sweep_spec import SweepSpec

from ..store.models import Sweep
from ..store.status import JobStatus
from ..store.sweeps import objective_of, trial_jobs
from .substudies import confirm_key, sub_studies
from .transfer import ConfirmRun, LrPoint, transfer_result

__all__ = ["stored_transfer"]


def stored_transfer(session: Session, sweep: Sweep) -> dict[str, Any] | None:
    """A proxy sweep's transfer result (service/sweeps/transfer.py) from its stored jobs; None
    for a sweep without a proxy."""
    spec = SweepSpec.model_validate(sweep.spec)
    if spec.proxy is None:
        return None
    subs = sub_studies(sweep.study_name, spec)
    points: dict[str, list[LrPoint]] = {}
    confirmations: dict[str, list[ConfirmRun]] = {}
    confirm = spec.proxy.confirm
    seeds = confirm.seeds_for(spec.base.seed) if confirm is not None else []
    full = {confirm_key(sweep.study_name, sub.tuned_preset()): sub.tuned_preset() for sub in subs.values()}
    for (key, number), job in sorted(trial_jobs(session=session, sweep_id=sweep.id).items(), key=_by_key):
        objective = objective_of(job, spec.objective, spec.target_loss)
        succeeded = job.status == JobStatus.SUCCEEDED and job.pruned_at is None
        lr = job.spec["optimizer"].get("lr")
        if key in subs:
            if succeeded and objective is not None and lr is not None:
                points.setdefault(key, []).append(LrPoint(float(lr), objective, job.id))
        elif key in full and number is not None and confirm is not None:
            confirmations.setdefault(full[key], []).append(
                ConfirmRun(
                    number=number,
                    factor=confirm.factors[number // len(seeds)],
                    lr=float(lr),
                    seed=int(job.spec.get("seed", 0)),
                    job_id=job.id,
                    status=str(job.status),
                    objective=objective if job.status == JobStatus.SUCCEEDED else None,
                )
            )
    return transfer_result(spec, subs, points, confirmations)


def _by_key(item: tuple[tuple[str | None, int | None], Any]) -> tuple[str, int]:
    (key, number), _ = item
    return str(key), number or 0
