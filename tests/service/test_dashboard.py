"""The dashboard in a real headless Chromium against a real `symopt serve` running real jobs.

One tenant of the worker's shared service for the module: a small finished job and a tiny
comparison study (2 candidates, 2 trials each, 2 seeds, 20 steps) whose sweeps serve the sweep
page; a long job for the live checks, cancelled from the page; a tiny OLMoE job for the MoE
panels; a sweep with a pruned trial, written into the service's store as its sweep controller
writes one. Screenshots go to $SYMOPT_TEST_ARTIFACTS/dashboard (default .artifacts/dashboard
under the repository root).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qs, urlparse

import optuna
import pytest
from optuna.trial import TrialState
from playwright.sync_api import Browser, Page
from sqlalchemy import select

from service.client import Client
from service.store import JobStatus, Store, SweepStatus
from service.store.jobs import create_job, request_cancel, transition
from service.store.metrics import Point, record_metrics
from service.store.models import Sweep, Tenant
from service.store.sweeps import create_sweep, create_trial_job, set_sweep_status
from service.sweep_spec import ParamRange, SweepSpec
from service.sweeps.controller import TrialJob, report_and_maybe_prune
from service.sweeps.space import (
    distribution,
    make_pruner,
    make_sampler,
    resolved_spaces,
    token_budget,
    trial_spec,
)
from service.sweeps.storage import optuna_storage
from service.testing import ROOT
from symopt_core.spec import load_spec

from ..specs import tiny_job
from ..waiting import LIMIT, wait_for
from .live import ServiceTenant, SharedService

# Run with `--dist loadgroup` to keep the module on one xdist worker (one browser, one study).
pytestmark = pytest.mark.xdist_group("dashboard")

ARTIFACTS = Path(os.environ.get("SYMOPT_TEST_ARTIFACTS") or ROOT / ".artifacts") / "dashboard"
WIDE, NARROW = {"width": 1280, "height": 800}, {"width": 390, "height": 844}
WAIT_MS = 120_000  # a guard against hanging, not a speed check: CI machines are slow and busy

BASE = tiny_job(steps=20, log_every=2, eval={"every": 5, "batches": 2})
STUDY = {
    "name": "dash-study",
    "base": BASE,
    "candidates": ["adamw", "muon"],
    "seeds": 2,
    "tuning": {
        "n_trials": 2,
        "search_space": {
            "optimizer.lr": {"type": "log_uniform", "low": 1e-3, "high": 2e-2},
            "batch.size": {"type": "pow2", "low": 2, "high": 8},
        },
        "sampler": "random",
        "pruner": "none",
        "parallelism": 2,
    },
}


@pytest.fixture(scope="module")
def service(shared_service: SharedService) -> ServiceTenant:
    """The module's tenant of the worker's shared service."""
    return shared_service.tenant()


@pytest.fixture(scope="module")
def client(service: ServiceTenant) -> Iterator[Client]:
    with Client(service.url, service.api_key) as opened:
        yield opened


@pytest.fixture(scope="module")
def finished(client: Client) -> SimpleNamespace:
    """A finished small job and a finished tiny study (whose sweeps are ordinary sweeps)."""
    job = client.submit({**BASE, "name": "dash-small"})
    study = client.submit_study(STUDY)
    job.wait(timeout=LIMIT, progress=False)
    study.wait(timeout=LIMIT, progress=False)
    assert job.status == "succeeded", job.data["error"]
    assert study.status == "succeeded", study.data["error"]
    return SimpleNamespace(job=job, study=study, sweeps=study.sweeps())


@contextmanager
def tab(browser: Browser, service: ServiceTenant, viewport: dict[str, int] = WIDE) -> Iterator[Page]:
    """A new tab that already holds the key (as after typing it once); any script error or
    failed load (a missing module, a 404 or 500 from the API) fails the test when it closes."""
    context = browser.new_context(viewport=viewport)  # type: ignore[arg-type]
    context.add_init_script(f"sessionStorage.setItem('symopt.apiKey', {json.dumps(service.api_key)})")
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    yield page
    context.close()
    assert errors == [], errors


@pytest.fixture
def page(browser: Browser, service: ServiceTenant) -> Iterator[Page]:
    with tab(browser, service) as opened:
        yield opened


def go(page: Page, service: ServiceTenant, route: str) -> None:
    page.goto(f"{service.url}/#{route}")


def points(page: Page, chart: str) -> dict[str, int]:
    """What the chart drew: {series label: points}, as the page's draw hook recorded it."""
    element = page.wait_for_selector(f'[data-chart="{chart}"][data-points]')
    assert element is not None
    return json.loads(element.get_attribute("data-points") or "{}")


def wait_points(page: Page, chart: str, series: str, expected: int) -> None:
    page.wait_for_function(
        '([chart, series, expected]) => { const e = document.querySelector(`[data-chart="${chart}"]`);'
        " return e && e.dataset.points && JSON.parse(e.dataset.points)[series] === expected; }",
        arg=[chart, series, expected],
    )


# The innermost elements that stick out on the right: what a failed sideways-scroll check shows.
WIDER_THAN_VIEWPORT = """[...document.querySelectorAll('body *')]
  .filter(e => e.getBoundingClientRect().right > window.innerWidth + 0.5)
  .filter(e => ![...e.children].some(c => c.getBoundingClientRect().right > window.innerWidth + 0.5))
  .slice(0, 5).map(e => `${e.tagName}.${e.className}: ${e.textContent.slice(0, 60)}`)"""


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def count(client: Client, job_id: str, name: str) -> int:
    return sum(1 for row in client.job(job_id).metrics([name]) if row["name"] == name)


def test_a_wrong_key_shows_a_clear_message_and_the_right_one_opens_the_dashboard(
    browser: Browser, service: ServiceTenant
):
    context = browser.new_context(viewport=WIDE)  # type: ignore[arg-type]
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(f"{service.url}/")
    page.fill("#api-key", "sym_0000_not-a-key")
    page.click("#key-form button")
    page.wait_for_selector("#key-message:has-text('rejected')")
    message = page.text_content("#key-message") or ""
    assert "The service rejected this key (401" in message
    assert page.is_visible("#api-key")
    assert not page.is_visible("#nav")
    assert page.evaluate("sessionStorage.getItem('symopt.apiKey')") is None
    shot(page, "wrong-key")

    page.fill("#api-key", service.api_key or "")
    page.click("#key-form button")
    page.wait_for_selector("#nav", state="visible")
    assert service.tenant in (page.text_content("#who") or "")
    assert not page.is_visible("#login")
    assert page.evaluate("sessionStorage.getItem('symopt.apiKey')") == service.api_key
    context.close()


def test_a_running_job_grows_live_without_reload_and_cancel_ends_it(
    page: Page, service: ServiceTenant, client: Client
):
    job = client.submit({**BASE, "name": "dash-live", "steps": 100_000, "log_every": 1,
                         "eval": {"every": 200, "batches": 1}})  # fmt: skip
    wait_for(
        lambda: job.refresh().step >= 3 or (job.done and pytest.fail(f"the job ended: {job.data}")),
        progress=lambda: (job.status, job.step),
        what="the live job's third step",
    )
    metric_requests: list[dict[str, list[str]]] = []
    page.on(
        "request",
        lambda r: metric_requests.append(parse_qs(urlparse(r.url).query)) if "/metrics" in r.url else None,
    )
    go(page, service, f"/job/{job.id}")
    first = points(page, "loss")["train_loss"]
    assert first >= 3
    page.evaluate("window.__sameDocument = true")
    page.wait_for_function(
        "n => JSON.parse(document.querySelector('[data-chart=\"loss\"]').dataset.points).train_loss > n",
        arg=first + 20,
    )
    assert page.evaluate("window.__sameDocument") is True  # grown in place, not reloaded
    shot(page, "job-running")

    page.once("dialog", lambda dialog: dialog.accept())  # the cancel button asks first
    page.click("#cancel")
    page.wait_for_selector('[data-status="cancelled"]')
    assert client.job(job.id).status == "cancelled"
    # The page's last poll brings every stored point: the curve ends where the API's series ends.
    wait_points(page, "loss", "train_loss", count(client, job.id, "train_loss"))
    assert not page.is_visible("#cancel")

    # The history read once (the loss first, then the diagnostics), then only increments: every
    # later read goes on from the seq the previous one reached.
    full = [q for q in metric_requests if "names" in q]
    polls = [q for q in metric_requests if "names" not in q and q.get("limit") != ["1000"]]
    assert [q["names"][0].split(",")[0] for q in full] == ["train_loss", "grad_norm"]
    assert all(q["after_seq"] == ["0"] for q in full)
    assert len(polls) >= 2
    assert all(int(q["after_seq"][0]) > 0 for q in polls)
    shot(page, "job-cancelled")


def test_the_job_list_renders_and_filters_by_sweep(
    page: Page, service: ServiceTenant, client: Client, finished: SimpleNamespace
):
    go(page, service, "/jobs")
    row = page.locator("#jobs-table tr", has_text="dash-small")
    row.wait_for()
    text = row.inner_text()
    for expected in (
        "succeeded",
        "qwen3 tiny",
        "symmetric",
        "20 / 20",
        f"{finished.job.result['best_val_loss']:.4f}",
    ):
        assert expected in text, text
    total = len(client.jobs(limit=200))
    assert page.get_attribute("#jobs-table", "data-rows") == str(total)
    shot(page, "jobs")

    sweep = finished.sweeps["adamw"]
    page.select_option("select[name=sweep]", sweep.id)
    page.wait_for_selector(f'#jobs-table[data-rows="{len(sweep.list_trials())}"]')
    assert page.locator("#jobs-table tbody tr").count() == 2
    assert f"sweep={sweep.id}" in page.url
    page.select_option("select[name=status]", "running")
    page.wait_for_selector("#jobs-table:has-text('No jobs match')")


def test_the_job_page_plots_every_point_the_api_holds(page: Page, service: ServiceTenant, client: Client,
                                                      finished: SimpleNamespace):  # fmt: skip
    job = finished.job
    go(page, service, f"/job/{job.id}")
    drawn = points(page, "loss")
    assert drawn == {
        "train_loss": count(client, job.id, "train_loss"),
        "val_loss": count(client, job.id, "val_loss"),
    }
    assert drawn["train_loss"] == 10  # 20 steps, log_every 2
    for chart, prefix in (("lr", "lr/"), ("grad_norm", "grad_norm/"), ("update_rms", "update_rms/")):
        classes = points(page, chart)
        assert {"embedding", "lm_head"} <= {k.removeprefix(prefix) for k in classes}, classes
        assert set(classes.values()) == {10}
    assert points(page, "throughput") == {"tokens_per_s": 10}
    assert page.query_selector('[data-chart="moe"]') is None  # a dense model: no MoE panel
    assert json.loads(page.text_content("#spec") or "{}")["steps"] == 20
    page.wait_for_selector("#logs:has-text('succeeded after 20 steps')")
    before = page.evaluate("window.__symopt.charts.loss.drawn")
    page.check("#log-loss")  # a log scale: a new plot of the same points
    page.wait_for_function("before => window.__symopt.charts.loss.drawn > before", arg=before)
    assert points(page, "loss") == drawn
    shot(page, "job")

    other = finished.sweeps["muon"].list_trials()[0]["job_id"]
    go(page, service, f"/compare?ids={job.id},{other}")
    overlay = points(page, "compare_train_loss")
    assert sorted(overlay.values()) == sorted([10, count(client, other, "train_loss")])
    assert len(overlay) == 2
    before = page.evaluate("window.__symopt.charts.compare_train_loss.drawn")
    page.select_option("select[aria-label='x axis']", "tokens")  # the same curves against tokens
    page.wait_for_function("b => window.__symopt.charts.compare_train_loss.drawn > b", arg=before)
    assert points(page, "compare_train_loss") == overlay
    shot(page, "compare")


def test_the_sweep_page_plots_every_trial(page: Page, service: ServiceTenant, finished: SimpleNamespace):
    sweep = finished.sweeps["adamw"].refresh()
    trials = sweep.list_trials()
    assert len(trials) == 2
    go(page, service, f"/sweep/{sweep.id}")
    history = points(page, "history")
    assert history["adamw"] + history["pruned"] == len(trials)
    assert history["best adamw"] == len(trials)
    assert sum(points(page, "optimizer.lr").values()) == len(trials)
    assert sum(points(page, "batch.size").values()) == len(trials)
    assert page.locator("#trials tbody tr").count() == len(trials)
    assert page.text_content("#optuna .study-name") == sweep.data["study_name"]
    assert "optuna-dashboard" in (page.text_content("#optuna-command") or "")
    page.wait_for_selector("#importances .bars")

    # Sortable: objective ascending (the default), then descending.
    objectives = sorted(t["objective"] for t in trials)
    first_cell = "#trials tbody tr:first-child td:nth-child(4)"
    assert page.text_content(first_cell) == f"{objectives[0]:.4f}"
    page.click("#trials th:has-text('Objective')")
    assert page.text_content(first_cell) == f"{objectives[-1]:.4f}"
    shot(page, "sweep")


def test_the_study_page_shows_its_table_verdicts_and_seed_bands(
    page: Page, service: ServiceTenant, finished: SimpleNamespace
):
    result = finished.study.result
    go(page, service, f"/study/{finished.study.id}")
    curves = points(page, "study_curves")
    assert curves == {c["name"]: len(c["curve"]["tokens"]) for c in result["candidates"]}
    assert page.get_attribute('[data-chart="study_curves"]', "data-bands") == "2"
    rows = page.locator("#results tbody tr")
    assert rows.count() == 2
    for candidate in result["candidates"]:
        row = rows.filter(has_text=candidate["name"])
        assert f"{candidate['summary']['mean']:.4f}" in row.inner_text()
        link = page.locator(f'#results a[href="#/sweep/{candidate["sweep_id"]}"]')
        assert link.count() == 1
    (verdict,) = result["verdicts"]
    assert verdict in (page.text_content("#verdicts") or "")
    shot(page, "study")


@pytest.mark.parametrize("viewport", [WIDE, NARROW], ids=["1280", "390"])
def test_no_page_scrolls_sideways(browser: Browser, service: ServiceTenant, finished: SimpleNamespace,
                                  viewport: dict[str, int]):  # fmt: skip
    sweep = finished.sweeps["muon"]
    other = sweep.list_trials()[0]["job_id"]
    routes = {
        "jobs": ("/jobs", "#jobs-table table"),
        "job": (f"/job/{finished.job.id}", '[data-chart="update_rms"][data-points]'),
        "sweep": (f"/sweep/{sweep.id}", '[data-chart="batch.size"][data-points]'),
        "study": (f"/study/{finished.study.id}", '[data-chart="study_curves"][data-points]'),
        "sweeps": ("/sweeps", "#sweeps-table table"),
        "studies": ("/studies", "#studies-table table"),
        "compare": (
            f"/compare?ids={finished.job.id},{other}",
            '[data-chart="compare_val_loss"][data-points]',
        ),
    }
    with tab(browser, service, viewport) as page:
        for name, (route, ready) in routes.items():
            go(page, service, route)
            page.wait_for_selector(ready)
            shot(page, f"{name}-{viewport['width']}")
            width, inner = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
            assert width <= inner, (name, width, inner, page.evaluate(WIDER_THAN_VIEWPORT))


# The job page's MoE panels (jobs.js PANELS): the layer means, and max/mean load per layer.
MOE_MEANS = ("moe/load_cv", "moe/max_mean_load", "moe/maxvio", "moe/dead_expert_fraction",
             "moe/load_balancing_loss")  # fmt: skip


def test_the_job_page_of_an_moe_model_plots_its_expert_load(
    page: Page, service: ServiceTenant, client: Client
):
    # A real OLMoE (tiny: 2 layers, 4 experts, top-2) trained by the service's worker: the moe/*
    # series are what the training loop really logs.
    job = client.submit({**BASE, "name": "dash-moe", "model": {"family": "olmoe", "size": "tiny"}, "steps": 8,
                         "eval": {"every": 4, "batches": 1}})  # fmt: skip
    job.wait(timeout=LIMIT, progress=False)
    assert job.status == "succeeded", job.data["error"]
    held: dict[str, int] = {}
    for row in client.job(job.id).metrics():
        held[row["name"]] = held.get(row["name"], 0) + 1
    layers = {n: c for n, c in held.items() if n.startswith("moe/layer") and n.endswith("/max_mean_load")}
    assert sorted(layers) == ["moe/layer0/max_mean_load", "moe/layer1/max_mean_load"]

    go(page, service, f"/job/{job.id}")
    assert points(page, "moe") == {name: held[name] for name in MOE_MEANS}
    assert points(page, "moe_layers") == layers
    assert set(points(page, "moe").values()) == set(layers.values()) == {4}  # 8 steps, log_every 2
    # The panels come in their place, after the dense ones, with their titles.
    heads = page.locator("#page .grid h2").all_inner_texts()
    assert heads[-2:] == ["MoE load imbalance (mean over layers)", "MoE max/mean expert load per layer"], (
        heads
    )
    shot(page, "job-moe")


def pruned_sweep(service: ServiceTenant, client: Client) -> str:
    """A finished median-pruner sweep of three trials, the third pruned, written as the sweep
    controller writes one: Optuna asks, reports (report_and_maybe_prune: the pruner decides),
    tells; the trials' jobs via create_trial_job and the job state machine, a pruned job
    cancelled with its pruned_at. The sweep is made terminal first, so that the service's own
    controller never takes it, and its jobs reach a terminal status in the transaction that
    creates them, so that its scheduler never launches them."""
    # The lr alone: one batch size, so every trial reports at the same token counts.
    space = {"optimizer.lr": {"type": "log_uniform", "low": 1e-3, "high": 2e-2}}
    spec = SweepSpec.model_validate({"name": "dash-pruned", "base": BASE, "search_space": space,
                                     "sampler": "random", "pruner": "median", "n_trials": 3})  # fmt: skip
    url = f"sqlite:///{service.home / 'symopt.db'}"
    assert (service.home / "symopt.db").is_file()
    store = Store.connect(url)
    try:
        tenant = client.me()["tenant"]
        with store.transaction() as session:
            tenant_id = session.scalar(select(Tenant.id).where(Tenant.name == tenant))
            assert tenant_id is not None
            sweep, _ = create_sweep(
                session=session, tenant_id=tenant_id, spec=spec, resolved_space=resolved_spaces(spec)
            )
            set_sweep_status(session=session, sweep=sweep, to=SweepStatus.RUNNING)
            set_sweep_status(session=session, sweep=sweep, to=SweepStatus.SUCCEEDED)
            sweep_id, name = sweep.id, sweep.study_name
        ranges = {path: ParamRange.model_validate(r) for path, r in space.items()}
        study = optuna.create_study(
            study_name=name,
            storage=optuna_storage(url),
            direction="minimize",
            sampler=make_sampler(spec, ranges),
            pruner=make_pruner(spec, token_budget(spec.base)),
        )
        per_step = spec.base.batch.size * spec.base.data.seq_len
        # (validation losses at steps 5, 10, ...) of each trial: two complete, then a worse one.
        runs = [[3.0, 2.6, 2.4, 2.3], [3.1, 2.7, 2.5, 2.2], [4.2, 4.1]]
        outcomes = []
        for losses in runs:
            trial = study.ask({path: distribution(r) for path, r in ranges.items()})
            (frozen,) = [
                t for t in study.get_trials(states=(TrialState.RUNNING,)) if t.number == trial.number
            ]
            val = tuple((5 * (i + 1), loss) for i, loss in enumerate(losses))
            running = TrialJob("job", tenant_id, JobStatus.RUNNING, None, per_step, val[-1][0] * per_step,
                               spec.base.steps, val)  # fmt: skip
            pruned_at = report_and_maybe_prune(study, frozen, running)
            if pruned_at is None:
                study.tell(trial.number, min(losses))
            outcomes.append((trial.number, dict(trial.params), val, pruned_at))
        assert [p is not None for *_, p in outcomes] == [False, False, True]  # the median pruner's call
        with store.transaction() as session:
            sweep = session.get(Sweep, sweep_id)
            best: tuple[float, str] | None = None
            for number, params, val, pruned_at in outcomes:
                job = create_trial_job(session=session, sweep=sweep, study=name, number=number,
                                       spec=trial_spec(spec.base, params, None), max_attempts=1)  # fmt: skip
                session.flush()
                transition(session=session, job=job, to=JobStatus.RUNNING, step=val[-1][0])
                record_metrics(
                    session=session,
                    job_id=job.id,
                    points=[Point("val_loss", step, loss, time.time()) for step, loss in val],
                )
                if pruned_at is None:
                    value = min(loss for _, loss in val)
                    transition(
                        session=session, job=job, to=JobStatus.SUCCEEDED, result={"best_val_loss": value}
                    )
                    best = min(best or (value, job.id), (value, job.id))
                else:
                    job.pruned_at = pruned_at
                    request_cancel(session=session, tenant_id=tenant_id, job_id=job.id)
                    transition(session=session, job=job, to=JobStatus.CANCELLED)
            assert best is not None
            sweep.best_job_id = best[1]
        return sweep_id
    finally:
        store.close()


def test_the_sweep_page_marks_a_pruned_trial(page: Page, service: ServiceTenant, client: Client):
    sweep = client.sweep(pruned_sweep(service, client))
    trials = sweep.list_trials()
    assert [t["state"] for t in sorted(trials, key=lambda t: t["trial_number"])] == [
        "succeeded",
        "succeeded",
        "pruned",
    ]
    (pruned,) = [t for t in trials if t["state"] == "pruned"]
    assert pruned["status"] == "pruned"
    assert pruned["pruned_at_tokens"] == 10 * BASE["batch"]["size"] * BASE["data"]["seq_len"]
    (history,) = client.request("GET", f"/v1/sweeps/{sweep.id}/history")["data"]

    go(page, service, f"/sweep/{sweep.id}")
    drawn = points(page, "history")
    # Completed trials at their objective, the pruned one hollow and grey at its last report.
    assert drawn == {
        "symmetric": 2,
        "pruned": 1,
        "best symmetric": sum(1 for t in history["finished"] if t["best_so_far"] is not None),
    }
    assert points(page, "optimizer.lr") == {"symmetric": 2, "pruned": 1}
    assert "Pruner" in (page.text_content("#page .facts") or "")
    assert "median" in (page.text_content("#page .facts") or "")
    rows = page.locator("#trials tbody tr")
    assert rows.count() == 3
    marked = page.locator("#trials tbody tr.pruned")
    assert marked.count() == 1
    text = marked.inner_text()
    assert "pruned" in text
    assert str(pruned["pruned_at_tokens"]) in text
    assert pruned["job_id"][:8] in text
    assert marked.locator(".status.pruned").count() == 1
    assert page.locator("#trials tbody tr:not(.pruned) .status.succeeded").count() == 2
    shot(page, "sweep-pruned")


def test_the_metrics_feed_takes_a_late_and_a_rewritten_point_once(page: Page, service: ServiceTenant,
                                                                  client: Client):  # fmt: skip
    # A job written into the service's store (finished as it is created: the scheduler never runs
    # it), followed by the dashboard's own MetricsFeed in the page.
    store = Store.connect(f"sqlite:///{service.home / 'symopt.db'}")
    try:
        with store.transaction() as session:
            tenant_id = session.scalar(select(Tenant.id).where(Tenant.name == client.me()["tenant"]))
            assert tenant_id is not None
            job, _ = create_job(
                session=session, tenant_id=tenant_id, spec=load_spec({**BASE, "name": "dash-seqs"})
            )
            transition(session=session, job=job, to=JobStatus.CANCELLED)
            job_id = job.id
        with store.transaction() as session:
            record_metrics(
                session=session, job_id=job_id, points=[Point("train_loss", s, 4.0, 0.0) for s in range(5)]
            )
        go(page, service, f"/job/{job_id}")
        held = "() => Object.fromEntries([...window.__feed.series].map(([n, s]) => [n, [s.steps, s.values]]))"
        page.evaluate(
            "async (id) => { const { MetricsFeed } = await import('/dashboard/api.js');"
            " window.__feed = await new MetricsFeed(id, () => true, { first: [] }).load(); }",
            job_id,
        )
        assert page.evaluate(held) == {"train_loss": [[0, 1, 2, 3, 4], [4.0] * 5]}
        with store.transaction() as session:  # step 4's val_loss stored late, step 2 rewritten by a retry
            record_metrics(session=session, job_id=job_id, points=[Point("val_loss", 4, 4.1, 0.0)])
            record_metrics(session=session, job_id=job_id, points=[Point("train_loss", 2, 3.0, 0.0)])
        assert page.evaluate("() => window.__feed.poll()") == 2
        assert page.evaluate(held) == {
            "train_loss": [[0, 1, 2, 3, 4], [4.0, 4.0, 3.0, 4.0, 4.0]],
            "val_loss": [[4], [4.1]],
        }
        assert page.evaluate("() => window.__feed.poll()") == 0
    finally:
        store.close()
