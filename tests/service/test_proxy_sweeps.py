"""Proxy sweeps (issue 30): tune the lr on shrunk copies of a model, fit its move with width,
recommend the full model's lr, and confirm it at full size.

- The fit: best lr per width refined by a parabola in log(lr), slope with its t interval.
- A proxy sweep ticked by a new controller on every tick (each a restart), its trials finished by
  writes to the store with a loss whose optimum falls as 1/width: one best per width, slope -1,
  the recommendation at full width, and exactly the planned confirmation runs, none twice.
- A proxy study confirms each candidate at the recommended lr, at full size.
- The same sweep on a real service (Ray, tiny models): it runs to its end with one best per width,
  a recommendation and its three confirmation runs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.client.report import write_report
from service.client.transfer_plot import plot_transfer
from service.store import JobStatus, Store
from service.store.jobs import transition
from service.store.models import Job, Study, Sweep
from service.store.studies import study_runs
from service.studies.controller import StudyController
from service.sweeps.controller import SweepController
from service.sweeps.transfer import LrPoint, best_lr, fit_slope

from ..specs import tiny_job
from .conftest import Tenant
from .live import Api, Sweeps

BASE = tiny_job(steps=20, eval={"every": 10, "batches": 2}, optimizer={"preset": "adamw"})  # qwen3 tiny: d64
LR = {"optimizer.lr": {"type": "log_uniform", "low": 1e-3, "high": 1e-1}}
PROXY = {"width": ["1/2", 1], "confirm": {"factors": [0.5, 1, 2], "seeds": 2}}


def loss(lr: float, width: int) -> float:
    """Quadratic in log10(lr) around an optimum of 0.01 at width 64, falling as 1/width."""
    return 2.0 + (math.log10(lr) - math.log10(0.01 * 64 / width)) ** 2


def test_the_fit_refines_each_optimum_and_measures_the_slope():
    points = [LrPoint(lr, loss(lr, 32), f"j{i}") for i, lr in enumerate((1e-3, 1e-2, 1e-1))]
    best = best_lr(points)
    assert best is not None
    assert best["lr"] == 1e-2
    assert best["fitted_lr"] == pytest.approx(0.02)  # the vertex, between the tried lrs
    assert not best["at_edge"]
    edge = best_lr(points[:2])  # the optimum lies beyond the lrs tried
    assert edge is not None
    assert (edge["fitted_lr"], edge["edge"]) == (1e-2, "high")
    exact = fit_slope([64, 128, 256], [0.04, 0.02, 0.01])
    assert exact["slope"] == pytest.approx(-1.0)
    assert exact["low"] == pytest.approx(-1.0)  # no residual: a zero-width interval
    noisy = fit_slope([64, 128, 256, 512], [0.02, 0.025, 0.018, 0.021])
    assert noisy["low"] < 0 < noisy["high"]  # no trend: the interval holds 0
    assert fit_slope([64, 128], [0.02, 0.01])["low"] is None  # two widths: no interval


def finish_queued(store: Store) -> int:
    """Run every queued job to success with `loss` of its lr and width; how many it finished."""
    with store.transaction() as session:
        queued = session.query(Job).filter(Job.status == JobStatus.QUEUED).all()
        for job in queued:
            width = int(job.spec["model"].get("d_model", 64))
            transition(session=session, job=job, to=JobStatus.RUNNING)
            value = loss(job.spec["optimizer"]["lr"], width) + 0.001 * job.spec["seed"]
            transition(session=session, job=job, to=JobStatus.SUCCEEDED, result={"best_val_loss": value})
        return len(queued)


def controller(client: TestClient) -> SweepController:
    app: Any = client.app
    return SweepController(app.state.store, app.state.settings, "owner-1", exclusive=True)


def sweep_jobs(store: Store, sweep_id: str) -> list[tuple[str, int, float, int, int]]:
    """(study key's tail, number, lr, width, seed) of every job of the sweep."""
    with store.read() as session:
        found = session.query(Job).filter(Job.sweep_id == sweep_id).all()
        return sorted(
            (
                str(j.trial_study).split(".", 1)[1],
                int(j.trial_number or 0),
                j.spec["optimizer"]["lr"],
                int(j.spec["model"].get("d_model", 64)),
                j.spec["seed"],
            )
            for j in found
        )


def test_a_proxy_sweep_recommends_and_confirms_exactly_its_plan_across_restarts(
    client: TestClient, alice: Tenant, tmp_path: Path
):
    spec = {"name": "px", "base": BASE, "search_space": LR, "sampler": "grid", "pruner": "none"}
    spec |= {"n_trials": 3, "parallelism": 2, "proxy": PROXY}
    response = client.post("/v1/sweeps", json=spec, headers=alice.headers)
    assert response.status_code == 201, response.text
    sweep_id = response.json()["id"]
    assert set(response.json()["search_space"]) == {"default@d32", "default@d64"}
    assert response.json()["n_trials"] == 2 * 3 + 6  # trials of both widths, then the confirmation runs
    store: Store = client.app.state.store  # type: ignore[attr-defined]
    for _ in range(30):  # a new controller every tick: each tick is a restart
        controller(client).tick()
        with store.read() as session:
            sweep = session.get(Sweep, sweep_id)
            assert sweep is not None
            if sweep.status == "succeeded":
                break
        finish_queued(store)
    assert sweep.status == "succeeded", sweep.error
    for _ in range(2):  # more ticks of a finished sweep create nothing
        controller(client).tick()
    assert finish_queued(store) == 0

    jobs = sweep_jobs(store, sweep_id)
    trials = [j for j in jobs if not j[0].endswith("@full")]
    assert sorted({(key, width) for key, _, _, width, _ in trials}) == [("adamw@d32", 32), ("adamw@d64", 64)]
    assert len(trials) == 6
    confirmations = [j for j in jobs if j[0] == "adamw@full"]
    # Exactly the plan, once each: factors 1/2, 1, 2 of the recommendation (0.01), seeds 0 and 1.
    assert [(n, w, s) for _, n, _, w, s in confirmations] == [(n, 64, n % 2) for n in range(6)]
    assert [lr for *_, lr, _, _ in confirmations] == pytest.approx([0.005, 0.005, 0.01, 0.01, 0.02, 0.02])

    body = client.get(f"/v1/sweeps/{sweep_id}/transfer", headers=alice.headers).json()
    (adamw,) = body["presets"]
    assert [size["label"] for size in adamw["sizes"]] == ["d32", "d64"]
    assert [size["best"]["fitted_lr"] for size in adamw["sizes"]] == pytest.approx([0.02, 0.01])
    assert adamw["slope"]["slope"] == pytest.approx(-1.0)
    assert adamw["recommendation"]["lr"] == pytest.approx(0.01)
    assert any("two widths" in caveat for caveat in adamw["caveats"])
    confirmation = adamw["confirmation"]
    assert (confirmation["planned"], confirmation["finished"]) == (6, 6)
    assert confirmation["best_factor"] == 1.0
    assert confirmation["recommended_was_best"] is True
    picture = plot_transfer(body["presets"], tmp_path / "transfer.png")
    assert picture.read_bytes()[:4] == b"\x89PNG"
    plain = client.post(
        "/v1/sweeps", json={"base": BASE, "search_space": LR, "n_trials": 1}, headers=alice.headers
    )
    assert client.get(f"/v1/sweeps/{plain.json()['id']}/transfer", headers=alice.headers).json() is None


def test_a_proxy_study_confirms_each_candidate_at_its_recommended_lr(
    client: TestClient, alice: Tenant, tmp_path: Path
):
    tuning = {"n_trials": 3, "search_space": LR, "sampler": "grid", "pruner": "none", "parallelism": 3}
    spec = {"name": "pxs", "base": BASE, "candidates": ["adamw", "muon"], "tuning": tuning, "seeds": 2}
    response = client.post(
        "/v1/studies", json={**spec, "proxy": {"width": ["1/2", 1]}}, headers=alice.headers
    )
    assert response.status_code == 201, response.text
    study_id = response.json()["id"]
    app: Any = client.app
    store: Store = app.state.store
    for _ in range(30):
        StudyController(store, app.state.settings, "owner-1", exclusive=True).tick()
        controller(client).tick()
        finish_queued(store)
        with store.read() as session:
            study = session.get(Study, study_id)
            assert study is not None
            if study.status == "succeeded":
                break
    assert study.status == "succeeded", study.error
    with store.read() as session:
        runs = study_runs(session=session, study_id=study_id)
        assert sorted(runs) == [(c, s) for c in ("adamw", "muon") for s in (1, 2)]
        for (candidate, _), job in runs.items():
            assert job.spec["model"] == BASE["model"]  # the full size, not a proxy
            assert job.spec["optimizer"]["preset"] == candidate
            assert job.spec["optimizer"]["lr"] == pytest.approx(0.01)
    tuned = study.result["candidates"][0]["tuned"]
    assert tuned["params"]["optimizer.lr"] == pytest.approx(0.01)
    assert tuned["transfer"]["slope"]["slope"] == pytest.approx(-1.0)
    # `symopt study report`: the transfer table and plot, one panel per candidate
    body = client.get(f"/v1/studies/{study_id}", headers=alice.headers).json()
    text = write_report(body, {}, tmp_path / "report").read_text()
    assert "| adamw | 32: 0.020, 64: 0.010 | -1.00 | 0.010 |" in text
    assert (tmp_path / "report" / "transfer.png").read_bytes()[:4] == b"\x89PNG"


def test_a_proxy_sweep_runs_on_a_real_service(api: Api) -> None:
    sweeps = Sweeps(api.url, api.key)
    proxy = {"width": ["1/2", 1], "confirm": {"factors": [0.5, 1, 2]}}
    sweep_id = sweeps.create(
        BASE,
        name="px-ray",
        search_space={"optimizer.lr": {"type": "log_uniform", "low": 1e-3, "high": 1e-2}},
        sampler="grid",
        pruner="none",
        n_trials=2,
        parallelism=2,
        proxy=proxy,
    )
    sweep = sweeps.wait(sweep_id)
    assert sweep["status"] == "succeeded", sweep["error"]
    result = sweeps.http.get(f"/v1/sweeps/{sweep_id}/transfer").json()
    (adamw,) = result["presets"]
    assert [len(size["trials"]) for size in adamw["sizes"]] == [2, 2]
    assert all(size["best"] is not None for size in adamw["sizes"])
    recommended = adamw["recommendation"]["lr"]
    runs = adamw["confirmation"]["runs"]
    assert [run["factor"] for run in runs] == [0.5, 1.0, 2.0]
    assert [run["lr"] for run in runs] == pytest.approx([recommended / 2, recommended, recommended * 2])
    assert all(run["status"] in ("succeeded", "diverged") for run in runs)  # 2x a large lr may diverge
    assert adamw["confirmation"]["finished"] == adamw["confirmation"]["planned"] == 3
