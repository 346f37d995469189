"""Restarts of the sweep controller without Ray: each restart is a new SweepController (a fresh
process's samplers) over the same database, and trial jobs finish by writes to the store.

- The sampler continues its sequence across restarts instead of replaying it (issue 26, item 3).
- A trial told PRUNED by a process that stopped before cancelling its job ends pruned in the API
  too, whichever process pruned it: the controller or an agent's report (issue 26, item 6).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import optuna
import pytest
from fastapi.testclient import TestClient
from optuna.trial import TrialState

from service.settings import Settings
from service.store import JobStatus, Store
from service.store.jobs import transition
from service.store.metrics import Point, record_metrics
from service.store.models import Job, Sweep
from service.store.sweeps import trial_jobs
from service.sweeps.controller import SweepController
from service.sweeps.storage import optuna_storage

from .conftest import TINY_JOB, Tenant, make_tenant
from .test_agents import agent_sweep, claim, controller_of, create, points, post
from .test_sweep_controller import new_sweep, sweep_row

LR = {"type": "log_uniform", "low": 1e-3, "high": 1e-1}
WD = {"type": "uniform", "low": 0.0, "high": 0.1}
N_TRIALS = 6


class Killed(BaseException):
    """The process is killed here: nothing after it runs, and no `except Exception` sees it."""


class ApiKilledError(Exception):
    """The API process is killed during a request (an Exception: the test client passes it on)."""


def objective(params: dict[str, Any]) -> float:
    """A smooth objective of the trial's values, so model-based samplers have something to learn."""
    return 2.0 + (math.log10(params["optimizer.lr"]) + 2.0) ** 2 + (params["optimizer.weight_decay"] or 0.0)


def finish_queued(store: Store, sweep_id: str) -> None:
    """Run every queued trial job to success, with `objective` of its values as its loss."""
    with store.transaction() as session:
        for job in trial_jobs(session=session, sweep_id=sweep_id).values():
            if job.status == JobStatus.QUEUED:
                values = {"optimizer.lr": job.spec["optimizer"]["lr"]}
                values["optimizer.weight_decay"] = job.spec["optimizer"]["weight_decay"]
                transition(session=session, job=job, to=JobStatus.RUNNING)
                transition(
                    session=session,
                    job=job,
                    to=JobStatus.SUCCEEDED,
                    result={"best_val_loss": objective(values)},
                )


def asked(database_url: str, sweep_id: str) -> list[tuple[float, ...]]:
    """Each trial's values, in trial order."""
    study = optuna.load_study(study_name=f"symopt-{sweep_id}", storage=optuna_storage(database_url))
    return [tuple(t.params[p] for p in sorted(t.params)) for t in study.get_trials(deepcopy=False)]


def run_sweep(store: Store, settings: Settings, sweep_id: str, *, restart_every_tick: bool) -> int:
    """Tick the sweep to its end, finishing its jobs between ticks; the number of restarts."""
    controller, restarts = SweepController(store, settings, "owner-1"), 0
    for _ in range(3 * N_TRIALS):
        if sweep_row(store, sweep_id)[0] == "succeeded":
            return restarts
        if restart_every_tick:  # a crash or a graceful restart: new samplers, the same study
            controller, restarts = SweepController(store, settings, "owner-1"), restarts + 1
        controller.tick()
        finish_queued(store, sweep_id)
    raise AssertionError(f"sweep {sweep_id} did not finish: {sweep_row(store, sweep_id)}")


@pytest.mark.parametrize("sampler", ["random", "tpe", "grid", "cmaes", "gp"])
def test_a_restart_continues_the_samplers_sequence(
    store: Store, database_url: str, tmp_path: Path, sampler: str
):
    tenant = make_tenant(store, "sweeper")
    settings = Settings(database_url=database_url, home=tmp_path / "home")
    # Two dimensions (CMA-ES samples one alone, with its independent random sampler); the grid's
    # one holds N_TRIALS points, so that it need not repeat one.
    ranges = {"optimizer.lr": LR} if sampler == "grid" else {"optimizer.lr": LR, "optimizer.weight_decay": WD}
    space = {"search_space": ranges}
    spec: dict[str, Any] = {"n_trials": N_TRIALS, "parallelism": 2, "sampler": sampler, "seed": 7, **space}
    uninterrupted, restarted = new_sweep(store, tenant.id, **spec), new_sweep(store, tenant.id, **spec)
    with store.transaction() as session:  # new_sweep stores only the lr's range
        for sweep_id in (uninterrupted, restarted):
            row = session.get(Sweep, sweep_id)
            assert row is not None
            row.resolved_space = {"default": space["search_space"]}

    assert run_sweep(store, settings, uninterrupted, restart_every_tick=False) == 0
    restarts = run_sweep(store, settings, restarted, restart_every_tick=True)

    values = asked(database_url, restarted)
    assert restarts >= N_TRIALS // 2  # parallelism 2: a restart before every pair of trials
    assert len(values) == N_TRIALS
    assert len(set(values)) == N_TRIALS  # no trial repeats an earlier one's values
    # Seeded by the trial number, not by the process: restarts change nothing of the sequence.
    assert values == asked(database_url, uninterrupted)


# -- a prune cut off before the job's cancellation ------------------------------------------------

GOOD = 3.5  # the validation loss at step 5 of the trials that run to their end
PRUNED_OBJECTIVE = 2.9587  # what the pruned trial's job reaches when it runs to its end anyway


def api_and_optuna_states(client: TestClient, tenant: Tenant, sweep: dict[str, Any]) -> list[tuple[str, str]]:
    """(the API's trial state, Optuna's trial state) of each trial, in trial order."""
    listed = client.get(f"/v1/sweeps/{sweep['id']}/trials", headers=tenant.headers).json()["data"]
    api = {t["trial_number"]: t["state"] for t in listed}
    study = optuna.load_study(study_name=sweep["study_name"], storage=optuna_storage(database_url_of(client)))
    return [(api[t.number], t.state.name.lower()) for t in study.get_trials(deepcopy=False)]


def disagreements(states: list[tuple[str, str]]) -> int:
    same = {("succeeded", "complete"), ("pruned", "pruned"), ("running", "running"), ("queued", "running")}
    return sum(1 for pair in states if pair not in same)


def database_url_of(client: TestClient) -> str:
    app: Any = client.app
    return str(app.state.settings.resolved_database_url())


def job_of(client: TestClient, job_id: str) -> Job:
    app: Any = client.app
    with app.state.store.read() as session:
        job = session.get(Job, job_id)
        assert job is not None
        session.expunge(job)
        return job


def best_job_id(client: TestClient, sweep_id: str) -> str | None:
    """The best trial's job as the controller chose it: among Optuna's COMPLETE trials."""
    app: Any = client.app
    with app.state.store.read() as session:
        sweep = session.get(Sweep, sweep_id)
        assert sweep is not None
        return sweep.best_job_id


@pytest.mark.parametrize("after_the_crash", ["running", "requeued", "ran_to_its_end"])
def test_a_prune_cut_off_by_a_killed_controller_ends_the_job_pruned(
    client: TestClient, alice: Tenant, after_the_crash: str
):
    app: Any = client.app
    store = app.state.store
    spec = {"base": TINY_JOB, "n_trials": 4, "parallelism": 4, "sampler": "random", "pruner": "median"}
    spec["search_space"] = {"optimizer.lr": LR}
    created = client.post("/v1/sweeps", json=spec, headers=alice.headers)
    assert created.status_code == 201, created.text
    sweep = created.json()
    controller = SweepController(store, app.state.settings, "owner-1", exclusive=True)
    controller.tick()  # asks the 4 trials
    with store.transaction() as session:
        jobs = [job for _, job in sorted(trial_jobs(session=session, sweep_id=sweep["id"]).items())]
        for number, job in enumerate(jobs[:3]):  # evaluated once, at step 5 of 20
            transition(session=session, job=job, to=JobStatus.RUNNING)
            loss = GOOD + number / 10
            record_metrics(session=session, job_id=job.id, points=[Point("val_loss", 5, loss, 0.0)])
        transition(session=session, job=jobs[3], to=JobStatus.RUNNING)
        ids = [job.id for job in jobs]
    controller.tick()  # reports step 5 of trials 0 to 2
    with store.transaction() as session:
        for job_id in ids[:3]:
            job = session.get(Job, job_id)
            transition(session=session, job=job, to=JobStatus.SUCCEEDED, result={"best_val_loss": 3.0})
    controller.tick()  # tells Optuna they completed
    with store.transaction() as session:  # trial 3 evaluates at step 5: far worse than the median
        record_metrics(session=session, job_id=ids[3], points=[Point("val_loss", 5, 9.0, 0.0)])

    def killed(*_: object) -> None:
        raise Killed

    controller._apply = killed  # type: ignore[method-assign]
    with pytest.raises(Killed):
        controller.tick()  # tells PRUNED, then dies before the transaction that cancels the job
    study = optuna.load_study(study_name=sweep["study_name"], storage=optuna_storage(database_url_of(client)))
    assert study.trials[3].state == TrialState.PRUNED
    assert job_of(client, ids[3]).status == JobStatus.RUNNING
    with store.transaction() as session:  # what happened to the job while the service was down
        job = session.get(Job, ids[3])
        if after_the_crash == "requeued":  # the scheduler's start requeues what ran
            transition(session=session, job=job, to=JobStatus.QUEUED)
        elif after_the_crash == "ran_to_its_end":
            transition(
                session=session, job=job, to=JobStatus.SUCCEEDED, result={"best_val_loss": PRUNED_OBJECTIVE}
            )

    SweepController(store, app.state.settings, "owner-2", exclusive=True).tick()  # the restart
    pruned = job_of(client, ids[3])
    pruned_at = max(study.trials[3].intermediate_values)
    assert pruned.pruned_at == pruned_at == 5 * 4 * 32  # step 5, 4 x 32 tokens a step
    expected = {"running": "cancelling", "requeued": "pruned", "ran_to_its_end": "succeeded"}
    assert pruned.status == expected[after_the_crash]
    if after_the_crash == "running":  # its worker stops at the cancel
        with store.transaction() as session:
            transition(session=session, job=session.get(Job, ids[3]), to=JobStatus.CANCELLED)
    states = api_and_optuna_states(client, alice, sweep)
    assert states[3] == ("pruned", "pruned")
    assert disagreements(states) == 0  # of 4 trials
    SweepController(store, app.state.settings, "owner-2", exclusive=True).tick()
    assert client.get(f"/v1/sweeps/{sweep['id']}", headers=alice.headers).json()["status"] == "succeeded"
    # The pruned trial's job, even one that ran to a better loss, is never the sweep's best.
    assert best_job_id(client, sweep["id"]) in ids[:3]


@pytest.mark.parametrize("agent_finishes_first", [False, True])
def test_a_prune_cut_off_in_an_agents_report_ends_the_job_pruned(
    client: TestClient, alice: Tenant, monkeypatch: pytest.MonkeyPatch, agent_finishes_first: bool
):
    sweep_id = create(client, alice, agent_sweep(n_trials=4, parallelism=4, pruner="median"))
    controller_of(client).tick()
    trials = [claim(client, alice, sweep_id)["trial"] for _ in range(4)]
    for i, trial in enumerate(trials[:3]):  # as in test_agents: three finish, good at every step
        for step in (10, 20, 30, 40):
            post(client, alice, trial, "report", points(step, val_loss=2.0 - 0.1 * i - step / 100))
        post(client, alice, trial, "finish", {"status": "succeeded"})
    controller_of(client).tick()

    from service.api.routes import agents as route
    from service.sweeps.agent_pruning import prune_verdict

    def verdict_then_killed(*args: Any) -> int | None:
        pruned_at = prune_verdict(*args)  # tells Optuna PRUNED
        assert pruned_at is not None
        raise ApiKilledError  # before the transaction that marks the job pruned and cancels it

    monkeypatch.setattr(route, "prune_verdict", verdict_then_killed)
    bad = trials[3]
    with pytest.raises(ApiKilledError):
        post(client, alice, bad, "report", points(10, val_loss=9.0))
    monkeypatch.undo()
    assert job_of(client, bad["job_id"]).status == JobStatus.RUNNING
    if agent_finishes_first:  # the agent never heard of the prune: it trains to the end
        done = post(client, alice, bad, "finish", {"status": "succeeded", "objective": PRUNED_OBJECTIVE})
        assert done.json()["status"] == "succeeded"

    controller_of(client).tick()  # the restarted service's first tick
    job = job_of(client, bad["job_id"])
    assert job.pruned_at == 10 * 4 * 32  # step 10 of the custom model's 4 x 32 tokens a step
    if agent_finishes_first:  # it keeps its record; the trial is pruned, as Optuna says
        assert (job.status, job.result["objective"]) == (JobStatus.SUCCEEDED, PRUNED_OBJECTIVE)
    else:  # the agent's next heartbeat says stop, and it finishes the trial as pruned
        assert job.status == JobStatus.CANCELLING
        answer = post(client, alice, bad, "report", {"points": []}).json()
        assert (answer["should_prune"], answer["stop"], answer["pruned_at_tokens"]) == (
            True,
            True,
            job.pruned_at,
        )
        assert post(client, alice, bad, "finish", {"status": "pruned"}).json()["status"] == "pruned"
    sweep = client.get(f"/v1/sweeps/{sweep_id}", headers=alice.headers).json()
    states = api_and_optuna_states(client, alice, sweep)
    assert states[3] == ("pruned", "pruned")
    assert disagreements(states) == 0  # of 4 trials
    controller_of(client).tick()
    assert client.get(f"/v1/sweeps/{sweep_id}", headers=alice.headers).json()["status"] == "succeeded"
    assert best_job_id(client, sweep_id) not in (None, bad["job_id"])
