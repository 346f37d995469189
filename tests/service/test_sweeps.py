"""Sweeps run by a real service: Optuna trials as Ray jobs, pruning, presets compared, restarts."""

from __future__ import annotations

import signal
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from sqlalchemy import create_engine, text

from service.store import Store
from service.sweeps.controller import ABANDONED_ASK
from service.testing import live_service

from ..specs import tiny_job
from .conftest import BACKENDS, make_tenant
from .live import Api, Sweeps, study_counts

# 11 evaluations for the pruner to compare; 150 steps, so that a pruned trial is cancelled well
# before its end (a tiny trial trains about 100 steps a second).
BASE = tiny_job(
    batch={"size": 8},
    steps=150,
    log_every=10,
    eval={"every": 15, "batches": 2},
    optimizer={"preset": "adamw"},
    seed=3,
)
TOKENS_PER_STEP = BASE["batch"]["size"] * BASE["data"]["seq_len"]
LR = {"optimizer.lr": {"type": "log_uniform", "low": 1e-4, "high": 1e-1}}


def test_pruned_lr_sweep_lands_near_the_best_of_a_grid(api: Api) -> None:
    sweeps = Sweeps(api.url, api.key)
    tuned = sweeps.create(
        BASE, name="tpe", search_space=LR, n_trials=8, parallelism=2, pruner="median", seed=0
    )
    gridded = sweeps.create(
        BASE, name="grid", search_space=LR, n_trials=6, parallelism=2, sampler="grid", pruner="none"
    )
    tuned_sweep, grid_sweep = sweeps.wait(tuned), sweeps.wait(gridded)
    assert tuned_sweep["status"] == grid_sweep["status"] == "succeeded"
    trials = sweeps.trials(tuned)
    assert len(trials) == 8
    pruned = [t for t in trials if t["state"] == "pruned"]
    assert pruned, "the median pruner stopped no trial"
    jobs = [sweeps.http.get(f"/v1/jobs/{trial['job_id']}").json() for trial in pruned]
    assert all(job["status"] == "pruned" for job in jobs)
    assert all(job["name"] == f"tpe#{t['trial_number']}" for job, t in zip(jobs, pruned, strict=True))
    assert all(t["pruned_at_tokens"] < BASE["steps"] * TOKENS_PER_STEP for t in pruned)
    # Its task really stopped early (a trial pruned at its last evaluations may finish first).
    assert any(job["step"] < BASE["steps"] for job in jobs), [job["step"] for job in jobs]
    grid_lrs = sorted(t["params"]["optimizer.lr"] for t in sweeps.trials(gridded))
    assert len(grid_lrs) == 6
    assert grid_lrs[0] == pytest.approx(1e-4)  # 6 log-spaced points over the whole range
    assert grid_lrs[-1] == pytest.approx(1e-1)
    best, grid_best = (
        tuned_sweep["best"]["params"]["optimizer.lr"],
        grid_sweep["best"]["params"]["optimizer.lr"],
    )
    assert max(best, grid_best) / min(best, grid_best) <= 3.0, (best, grid_best)
    assert sweeps.http.get(f"/v1/sweeps/{tuned}/importances").json() == {"adamw": {"optimizer.lr": 1.0}}
    counts = study_counts(api.service.database_url, tuned_sweep["study_name"])
    assert counts.get("COMPLETE", 0) + counts.get("PRUNED", 0) == 8  # no "database is locked" lost a tell
    assert counts.get("PRUNED", 0) == len(pruned)


def test_presets_compared_at_equal_budget_and_a_cancelled_sweep(api: Api) -> None:
    sweeps = Sweeps(api.url, api.key)
    compared = sweeps.create(
        BASE,
        name="cmp",
        presets=["adamw", "symmetric"],
        n_trials=3,
        parallelism=2,
        pruner="none",
        search_space={"optimizer.lr": {"type": "log_uniform", "low": 1e-3, "high": 3e-2}},
    )
    sweep = sweeps.wait(compared)
    assert sweep["status"] == "succeeded"
    assert sweep["n_trials"] == 6
    assert set(sweep["best_by_preset"]) == {"adamw", "symmetric"}
    by_preset = [t["preset"] for t in sweeps.trials(compared)]
    assert sorted(by_preset) == ["adamw"] * 3 + ["symmetric"] * 3  # the same trial budget each
    # One short trial and one long one: cancelled once the short one has finished.
    steps = {"steps": {"type": "categorical", "choices": [30, 100_000]}}
    mixed = sweeps.create(
        BASE, name="mixed", search_space=steps, sampler="grid", n_trials=2, parallelism=2, pruner="none"
    )
    sweeps.wait_until(mixed, lambda s: s["trials_finished"] >= 1, "the short trial to finish")
    assert sweeps.get(mixed)["trials_running"] == 1
    assert sweeps.http.post(f"/v1/sweeps/{mixed}/cancel").status_code == 202
    cancelled = sweeps.wait(mixed)
    trials = {t["params"]["steps"]: t for t in sweeps.trials(mixed)}
    history = sweeps.http.get(f"/v1/sweeps/{mixed}/history").json()
    assert cancelled["status"] == "cancelled"
    assert trials[100_000]["status"] == "cancelled"
    finished = trials[30]  # finished before the cancel, and still readable after it
    assert finished["status"] == "succeeded"
    assert finished["objective"] is not None
    assert cancelled["best"]["job_id"] == finished["job_id"]
    assert study_counts(api.service.database_url, cancelled["study_name"]) == {"COMPLETE": 1, "FAIL": 1}
    (entry,) = history["data"]
    assert [(t["job_id"], t["objective"]) for t in entry["finished"] if t["state"] == "complete"] == [
        (finished["job_id"], finished["objective"])
    ]


def running_jobs(url: str) -> int:
    engine = create_engine(url)
    with engine.connect() as connection:
        count = connection.execute(text("SELECT count(*) FROM symopt_jobs WHERE status = 'running'")).scalar()
    engine.dispose()
    return int(count or 0)


def test_a_sweep_survives_a_killed_service(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'symopt.db'}"
    steps, every = 120, {"log": 10, "eval": 15}
    base = {**BASE, "steps": steps, "checkpoint": {"every": 40, "keep": 2}}
    with live_service(tmp_path, env={"SYMOPT_RAY_NUM_CPUS": "2"}) as service:
        key = service.api_key or ""
        sweeps = Sweeps(service.url, key)
        sweep_id = sweeps.create(
            base, name="restart", search_space=LR, n_trials=6, parallelism=2, pruner="none"
        )
        sweep = sweeps.wait_until(
            sweep_id,
            lambda s: s["trials_finished"] >= 2 and s["trials_running"] >= 1,
            "two trials finished and one running",
        )
        service.process.send_signal(signal.SIGKILL)
        service.process.wait()
    assert sweep["trials_finished"] >= 2
    assert running_jobs(url) >= 1  # killed with a trial mid-run: its job is left "running"
    # With a huge orphan timeout, the sweep (and its jobs) can only go on if the restarted
    # embedded service takes them back at once, as only one scheduler can run on SQLite.
    env = {"SYMOPT_RAY_NUM_CPUS": "2", "SYMOPT_ORPHAN_AFTER_SECONDS": "3600"}
    with live_service(tmp_path, env=env) as restarted:
        sweeps = Sweeps(restarted.url, key)
        sweep = sweeps.wait(sweep_id)
        assert sweep["status"] == "succeeded"
        trials = sweeps.trials(sweep_id)
        numbers = [t["trial_number"] for t in trials]
        assert len(numbers) == len(set(numbers)) == 6  # none lost, none twice
        assert all(t["status"] == "succeeded" for t in trials)
        # Nothing lost, nothing twice: each trial's series has every step once, also the series
        # of the trials that were running when the service died (resumed, with a new attempt).
        for trial in trials:
            assert sweeps.steps(trial["job_id"], "train_loss") == list(range(10, steps + 1, every["log"]))
            assert sweeps.steps(trial["job_id"], "val_loss") == list(range(0, steps + 1, every["eval"]))
        attempts = [sweeps.http.get(f"/v1/jobs/{t['job_id']}").json()["attempt"] for t in trials]
        assert max(attempts) == 2, attempts  # the trial killed mid-run was resumed
        counts = study_counts(url, sweep["study_name"])
        # A kill can cut an ask off before its parameters are set: that trial never ran, is told
        # FAIL, has no job, and is not counted (the sweep asks another in its place).
        failed = [
            t
            for t in optuna.load_study(study_name=sweep["study_name"], storage=url).trials
            if t.state == TrialState.FAIL
        ]
        assert all(t.user_attrs.get(ABANDONED_ASK) and t.number not in numbers for t in failed)
        assert counts == {"COMPLETE": 6, **({"FAIL": len(failed)} if failed else {})}


def check_counts_agree_with_optuna(sweeps: Sweeps, database_url: str) -> None:
    sweep_id = sweeps.create(BASE, name="counts", search_space=LR, n_trials=5, parallelism=2, pruner="median")
    sweep = sweeps.wait(sweep_id)
    assert sweep["status"] == "succeeded"
    trials = sweeps.trials(sweep_id)
    counts = study_counts(database_url, sweep["study_name"])
    assert sum(counts.values()) == len(trials) == 5
    assert counts.get("PRUNED", 0) == sum(1 for t in trials if t["state"] == "pruned")
    assert counts.get("COMPLETE", 0) == sum(1 for t in trials if t["state"] == "succeeded")
    study = optuna.load_study(study_name=sweep["study_name"], storage=database_url)
    assert study.best_value == min(t["objective"] for t in trials if t["objective"] is not None)


def test_sweep_counts_agree_with_optuna_on_sqlite(api: Api) -> None:
    check_counts_agree_with_optuna(Sweeps(api.url, api.key), api.service.database_url)


@pytest.mark.parametrize("database_url", [b for b in BACKENDS if b != "sqlite"], indirect=True)
def test_sweep_counts_agree_with_optuna_on_postgresql(tmp_path: Path, database_url: str) -> None:
    with live_service(tmp_path, database_url, env={"SYMOPT_RAY_NUM_CPUS": "2"}) as service:
        store = Store.connect(database_url)
        tenant = make_tenant(store, "sweeper")
        store.close()
        check_counts_agree_with_optuna(Sweeps(service.url, tenant.key), database_url)
