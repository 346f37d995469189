"""What the sweep routes answer, read from the store and from Optuna's storage: trials with their
jobs, parameter importances per compared preset, and the optimization history."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

import optuna
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.orm import Session

from service.sweep_spec import SweepSpec

from ...store.models import Sweep
from ...store.status import JobStatus
from ...store.sweeps import trial_jobs, trials
from ...sweeps.controller import study_names
from ...sweeps.storage import optuna_storage
from ..schemas import (
    HistoryTrialPublic,
    IntermediatePublic,
    StudyHistoryPublic,
    SweepHistoryPublic,
    TrialPublic,
)


def sweep_trials(session: Session, sweep: Sweep) -> list[TrialPublic]:
    return [
        TrialPublic(
            job_id=t.job.id,
            trial_number=t.job.trial_number,
            study=t.job.trial_study,
            preset=t.job.spec["optimizer"]["preset"],
            status=JobStatus(t.job.status),
            state="pruned" if t.job.pruned_at is not None else JobStatus(t.job.status).value,
            pruned_at_tokens=t.job.pruned_at,
            params=t.params,
            objective=t.objective,
            finished_at=t.job.finished_at,
            agent_host=t.job.agent_host,
        )
        for t in trials(session=session, sweep=sweep)
    ]


def importances(session: Session, sweep: Sweep, database_url: str) -> dict[str, dict[str, float]]:
    """Parameter importances per compared preset (Optuna's default evaluator); empty until a
    preset has two finished trials."""
    done = [t for t in sweep_trials(session, sweep) if t.objective is not None]
    result: dict[str, dict[str, float]] = {}
    for name, preset in study_names(sweep, SweepSpec.model_validate(sweep.spec)).items():
        key = _preset(sweep, preset)
        if sum(1 for t in done if t.study == name) < 2:
            result[key] = {}
            continue
        study = optuna.load_study(study_name=name, storage=optuna_storage(database_url))
        result[key] = {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}
    return result


_STATES = {
    TrialState.COMPLETE: "complete",
    TrialState.PRUNED: "pruned",
    TrialState.FAIL: "failed",
    TrialState.RUNNING: "running",
}


def history(session: Session, sweep: Sweep, database_url: str) -> SweepHistoryPublic:
    """Per compared preset, the finished trials in completion order (objective, best so far,
    params) and every trial's intermediate values, read from Optuna."""
    jobs = {key: job.id for key, job in trial_jobs(session=session, sweep_id=sweep.id).items()}
    data = []
    for name, preset in study_names(sweep, SweepSpec.model_validate(sweep.spec)).items():
        found: list[FrozenTrial] = []
        # A study has trials only once the controller gave one a job; before that, Optuna's
        # tables may not even exist, and the API does not create them.
        if any(study == name for study, _ in jobs):
            storage = optuna_storage(database_url)
            with contextlib.suppress(KeyError):
                study_id = storage.get_study_id_from_name(name)
                found = storage.get_all_trials(study_id, deepcopy=False)
        data.append(
            StudyHistoryPublic(
                preset=_preset(sweep, preset),
                study=name,
                **_history(found, {number: job for (study, number), job in jobs.items() if study == name}),
            )
        )
    return SweepHistoryPublic(sweep_id=sweep.id, data=data)


def _preset(sweep: Sweep, compared: str | None) -> str:
    """The preset a sweep's study tunes: the compared one, else the base job's."""
    return compared or sweep.spec["base"].get("optimizer", {}).get("preset", "symmetric")


def _history(found: list[FrozenTrial], jobs: dict[int | None, str]) -> dict[str, list[HistoryTrialPublic]]:
    """{finished: in completion order with the best so far, running: by number}."""
    finished = sorted(
        (t for t in found if t.state.is_finished() and t.state in _STATES),
        key=lambda t: (t.datetime_complete or t.datetime_start or datetime.min, t.number),
    )
    best: float | None = None
    history = []
    for trial in finished:
        value = trial.value if trial.state == TrialState.COMPLETE else None
        if value is not None and (best is None or value < best):
            best = value
        history.append(_trial(trial, jobs, value, best))
    running = [
        _trial(t, jobs, None, None)
        for t in sorted(found, key=lambda t: t.number)
        if t.state == TrialState.RUNNING
    ]
    return {"finished": history, "running": running}


def _aware(moment: datetime | None) -> datetime | None:
    """Optuna stores its trials' times naive, in the local time of the process that wrote them;
    the API's times carry their offset (RFC 3339), as every other time it answers does."""
    return moment.astimezone(UTC) if moment is not None else None


def _trial(
    trial: FrozenTrial, jobs: dict[int | None, str], value: float | None, best: float | None
) -> HistoryTrialPublic:
    return HistoryTrialPublic(
        number=trial.number,
        job_id=jobs.get(trial.number),
        state=_STATES[trial.state],
        params=dict(trial.params),
        objective=value,
        best_so_far=best,
        completed_at=_aware(trial.datetime_complete),
        intermediate=[
            IntermediatePublic(tokens=int(tokens), value=float(v))
            for tokens, v in sorted(trial.intermediate_values.items())
        ],
    )
