"""The runs table and the plots users expect (issue 27), in a real headless Chromium against the
worker's shared `symopt serve`.

One tenant for the module, holding:
- three small jobs the service trains (two presets, batch 2 and 4, an lr left to the preset and
  one set): the runs table, effective lrs, the curves' x axes and smoothing, CSV of a job;
- a sweep of six completed trials that share batch sizes (2, 4, 2, 4, 4, 8), objectives 3e-4
  apart, written into the store as its controller writes one: every trial must be drawn on
  every slice, and no axis may repeat a tick label;
- a study whose every run this test claims and finishes as an agent over HTTP (no training):
  grouping by study, confirmation runs included.
Screenshots at 1280 and 390 px go to a folder under the module's tmp dir.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import optuna
import pytest
from playwright.sync_api import Browser, Page
from sqlalchemy import select

from service.client import Client
from service.store import JobStatus, Store, SweepStatus
from service.store.jobs import create_job, transition
from service.store.metrics import Point, record_metrics
from service.store.models import Sweep, Tenant
from service.store.sweeps import create_sweep, create_trial_job, set_sweep_status
from service.sweep_spec import ParamRange, SweepSpec
from service.sweeps.space import distribution, make_sampler, resolved_spaces, trial_spec
from service.sweeps.storage import optuna_storage
from symopt_core.spec import load_spec

from ..waiting import LIMIT, wait_for
from .live import ServiceTenant, SharedService
from .test_dashboard import (
    BASE,
    NARROW,
    WIDE,
    WIDER_THAN_VIEWPORT,
    go,
    points,
    tab,
    wait_points,
)

pytestmark = pytest.mark.xdist_group("dashboard-runs")

LR_SCALE = "optimizer.overrides.embedding.lr_scale"
SPACE = {
    "optimizer.lr": {"type": "log_uniform", "low": 1e-3, "high": 2e-2},
    "batch.size": {"type": "pow2", "low": 2, "high": 8},
    LR_SCALE: {"type": "log_uniform", "low": 0.5, "high": 2.0},
}
# (lr, batch size, embedding lr_scale, objective) per trial: batch sizes repeat, as pow2 sizes
# nearly always do, and the best trial (the first) shares its size with the third.
TRIALS = [
    (0.002, 2, 0.5, 2.2101),
    (0.004, 4, 0.7, 2.2104),
    (0.006, 2, 0.9, 2.2107),
    (0.008, 4, 1.1, 2.2110),
    (0.010, 4, 1.3, 2.2113),
    (0.012, 8, 1.5, 2.2116),
]
# The lr metrics the stored trials log: the schedule at half its peak, two classes.
STORED_SCALE = 0.5
JOBS = [  # name, changes to BASE
    ("runs-adamw-b2", {"optimizer": {"preset": "adamw"}, "batch": {"size": 2}, "seed": 1}),
    ("runs-sym-b4", {"optimizer": {"preset": "symmetric", "lr": 0.01}, "batch": {"size": 4}, "seed": 2}),
    ("runs-sym-b2", {"optimizer": {"preset": "symmetric"}, "batch": {"size": 2}, "seed": 3}),
]


@pytest.fixture(scope="module")
def service(shared_service: SharedService) -> ServiceTenant:
    """The module's tenant of the worker's shared service."""
    return shared_service.tenant()


@pytest.fixture(scope="module")
def client(service: ServiceTenant) -> Iterator[Client]:
    with Client(service.url, service.api_key) as opened:
        yield opened


@pytest.fixture(scope="module")
def http(service: ServiceTenant) -> Iterator[httpx.Client]:
    """The tenant's REST API as JSON."""
    headers = {"Authorization": f"Bearer {service.api_key}"}
    with httpx.Client(base_url=service.url, headers=headers, timeout=60) as opened:
        yield opened


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dashboard-screenshots")


def shot(page: Page, shots: Path, name: str) -> None:
    page.screenshot(path=str(shots / f"{name}.png"), full_page=True)


@pytest.fixture(scope="module")
def trained(client: Client) -> dict[str, dict[str, Any]]:
    """The three jobs, trained to the end: name -> the job as the API answers it."""
    jobs = []
    for name, changes in JOBS:
        jobs.append(client.submit({**BASE, "name": name, **changes}))
    for job in jobs:
        job.wait(timeout=LIMIT, progress=False)
        assert job.status == "succeeded", job.data["error"]
    return {job.name: job.data for job in jobs}


@pytest.fixture(scope="module")
def stored(service: ServiceTenant, client: Client) -> SimpleNamespace:
    """The sweep of TRIALS, finished: its id, name and trial jobs' ids in TRIALS order."""
    spec = SweepSpec.model_validate(
        {
            "name": "runs-shared-batch",
            "base": BASE,
            "search_space": SPACE,
            "sampler": "random",
            "pruner": "none",
            "n_trials": len(TRIALS),
        }
    )
    sweep_id, study_name, job_ids = store_sweep(service, client, spec)
    return SimpleNamespace(id=sweep_id, name=spec.name, study=study_name, job_ids=job_ids)


def store_sweep(service: ServiceTenant, client: Client, spec: SweepSpec) -> tuple[str, str, list[str]]:
    """Write a finished sweep of TRIALS as the sweep controller writes one (test_dashboard's
    pruned_sweep does the same for a pruner): the sweep made terminal first, so that the
    service's controller never takes it; Optuna asked for each trial's enqueued params and told
    its objective; each trial's job created through create_trial_job and the job state machine,
    with its val_loss and lr metrics and a result."""
    url = f"sqlite:///{service.home / 'symopt.db'}"
    store = Store.connect(url)
    try:
        with store.transaction() as session:
            tenant_id = session.scalar(select(Tenant.id).where(Tenant.name == client.me()["tenant"]))
            assert tenant_id is not None
            sweep, _ = create_sweep(
                session=session, tenant_id=tenant_id, spec=spec, resolved_space=resolved_spaces(spec)
            )
            set_sweep_status(session=session, sweep=sweep, to=SweepStatus.RUNNING)
            set_sweep_status(session=session, sweep=sweep, to=SweepStatus.SUCCEEDED)
            sweep_id, name = sweep.id, sweep.study_name
        ranges = {path: ParamRange.model_validate(r) for path, r in SPACE.items()}
        study = optuna.create_study(
            study_name=name,
            storage=optuna_storage(url),
            direction="minimize",
            sampler=make_sampler(spec, ranges),
        )
        told = []
        for lr, batch, scale, objective in TRIALS:
            study.enqueue_trial({"optimizer.lr": lr, "batch.size": batch, LR_SCALE: scale})
            trial = study.ask({path: distribution(r) for path, r in ranges.items()})
            study.tell(trial.number, objective)
            told.append((trial.number, dict(trial.params), objective))
        job_ids = []
        with store.transaction() as session:
            sweep = session.get(Sweep, sweep_id)
            for number, params, objective in told:
                job = create_trial_job(
                    session=session,
                    sweep=sweep,
                    study=name,
                    number=number,
                    spec=trial_spec(spec.base, params, None),
                    max_attempts=1,
                )
                session.flush()
                transition(session=session, job=job, to=JobStatus.RUNNING, step=20)
                lr = params["optimizer.lr"]
                record_metrics(
                    session=session,
                    job_id=job.id,
                    points=[
                        Point("val_loss", 20, objective, time.time()),
                        Point("lr_scale", 2, STORED_SCALE, time.time()),
                        Point("lr/attn_qkv", 2, STORED_SCALE * lr, time.time()),
                        Point("lr/embedding", 2, STORED_SCALE * lr * params[LR_SCALE] / 8, time.time()),
                    ],
                )
                tokens = 20 * params["batch.size"] * BASE["data"]["seq_len"]
                result = {
                    "best_val_loss": objective,
                    "val_loss": objective + 1e-3,
                    "tokens": tokens,
                    "wall_time_s": 1.5 + number,
                }
                transition(
                    session=session, job=job, to=JobStatus.SUCCEEDED, result=result, best_val_loss=objective
                )
                job_ids.append(job.id)
            sweep.best_job_id = job_ids[0]
        return sweep_id, name, job_ids
    finally:
        store.close()


@pytest.fixture(scope="module")
def studied(http: httpx.Client) -> SimpleNamespace:
    """A finished two-candidate study whose runs (a tuning trial each, then a seed each) this
    test claimed and finished as an agent: its id, name and job ids."""
    spec = {
        "name": "runs-study",
        "executor": "agents",
        "base": BASE,
        "candidates": ["adamw", "symmetric"],
        "seeds": 1,
        "tuning": {
            "n_trials": 1,
            "sampler": "random",
            "pruner": "none",
            "search_space": {"optimizer.lr": SPACE["optimizer.lr"]},
        },
    }
    response = http.post("/v1/studies", json=spec)
    assert response.status_code == 201, response.text
    study_id = response.json()["id"]
    finished: list[str] = []

    def one_claim() -> bool | None:
        claim = http.post(f"/v1/studies/{study_id}/claim", json={"host": "runs-agent"}).json()
        if claim["done"]:
            return True
        if claim["trial"] is not None:
            job_id, lease = claim["trial"]["job_id"], {"Symopt-Lease": claim["trial"]["lease"]["token"]}
            value = 2.5 + 0.01 * len(finished)
            report = {"points": [{"name": "val_loss", "step": 10, "value": value}]}
            assert http.post(f"/v1/jobs/{job_id}/report", json=report, headers=lease).status_code == 200
            done = http.post(f"/v1/jobs/{job_id}/finish", json={"status": "succeeded"}, headers=lease)
            assert done.status_code == 200, done.text
            finished.append(job_id)
        return None

    wait_for(
        one_claim, progress=lambda: len(finished), what="the study's runs, claimed one by one", every=0.5
    )
    study = http.get(f"/v1/studies/{study_id}").json()
    assert study["status"] == "succeeded", study
    assert len(finished) == 4  # a tuning trial and a confirmation run per candidate
    return SimpleNamespace(id=study_id, name=spec["name"], job_ids=finished)


def all_jobs(http: httpx.Client) -> list[dict[str, Any]]:
    return list(http.get("/v1/jobs", params={"limit": 200}).json()["data"])


def series(http: httpx.Client, job_id: str, name: str) -> tuple[list[int], list[Any]]:
    page = http.get(f"/v1/jobs/{job_id}/metrics", params={"names": name}).json()
    (found,) = [s for s in page["series"] if s["name"] == name] or [{"steps": [], "values": []}]
    return found["steps"], found["values"]


def class_lrs(http: httpx.Client, job_id: str) -> dict[str, float]:
    """lr/<class> ÷ lr_scale at the first logged step with a positive lr_scale (effective.js)."""
    steps, scales = series(http, job_id, "lr_scale")
    step, scale = next((s, v) for s, v in zip(steps, scales, strict=True) if v > 0)
    page = http.get(f"/v1/jobs/{job_id}/metrics").json()
    return {
        s["name"][3:]: s["values"][s["steps"].index(step)] / scale
        for s in page["series"]
        if s["name"].startswith("lr/") and step in s["steps"]
    }


# True once the runs table shows an embedding lr for each of the jobs (ids) named.
EMBEDDING_LRS_SHOWN = """ids => ids.every(id => {
  const cell = document.querySelector(`#jobs-table tr[data-job="${id}"] td[data-key="lr/embedding"]`);
  return cell && cell.textContent !== "–";
})"""


def downloaded(page: Page, button: str) -> list[dict[str, str]]:
    """The rows of the CSV the page offers when `button` is clicked."""
    with page.expect_download() as info:
        page.click(button)
    text = Path(info.value.path()).read_text(encoding="utf-8")
    return list(csv.DictReader(io.StringIO(text)))


def column(page: Page, key: str) -> list[str]:
    """The texts of one column of the runs table, top to bottom (of the Job column, the names)."""
    cells = f"#jobs-table tbody tr.run td[data-key='{key}']"
    return page.locator(f"{cells} a" if key == "job" else cells).all_inner_texts()


def numbers(texts: list[str]) -> list[float]:
    return [float(t) for t in texts if t != "–"]


# -- sweeps: every trial on every plot ----------------------------------------------------------


def ticks(page: Page, chart: str) -> list[list[str]]:
    element = page.wait_for_selector(f'[data-chart="{chart}"][data-ticks]')
    assert element is not None
    return [
        [label for label in axis if label] for axis in json.loads(element.get_attribute("data-ticks") or "[]")
    ]


def test_a_sweep_whose_trials_share_batch_sizes_plots_every_trial_with_distinct_ticks(
    browser: Browser, service: ServiceTenant, stored: SimpleNamespace, shots: Path
):
    with tab(browser, service) as page:
        go(page, service, f"/sweep/{stored.id}")
        page.wait_for_selector("#trials tbody tr")
        n = len(TRIALS)
        # Drawn points, as the path builders counted them inside the plot area.
        assert points(page, "batch.size") == {"symmetric": n, "pruned": 0}
        assert points(page, "history") == {"symmetric": n, "pruned": 0, "best symmetric": n}
        for name in SPACE:
            assert points(page, name) == {"symmetric": n, "pruned": 0}, name
        for chart in ("batch.size", "history", *SPACE):
            x, y = ticks(page, chart)
            assert len(set(x)) == len(x), (chart, x)
            assert len(set(y)) == len(y), (chart, y)
            assert len(y) >= 2, (chart, y)
        x, y = ticks(page, "batch.size")
        assert {"2", "4", "8"} <= set(x) <= {"1", "2", "4", "8", "16"}, x  # powers of two
        assert len(y) >= 3, y  # objectives 3e-4 apart: "2.21", "2.2105", "2.211", never "2.21" thrice

        # Parallel coordinates: one line per completed trial across every searched parameter.
        chart = page.wait_for_selector("#parallel-chart[data-lines]")
        assert chart is not None
        assert chart.get_attribute("data-lines") == str(n)
        axes = json.loads(chart.get_attribute("data-axes") or "[]")
        assert sorted(axes[:-1]) == sorted(SPACE)
        assert axes[-1] == "objective"
        shot(page, shots, "sweep-shared-batch-1280")


def test_a_sweeps_trials_download_as_csv(
    browser: Browser, service: ServiceTenant, http: httpx.Client, stored: SimpleNamespace
):
    trials = {t["job_id"]: t for t in http.get(f"/v1/sweeps/{stored.id}/trials").json()["data"]}
    with tab(browser, service) as page:
        go(page, service, f"/sweep/{stored.id}")
        page.wait_for_selector("#trials-csv")
        rows = downloaded(page, "#trials-csv")
    assert len(rows) == len(TRIALS)
    assert list(rows[0])[:5] == ["trial_number", "preset", "state", "status", "objective"]
    for row in rows:
        trial = trials[row["job_id"]]
        assert int(row["trial_number"]) == trial["trial_number"]
        assert float(row["objective"]) == trial["objective"]
        for name in SPACE:
            assert float(row[name]) == trial["params"][name]


# -- the runs table ----------------------------------------------------------------------------


def test_the_runs_table_shows_effective_lrs_and_results(
    browser: Browser,
    service: ServiceTenant,
    http: httpx.Client,
    trained: dict[str, Any],
    stored: SimpleNamespace,
    studied: SimpleNamespace,
    shots: Path,
):
    jobs = all_jobs(http)
    presets = {p["name"]: p for p in http.get("/v1/presets").json()["data"]}
    with tab(browser, service) as page:
        go(page, service, "/jobs")
        page.wait_for_selector(f'#jobs-table[data-rows="{len(jobs)}"]')
        # Class lrs arrive after the table, job by job: wait for every job that logs them.
        logging_lrs = [job["id"] for job in trained.values()] + stored.job_ids
        page.wait_for_function(EMBEDDING_LRS_SHOWN, arg=logging_lrs)
        rows = {row["job"]: row for row in downloaded(page, "#runs-csv")}
        shot(page, shots, "runs-1280")
    assert len(rows) == len(jobs)
    for name, job in trained.items():
        row = rows[name]
        spec = job["spec"]
        # The lr the job trains with: the spec's, else its preset's default (as `symopt compare`).
        optimizer = spec["optimizer"]
        assert float(row["lr"]) == (optimizer["lr"] or presets[optimizer["preset"]]["lr"])
        for klass, lr in class_lrs(http, job["id"]).items():
            assert float(row[f"lr/{klass}"]) == lr, (name, klass)
        assert (row["model"], row["preset"]) == ("qwen3 tiny", spec["optimizer"]["preset"])
        assert (int(row["batch"]), int(row["seed"])) == (spec["batch"]["size"], spec["seed"])
        assert float(row["best_val"]) == job["best_val_loss"]
        assert float(row["final_val"]) == job["result"]["val_loss"]
        assert int(row["tokens"]) == job["result"]["tokens"]
        assert float(row["wall_s"]) == job["result"]["wall_time_s"]
        assert (row["sweep"], row["study"]) == ("", "")
    for job_id, (lr, _, scale, _) in zip(stored.job_ids, TRIALS, strict=True):
        (row,) = [r for r in rows.values() if r["id"] == job_id]
        assert row["sweep"] == stored.name
        assert float(row["lr/attn_qkv"]) == pytest.approx(lr, rel=1e-12)
        assert float(row["lr/embedding"]) == pytest.approx(lr * scale / 8, rel=1e-12)
    assert {rows_id["study"] for rows_id in rows.values() if rows_id["id"] in studied.job_ids} == {
        studied.name
    }


def test_the_runs_table_sorts_filters_and_chooses_columns(
    browser: Browser,
    service: ServiceTenant,
    http: httpx.Client,
    trained: dict[str, Any],
    stored: SimpleNamespace,
):
    jobs = all_jobs(http)
    with tab(browser, service) as page:
        go(page, service, "/jobs")
        page.wait_for_selector(f'#jobs-table[data-rows="{len(jobs)}"]')

        # Sort by best val loss: ascending, then descending; jobs without one stay last.
        page.click("#jobs-table th[data-key='best_val']")
        page.wait_for_selector("#jobs-table th[data-key='best_val'][aria-sort='ascending']")
        bests = numbers(column(page, "best_val"))
        assert bests == sorted(bests)
        assert len(bests) == sum(1 for j in jobs if j["best_val_loss"] is not None)
        page.click("#jobs-table th[data-key='best_val']")
        page.wait_for_selector("#jobs-table th[data-key='best_val'][aria-sort='descending']")
        texts = column(page, "best_val")
        assert numbers(texts) == sorted(bests, reverse=True)
        assert texts[len(bests) :] == ["–"] * (len(texts) - len(bests))

        # Filter on columns (and a word anywhere); a key that names no column says so.
        expected = [
            j
            for j in jobs
            if j["spec"]["optimizer"]["preset"] == "symmetric" and j["spec"]["batch"]["size"] <= 2
        ]
        page.fill("input[name=filter]", "preset=symmetric batch<=2")
        page.wait_for_selector(f'#jobs-table[data-rows="{len(expected)}"]')
        assert sorted(column(page, "job")) == sorted(j["name"] for j in expected)
        assert "filter=preset%3Dsymmetric" in page.url
        page.fill("input[name=filter]", "runs-sym")
        page.wait_for_selector('#jobs-table[data-rows="2"]')
        page.fill("input[name=filter]", "best_val<2.2105 sweep~shared")
        page.wait_for_selector('#jobs-table[data-rows="2"]')  # the stored trials at 2.2101 and 2.2104
        page.fill("input[name=filter]", "colour=blue")
        page.wait_for_selector("#filter-errors:has-text('No column \"colour\"')")
        page.fill("input[name=filter]", "")
        page.wait_for_selector(f'#jobs-table[data-rows="{len(jobs)}"]')

        # Columns: a hidden one leaves the table and the CSV.
        page.click(".column-chooser summary")
        page.uncheck("input[name='column-created']")
        page.wait_for_selector("#jobs-table th[data-key='created']", state="detached")
        rows = downloaded(page, "#runs-csv")
        assert "created" not in rows[0]
        assert "best_val" in rows[0]


def test_the_runs_table_groups_by_sweep_and_study_and_exports_the_groups(
    browser: Browser,
    service: ServiceTenant,
    http: httpx.Client,
    stored: SimpleNamespace,
    studied: SimpleNamespace,
    shots: Path,
):
    jobs = all_jobs(http)
    sweeps = {s["id"]: s["name"] for s in http.get("/v1/sweeps").json()["data"]}
    with tab(browser, service) as page:
        go(page, service, "/jobs?group=sweep")
        page.wait_for_selector(f'#jobs-table[data-rows="{len(jobs)}"]')
        heads = page.locator("#jobs-table tr.group-head").all_inner_texts()
        by_sweep: dict[str, int] = {}
        for job in jobs:
            label = sweeps[job["sweep_id"]] if job["sweep_id"] else "no sweep"
            by_sweep[label] = by_sweep.get(label, 0) + 1
        assert sorted(h.split(" · ")[0] for h in heads) == sorted(by_sweep)
        shared = next(h for h in heads if h.startswith(stored.name))
        assert f"{len(TRIALS)} runs" in shared
        assert "best val loss 2.2101" in shared
        shot(page, shots, "runs-by-sweep-1280")

        page.select_option("select[name=group]", "study")
        page.wait_for_selector(f"#jobs-table tr.group-head:has-text('{studied.name} · 4 runs')")
        assert "group=study" in page.url
        rows = downloaded(page, "#runs-csv")
        assert next(iter(rows[0])) == "group"
        assert sorted(r["id"] for r in rows if r["group"] == studied.name) == sorted(studied.job_ids)
        assert {r["group"] for r in rows if r["id"] not in studied.job_ids} == {"no study"}


# -- curves: x axes, smoothing, CSV; compare; cancel ----------------------------------------------


def last(page: Page, chart: str) -> dict[str, list[float]]:
    return json.loads(page.get_attribute(f'[data-chart="{chart}"]', "data-last") or "{}")


def redrawn(page: Page, chart: str, action: Any) -> None:
    before = page.evaluate(f"window.__symopt.charts[{json.dumps(chart)}].drawn")
    action()
    page.wait_for_function("([c, b]) => window.__symopt.charts[c].drawn > b", arg=[chart, before])


def ema(values: list[float], weight: float) -> float:
    """The debiased EMA's last value, as curves.js computes it."""
    average = 0.0
    for value in values:
        average = weight * average + (1 - weight) * value
    return average / (1 - weight ** len(values))


def smooth(page: Page, weight: float) -> None:
    slide = "(e, w) => { e.value = String(w); e.dispatchEvent(new Event('input')); }"
    page.eval_on_selector("input[aria-label=smoothing]", slide, weight)


def test_the_job_curves_take_an_x_axis_and_smoothing_and_download_as_csv(
    browser: Browser, service: ServiceTenant, http: httpx.Client, trained: dict[str, Any], shots: Path
):
    job = trained["runs-sym-b4"]
    steps, losses = series(http, job["id"], "train_loss")
    token_steps, tokens = series(http, job["id"], "tokens")
    time_steps, step_times = series(http, job["id"], "step_time_s")
    with tab(browser, service) as page:
        go(page, service, f"/job/{job['id']}")
        wait_points(page, "loss", "train_loss", len(steps))
        points(page, "update_rms")  # the second stage of the history read: tokens and step times held
        drawn = points(page, "loss")
        assert last(page, "loss")["train_loss"] == [steps[-1], losses[-1]]

        redrawn(page, "loss", lambda: page.select_option("select[aria-label='x axis']", "tokens"))
        assert last(page, "loss")["train_loss"] == [tokens[token_steps.index(steps[-1])], losses[-1]]
        redrawn(page, "loss", lambda: page.select_option("select[aria-label='x axis']", "time"))
        seconds, previous = 0.0, 0
        for step, value in zip(time_steps, step_times, strict=True):
            seconds, previous = seconds + value * (step - previous), step
        assert last(page, "loss")["train_loss"][0] == pytest.approx(seconds, rel=1e-9)
        assert points(page, "loss") == drawn  # the same points against another x

        redrawn(page, "loss", lambda: smooth(page, 0.9))
        assert points(page, "loss") == drawn  # smoothed in place: the raw curve is only shown behind
        assert last(page, "loss")["train_loss"][1] == pytest.approx(ema(losses, 0.9), rel=1e-9)
        assert page.text_content(".smoothing-value") == "0.90"
        shot(page, shots, "job-smoothed-1280")

        rows = downloaded(page, "#job-csv")
    assert list(rows[0])[:3] == ["step", "train_loss", "val_loss"]
    assert [float(r["train_loss"]) for r in rows if r["train_loss"]] == losses
    held = http.get(f"/v1/jobs/{job['id']}/metrics").json()
    assert len(rows) == len({s for found in held["series"] for s in found["steps"]})


def test_the_compare_view_shows_effective_lrs_and_takes_the_curve_controls(
    browser: Browser, service: ServiceTenant, http: httpx.Client, trained: dict[str, Any]
):
    default, explicit = trained["runs-sym-b2"], trained["runs-sym-b4"]
    symmetric = next(p for p in http.get("/v1/presets").json()["data"] if p["name"] == "symmetric")
    with tab(browser, service) as page:
        go(page, service, f"/compare?ids={default['id']},{explicit['id']}")
        page.wait_for_selector("#compare-summary td[data-label='lr per class']:has-text('embedding')")
        lrs = page.locator("#compare-summary td[data-label='lr']").all_inner_texts()
        assert "–" not in lrs
        assert [float(v) for v in lrs] == [symmetric["lr"], 0.01]  # the preset's default, then the spec's
        overlay = points(page, "compare_train_loss")
        redrawn(page, "compare_train_loss", lambda: smooth(page, 0.5))
        assert points(page, "compare_train_loss") == overlay
        redrawn(
            page, "compare_train_loss", lambda: page.select_option("select[aria-label='x axis']", "tokens")
        )
        ends = last(page, "compare_train_loss")
        for job in (default, explicit):
            _token_steps, tokens = series(http, job["id"], "tokens")
            (label,) = [label for label in ends if label.startswith(job["name"])]
            assert ends[label][0] == tokens[-1]


def test_cancelling_a_job_asks_first(browser: Browser, service: ServiceTenant, client: Client):
    job = client.submit(
        {
            **BASE,
            "name": "runs-cancel",
            "steps": 100_000,
            "log_every": 1,
            "eval": {"every": 200, "batches": 1},
        }
    )
    wait_for(
        lambda: job.refresh().step >= 1 or (job.done and pytest.fail(f"the job ended: {job.data}")),
        progress=lambda: (job.status, job.step),
        what="the job's first step",
    )
    with tab(browser, service) as page:
        posts: list[str] = []
        page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
        go(page, service, f"/job/{job.id}")
        page.wait_for_selector('[data-status="running"]')
        asked: list[str] = []

        def answer(dialog: Any, accept: bool) -> None:
            asked.append(dialog.message)
            dialog.accept() if accept else dialog.dismiss()

        page.once("dialog", lambda d: answer(d, False))
        page.click("#cancel")
        page.wait_for_function("() => true")  # the click's handler has run (a confirm() blocks it)
        assert len(asked) == 1
        assert "runs-cancel" in asked[0]
        assert "not run again" in asked[0]
        assert posts == []
        assert client.job(job.id).status == "running"
        assert page.is_enabled("#cancel")

        page.once("dialog", lambda d: answer(d, True))
        page.click("#cancel")
        page.wait_for_selector('[data-status="cancelled"]')
    assert client.job(job.id).status == "cancelled"
    assert len(asked) == 2


# -- every page of this module at 1280 and 390 px ------------------------------------------------


@pytest.mark.parametrize("viewport", [WIDE, NARROW], ids=["1280", "390"])
def test_the_new_views_fit_the_screen(
    browser: Browser,
    service: ServiceTenant,
    trained: dict[str, Any],
    stored: SimpleNamespace,
    studied: SimpleNamespace,
    shots: Path,
    viewport: dict[str, int],
):
    ids = ",".join(job["id"] for job in trained.values())
    routes = {
        "runs": ("/jobs?group=sweep", "#jobs-table tr.group-head"),
        "runs-filtered": ("/jobs?filter=preset%3Dsymmetric", "#jobs-table tr.run"),
        "sweep-plots": (f"/sweep/{stored.id}", "#parallel-chart[data-lines]"),
        "job-curves": (f"/job/{trained['runs-adamw-b2']['id']}", '[data-chart="update_rms"][data-points]'),
        "compare-curves": (f"/compare?ids={ids}", '[data-chart="compare_val_loss"][data-points]'),
    }
    with tab(browser, service, viewport) as page:
        for name, (route, ready) in routes.items():
            go(page, service, route)
            page.wait_for_selector(ready)
            if name.endswith("curves"):
                smooth(page, 0.6)
            shot(page, shots, f"{name}-{viewport['width']}")
            width, inner = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
            assert width <= inner, (name, width, inner, page.evaluate(WIDER_THAN_VIEWPORT))


# -- a long history: thinned by the service, extremes kept -------------------------------------


def test_a_long_history_is_drawn_thinned_with_its_spike(
    browser: Browser, service: ServiceTenant, client: Client, http: httpx.Client
):
    steps, spike = 12_000, 7_777
    store = Store.connect(f"sqlite:///{service.home / 'symopt.db'}")
    try:
        with store.transaction() as session:
            tenant_id = session.scalar(select(Tenant.id).where(Tenant.name == client.me()["tenant"]))
            assert tenant_id is not None
            job, _ = create_job(
                session=session, tenant_id=tenant_id, spec=load_spec({**BASE, "name": "long", "steps": steps})
            )
            transition(session=session, job=job, to=JobStatus.RUNNING)
            losses = [
                Point("train_loss", s, 40.0 if s == spike else 3.0 - s / 10_000, 0.0)
                for s in range(1, steps + 1)
            ]
            record_metrics(session=session, job_id=job.id, points=losses)
            transition(session=session, job=job, to=JobStatus.SUCCEEDED, step=steps)
            job_id = job.id
    finally:
        store.close()
    thinned = http.get(
        f"/v1/jobs/{job_id}/metrics", params={"names": "train_loss", "max_points": 4000}
    ).json()
    kept = thinned["series"][0]["steps"]
    assert thinned["thinned"] is True
    assert spike in kept
    with tab(browser, service) as page:
        go(page, service, f"/job/{job_id}")
        wait_points(page, "loss", "train_loss", len(kept))  # what the page asked for: < 12,000
        assert len(kept) < steps
        assert last(page, "loss")["train_loss"] == [steps, pytest.approx(3.0 - steps / 10_000)]
        assert max(numbers(ticks(page, "loss")[1])) >= 30  # the spike sets the y axis
