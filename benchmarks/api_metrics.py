"""Latency of `GET /v1/jobs/{id}/metrics` for a job holding 100k metric points.

    python -m benchmarks.api_metrics                                          # SQLite (embedded default)
    python -m benchmarks.api_metrics --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test
    python -m benchmarks.api_metrics --quick

A real `symopt serve` process on loopback; the points (10 series x 10k steps) are written through
the store, then a keep-alive httpx client times two reads: the whole history (limit=100000, what a
dashboard loads first) and an incremental poll (since_step = 100 steps before the end).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.engine import make_url

from service.store import Store
from service.store.jobs import create_job
from service.store.keys import create_api_key, create_tenant
from service.store.metrics import Point, record_metrics
from service.store.migrate import upgrade
from service.testing import live_service
from symopt_core.spec import load_spec

from .databases import scratch_database

NAMES = [f"series_{i}" for i in range(10)]


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def prepare(url: str, steps: int) -> tuple[str, str]:
    """A tenant, its key, and one job holding len(NAMES) x steps points."""
    upgrade(url)
    store = Store.connect(url)
    with store.transaction() as session:
        tenant = create_tenant(session=session, name=f"bench-{uuid.uuid4().hex[:6]}")
        key = create_api_key(session=session, tenant_id=tenant.id)
        spec = load_spec({"model": {"family": "qwen3", "size": "tiny"}, "steps": steps})
        job, _ = create_job(session=session, tenant_id=tenant.id, spec=spec)
    for start in range(1, steps + 1, 1000):
        points = [Point(name, step, 1.0 / step, 0.0) for step in range(start, min(start + 1000, steps + 1))
                  for name in NAMES]  # fmt: skip
        with store.transaction() as session:
            record_metrics(session=session, job_id=job.id, points=points)
    store.close()
    return key, job.id


def time_requests(client: httpx.Client, path: str, params: dict[str, Any], count: int) -> dict[str, float]:
    samples, size = [], 0
    for _ in range(count):
        began = time.perf_counter()
        response = client.get(path, params=params)
        samples.append((time.perf_counter() - began) * 1e3)
        response.raise_for_status()
        size = len(response.content)
    return {"p50_ms": percentile(samples, 0.5), "p99_ms": percentile(samples, 0.99),
            "mean_ms": statistics.fmean(samples), "bytes": size, "requests": count}  # fmt: skip


def run(database_url: str | None, steps: int, requests: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as scratch, scratch_database(database_url, Path(scratch)) as url:
        key, job_id = prepare(url, steps)
        with (
            live_service(Path(scratch), url) as service,
            httpx.Client(
                base_url=service.url, headers={"Authorization": f"Bearer {key}"}, timeout=60
            ) as client,
        ):
            path = f"/v1/jobs/{job_id}/metrics"
            time_requests(client, path, {"limit": 100_000}, 3)  # warm up
            full = time_requests(client, path, {"limit": 100_000}, requests)
            poll = time_requests(client, path, {"since_step": steps - 100}, requests * 5)
    backend = make_url(url).get_backend_name()
    return {"backend": backend, "points": steps * len(NAMES), "date": time.strftime("%Y-%m-%d"),
            "full_history": full, "incremental_poll": poll}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", help="default: a fresh SQLite file")
    parser.add_argument("--steps", type=int, default=10_000, help="steps per series (10 series)")
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/api_metrics.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.requests = 200, 3
    result = run(args.database_url, args.steps, args.requests)
    for kind in ("full_history", "incremental_poll"):
        row = result[kind]
        print(f"{result['backend']:10} {result['points']:>7} points  {kind:16} p50 {row['p50_ms']:8.1f} ms  "
              f"p99 {row['p99_ms']:8.1f} ms  ({row['bytes']} bytes, {row['requests']} requests)")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
