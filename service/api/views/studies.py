"""What the study routes answer: a study with its progress (tuning sweeps and confirmation runs)
and its result, the final one or what its runs say so far."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from service.study_spec import StudySpec

from ...store.models import Study
from ...store.status import JobStatus, SweepStatus
from ...store.studies import finished_trials, study_runs, study_sweeps
from ...studies.controller import current_result
from ..schemas import StudyPublic


def _progress(session: Session, study: Study, spec: StudySpec) -> dict[str, Any]:
    sweeps = study_sweeps(session=session, study_id=study.id)
    finished = finished_trials(session=session, sweep_ids=[sweep.id for sweep in sweeps.values()])
    tuning = {
        c.name: {
            "sweep_id": sweeps[c.name].id if c.name in sweeps else None,
            "status": sweeps[c.name].status if c.name in sweeps else SweepStatus.QUEUED.value,
            "trials_finished": finished.get(sweeps[c.name].id, 0) if c.name in sweeps else 0,
            # the sweep's whole budget: a proxy sweep runs n_trials per width (and its confirmations)
            "n_trials": sweeps[c.name].n_trials if c.name in sweeps else spec.tuning.n_trials,
        }
        for c in spec.candidates
    }
    runs = study_runs(session=session, study_id=study.id)
    done = sum(1 for job in runs.values() if JobStatus(job.status).terminal)
    planned = len(spec.candidates) * len(spec.confirmation_seeds)
    return {"tuning": tuning, "confirmation": {"planned": planned, "created": len(runs), "finished": done}}


def study_public(session: Session, study: Study, *, with_result: bool = True) -> StudyPublic:
    spec = StudySpec.model_validate(study.spec)
    result = study.result
    if result is None and with_result:
        result = current_result(session, study)  # a running study: what its runs say so far
    return StudyPublic(
        id=study.id,
        name=study.name,
        status=SweepStatus(study.status),
        stage=study.stage,
        spec=study.spec,
        progress=_progress(session, study, spec),
        result=result,
        error=study.error,
        created_at=study.created_at,
        updated_at=study.updated_at,
        finished_at=study.finished_at,
    )
