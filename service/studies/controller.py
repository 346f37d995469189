"""The study controller: stage 1 (a tuning sweep per candidate), stage 2 (the seeded
confirmation runs of each candidate's best configuration), then the result.

It runs inside the scheduler's loop like the sweep controller, and keeps no state a restart would
lose: every tick it reads each active study, its sweeps and its runs, and creates whatever is
missing. A sweep per (study, candidate) and a run per (study, candidate, seed) are unique in the
store, so a restarted service finishes a study with exactly the planned runs, none twice.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session

from service.study_spec import StudySpec
from service.sweep_spec import SweepSpec
from symopt_core.spec import JobSpec

from ..settings import Settings
from ..store import JobStatus, Store, SweepStatus
from ..store.models import Job, Study, utcnow
from ..store.studies import (
    StudyStatus,
    claim_studies,
    create_confirmation_job,
    create_study_sweep,
    set_study_status,
    study_runs,
    study_sweeps,
)
from ..store.sweeps import trials
from ..sweeps.space import resolved_spaces
from ..sweeps.stored_transfer import stored_transfer
from ..sweeps.transfer import recommended_lr
from .result import study_result

__all__ = ["StudyController", "best_trial", "current_result"]

log = logging.getLogger("symopt.studies")


def best_trial(session: Session, sweep: Any) -> dict[str, Any] | None:
    """A sweep's best succeeded trial: {job_id, params, objective, trials_completed (how many
    trials succeeded with an objective)}, or None. For a proxy sweep, the full-size setting its
    proxies recommend: {job_id: None, params: {optimizer.lr}, objective: None, trials_completed,
    spec (the full-size job), transfer (the fit it rests on)}, or None without a recommendation."""
    sweep_spec = SweepSpec.model_validate(sweep.spec)
    if sweep_spec.proxy is not None:
        return _recommended(session, sweep, sweep_spec)
    scored = [
        t
        for t in trials(session=session, sweep=sweep)
        if t.objective is not None and t.job.status == JobStatus.SUCCEEDED
    ]
    if not scored:
        return None
    best = min(scored, key=lambda t: t.objective or 0.0)
    return {
        "job_id": best.job.id,
        "params": best.params,
        "objective": best.objective,
        "trials_completed": len(scored),
    }


def _recommended(session: Session, sweep: Any, spec: SweepSpec) -> dict[str, Any] | None:
    result = stored_transfer(session, sweep)
    preset = spec.base.optimizer.preset
    lr = recommended_lr(result, preset) if result is not None else None
    if result is None or lr is None:
        return None
    (entry,) = result["presets"]
    full = spec.base.model_copy(update={"optimizer": spec.base.optimizer.model_copy(update={"lr": lr})})
    return {
        "job_id": None,
        "params": {"optimizer.lr": lr},
        "objective": None,
        # per width: each width's study has its own sampler start-up (caveats.py reads this)
        "trials_completed": min(len(size["trials"]) for size in entry["sizes"]),
        "spec": full.model_dump(mode="json"),
        "transfer": entry,
    }


def current_result(session: Session, study: Study) -> dict[str, Any]:
    """The study's result as its stored runs give it now (final once it has finished)."""
    spec = StudySpec.model_validate(study.spec)
    sweeps = study_sweeps(session=session, study_id=study.id)
    best = {name: best_trial(session, sweep) for name, sweep in sweeps.items()}
    return study_result(spec, sweeps, best, study_runs(session=session, study_id=study.id))


class StudyController:
    """exclusive: this is the only controller on the database (SQLite: the scheduler's lock), so
    a study whose owner is gone (a killed service) is taken back at once."""

    def __init__(self, store: Store, settings: Settings, owner: str, *, exclusive: bool = False) -> None:
        self.store = store
        self.settings = settings
        self.owner = owner
        self.exclusive = exclusive

    def tick(self) -> None:
        orphan_after = 0.0 if self.exclusive else self.settings.orphan_after_seconds
        stale_before = utcnow() - timedelta(seconds=orphan_after)
        with self.store.transaction() as session:
            claimed = [
                s.id for s in claim_studies(session=session, owner=self.owner, stale_before=stale_before)
            ]
        for study_id in claimed:
            # One study's failure (a bug, a spec that no longer validates) fails that study only.
            try:
                with self.store.transaction() as session:
                    self._advance(session, session.get(Study, study_id))
            except Exception as error:
                log.exception("study %s failed", study_id)
                with self.store.transaction() as session:
                    study = session.get(Study, study_id)
                    if study is not None and not StudyStatus(study.status).terminal:
                        set_study_status(
                            session=session, study=study, to=StudyStatus.FAILED, error=f"controller: {error}"
                        )

    def _advance(self, session: Session, study: Study | None) -> None:
        if study is None or study.owner != self.owner:
            return
        spec = StudySpec.model_validate(study.spec)
        sweeps = study_sweeps(session=session, study_id=study.id)
        runs = study_runs(session=session, study_id=study.id)
        if study.status == StudyStatus.CANCELLING:
            busy = any(not SweepStatus(s.status).terminal for s in sweeps.values()) or any(
                not JobStatus(j.status).terminal for j in runs.values()
            )
            if not busy:
                set_study_status(session=session, study=study, to=StudyStatus.CANCELLED)
                study.result = current_result(session, study)
            return
        if study.status == StudyStatus.QUEUED:
            set_study_status(session=session, study=study, to=StudyStatus.RUNNING)
        if study.stage == "tuning":
            for candidate in spec.candidates:
                if candidate.name not in sweeps:
                    sweep_spec = spec.sweep_spec(candidate)
                    sweeps[candidate.name] = create_study_sweep(
                        session=session,
                        study=study,
                        candidate=candidate.name,
                        spec=sweep_spec,
                        resolved_space=resolved_spaces(sweep_spec),
                    )
            if any(not SweepStatus(s.status).terminal for s in sweeps.values()):
                return
            study.stage = "confirming"
            log.info("study %s: tuning done, confirming on seeds %s", study.id, spec.confirmation_seeds)
        if study.stage == "confirming":
            self._confirm(session, study, spec, sweeps, runs)

    def _confirm(
        self, session: Session, study: Study, spec: StudySpec, sweeps: dict[str, Any], runs: dict[Any, Any]
    ) -> None:
        tuned = {name: best_trial(session, sweep) for name, sweep in sweeps.items()}
        confirmable = [c.name for c in spec.candidates if tuned.get(c.name) is not None]
        planned = [(name, seed) for seed in spec.confirmation_seeds for name in confirmable]  # seed-major
        active = sum(1 for job in runs.values() if not JobStatus(job.status).terminal)
        for name, seed in planned:
            if (name, seed) in runs or active >= spec.parallelism:
                continue
            trial = tuned[name]
            tuned_spec = _tuned_spec(session, trial)
            if tuned_spec is None:
                continue
            runs[(name, seed)] = create_confirmation_job(
                session=session,
                study=study,
                candidate=name,
                seed=seed,
                spec=tuned_spec,
                max_attempts=self.settings.max_attempts,
            )
            active += 1
        if active or any(key not in runs for key in planned):
            return
        study.stage = "done"
        study.result = current_result(session, study)
        if not confirmable:
            set_study_status(
                session=session,
                study=study,
                to=StudyStatus.FAILED,
                error="no candidate finished tuning with an objective "
                "(every trial failed, diverged or was pruned)",
            )
            return
        set_study_status(session=session, study=study, to=StudyStatus.SUCCEEDED)


def _tuned_spec(session: Session, trial: dict[str, Any] | None) -> JobSpec | None:
    """The job a candidate's confirmation runs: its best trial's, or a proxy's recommendation."""
    if trial is None:
        return None
    if trial.get("spec") is not None:
        return JobSpec.model_validate(trial["spec"])
    best = session.get(Job, trial["job_id"])
    return JobSpec.model_validate(best.spec) if best is not None else None
