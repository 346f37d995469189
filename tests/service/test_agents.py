"""The agent protocol over real HTTP (the app in process) on SQLite and PostgreSQL: claims, reports,
leases, pruning, divergence, checkpoints and finishes, with the sweep controller ticked by hand
(no Ray: agents' trials never reach it) and lease expiry driven by the clock the store reads."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.store.agents import expire_leases
from service.store.models import Job, MetricPoint, utcnow
from service.sweeps.controller import SweepController
from tests.specs import tiny_job

from .conftest import Tenant

pytestmark = pytest.mark.xdist_group("agents")


def agent_sweep(**fields: Any) -> dict[str, Any]:
    base = {
        **tiny_job(steps=40),
        "model": {"family": "custom", "d_model": 64},
        "eval": {"every": 10, "batches": 1},
    }
    return {
        "name": "mine",
        "base": base,
        "search_space": {"optimizer.lr": {"type": "log_uniform", "low": 0.001, "high": 0.1}},
        "n_trials": 3,
        "parallelism": 2,
        "sampler": "random",
        "pruner": "none",
        "executor": "agents",
        **fields,
    }


def controller_of(client: TestClient) -> SweepController:
    app: Any = client.app
    return SweepController(app.state.store, app.state.settings, "test-controller", exclusive=True)


def create(client: TestClient, tenant: Tenant, spec: dict[str, Any]) -> str:
    response = client.post("/v1/sweeps", json=spec, headers=tenant.headers)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def claim(client: TestClient, tenant: Tenant, sweep_id: str, **body: Any) -> dict[str, Any]:
    response = client.post(
        f"/v1/sweeps/{sweep_id}/claim", json={"host": "box", **body}, headers=tenant.headers
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def post(client: TestClient, tenant: Tenant, trial: dict[str, Any], what: str, body: dict[str, Any]) -> Any:
    headers = {**tenant.headers, "Symopt-Lease": trial["lease"]["token"]}
    return client.post(f"/v1/jobs/{trial['job_id']}/{what}", json=body, headers=headers)


def points(step: int, **values: Any) -> dict[str, Any]:
    return {"points": [{"name": k, "step": step, "value": v} for k, v in values.items()]}


def job_row(client: TestClient, job_id: str) -> Job:
    app: Any = client.app
    with app.state.store.read() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def test_a_trial_is_claimed_reported_and_finished(client: TestClient, alice: Tenant) -> None:
    sweep_id = create(client, alice, agent_sweep())
    assert claim(client, alice, sweep_id)["trial"] is None  # the controller has not asked yet
    controller = controller_of(client)
    controller.tick()
    answer = claim(client, alice, sweep_id)
    trial = answer["trial"]
    assert trial["kind"] == "trial"
    assert trial["params"].keys() == {"optimizer.lr"}
    assert trial["spec"]["optimizer"]["lr"] == pytest.approx(trial["params"]["optimizer.lr"])
    assert trial["optimizer"] == trial["spec"]["optimizer"]
    assert (trial["spec"]["model"]["family"], trial["spec"]["model"]["d_model"]) == ("custom", 64)
    assert trial["resume_step"] is None
    assert job_row(client, trial["job_id"]).status == "running"

    first = post(client, alice, trial, "report", points(10, loss=3.0, val_loss=3.1))
    assert first.status_code == 200, first.text
    assert first.json()["should_prune"] is False
    assert first.json()["stop"] is False
    again = post(client, alice, trial, "report", points(10, loss=3.0, val_loss=3.1))  # a retried report
    assert again.status_code == 200
    post(client, alice, trial, "report", points(20, val_loss=2.5))
    finished = post(client, alice, trial, "finish", {"status": "succeeded"})
    assert finished.status_code == 200, finished.text
    assert finished.json()["status"] == "succeeded"
    assert finished.json()["result"]["best_val_loss"] == pytest.approx(2.5)
    assert finished.json()["agent_host"] == "box"
    # a retried finish answers the job as it is; a report after it is a 409
    assert post(client, alice, trial, "finish", {"status": "succeeded"}).json()["status"] == "succeeded"
    assert post(client, alice, trial, "report", points(30, val_loss=2.0)).status_code == 409

    app: Any = client.app
    with app.state.store.read() as session:
        stored = session.query(MetricPoint).filter_by(job_id=trial["job_id"]).count()
    assert stored == 3  # loss@10, val_loss@10 (once, though reported twice), val_loss@20

    controller.tick()
    trials = client.get(f"/v1/sweeps/{sweep_id}/trials", headers=alice.headers).json()["data"]
    done = next(t for t in trials if t["job_id"] == trial["job_id"])
    assert done["objective"] == pytest.approx(2.5)
    assert done["agent_host"] == "box"


def test_input_checks(client: TestClient, alice: Tenant, bob: Tenant) -> None:
    sweep_id = create(client, alice, agent_sweep())
    controller_of(client).tick()
    # another tenant's sweep is not found, and bob cannot claim its trials
    response = client.post(f"/v1/sweeps/{sweep_id}/claim", json={}, headers=bob.headers)
    assert response.status_code == 404
    trial = claim(client, alice, sweep_id)["trial"]
    stolen = client.post(
        f"/v1/jobs/{trial['job_id']}/report",
        json=points(1, loss=1.0),
        headers={**bob.headers, "Symopt-Lease": trial["lease"]["token"]},
    )
    assert stolen.status_code == 404
    # a stale or made-up lease token is a 409 that says the lease is lost
    stale = post(client, alice, {**trial, "lease": {"token": "not-the-token"}}, "report", points(1, loss=1.0))
    assert stale.status_code == 409
    assert "lease" in stale.json()["detail"]
    # a lease header is required; bad points are 422s naming the field
    missing = client.post(
        f"/v1/jobs/{trial['job_id']}/report", json=points(1, loss=1.0), headers=alice.headers
    )
    assert missing.status_code == 422
    negative = post(client, alice, trial, "report", points(-1, loss=1.0))
    assert negative.status_code == 422
    assert "step" in negative.text
    # pruned is refused while the pruner has not pruned; succeeded needs an objective
    assert post(client, alice, trial, "finish", {"status": "pruned"}).status_code == 409
    no_objective = post(client, alice, trial, "finish", {"status": "succeeded"})
    assert no_objective.status_code == 409
    assert "objective" in no_objective.json()["detail"]
    # a service sweep cannot be claimed; a custom model cannot run as a service job or sweep
    service_sweep = agent_sweep(executor="service")
    assert client.post("/v1/sweeps", json=service_sweep, headers=alice.headers).status_code == 422
    job = client.post("/v1/jobs", json=agent_sweep()["base"], headers=alice.headers)
    assert job.status_code == 422
    assert "executor: agents" in job.text


def test_nan_is_stored_and_ends_the_trial_diverged(client: TestClient, alice: Tenant) -> None:
    sweep_id = create(client, alice, agent_sweep())
    controller_of(client).tick()
    trial = claim(client, alice, sweep_id)["trial"]
    post(client, alice, trial, "report", points(5, loss=2.0))
    answer = post(client, alice, trial, "report", points(6, loss="nan"))
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "diverged"
    assert answer.json()["stop"] is True
    assert answer.json()["diverged_at"] == 6
    series = client.get(f"/v1/jobs/{trial['job_id']}/metrics", headers=alice.headers).json()["series"]
    assert series[0]["values"] == [2.0, "nan"]
    # the agent's context manager then finishes it: the answer is the diverged job, unchanged
    assert (
        post(client, alice, trial, "finish", {"status": "failed", "error": "x"}).json()["status"]
        == "diverged"
    )


def test_an_expired_lease_reoffers_the_same_trial_from_its_checkpoint(
    client: TestClient, alice: Tenant
) -> None:
    sweep_id = create(client, alice, agent_sweep(n_trials=1, parallelism=1))
    controller = controller_of(client)
    controller.tick()
    first = claim(client, alice, sweep_id, lease_seconds=5)["trial"]
    post(client, alice, first, "report", points(10, val_loss=3.0))
    headers = {**alice.headers, "Symopt-Lease": first["lease"]["token"]}
    stored = client.put(
        f"/v1/jobs/{first['job_id']}/checkpoint?step=10", content=b"state at 10", headers=headers
    )
    assert stored.status_code == 204, stored.text
    post(client, alice, first, "report", points(20, val_loss=2.0))

    app: Any = client.app
    with app.state.store.transaction() as session:  # the lease runs out: 6 s from now
        expired = expire_leases(session=session, now=utcnow() + timedelta(seconds=6))
    assert expired == [first["job_id"]]
    job = job_row(client, first["job_id"])
    assert (job.status, job.failures, job.step) == ("queued", 1, 10)
    assert "resumes from its checkpoint at step 10" in (job.queued_reason or "")

    late = post(client, alice, first, "report", points(30, val_loss=1.0))
    assert late.status_code == 409  # the old holder's late report
    controller.tick()  # nothing new is asked: n_trials stays 1
    second = claim(client, alice, sweep_id)["trial"]
    assert second["job_id"] == first["job_id"]
    assert (second["attempt"], second["resume_step"]) == (2, 10)
    checkpoint = client.get(f"/v1/jobs/{second['job_id']}/checkpoint", headers=alice.headers)
    assert checkpoint.content == b"state at 10"
    steps, _ = series_of(client, alice, second["job_id"], "val_loss")
    assert steps == [10]  # what the lost attempt reported after its checkpoint is gone
    post(client, alice, second, "report", points(20, val_loss=1.5))
    post(client, alice, second, "finish", {"status": "succeeded"})
    controller.tick()
    sweep = client.get(f"/v1/sweeps/{sweep_id}", headers=alice.headers).json()
    assert sweep["status"] == "succeeded"
    assert sweep["best"]["objective"] == pytest.approx(1.5)


def series_of(client: TestClient, tenant: Tenant, job_id: str, name: str) -> tuple[list[int], list[Any]]:
    body = client.get(f"/v1/jobs/{job_id}/metrics", params={"names": name}, headers=tenant.headers).json()
    return (body["series"][0]["steps"], body["series"][0]["values"]) if body["series"] else ([], [])


def test_the_pruner_answers_in_the_report(client: TestClient, alice: Tenant) -> None:
    spec = agent_sweep(n_trials=4, parallelism=4, pruner="median")
    sweep_id = create(client, alice, spec)
    controller_of(client).tick()
    trials = [claim(client, alice, sweep_id)["trial"] for _ in range(4)]
    # three trials reach a low loss and finish; the median pruner starts after 2 finished trials
    for i, trial in enumerate(trials[:3]):
        for step in (10, 20, 30, 40):
            post(client, alice, trial, "report", points(step, val_loss=2.0 - 0.1 * i - step / 100))
        post(client, alice, trial, "finish", {"status": "succeeded"})
    controller_of(client).tick()
    bad = trials[3]
    answer = post(client, alice, bad, "report", points(10, val_loss=9.0)).json()
    assert answer["should_prune"] is True
    assert answer["stop"] is True
    assert answer["pruned_at_tokens"] > 0
    finished = post(client, alice, bad, "finish", {"status": "pruned"})
    assert finished.json()["status"] == "pruned"
    controller_of(client).tick()
    listed = client.get(f"/v1/sweeps/{sweep_id}/trials", headers=alice.headers).json()["data"]
    assert [t["state"] for t in listed].count("pruned") == 1
    assert client.get(f"/v1/sweeps/{sweep_id}", headers=alice.headers).json()["status"] == "succeeded"


def test_values_are_finite_or_named(client: TestClient, alice: Tenant) -> None:
    sweep_id = create(client, alice, agent_sweep())
    controller_of(client).tick()
    trial = claim(client, alice, sweep_id)["trial"]
    answer = post(client, alice, trial, "report", points(3, grad_norm="inf", lr=math.pi))
    assert answer.status_code == 200
    assert series_of(client, alice, trial["job_id"], "grad_norm")[1] == ["inf"]
    bad = post(client, alice, trial, "report", points(3, lr="fast"))
    assert bad.status_code == 422


def test_a_starting_scheduler_gives_held_leases_their_length_again(client: TestClient, alice: Tenant) -> None:
    """Agents cannot report while the service is down: a restart must not expire their leases."""
    from service.store.agents import extend_leases

    sweep_id = create(client, alice, agent_sweep())
    controller_of(client).tick()
    trial = claim(client, alice, sweep_id, lease_seconds=5)["trial"]
    app: Any = client.app
    later = utcnow() + timedelta(seconds=60)  # the service was down for a minute
    with app.state.store.transaction() as session:
        assert extend_leases(session=session, now=later) == 1
        assert expire_leases(session=session, now=later + timedelta(seconds=4)) == []
        assert expire_leases(session=session, now=later + timedelta(seconds=6)) == [trial["job_id"]]
