"""Sweeps run by a real service, over the paths the main scenarios leave out: parallelism on
SQLite, optional parameters, every sampler and pruner, the objectives, divergence, and budgets.
Each test runs several small sweeps at once in the worker's shared service, as a tenant of its own."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import optuna
from optuna.trial import TrialState

from ..waiting import wait_for
from .live import SWEEP_FINAL, Api, SharedService, Sweeps, study_counts
from .test_sweeps import BASE

SHORT = {**BASE, "steps": 45, "eval": {"every": 15, "batches": 2}}  # evaluations at 0, 15, 30, 45
TOKENS_PER_STEP = BASE["batch"]["size"] * BASE["data"]["seq_len"]  # type: ignore[index]
OPTIONAL = {
    "optimizer.lr": {"type": "log_uniform", "low": 5e-3, "high": 5e-2},
    "optimizer.weight_decay": {"type": "uniform", "low": 0.0, "high": 0.1},
    "schedule.warmup_steps": {"type": "int", "low": 0, "high": 20},
    "optimizer.overrides.attention.momentum": {"type": "uniform", "low": 0.8, "high": 0.97},
}


def value_at(tree: dict[str, Any], path: str) -> Any:
    for key in path.split("."):
        tree = tree[key]
    return tree


def optuna_trials(url: str, study: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=study, storage=url).get_trials(deepcopy=False)


def test_a_parallel_sweep_on_sqlite_over_optional_parameters(api: Api, shared_service: SharedService) -> None:
    url = shared_service.database_url
    shared_service.wait_idle()  # this test counts the service's 2 slots
    mark = shared_service.mark()
    sweeps = Sweeps(api.url, api.key)
    sweep_id = sweeps.create(
        {**BASE, "optimizer": {"preset": "muon"}},
        name="optional",
        search_space=OPTIONAL,
        sampler="random",
        pruner="successive_halving",
        n_trials=6,
        parallelism=2,
        seed=1,
    )
    peak_running = peak_active = 0  # sampled while it runs: running, and queued or running

    def ended() -> bool:
        nonlocal peak_running, peak_active
        statuses = [t["status"] for t in sweeps.trials(sweep_id)]
        peak_running = max(peak_running, statuses.count("running"))
        peak_active = max(peak_active, statuses.count("running") + statuses.count("queued"))
        return sweeps.get(sweep_id)["status"] in SWEEP_FINAL

    wait_for(ended, progress=lambda: sweeps.progress(sweep_id), what="the optional sweep", every=0.5)
    sweep = sweeps.get(sweep_id)
    trials = sweeps.trials(sweep_id)
    history = sweeps.http.get(f"/v1/sweeps/{sweep_id}/history").json()
    specs = {t["job_id"]: sweeps.http.get(f"/v1/jobs/{t['job_id']}").json()["spec"] for t in trials}
    log = shared_service.log_since(mark)
    assert sweep["status"] == "succeeded", sweep
    assert peak_running == 2  # the parallelism was used ...
    assert peak_active <= 2  # ... and never exceeded (a pruned trial's job is cancelling, not running)
    # Nothing went wrong in the scheduler's loop: no lock error, no traceback, no retried tick.
    for trouble in ("database is locked", "Traceback", "tick failed", "will retry"):
        assert trouble not in log, log

    assert len(trials) == 6
    for trial in trials:  # each optional value reached its trial's job, inside its range
        for path, space in OPTIONAL.items():
            value = value_at(specs[trial["job_id"]], path)
            assert space["low"] <= value <= space["high"], (path, value)
            assert trial["params"][path] == value
    counts = study_counts(url, sweep["study_name"])
    assert counts.get("COMPLETE", 0) + counts.get("PRUNED", 0) == 6  # every tell landed

    # The history matches Optuna's own record, trial by trial, in completion order.
    found = sorted(optuna_trials(url, sweep["study_name"]), key=lambda t: (t.datetime_complete, t.number))
    (entry,) = history["data"]
    assert entry["running"] == []
    assert [t["number"] for t in entry["finished"]] == [t.number for t in found]
    best = None
    for public, trial in zip(entry["finished"], found, strict=True):
        value = trial.value if trial.state == TrialState.COMPLETE else None
        best = value if best is None or (value is not None and value < best) else best
        assert (public["objective"], public["best_so_far"]) == (value, best)
        assert public["params"] == trial.params
        assert [(p["tokens"], p["value"]) for p in public["intermediate"]] == sorted(
            trial.intermediate_values.items()
        )
        assert all(p["tokens"] % TOKENS_PER_STEP == 0 for p in public["intermediate"])
    assert best == min(t["objective"] for t in trials if t["state"] == "succeeded")


def test_samplers_objectives_divergence_and_budgets(api: Api) -> None:
    url = api.service.database_url
    lr = {"optimizer.lr": {"type": "log_uniform", "low": 1e-3, "high": 3e-2}}
    lr_wd = {**lr, "optimizer.weight_decay": {"type": "uniform", "low": 0.0, "high": 0.1}}
    # 1e6 makes the tiny model's loss non-finite within a few steps: a real divergence.
    diverging = {"optimizer.lr": {"type": "categorical", "choices": [1e-2, 1e6]}}
    common = {"base": SHORT, "parallelism": 1, "pruner": "none"}
    sweeps = Sweeps(api.url, api.key)
    created: dict[str, dict[str, Any]] = {
        # CMA-ES samples only after 2 complete trials: no pruner, an objective every trial has.
        "cmaes": {"sampler": "cmaes", "search_space": lr_wd, "n_trials": 3},
        "gp": {"sampler": "gp", "pruner": "hyperband", "search_space": lr, "n_trials": 3,
               "objective": "tokens_to_target", "target_loss": 3.2},
        "fail": {"sampler": "grid", "search_space": diverging, "n_trials": 2},
        "penalty": {"sampler": "grid", "search_space": diverging, "n_trials": 2, "diverged_value": 20.0},
        "tokens": {"search_space": lr, "n_trials": 5, "max_tokens": SHORT["steps"] * TOKENS_PER_STEP},
        "wall": {"search_space": lr, "n_trials": 50, "max_wall_time_s": 5.0},
    }  # fmt: skip
    ids = {name: sweeps.create(name=name, **{**common, **spec}) for name, spec in created.items()}
    done = {name: sweeps.wait(sweep_id) for name, sweep_id in ids.items()}
    trials = {name: sweeps.trials(sweep_id) for name, sweep_id in ids.items()}
    jobs = {
        t["job_id"]: sweeps.http.get(f"/v1/jobs/{t['job_id']}").json()
        for found in trials.values()
        for t in found
    }
    studies = {name: optuna_trials(url, sweep["study_name"]) for name, sweep in done.items()}

    # CMA-ES and GP sample after their random start (2 trials of 3): their packages work.
    for name in ("cmaes", "gp"):
        assert done[name]["status"] == "succeeded", [
            (t["state"], jobs[t["job_id"]]["error"]) for t in trials[name]
        ]
        assert len(studies[name]) == 3
    assert any(key.startswith("cma:") for t in studies["cmaes"] for key in t.system_attrs)
    # Hyperband ran: each trial completed, was pruned, or never reached the target (failed).
    assert {t.state for t in studies["gp"]} <= {TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL}
    # tokens_to_target: the objective is the first evaluation's tokens at or under the target.
    for trial in trials["gp"]:
        evals = (jobs[trial["job_id"]]["result"] or {}).get("evals", [])  # a pruned job's too
        reached = [e["tokens"] for e in evals if e["val_loss"] <= 3.2]
        assert trial["objective"] == (min(reached) if reached else None)
    told = {t.number: t.value for t in studies["gp"] if t.state == TrialState.COMPLETE}
    assert told  # at least one trial reached the target
    # (a pruned trial's job has an objective too, the tokens where it stood when it was stopped)
    finished = [t for t in trials["gp"] if t["objective"] is not None and t["state"] != "pruned"]
    assert told == {t["trial_number"]: t["objective"] for t in finished}

    # A diverged trial: FAIL without a penalty, the penalty as its value with one; the sweep goes on.
    for name in ("fail", "penalty"):
        assert done[name]["status"] == "succeeded", [
            (t["state"], jobs[t["job_id"]]["error"]) for t in trials[name]
        ]
        by_lr = {t["params"]["optimizer.lr"]: t for t in trials[name]}
        assert by_lr[1e6]["status"] == "diverged"
        assert jobs[by_lr[1e6]["job_id"]]["diverged_at"] is not None
        assert by_lr[1e-2]["status"] == "succeeded"
        assert done[name]["best"]["job_id"] == by_lr[1e-2]["job_id"]
    assert study_counts(url, done["fail"]["study_name"]) == {"COMPLETE": 1, "FAIL": 1}
    penalized = {t.params["optimizer.lr"]: t for t in studies["penalty"]}
    assert penalized[1e6].state == TrialState.COMPLETE
    assert penalized[1e6].value == 20.0

    # Budgets: once the tokens are spent, or the time is up, no trial is asked for.
    assert done["tokens"]["status"] == "succeeded"
    assert len(trials["tokens"]) == 1  # one trial's tokens are the whole budget
    assert done["wall"]["status"] in ("succeeded", "failed")
    assert len(trials["wall"]) < 50
    started = datetime.fromisoformat(done["wall"]["created_at"])
    for trial in studies["wall"]:
        # Each trial was asked (Optuna stamps its start then) once the controller had checked the
        # budget: within the 5 s, plus the moment between the check and the ask, which a loaded
        # runner stretches (30 s here: a controller ignoring the budget asks for minutes).
        assert trial.datetime_start is not None
        asked = trial.datetime_start.astimezone(UTC)
        assert asked - started <= timedelta(seconds=5.0 + 30.0)
