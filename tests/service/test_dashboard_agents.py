"""The dashboard shows the trials of an `executor: agents` sweep like any other, with the host of
the agent that ran each: in a real headless Chromium against the worker's shared `symopt serve`.

The agent is this test over HTTP (claim, report, finish), as a user's script is: no worker trains
anything, so the sweep's trials are queued by the service's own sweep controller within a second
or so and stay queued until claimed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser

from ..specs import tiny_job
from ..waiting import wait_for
from .live import ServiceTenant, SharedService
from .test_dashboard import NARROW, WIDER_THAN_VIEWPORT, go, shot, tab

pytestmark = pytest.mark.xdist_group("dashboard-agents")

HOST = "box-7"
BASE = {
    **tiny_job(steps=40),
    "model": {"family": "custom", "d_model": 64},
    "eval": {"every": 10, "batches": 1},
}
SPACE = {"optimizer.lr": {"type": "log_uniform", "low": 1e-3, "high": 1e-1}}


@pytest.fixture(scope="module")
def service(shared_service: SharedService) -> ServiceTenant:
    """The module's tenant of the worker's shared service."""
    return shared_service.tenant()


@pytest.fixture(scope="module")
def http(service: ServiceTenant) -> Iterator[httpx.Client]:
    """The tenant's REST API; its sweeps still running at the end are cancelled."""
    with httpx.Client(
        base_url=service.url, headers={"Authorization": f"Bearer {service.api_key}"}, timeout=60
    ) as client:
        yield client
        for sweep in client.get("/v1/sweeps", params={"limit": 200}).json()["data"]:
            if sweep["status"] in ("queued", "running"):
                client.post(f"/v1/sweeps/{sweep['id']}/cancel")


def created(http: httpx.Client, **spec: Any) -> str:
    response = http.post("/v1/sweeps", json={"base": BASE, "search_space": SPACE, "sampler": "random",
                                             "pruner": "none", "executor": "agents", **spec})  # fmt: skip
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def trials(http: httpx.Client, sweep_id: str) -> list[dict[str, Any]]:
    return list(http.get(f"/v1/sweeps/{sweep_id}/trials").json()["data"])


def test_an_agent_sweep_shows_its_agents_host_on_the_sweep_job_and_jobs_pages(
    browser: Browser, service: ServiceTenant, http: httpx.Client
):
    # Two trials at once: one run by the agent on box-7, one still waiting for an agent.
    sweep_id = created(http, name="dash-agents", n_trials=2, parallelism=2)
    wait_for(
        lambda: len(trials(http, sweep_id)) == 2,
        progress=lambda: len(trials(http, sweep_id)),
        what="the sweep controller to queue both trials",
    )
    claim = http.post(f"/v1/sweeps/{sweep_id}/claim", json={"host": HOST, "lease_seconds": 60})
    assert claim.status_code == 200, claim.text
    trial = claim.json()["trial"]
    assert trial is not None
    job_id = trial["job_id"]
    lease = {"Symopt-Lease": trial["lease"]["token"]}
    points = {"points": [{"name": "val_loss", "step": 10, "value": 2.5}]}
    reported = http.post(f"/v1/jobs/{job_id}/report", json=points, headers=lease)
    assert reported.status_code == 200, reported.text
    finished = http.post(f"/v1/jobs/{job_id}/finish", json={"status": "succeeded"}, headers=lease)
    assert finished.status_code == 200, finished.text
    assert finished.json()["agent_host"] == HOST
    (waiting,) = [t["job_id"] for t in trials(http, sweep_id) if t["job_id"] != job_id]

    with tab(browser, service) as page:
        go(page, service, f"/sweep/{sweep_id}")
        page.wait_for_selector("#trials th:has-text('Agent')")
        facts = page.text_content("#page .facts") or ""
        assert "Executor" in facts
        assert "agents (your own training scripts)" in facts
        # The Agent cell of each row: the host of the claimed trial, a dash for the waiting one.
        agent = page.locator("#trials tbody td[data-label='Agent']")
        ran = page.locator("#trials tbody tr", has=page.locator(f"a[href='#/job/{job_id}']"))
        assert ran.locator("td[data-label='Agent']").inner_text() == HOST
        assert sorted(agent.all_inner_texts()) == sorted([HOST, "–"])
        shot(page, "sweep-agents")

        go(page, service, f"/job/{job_id}")
        page.wait_for_selector(f"#run-by:has-text('agent on {HOST}')")
        page.wait_for_selector("[data-status='succeeded']")
        shot(page, "job-agent")
        go(page, service, f"/job/{waiting}")
        page.wait_for_selector("#run-by:has-text('agent (waiting for one)')")

        # The job list marks agent jobs beside their name, with the host once one holds it.
        go(page, service, f"/jobs?sweep={sweep_id}")
        page.wait_for_selector("#jobs-table[data-rows='2']")
        tags = page.locator("#jobs-table tbody .agent-tag")
        assert sorted(tags.all_inner_texts()) == sorted([f"agent {HOST}", "agent"])
        shot(page, "jobs-agents")

    # On a phone the tables turn into cards: the Agent cell and the host tag still fit.
    with tab(browser, service, NARROW) as page:
        for route, ready in ((f"/sweep/{sweep_id}", "#trials td[data-label='Agent']"),
                             (f"/jobs?sweep={sweep_id}", "#jobs-table .agent-tag")):  # fmt: skip
            go(page, service, route)
            page.wait_for_selector(ready)
            width, inner = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
            assert width <= inner, (route, width, inner, page.evaluate(WIDER_THAN_VIEWPORT))


def test_a_service_sweep_has_no_agent_column(browser: Browser, service: ServiceTenant, http: httpx.Client):
    # A model the service builds; cancelled at once: only its page matters, not its training.
    sweep_id = created(http, name="dash-service", n_trials=1, executor="service", base=tiny_job(steps=40))
    assert http.post(f"/v1/sweeps/{sweep_id}/cancel").status_code == 202
    with tab(browser, service) as page:
        go(page, service, f"/sweep/{sweep_id}")
        page.wait_for_selector("#trials th:has-text('Job')")
        assert page.locator("#trials th:has-text('Agent')").count() == 0
        assert "Executor" not in (page.text_content("#page .facts") or "")


def test_an_agents_study_says_so(browser: Browser, service: ServiceTenant, http: httpx.Client):
    spec = {
        "name": "dash-agents-study",
        "executor": "agents",
        "base": BASE,
        "candidates": ["adamw", "symmetric"],
        "tuning": {"n_trials": 1, "search_space": SPACE, "sampler": "random", "pruner": "none"},
        "seeds": 1,
    }
    response = http.post("/v1/studies", json=spec)
    assert response.status_code == 201, response.text
    study_id = response.json()["id"]
    try:
        with tab(browser, service) as page:
            go(page, service, f"/study/{study_id}")
            page.wait_for_selector("#page .facts:has-text('Executor')")
            assert "agents (your own training scripts)" in (page.text_content("#page .facts") or "")
    finally:
        http.post(f"/v1/studies/{study_id}/cancel")
