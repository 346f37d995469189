"""How many metric points per second the scheduler writes to the store.

    python -m benchmarks.scheduler_ingest                                   # SQLite file
    python -m benchmarks.scheduler_ingest --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test
    python -m benchmarks.scheduler_ingest --quick

Runs the scheduler's own ingest path (worker events -> Pending -> one transaction per tick) on a
real database: `--jobs` running jobs each report one metrics event of `--metrics` values per
tick (a real run reports ~40: losses, lr, throughput, grad norm and update RMS per class, MoE
loads), for `--ticks` ticks.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from service.scheduler.scheduler import Run, Scheduler
from service.settings import Settings
from service.store import Store
from service.store.jobs import create_job
from service.store.keys import create_tenant
from service.store.migrate import upgrade
from service.store.scheduling import start_attempt
from symopt_core.spec import load_spec

from .databases import scratch_database


def run(url: str, jobs: int, metrics: int, ticks: int) -> dict[str, Any]:
    upgrade(url)
    store = Store.connect(url)
    scheduler = Scheduler(store, Settings(database_url=url))  # its Ray is never started here
    with store.transaction() as session:
        tenant = create_tenant(session=session, name=f"bench-{uuid.uuid4().hex[:6]}")
        for _ in range(jobs):
            job, _ = create_job(
                session=session, tenant_id=tenant.id, spec=load_spec({"model": {"family": "gpt2"}})
            )
            start_attempt(session=session, job=job, owner=scheduler.owner)
            scheduler.runs[job.id] = Run(job.id, job.attempt, 1, 0, None)
    names = [f"metric_{i}" for i in range(metrics)]
    began = time.perf_counter()
    for tick in range(1, ticks + 1):
        for run_ in scheduler.runs.values():
            data = {name: 1.0 / (tick + i) for i, name in enumerate(names)}
            scheduler.pending.add_event(
                run_.job_id, run_.attempt, {"kind": "metrics", "step": tick, "data": data}
            )
        scheduler.tick_flush()
    seconds = time.perf_counter() - began
    store.close()
    points = jobs * metrics * ticks
    return {
        "backend": make_url(url).get_backend_name(),
        "points": points,
        "seconds": seconds,
        "points_per_s": points / seconds,
        "jobs": jobs,
        "metrics_per_event": metrics,
        "ticks": ticks,
        "date": time.strftime("%Y-%m-%d"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", help="default: a fresh SQLite file")
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--metrics", type=int, default=40)
    parser.add_argument("--ticks", type=int, default=300)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/scheduler_ingest.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.jobs, args.metrics, args.ticks = 2, 10, 5
    with tempfile.TemporaryDirectory() as scratch, scratch_database(args.database_url, Path(scratch)) as url:
        result = run(url, args.jobs, args.metrics, args.ticks)
    print(
        f"{result['backend']:10} {result['points']:>8} points in {result['seconds']:.2f} s: "
        f"{result['points_per_s']:,.0f} points/s ({args.jobs} jobs x {args.metrics} metrics per tick)"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
