"""Load time of the dashboard's job page for a job with 100,000 metric points, in headless Chromium.

    python -m benchmarks.dashboard_load                  # train_loss at 100k steps (+ val_loss every 100)
    python -m benchmarks.dashboard_load --diagnostics    # + the per-class series a real run logs
    python -m benchmarks.dashboard_load --quick

A real `symopt serve` (SQLite, no scheduler) on loopback; the job's points are written through
the store first. Each load is a fresh browser context (cold cache: the page's modules and uPlot
are fetched too) opening `/#/job/<id>` with the key already in session storage. The figure is the
time from navigation start to the first draw of the loss chart, read from the page's own clock,
once the chart holds every train_loss point the page asked for (the history thinned by the service
to the page's CHART_POINTS per series, extremes kept: all of them below that); the median of
--loads loads after one warm-up.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Browser

from service.store import Store
from service.store.jobs import create_job, get_job, transition
from service.store.keys import create_api_key, create_tenant
from service.store.metrics import Point, record_metrics
from service.store.migrate import upgrade
from service.store.status import JobStatus
from service.testing import ROOT, chromium, live_service
from symopt_core.spec import load_spec

CLASSES = ["attn_qkv", "attn_out", "mlp_in", "mlp_out", "embedding", "lm_head", "vector"]
# What a real run logs besides the loss (symopt_core/training/loop.py), for --diagnostics.
DIAGNOSTICS = [
    *(f"{kind}/{c}" for kind in ("lr", "grad_norm", "update_rms") for c in CLASSES),
    *("grad_norm", "tokens_per_s", "tokens", "lr", "lr_scale", "step_time_s", "batch_size", "seq_len"),
]


def prepare(url: str, steps: int, diagnostics: bool) -> tuple[str, str, int]:
    """A tenant, its key, and one finished job; returns (key, job id, stored points)."""
    upgrade(url)
    store = Store.connect(url)
    with store.transaction() as session:
        tenant = create_tenant(session=session, name=f"bench-{uuid.uuid4().hex[:6]}")
        key = create_api_key(session=session, tenant_id=tenant.id)
        spec = load_spec(
            {"name": "dashboard-bench", "model": {"family": "qwen3", "size": "tiny"}, "steps": steps}
        )
        job, _ = create_job(session=session, tenant_id=tenant.id, spec=spec)
    extra = DIAGNOSTICS if diagnostics else []
    stored = 0
    for start in range(1, steps + 1, 1000):
        chunk = range(start, min(start + 1000, steps + 1))
        points = [Point("train_loss", s, 4.0 / (1 + s / 1000), 0.0) for s in chunk]
        points += [Point("val_loss", s, 4.1 / (1 + s / 1000), 0.0) for s in chunk if s % 100 == 0]
        points += [Point(name, s, 1e-3 * (1 + i), 0.0) for s in chunk for i, name in enumerate(extra)]
        with store.transaction() as session:
            record_metrics(session=session, job_id=job.id, points=points)
        stored += len(points)
    with store.transaction() as session:
        # Finished, so the page loads the history and stops (no live polling during the measure).
        row = get_job(session=session, tenant_id=None, job_id=job.id)
        transition(session=session, job=row, to=JobStatus.RUNNING)
        transition(session=session, job=row, to=JobStatus.SUCCEEDED, step=steps)
    store.close()
    return key, job.id, stored


def chart_points() -> int:
    """The points per series the job page asks for (`?max_points=`), read from the page's source."""
    source = (ROOT / "service" / "dashboard" / "static" / "jobs.js").read_text()
    found = re.search(r"const CHART_POINTS = (\d+);", source)
    assert found is not None, "jobs.js no longer defines CHART_POINTS"
    return int(found.group(1))


def drawn_points(url: str, key: str, job_id: str) -> int:
    """How many train_loss points the loss chart draws once loaded: the service's thinned answer."""
    answer = httpx.get(
        f"{url}/v1/jobs/{job_id}/metrics",
        params={"names": "train_loss", "max_points": chart_points()},
        headers={"Authorization": f"Bearer {key}"},
        timeout=120,
    ).json()
    return len(answer["series"][0]["steps"])


def load_once(browser: Browser, url: str, key: str, job_id: str, drawn: int) -> dict[str, float]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.add_init_script(f"sessionStorage.setItem('symopt.apiKey', {json.dumps(key)})")
    page = context.new_page()
    began = time.perf_counter()
    page.goto(f"{url}/#/job/{job_id}")
    page.wait_for_function(
        "n => { const c = window.__symopt && window.__symopt.charts.loss;"
        " return c && c.points.train_loss === n; }",
        arg=drawn,
        timeout=120_000,
    )
    wall = time.perf_counter() - began
    first = page.evaluate("window.__symopt.charts.loss.first")
    context.close()
    return {"page_ms": float(first), "wall_ms": wall * 1e3}


def run(steps: int, loads: int, diagnostics: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as scratch:
        home = Path(scratch)
        url = f"sqlite:///{home / 'symopt.db'}"
        key, job_id, stored = prepare(url, steps, diagnostics)
        with (
            live_service(home, url, args=("--no-scheduler",)) as service,
            chromium() as browser,
        ):
            drawn = drawn_points(service.url, key, job_id)  # every point, or the thinned history's
            load_once(browser, service.url, key, job_id, drawn)  # warm-up: the server's first reads
            samples = [load_once(browser, service.url, key, job_id, drawn) for _ in range(loads)]
    page = [s["page_ms"] for s in samples]
    wall = [s["wall_ms"] for s in samples]
    return {
        "steps": steps,
        "points": stored,
        "drawn_train_loss_points": drawn,
        "series": 2 + (len(DIAGNOSTICS) if diagnostics else 0),
        "loads": loads,
        "page_ms": page,
        "median_page_ms": statistics.median(page),
        "median_wall_ms": statistics.median(wall),
        "date": time.strftime("%Y-%m-%d"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=100_000, help="train_loss points (one per step)")
    parser.add_argument("--loads", type=int, default=5)
    parser.add_argument("--diagnostics", action="store_true", help="also the per-class series of a real run")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.loads = 500, 1
    name = "dashboard_load_diagnostics" if args.diagnostics else "dashboard_load"
    out = args.out or Path(f"benchmarks/results/{name}.json")
    result = run(args.steps, args.loads, args.diagnostics)
    listed = ", ".join(f"{ms:.0f}" for ms in result["page_ms"])
    print(f"job page, {result['points']} points in {result['series']} series ({result['steps']} train_loss): "
          f"loss curve drawn {result['median_page_ms']:.0f} ms after navigation, median of {result['loads']} "
          f"({listed} ms; wall {result['median_wall_ms']:.0f} ms)")  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
