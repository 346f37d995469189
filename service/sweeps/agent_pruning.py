"""The sweep's pruner, asked when an agent reports validation losses: the report's answer says
at once whether to stop, instead of a scheduler tick later. It reports to the same Optuna trial
the controller does (service/sweeps/controller.py, report_and_maybe_prune); either may prune it.

Optuna's PRUNED is told here, and the job is marked pruned and cancelled by the report route in a
second transaction: a process killed between the two leaves a PRUNED trial with a running job.
The controller reconciles that on its next tick (Optuna's trial state is the source of truth), and
so does this agent's next report with new losses (the verdict of a PRUNED trial is its tokens).
"""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from service.sweep_spec import SweepSpec

from ..settings import Settings
from ..store import JobStatus, Store
from ..store.models import Job, Sweep
from .controller import TrialJob, finite_val_losses, report_and_maybe_prune
from .space import make_pruner, token_budget
from .storage import optuna_storage

__all__ = ["prune_verdict"]


def prune_verdict(store: Store, settings: Settings, job_id: str) -> int | None:
    """The tokens at which the sweep's pruner stops the job's trial, or None while it goes on
    (and for a job of no sweep: a study's confirmation run is never pruned)."""
    with store.read() as session:
        job = session.get(Job, job_id)
        if job is None or job.sweep_id is None or job.trial_study is None or job.trial_number is None:
            return None
        if JobStatus(job.status) != JobStatus.RUNNING:
            return None
        sweep = session.get(Sweep, job.sweep_id)
        if sweep is None:
            return None
        spec = SweepSpec.model_validate(sweep.spec)
        trial_job = TrialJob.of(job, spec, finite_val_losses(session, job.id))
        study_name, number = job.trial_study, job.trial_number
    storage = optuna_storage(settings.resolved_database_url())
    try:
        study = optuna.load_study(
            study_name=study_name,
            storage=storage,
            sampler=optuna.samplers.RandomSampler(),  # never samples here: only the pruner is asked
            pruner=make_pruner(spec, token_budget(spec.base)),
        )
    except KeyError:  # the controller has not created the study yet: it judges on its next tick
        return None
    trial = storage.get_trial(storage.get_trial_id_from_study_id_trial_number(study._study_id, number))
    if trial.state == TrialState.PRUNED:  # the controller pruned it meanwhile
        return max(trial.intermediate_values, default=trial_job.tokens)
    if trial.state != TrialState.RUNNING:
        return None
    return report_and_maybe_prune(study, trial, trial_job)
