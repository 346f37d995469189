"""Does one tenant's stream of expensive invalid sweeps slow another tenant down?

    python -m benchmarks.abusive_tenant                                        # SQLite (embedded default)
    python -m benchmarks.abusive_tenant --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test
    python -m benchmarks.abusive_tenant --quick

A real `symopt serve` process on loopback. Tenant B polls `GET /v1/jobs/{id}/metrics` (an
incremental poll of a job holding 10 series x 2000 steps) on a keep-alive connection, first alone
(idle), then while tenant A loops, on a connection of its own, on two invalid sweeps: the 53 KB
one of issue 26 (a categorical of 9,000 choices over 5 presets: over 45,000 job specs to check) and one
at the expansion cap (991 job specs built before its last path fails). The claim:
B's p99 under abuse stays within 2x of its idle p99, because A is rate-limited before its specs
are validated (once its bucket is empty, before its body is even read, and held up to a second),
and what validation it gets is bounded by MAX_JOB_CHECKS and runs in the spec checker's worker
process, away from the GIL that B's requests need.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import tempfile
import time
import uuid
from collections import Counter
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
from symopt_core.presets import PRESETS
from symopt_core.spec import load_spec

from .databases import scratch_database

NAMES = [f"series_{i}" for i in range(10)]
STEPS = 2000
BASE = {
    "name": "abuse",
    "model": {"family": "qwen3", "size": "tiny"},
    "data": {"corpus": "pystdlib", "seq_len": 32},
    "batch": {"size": 4},
    "steps": 20,
}


def expensive_sweep(choices: int = 9_000) -> dict[str, Any]:
    """An invalid sweep whose validation builds 5 x `choices` valid job specs (a weight decay per
    choice, for each preset that is not schedule-free) before its last path (`steps` from -5)
    fails: 9,000 choices make the 53 KB body of issue 26 (45,006 job specs)."""
    return {
        "base": BASE,
        "presets": [name for name, preset in PRESETS.items() if preset.schedule_free is None],
        "search_space": {
            "optimizer.weight_decay": {"type": "categorical", "choices": list(range(choices))},
            "steps": {"type": "int", "low": -5, "high": 10},
        },
    }


# At the cap: 5 + 5 x (197 + 2) = 1,000 counted; 5 + 5 x 197 + 1 = 991 built before the 422.
AT_CAP_CHOICES = 197


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def prepare(url: str) -> tuple[str, str, str]:
    """The abuser's key, the poller's key, and the poller's job holding len(NAMES) x STEPS points."""
    upgrade(url)
    store = Store.connect(url)
    with store.transaction() as session:
        abuser = create_tenant(session=session, name=f"abuser-{uuid.uuid4().hex[:6]}")
        abuser_key = create_api_key(session=session, tenant_id=abuser.id)
        poller = create_tenant(session=session, name=f"poller-{uuid.uuid4().hex[:6]}")
        poller_key = create_api_key(session=session, tenant_id=poller.id)
        job, _ = create_job(session=session, tenant_id=poller.id, spec=load_spec({**BASE, "steps": STEPS}))
    points = [Point(name, step, 1.0 / step, 0.0) for step in range(1, STEPS + 1) for name in NAMES]
    with store.transaction() as session:
        record_metrics(session=session, job_id=job.id, points=points)
    store.close()
    return abuser_key, poller_key, job.id


def poll(client: httpx.Client, job_id: str, count: int) -> dict[str, float]:
    samples = []
    for _ in range(count):
        began = time.perf_counter()
        response = client.get(f"/v1/jobs/{job_id}/metrics", params={"since_step": STEPS - 20})
        samples.append((time.perf_counter() - began) * 1e3)
        response.raise_for_status()
    return {"p50_ms": percentile(samples, 0.5), "p99_ms": percentile(samples, 0.99),
            "mean_ms": statistics.fmean(samples), "requests": count}  # fmt: skip


def abuse(url: str, key: str, ready: Any, stop: Any, answers: Any) -> None:
    """Set `ready`, then alternate the two invalid sweeps until `stop` is set; put (status counts,
    seconds of each 422) on `answers`. Its own process: a thread beside the poller would take
    turns with it on the benchmark's GIL, and time that as the service's latency."""
    # Encoded once: the abuser's own CPU (on the same 2 cores as the service) is not the service's.
    bodies = [json.dumps(expensive_sweep()).encode(), json.dumps(expensive_sweep(AT_CAP_CHOICES)).encode()]
    codes, seconds = Counter[str](), []
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        ready.set()
        while not stop.is_set():
            began = time.perf_counter()
            try:
                response = client.post("/v1/sweeps", content=bodies[sum(codes.values()) % 2])
            except httpx.TransportError:
                break  # the service stopped under it
            codes[str(response.status_code)] += 1
            if response.status_code == 422:
                seconds.append(time.perf_counter() - began)
    answers.put((dict(codes), seconds))


def run(database_url: str | None, requests: int) -> dict[str, Any]:
    spawn = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as scratch, scratch_database(database_url, Path(scratch)) as url:
        abuser_key, poller_key, job_id = prepare(url)
        with (
            # No scheduler: the poller's job stays queued, and no training run shares the CPUs.
            live_service(Path(scratch), url, args=("--no-scheduler",)) as service,
            httpx.Client(
                base_url=service.url, headers={"Authorization": f"Bearer {poller_key}"}, timeout=60
            ) as poller,
        ):
            poll(poller, job_id, 20)  # warm up
            idle = poll(poller, job_id, requests)
            ready, stop, answers = spawn.Event(), spawn.Event(), spawn.Queue()
            arguments = (service.url, abuser_key, ready, stop, answers)
            abuser = spawn.Process(target=abuse, args=arguments, daemon=True)
            abuser.start()
            ready.wait(timeout=60)  # polled from the abuser's first request on: its burst included
            abused = poll(poller, job_id, requests)
            stop.set()
            codes, seconds = answers.get(timeout=60)
            abuser.join(timeout=10)
    backend = make_url(url).get_backend_name()
    return {
        "backend": backend,
        "date": time.strftime("%Y-%m-%d"),
        "idle": idle,
        "abused": abused,
        "p99_ratio": abused["p99_ms"] / idle["p99_ms"],
        "abuser": {
            "answers": codes,
            "invalid_p50_ms": percentile(seconds, 0.5) * 1e3 if seconds else None,
            "invalid_max_ms": max(seconds) * 1e3 if seconds else None,
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", help="default: a fresh SQLite file")
    parser.add_argument("--requests", type=int, default=4000, help="polls per phase")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/abusive_tenant.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.requests = 30
    result = run(args.database_url, args.requests)
    for phase in ("idle", "abused"):
        row = result[phase]
        print(f"{result['backend']:10} metrics poll, {phase:6}  p50 {row['p50_ms']:7.2f} ms  "
              f"p99 {row['p99_ms']:7.2f} ms  ({row['requests']} requests)")  # fmt: skip
    print(f"p99 abused / idle: {result['p99_ratio']:.2f}x; abuser's answers: {result['abuser']['answers']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
