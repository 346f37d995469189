"""The service under load, on loopback: job submissions per second, `GET metrics` latency with many
concurrent clients, and the scheduler's metric ingestion, on SQLite or PostgreSQL.

    python -m benchmarks.service_load                                        # SQLite (embedded default)
    python -m benchmarks.service_load --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test
    python -m benchmarks.service_load --quick

A real `symopt serve` (API and scheduler in one process, rate limit raised for the run):
- submissions: `--submissions` POSTs of a job that asks for a GPU, from `--clients` threads; the
  local Ray has none, so the jobs stay queued (the scheduler looks at all of them every tick) and
  nothing trains; they are cancelled afterwards.
- metrics: `--clients` threads poll one job holding 10 series x 2,000 steps for `--seconds`,
  each request the last 100 steps (what a dashboard's live poll asks), through keep-alive clients.
- ingestion: the scheduler's write path on the same database (benchmarks.scheduler_ingest).
Every phase is bounded in requests and time; errors are counted, not hidden.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.engine import make_url

from service.testing import live_service

from . import scheduler_ingest
from .api_metrics import percentile, prepare
from .databases import scratch_database

QUEUED_JOB = {
    "name": "load",
    "model": {"family": "qwen3", "size": "tiny"},
    "data": {"corpus": "pystdlib"},
    "steps": 10,
    "resources": {"gpus": 1},
}


def in_threads(clients: int, work: Callable[[httpx.Client, int], None], url: str, key: str) -> float:
    """Run work(client, index) in `clients` threads, each with its own keep-alive client; seconds."""
    headers = {"Authorization": f"Bearer {key}"}
    pool = [httpx.Client(base_url=url, headers=headers, timeout=60) for _ in range(clients)]
    threads = [threading.Thread(target=work, args=(pool[i], i)) for i in range(clients)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - began
    for client in pool:
        client.close()
    return seconds


def submissions(url: str, key: str, count: int, clients: int) -> dict[str, Any]:
    ids: list[str] = []
    errors: list[int] = []

    def submit(client: httpx.Client, index: int) -> None:
        for _ in range(index, count, clients):
            response = client.post("/v1/jobs", json=QUEUED_JOB)
            if response.status_code == 201:
                ids.append(response.json()["id"])
            else:
                errors.append(response.status_code)

    seconds = in_threads(clients, submit, url, key)

    def cancel(client: httpx.Client, index: int) -> None:
        for job_id in ids[index::clients]:
            client.post(f"/v1/jobs/{job_id}/cancel")

    in_threads(clients, cancel, url, key)
    return {"submitted": len(ids), "errors": len(errors), "seconds": seconds, "per_s": len(ids) / seconds}


def metric_polls(url: str, key: str, job_id: str, steps: int, clients: int, seconds: float) -> dict[str, Any]:
    samples: list[float] = []
    errors: list[int] = []
    deadline = time.monotonic() + seconds

    def poll(client: httpx.Client, index: int) -> None:
        while time.monotonic() < deadline:
            began = time.perf_counter()
            response = client.get(f"/v1/jobs/{job_id}/metrics", params={"since_step": steps - 100})
            samples.append((time.perf_counter() - began) * 1e3)
            if response.status_code != 200:
                errors.append(response.status_code)

    wall = in_threads(clients, poll, url, key)
    return {
        "clients": clients,
        "requests": len(samples),
        "errors": len(errors),
        "per_s": len(samples) / wall,
        "p50_ms": percentile(samples, 0.5),
        "p99_ms": percentile(samples, 0.99),
    }


def run(database_url: str | None, args: argparse.Namespace) -> dict[str, Any]:
    env = {"SYMOPT_JOB_RATE_PER_MINUTE": "1000000", "SYMOPT_JOB_RATE_BURST": "1000000"}
    with tempfile.TemporaryDirectory() as scratch, scratch_database(database_url, Path(scratch)) as url:
        key, job_id = prepare(url, args.steps)
        with live_service(Path(scratch), url, env=env) as service:
            submitted = submissions(service.url, key, args.submissions, args.clients)
            polled = metric_polls(service.url, key, job_id, args.steps, args.clients, args.seconds)
            rss_kib = _rss_kib(service.process.pid)
        ingest = scheduler_ingest.run(url, jobs=8, metrics=40, ticks=args.ticks)
    return {
        "backend": make_url(url).get_backend_name(),
        "date": time.strftime("%Y-%m-%d"),
        "submissions": submitted,
        "metrics": polled,
        "ingest_points_per_s": ingest["points_per_s"],
        "service_rss_mib": rss_kib / 1024,
    }


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", help="default: a fresh SQLite file")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--submissions", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=20.0, help="how long the clients poll metrics")
    parser.add_argument("--steps", type=int, default=2000, help="steps per series of the polled job")
    parser.add_argument("--ticks", type=int, default=300, help="ingestion ticks (8 jobs x 40 metrics each)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/service_load.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.clients, args.submissions, args.seconds, args.steps, args.ticks = 4, 8, 1.0, 200, 3
    result = run(args.database_url, args)
    sub, met = result["submissions"], result["metrics"]
    backend = result["backend"]
    print(
        f"{backend:10} submissions {sub['per_s']:8.1f} /s ({sub['submitted']} jobs, {sub['errors']} errors)"
    )
    print(
        f"{backend:10} GET metrics {met['per_s']:8.1f} /s with {met['clients']} clients: "
        f"p50 {met['p50_ms']:.1f} ms, p99 {met['p99_ms']:.1f} ms "
        f"({met['requests']} requests, {met['errors']} errors)"
    )
    print(f"{backend:10} ingestion   {result['ingest_points_per_s']:,.0f} points/s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
