"""The sweep controller without Ray: pruning at the last step, one failing sweep among good
ones, taking sweeps back after a restart, sampler checks at submission, and the history route."""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from service.settings import Settings
from service.store import JobStatus, Store, SweepStatus
from service.store.jobs import transition
from service.store.models import Sweep, utcnow
from service.store.sweeps import create_sweep, create_trial_job, request_cancel_sweep, trial_jobs
from service.sweep_spec import SweepSpec
from service.sweeps.controller import (
    ABANDONED_ASK,
    INVALID_TRIAL,
    SweepController,
    TrialJob,
    report_and_maybe_prune,
)
from service.sweeps.storage import optuna_storage
from symopt_core.spec import load_spec

from .conftest import TINY_JOB, make_tenant

LR = {"optimizer.lr": {"type": "log_uniform", "low": 1e-3, "high": 1e-1}}
TOKENS_PER_STEP = 100


def job_of(steps: int, losses: list[float]) -> TrialJob:
    """A running trial's job that has evaluated at steps 1, 2, ... with these losses."""
    val_losses = tuple((step, loss) for step, loss in enumerate(losses, start=1))
    return TrialJob("job", "tenant", JobStatus.RUNNING, None, TOKENS_PER_STEP, 0, steps, val_losses)


def test_a_trial_evaluated_at_its_last_step_is_never_pruned():
    study = optuna.create_study(pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0))
    for value in (1.0, 1.1):  # two completed trials, much better than the ones below at every step
        trial = study.ask()
        trial.report(value, 1 * TOKENS_PER_STEP)
        trial.report(value, 2 * TOKENS_PER_STEP)
        study.tell(trial, value)
    finished, short = study.ask(), study.ask()
    frozen = {t.number: t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}

    # Its evaluation at step 2 of 2 is its last: stopping it now would save nothing.
    assert report_and_maybe_prune(study, frozen[finished.number], job_of(2, [5.0, 5.0])) is None
    # The same losses with a step still to go: the median pruner stops it, at 200 tokens.
    assert report_and_maybe_prune(study, frozen[short.number], job_of(3, [5.0, 5.0])) == 200

    states = {t.number: t.state for t in study.get_trials(deepcopy=False)}
    assert states[finished.number] == TrialState.RUNNING
    assert states[short.number] == TrialState.PRUNED
    assert study.get_trials(deepcopy=False)[finished.number].intermediate_values == {100: 5.0, 200: 5.0}


def new_sweep(store: Store, tenant_id: str, **spec: object) -> str:
    sweep_spec = SweepSpec.model_validate({"base": TINY_JOB, "search_space": LR, **spec})
    with store.transaction() as session:
        sweep, _ = create_sweep(
            session=session, tenant_id=tenant_id, spec=sweep_spec, resolved_space={"default": LR}
        )
        return sweep.id


def sweep_row(store: Store, sweep_id: str) -> tuple[str, str | None, int]:
    with store.transaction() as session:
        sweep = session.get(Sweep, sweep_id)
        assert sweep is not None
        return sweep.status, sweep.error, len(trial_jobs(session=session, sweep_id=sweep_id))


def test_a_failing_sweep_fails_alone(store: Store, database_url: str, tmp_path: Path):
    tenant = make_tenant(store, "sweeper")
    good = new_sweep(store, tenant.id, n_trials=2, parallelism=2)
    unreadable = new_sweep(store, tenant.id, n_trials=2)
    clashing = new_sweep(store, tenant.id, n_trials=5)
    with store.transaction() as session:  # a spec stored by a version that knew another sampler
        sweep = session.get(Sweep, unreadable)
        assert sweep is not None
        sweep.spec = {**sweep.spec, "sampler": "botorch"}
    # The study name is taken, with optuna.lr as a categorical: every ask of the sweep fails.
    optuna.create_study(study_name=f"symopt-{clashing}", storage=optuna_storage(database_url)).add_trial(
        optuna.trial.create_trial(
            params={"optimizer.lr": 0.1},
            distributions={"optimizer.lr": CategoricalDistribution([0.1, 0.2])},
            value=1.0,
        )
    )
    settings = Settings(database_url=database_url, home=tmp_path / "home", max_attempts=3)
    controller = SweepController(store, settings, "owner-1")

    for tick in range(1, 4):
        controller.tick()  # never raises: the bad sweeps do not stop the good one
        assert sweep_row(store, good) == ("running", None, 2)
        if tick < 3:  # retried, not failed yet
            assert sweep_row(store, unreadable)[:2] == ("queued", None)
            assert sweep_row(store, clashing)[1] is None

    status, error, _ = sweep_row(store, unreadable)
    assert status == "failed"
    assert error is not None
    assert "failed 3 times in a row" in error
    assert "sampler" in error
    status, error, jobs = sweep_row(store, clashing)
    assert (status, jobs) == ("failed", 0)
    assert error is not None
    assert "ValueError: Cannot set different distribution kind" in error
    clashed = optuna.load_study(study_name=f"symopt-{clashing}", storage=optuna_storage(database_url))
    assert TrialState.RUNNING not in {t.state for t in clashed.get_trials(deepcopy=False)}
    controller.tick()
    assert sweep_row(store, good) == ("running", None, 2)  # the failed ones are left alone


def test_a_sampler_package_missing_where_the_scheduler_runs_fails_its_sweep(
    store: Store, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    tenant = make_tenant(store, "sweeper")
    sweep_id = new_sweep(store, tenant.id, n_trials=2, sampler="cmaes")
    settings = Settings(database_url=database_url, home=tmp_path / "home", max_attempts=1)
    # Submitted where cmaes was installed, run by a scheduler where it is not: None in
    # sys.modules is what an import of a missing package meets.
    monkeypatch.setitem(sys.modules, "cmaes", None)
    SweepController(store, settings, "owner-1").tick()
    status, error, jobs = sweep_row(store, sweep_id)
    assert (status, jobs) == ("failed", 0)
    assert error is not None
    assert "pip install cmaes" in error


def test_sqlite_controller_takes_a_dead_owners_sweep_at_once(store: Store, database_url: str, tmp_path: Path):
    tenant = make_tenant(store, "sweeper")
    sweep_id = new_sweep(store, tenant.id, n_trials=2, parallelism=1)
    with store.transaction() as session:  # owned by a scheduler that was killed a second ago
        sweep = session.get(Sweep, sweep_id)
        assert sweep is not None
        sweep.owner, sweep.heartbeat_at = "killed-scheduler", utcnow() - timedelta(seconds=1)
    settings = Settings(database_url=database_url, home=tmp_path / "home", orphan_after_seconds=3600)
    controller = SweepController(store, settings, "restarted")
    controller.tick()
    with store.transaction() as session:
        sweep = session.get(Sweep, sweep_id)
        assert sweep is not None
        taken = sweep.owner == "restarted"
    sqlite = database_url.startswith("sqlite")
    # SQLite has one scheduler (its lock file): the old owner is dead, take the sweep now. On
    # PostgreSQL another live scheduler may own it: wait for its heartbeat to age.
    assert taken is sqlite
    assert controller.exclusive is sqlite
    assert sweep_row(store, sweep_id)[2] == (1 if sqlite else 0)


def test_a_trial_that_finished_just_before_the_cancel_keeps_its_result(
    store: Store, database_url: str, tmp_path: Path
):
    tenant = make_tenant(store, "sweeper")
    sweep_id = new_sweep(store, tenant.id, n_trials=3, parallelism=1)
    controller = SweepController(store, Settings(database_url=database_url, home=tmp_path / "h"), "owner-1")
    controller.tick()  # asks trial 0 and queues its job
    with store.transaction() as session:
        (job,) = trial_jobs(session=session, sweep_id=sweep_id).values()
        transition(session=session, job=job, to=JobStatus.RUNNING)
        transition(session=session, job=job, to=JobStatus.SUCCEEDED, result={"best_val_loss": 2.5})
        # cancelled before the controller's next tick told Optuna how trial 0 ended
        request_cancel_sweep(session=session, tenant_id=tenant.id, sweep_id=sweep_id)
    controller.tick()
    assert sweep_row(store, sweep_id)[0] == "cancelled"
    (trial,) = optuna.load_study(
        study_name=f"symopt-{sweep_id}", storage=optuna_storage(database_url)
    ).get_trials(deepcopy=False)
    assert (trial.state, trial.value) == (TrialState.COMPLETE, 2.5)


def test_an_ask_cut_off_by_a_killed_service_does_not_use_up_a_trial(
    store: Store, database_url: str, tmp_path: Path
):
    tenant = make_tenant(store, "sweeper")
    sweep_id = new_sweep(store, tenant.id, n_trials=2, parallelism=1)
    # What a service killed mid-ask leaves behind: a running trial with no parameters, no job.
    study_name = f"symopt-{sweep_id}"
    optuna.create_study(study_name=study_name, storage=optuna_storage(database_url)).ask()
    controller = SweepController(store, Settings(database_url=database_url, home=tmp_path / "h"), "owner-1")
    for _ in range(3):  # each tick finishes the job of the trial it asked the tick before
        controller.tick()
        with store.transaction() as session:
            for job in trial_jobs(session=session, sweep_id=sweep_id).values():
                if job.status == JobStatus.QUEUED:
                    transition(session=session, job=job, to=JobStatus.RUNNING)
                    transition(
                        session=session, job=job, to=JobStatus.SUCCEEDED, result={"best_val_loss": 2.5}
                    )
    controller.tick()
    assert sweep_row(store, sweep_id) == ("succeeded", None, 2)  # two trials ran, as asked
    trials = optuna.load_study(study_name=study_name, storage=optuna_storage(database_url)).trials
    assert [(t.number, t.state) for t in trials] == [
        (0, TrialState.FAIL),
        (1, TrialState.COMPLETE),
        (2, TrialState.COMPLETE),
    ]
    assert trials[0].user_attrs == {ABANDONED_ASK: True}
    assert trials[0].params == {}


def finish_queued_trials(store: Store, sweep_id: str) -> None:
    with store.transaction() as session:
        for job in trial_jobs(session=session, sweep_id=sweep_id).values():
            if job.status == JobStatus.QUEUED:
                transition(session=session, job=job, to=JobStatus.RUNNING)
                transition(session=session, job=job, to=JobStatus.SUCCEEDED, result={"best_val_loss": 2.5})


HEADS = {"model.n_heads": {"type": "int", "low": 2, "high": 8}}


def test_a_trial_whose_values_make_an_invalid_job_fails_alone(
    store: Store, database_url: str, tmp_path: Path
):
    # Both bounds fit the tiny qwen3 (d_model 64, 2 kv heads); 3, 5, 6 and 7 heads do not.
    tenant = make_tenant(store, "sweeper")
    spec = SweepSpec.model_validate(
        {"base": TINY_JOB, "search_space": HEADS, "sampler": "grid", "n_trials": 7, "parallelism": 7}
    )
    with store.transaction() as session:
        sweep, _ = create_sweep(
            session=session, tenant_id=tenant.id, spec=spec, resolved_space={"default": HEADS}
        )
        sweep_id = sweep.id
    controller = SweepController(store, Settings(database_url=database_url, home=tmp_path / "h"), "owner-1")
    for _ in range(3):
        controller.tick()
        finish_queued_trials(store, sweep_id)
    assert sweep_row(store, sweep_id) == ("succeeded", None, 3)  # 2, 4 and 8 heads ran
    trials = optuna.load_study(study_name=f"symopt-{sweep_id}", storage=optuna_storage(database_url)).trials
    ran = sorted(t.params["model.n_heads"] for t in trials if t.state == TrialState.COMPLETE)
    invalid = {
        t.params["model.n_heads"]: t.user_attrs[INVALID_TRIAL] for t in trials if t.state == TrialState.FAIL
    }
    assert (ran, sorted(invalid)) == ([2, 4, 8], [3, 5, 6, 7])
    assert "not divisible by n_heads=3" in invalid[3]


def test_a_sweep_whose_every_trial_is_invalid_fails_saying_why(
    store: Store, database_url: str, tmp_path: Path
):
    tenant = make_tenant(store, "sweeper")
    sweep_id = new_sweep(store, tenant.id, n_trials=2, parallelism=2)
    with store.transaction() as session:  # a space whose every value breaks the model (stored as is)
        sweep = session.get(Sweep, sweep_id)
        assert sweep is not None
        sweep.resolved_space = {"default": {"model.n_heads": {"type": "categorical", "choices": [3, 5]}}}
    controller = SweepController(store, Settings(database_url=database_url, home=tmp_path / "h"), "owner-1")
    for _ in range(2):
        controller.tick()
    status, error, jobs = sweep_row(store, sweep_id)
    assert (status, jobs) == ("failed", 0)
    assert error is not None
    assert "2 had values that make an invalid job" in error
    assert "n_heads" in error


@pytest.mark.parametrize(
    ("sampler", "blocked", "package"), [("cmaes", "cmaes", "cmaes"), ("gp", "scipy", "scipy")]
)
def test_sampler_packages_are_checked_at_submission(client, alice, monkeypatch, sampler, blocked, package):
    spec = {"base": TINY_JOB, "n_trials": 4, "search_space": LR, "sampler": sampler}
    accepted = client.post("/v1/sweeps", json=spec, headers=alice.headers)
    assert accepted.status_code == 201, accepted.text  # installed: accepted
    monkeypatch.setitem(sys.modules, blocked, None)  # what an import of a missing package meets
    refused = client.post("/v1/sweeps", json=spec, headers=alice.headers)
    assert refused.status_code == 422
    assert f"pip install {package}" in refused.json()["message"]
    assert f"sampler {sampler!r}" in refused.json()["message"]


def test_compared_presets_and_schedule_free_paths_are_checked_at_submission(client, alice):
    base = {**TINY_JOB, "schedule": {"kind": "wsd"}}
    mixed = client.post(
        "/v1/sweeps",
        json={"base": base, "presets": ["adamw", "sf-symmetric"], "search_space": LR},
        headers=alice.headers,
    )
    assert mixed.status_code == 422
    assert "presets: 'sf-symmetric' with this base makes an invalid job" in mixed.json()["message"]
    assert "schedule_free" in mixed.json()["message"]
    sf_path = {"optimizer.schedule_free.momentum": {"type": "uniform", "low": 0.8, "high": 0.95}}
    not_sf = client.post(
        "/v1/sweeps", json={"base": TINY_JOB, "search_space": sf_path}, headers=alice.headers
    )
    assert not_sf.status_code == 422
    assert "search_space['optimizer.schedule_free.momentum']" in not_sf.json()["message"]
    sf_base = {**TINY_JOB, "optimizer": {"preset": "sf-normuon"}, "schedule": {"kind": "schedule_free"}}
    accepted = client.post(
        "/v1/sweeps", json={"base": sf_base, "search_space": sf_path}, headers=alice.headers
    )
    assert accepted.status_code == 201, accepted.text
    assert accepted.json()["search_space"] == {
        "default": {"optimizer.schedule_free.momentum": sf_path["optimizer.schedule_free.momentum"]}
    }


def test_history_lists_finished_trials_in_completion_order_with_the_best_so_far(client, alice, database_url):
    created = client.post(
        "/v1/sweeps", json={"base": TINY_JOB, "n_trials": 4, "search_space": LR}, headers=alice.headers
    )
    sweep = created.json()
    empty = client.get(f"/v1/sweeps/{sweep['id']}/history", headers=alice.headers)
    assert empty.status_code == 200
    assert empty.json()["data"] == [
        {"preset": "symmetric", "study": sweep["study_name"], "finished": [], "running": []}
    ]
    study = optuna.create_study(study_name=sweep["study_name"], storage=optuna_storage(database_url))
    lr = FloatDistribution(1e-3, 1e-1, log=True)
    store = client.app.state.store
    # Trial numbers in ask order; finished in the order 1, 0, 3 (2 still runs).
    outcomes = {1: ("complete", 2.5), 0: ("complete", 2.9), 3: ("pruned", None)}
    trials = [study.ask({"optimizer.lr": lr}) for _ in range(4)]
    for trial in trials:
        trial.report(4.0 - trial.number / 10, 160)
        with store.transaction() as session:
            row = session.get(Sweep, sweep["id"])
            job = create_trial_job(
                session=session,
                sweep=row,
                study=sweep["study_name"],
                number=trial.number,
                spec=load_spec(TINY_JOB, {"optimizer.lr": trial.params["optimizer.lr"]}),
                max_attempts=1,
            )
            transition(session=session, job=job, to=JobStatus.RUNNING)
    for number, (state, value) in outcomes.items():
        if state == "complete":
            study.tell(number, value)
        else:
            study.tell(number, state=TrialState.PRUNED)
    history = client.get(f"/v1/sweeps/{sweep['id']}/history", headers=alice.headers).json()
    (entry,) = history["data"]
    finished = entry["finished"]
    assert [t["number"] for t in finished] == [1, 0, 3]
    assert [t["state"] for t in finished] == ["complete", "complete", "pruned"]
    assert [t["objective"] for t in finished] == [2.5, 2.9, None]
    assert [t["best_so_far"] for t in finished] == [2.5, 2.5, 2.5]
    assert [t["number"] for t in entry["running"]] == [2]
    for trial in [*finished, *entry["running"]]:
        assert trial["params"]["optimizer.lr"] == trials[trial["number"]].params["optimizer.lr"]
        assert trial["intermediate"] == [{"tokens": 160, "value": 4.0 - trial["number"] / 10}]
        assert trial["job_id"] is not None
    assert finished[0]["completed_at"] <= finished[1]["completed_at"] <= finished[2]["completed_at"]
    other = make_tenant(store, "mallory")
    assert client.get(f"/v1/sweeps/{sweep['id']}/history", headers=other.headers).status_code == 404
    assert SweepStatus(sweep["status"]) == SweepStatus.QUEUED
