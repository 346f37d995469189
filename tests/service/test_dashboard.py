"""The dashboard in a real headless Chromium against a real `symopt serve` running real jobs.

One service for the module: a small finished job and a tiny comparison study (2 candidates, 2
trials each, 2 seeds, 20 steps) whose sweeps serve the sweep page; a long job for the live
checks, cancelled from the page. Screenshots go to $SYMOPT_TEST_ARTIFACTS/dashboard
(default .artifacts/dashboard under the repository root).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from service.client import Client
from service.testing import ROOT, LiveService, live_service

# Run with `--dist loadgroup` to keep the module on one xdist worker (one service, not two).
pytestmark = pytest.mark.xdist_group("dashboard")

CHROMIUM = (
    "/usr/bin/chromium"  # Debian's (scripts/bootstrap installs it); Playwright's download does not work here
)
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
ARTIFACTS = Path(os.environ.get("SYMOPT_TEST_ARTIFACTS") or ROOT / ".artifacts") / "dashboard"
WIDE, NARROW = {"width": 1280, "height": 800}, {"width": 390, "height": 844}
WAIT_MS = 120_000  # a guard against hanging, not a speed check: CI machines are slow and busy

BASE: dict[str, Any] = {
    "model": {"family": "qwen3", "size": "tiny"},
    "data": {"corpus": "pystdlib", "seq_len": 32},
    "batch": {"size": 4},
    "steps": 20,
    "log_every": 2,
    "eval": {"every": 5, "batches": 2},
    "schedule": {"kind": "constant"},
    "seed": 0,
}
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
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    with live_service(tmp_path_factory.mktemp("dashboard"), env={"SYMOPT_RAY_NUM_CPUS": "2"}) as running:
        yield running


@pytest.fixture(scope="module")
def client(service: LiveService) -> Iterator[Client]:
    with Client(service.url, service.api_key) as opened:
        yield opened


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).is_file(), f"{CHROMIUM} is missing: scripts/bootstrap installs Debian's chromium"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def finished(client: Client) -> SimpleNamespace:
    """A finished small job and a finished tiny study (whose sweeps are ordinary sweeps)."""
    job = client.submit({**BASE, "name": "dash-small"})
    study = client.submit_study(STUDY)
    job.wait(timeout=600, progress=False)
    study.wait(timeout=900, progress=False)
    assert job.status == "succeeded", job.data["error"]
    assert study.status == "succeeded", study.data["error"]
    return SimpleNamespace(job=job, study=study, sweeps=study.sweeps())


@contextmanager
def tab(browser: Browser, service: LiveService, viewport: dict[str, int] = WIDE) -> Iterator[Page]:
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
def page(browser: Browser, service: LiveService) -> Iterator[Page]:
    with tab(browser, service) as opened:
        yield opened


def go(page: Page, service: LiveService, route: str) -> None:
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
    browser: Browser, service: LiveService
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
    assert "default" in (page.text_content("#who") or "")
    assert not page.is_visible("#login")
    assert page.evaluate("sessionStorage.getItem('symopt.apiKey')") == service.api_key
    context.close()


def test_a_running_job_grows_live_without_reload_and_cancel_ends_it(
    page: Page, service: LiveService, client: Client
):
    job = client.submit({**BASE, "name": "dash-live", "steps": 100_000, "log_every": 1,
                         "eval": {"every": 200, "batches": 1}})  # fmt: skip
    deadline = time.monotonic() + WAIT_MS / 1000
    while job.refresh().step < 3:
        assert time.monotonic() < deadline, job.data
        assert not job.done, job.data
        time.sleep(0.2)
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

    page.click("#cancel")
    page.wait_for_selector('[data-status="cancelled"]')
    assert client.job(job.id).status == "cancelled"
    # The page's last poll brings every stored point: the curve ends where the API's series ends.
    wait_points(page, "loss", "train_loss", count(client, job.id, "train_loss"))
    assert not page.is_visible("#cancel")

    # The history read once (the loss first, then the diagnostics), then only increments: every
    # later read names a since_step.
    full = [q for q in metric_requests if "names" in q]
    polls = [q for q in metric_requests if "names" not in q and q.get("limit") != ["1000"]]
    assert [q["names"][0].split(",")[0] for q in full] == ["train_loss", "grad_norm"]
    assert not any("since_step" in q for q in full)
    assert len(polls) >= 2
    assert all("since_step" in q for q in polls)
    shot(page, "job-cancelled")


def test_the_job_list_renders_and_filters_by_sweep(
    page: Page, service: LiveService, client: Client, finished: SimpleNamespace
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
    page.wait_for_selector(f'#jobs-table[data-rows="{len(sweep.trials())}"]')
    assert page.locator("#jobs-table tbody tr").count() == 2
    assert f"sweep={sweep.id}" in page.url
    page.select_option("select[name=status]", "running")
    page.wait_for_selector("#jobs-table:has-text('No jobs match')")


def test_the_job_page_plots_every_point_the_api_holds(page: Page, service: LiveService, client: Client,
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

    other = finished.sweeps["muon"].trials()[0]["job_id"]
    go(page, service, f"/compare?ids={job.id},{other}")
    overlay = points(page, "compare_train_loss")
    assert sorted(overlay.values()) == sorted([10, count(client, other, "train_loss")])
    assert len(overlay) == 2
    before = page.evaluate("window.__symopt.charts.compare_train_loss.drawn")
    page.select_option("select[aria-label='x axis']", "tokens")  # the same curves against tokens
    page.wait_for_function("b => window.__symopt.charts.compare_train_loss.drawn > b", arg=before)
    assert points(page, "compare_train_loss") == overlay
    shot(page, "compare")


def test_the_sweep_page_plots_every_trial(page: Page, service: LiveService, finished: SimpleNamespace):
    sweep = finished.sweeps["adamw"].refresh()
    trials = sweep.trials()
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
    page: Page, service: LiveService, finished: SimpleNamespace
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
def test_no_page_scrolls_sideways(browser: Browser, service: LiveService, finished: SimpleNamespace,
                                  viewport: dict[str, int]):  # fmt: skip
    sweep = finished.sweeps["muon"]
    other = sweep.trials()[0]["job_id"]
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
