"""Trials a user can trace (issue 27, items 3 and 4): short job names, Optuna user attributes
that map a study and its trials to symopt's sweep, tenant and jobs, a `pruned` job status of its
own, and an `auto` search space that keeps the user's batch size among its candidates."""

from __future__ import annotations

from pathlib import Path

import optuna

from service.settings import Settings
from service.store import JobStatus, Store
from service.store.jobs import get_job, request_cancel, transition
from service.store.sweeps import create_sweep, trial_jobs
from service.sweep_spec import SweepSpec
from service.sweeps.controller import SweepController
from service.sweeps.space import auto_search_space
from service.sweeps.storage import optuna_storage
from symopt_core.spec import load_spec

from .conftest import TINY_JOB, make_tenant

LR = {"optimizer.lr": {"type": "log_uniform", "low": 1e-3, "high": 1e-1}}


def sweep_of(store: Store, tenant_id: str, **spec: object) -> tuple[str, str]:
    sweep_spec = SweepSpec.model_validate({"base": TINY_JOB, "search_space": LR, **spec})
    spaces = dict.fromkeys(sweep_spec.presets or ["default"], LR)
    with store.transaction() as session:
        sweep, _ = create_sweep(session=session, tenant_id=tenant_id, spec=sweep_spec, resolved_space=spaces)
        return sweep.id, sweep.study_name


def test_trial_jobs_have_short_names_and_optuna_knows_their_sweep_tenant_and_job(
    store: Store, database_url: str, tmp_path: Path
):
    tenant = make_tenant(store, "tracer")
    sweep_id, study_name = sweep_of(store, tenant.id, name="lr-scan", n_trials=3, parallelism=3)
    compared_id, compared_study = sweep_of(
        store, tenant.id, name="duel", presets=["adamw", "muon"], n_trials=1, parallelism=2
    )
    settings = Settings(database_url=database_url, home=tmp_path / "home")
    SweepController(store, settings, "owner-1").tick()
    with store.transaction() as session:
        jobs = {
            key: (job.id, job.name) for key, job in trial_jobs(session=session, sweep_id=sweep_id).items()
        }
        compared = sorted(job.name for job in trial_jobs(session=session, sweep_id=compared_id).values())
    assert sorted(name for _, name in jobs.values()) == ["lr-scan#0", "lr-scan#1", "lr-scan#2"]
    assert compared == ["duel/adamw#0", "duel/muon#0"]

    storage = optuna_storage(database_url)
    study = optuna.load_study(study_name=study_name, storage=storage)
    assert study.user_attrs == {
        "sweep_id": sweep_id,
        "sweep_name": "lr-scan",
        "tenant_id": tenant.id,
        "preset": "symmetric",  # the base job's
    }
    for trial in study.trials:
        job_id, name = jobs[(study_name, trial.number)]
        assert trial.user_attrs == {"job_id": job_id, "job_name": name}
    muon = optuna.load_study(study_name=f"{compared_study}.muon", storage=storage)
    assert muon.user_attrs["preset"] == "muon"
    assert muon.user_attrs["sweep_name"] == "duel"


def test_a_pruned_trials_cancellation_ends_it_pruned_and_a_plain_cancel_does_not(
    store: Store, database_url: str, tmp_path: Path
):
    tenant = make_tenant(store, "pruner")
    sweep_id, _ = sweep_of(store, tenant.id, n_trials=2, parallelism=2)
    settings = Settings(database_url=database_url, home=tmp_path / "home")
    SweepController(store, settings, "owner-1").tick()
    with store.transaction() as session:
        pruned, cancelled = sorted(
            trial_jobs(session=session, sweep_id=sweep_id).values(), key=lambda j: j.name
        )
        transition(session=session, job=pruned, to=JobStatus.RUNNING)
        pruned.pruned_at = 1024  # what the controller writes when the pruner stops the trial
        request_cancel(session=session, tenant_id=tenant.id, job_id=pruned.id)
        transition(session=session, job=pruned, to=JobStatus.CANCELLED)  # its worker stopped
        request_cancel(session=session, tenant_id=tenant.id, job_id=cancelled.id)  # queued: at once
        ids = pruned.id, cancelled.id
    with store.read() as session:
        first, second = (get_job(session=session, tenant_id=tenant.id, job_id=job_id) for job_id in ids)
        assert (first.status, second.status) == (JobStatus.PRUNED, JobStatus.CANCELLED)
        assert JobStatus.PRUNED.terminal


def test_auto_batch_range_holds_the_users_own_batch():
    base = load_spec(TINY_JOB)  # a tiny budget: a critical batch far below the base's own
    for own in (3, 16, 64):
        spec = base.model_copy(update={"batch": base.batch.model_copy(update={"size": own})})
        batch = auto_search_space(spec, "symmetric")["batch.size"]
        assert batch.low is not None
        assert batch.high is not None
        assert batch.low <= own <= batch.high, (own, batch)
