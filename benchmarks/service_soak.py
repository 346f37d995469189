"""A load soak of the whole service on loopback: many concurrent clients for a while, a mix of what
dashboards and sweeps do, with errors, latency percentiles and the service's memory over time.

    python -m benchmarks.service_soak                                  # SQLite, 100 clients, 60 s
    python -m benchmarks.service_soak --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test
    python -m benchmarks.service_soak --clients 20 --seconds 10        # a short look

A real `symopt serve` (API and scheduler in one process; the rate limit raised for the run). Each
client is a thread with its own keep-alive connection that loops until the time is up over:
  70%  GET /v1/jobs/{id}/metrics?since_step=...  (a live dashboard's poll of a 10 x 2,000 job)
  15%  GET /v1/jobs?limit=20                     (the jobs list)
  10%  GET /v1/jobs/{id}                         (a job page)
   5%  POST /v1/jobs                             (a submission; it asks for a GPU the local Ray
                                                  lacks, so it stays queued and the scheduler
                                                  looks at every one of them each tick)
An error is any response other than 200/201, or a failed request. The service's RSS is read from
/proc every 5 s; "flat" compares the last reading with the one after the first quarter (warm-up:
caches, connection pools and the first jobs). The clients share the machine's cores with the
service, so the latency figures are of both together.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.engine import make_url

from service.testing import live_service

from .api_metrics import percentile, prepare
from .databases import scratch_database
from .service_load import QUEUED_JOB, _rss_kib, in_threads

MIX = [("metrics", 70), ("list", 15), ("job", 10), ("submit", 5)]


class Tally:
    """Latencies (ms) and errors per request kind, from many threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.errors: Counter[str] = Counter()
        self.error_examples: list[str] = []

    def add(self, kind: str, began: float, error: str | None) -> None:
        elapsed = (time.perf_counter() - began) * 1e3
        with self.lock:
            self.latency[kind].append(elapsed)
            if error is not None:
                self.errors[kind] += 1
                if len(self.error_examples) < 5:
                    self.error_examples.append(f"{kind}: {error}")


def client_loop(
    client: httpx.Client, job_id: str, steps: int, deadline: float, seed: int, tally: Tally
) -> None:
    chooser = random.Random(seed)
    kinds, weights = zip(*MIX, strict=True)
    while time.monotonic() < deadline:
        kind = chooser.choices(kinds, weights)[0]
        began = time.perf_counter()
        try:
            if kind == "metrics":
                response = client.get(f"/v1/jobs/{job_id}/metrics", params={"since_step": steps - 100})
            elif kind == "list":
                response = client.get("/v1/jobs", params={"limit": 20})
            elif kind == "job":
                response = client.get(f"/v1/jobs/{job_id}")
            else:
                response = client.post("/v1/jobs", json=QUEUED_JOB)
        except httpx.HTTPError as error:
            tally.add(kind, began, f"{type(error).__name__}: {error}")
            continue
        ok = response.status_code in (200, 201)
        tally.add(kind, began, None if ok else f"HTTP {response.status_code}: {response.text[:200]}")


def sample_rss(pid: int, deadline: float, every: float, readings: list[tuple[float, float]]) -> None:
    began = time.monotonic()
    while time.monotonic() < deadline:
        readings.append((round(time.monotonic() - began, 1), _rss_kib(pid) / 1024))
        time.sleep(every)
    readings.append((round(time.monotonic() - began, 1), _rss_kib(pid) / 1024))


def soak(
    url: str, key: str, job_id: str, steps: int, clients: int, seconds: float, pid: int
) -> dict[str, Any]:
    tally, readings = Tally(), []
    deadline = time.monotonic() + seconds
    sampler = threading.Thread(target=sample_rss, args=(pid, deadline, 5.0, readings))
    sampler.start()
    wall = in_threads(
        clients, lambda client, index: client_loop(client, job_id, steps, deadline, index, tally), url, key
    )
    sampler.join()
    every = [ms for samples in tally.latency.values() for ms in samples]
    warm = next((mib for at, mib in readings if at >= seconds / 4), readings[0][1])
    return {
        "clients": clients,
        "seconds": round(wall, 1),
        "requests": len(every),
        "per_s": len(every) / wall,
        "errors": sum(tally.errors.values()),
        "error_examples": tally.error_examples,
        "p50_ms": percentile(every, 0.5),
        "p99_ms": percentile(every, 0.99),
        "max_ms": max(every),
        "by_kind": {
            kind: {
                "requests": len(samples),
                "errors": tally.errors[kind],
                "p50_ms": percentile(samples, 0.5),
                "p99_ms": percentile(samples, 0.99),
            }
            for kind, samples in sorted(tally.latency.items())
        },
        "rss_mib": readings,
        "rss_growth_after_warmup": readings[-1][1] / warm - 1.0,
    }


def run(database_url: str | None, args: argparse.Namespace) -> dict[str, Any]:
    env = {"SYMOPT_JOB_RATE_PER_MINUTE": "1000000", "SYMOPT_JOB_RATE_BURST": "1000000"}
    with tempfile.TemporaryDirectory() as scratch, scratch_database(database_url, Path(scratch)) as url:
        key, job_id = prepare(url, args.steps)
        with live_service(Path(scratch), url, env=env) as service:
            result = soak(
                service.url, key, job_id, args.steps, args.clients, args.seconds, service.process.pid
            )
            alive = httpx.get(f"{service.url}/healthz", timeout=10).status_code == 200
    return {
        "backend": make_url(url).get_backend_name(),
        "date": time.strftime("%Y-%m-%d"),
        "alive_after": alive,
        **result,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", help="default: a fresh SQLite file")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--steps", type=int, default=2000, help="steps per series of the polled job")
    parser.add_argument("--out", type=Path, help="default: benchmarks/results/service_soak_<backend>.json")
    args = parser.parse_args(argv)
    result = run(args.database_url, args)
    backend = result["backend"]
    rss = result["rss_mib"]
    print(
        f"{backend:10} {result['clients']} clients x {result['seconds']} s: {result['requests']} requests "
        f"({result['per_s']:.0f}/s), {result['errors']} errors; p50 {result['p50_ms']:.1f} ms, "
        f"p99 {result['p99_ms']:.1f} ms, max {result['max_ms']:.0f} ms"
    )
    for kind, figures in result["by_kind"].items():
        print(
            f"{'':10} {kind:8} {figures['requests']:6} requests, {figures['errors']} errors, "
            f"p50 {figures['p50_ms']:.1f} ms, p99 {figures['p99_ms']:.1f} ms"
        )
    print(
        f"{'':10} RSS {rss[0][1]:.0f} -> {rss[-1][1]:.0f} MiB "
        f"({100 * result['rss_growth_after_warmup']:+.1f}% after warm-up); "
        f"alive after: {result['alive_after']}"
    )
    for example in result["error_examples"]:
        print(f"{'':10} error: {example}")
    out = args.out or Path(f"benchmarks/results/service_soak_{backend}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    return 1 if result["errors"] or not result["alive_after"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
