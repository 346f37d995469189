"""Time from `POST /v1/jobs` to the job's first metric point readable over REST, on the embedded
default (`symopt serve`: SQLite, local Ray already started).

    python -m benchmarks.first_metric [--jobs 5]

Each job is a tiny qwen3 reporting every step; jobs run one after another; the API is polled
every 20 ms. The time covers the scheduler noticing the job, Ray starting the task (a fresh
worker process the first time, a reused one later), building data and model, one step, the
event's trip back and the batched write.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from service.testing import live_service

SPEC = {
    "model": {"family": "qwen3", "size": "tiny"},
    "data": {"corpus": "pystdlib", "seq_len": 32},
    "batch": {"size": 4},
    "steps": 20,
    "log_every": 1,
    "eval": {"every": 1000, "batches": 1},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/first_metric.json"))
    args = parser.parse_args(argv)
    samples = []
    with tempfile.TemporaryDirectory() as home, live_service(Path(home)) as service:
        http = httpx.Client(base_url=service.url, headers={"Authorization": f"Bearer {service.api_key}"})
        for _ in range(args.jobs):
            began = time.perf_counter()
            job_id = http.post("/v1/jobs", json=SPEC).json()["id"]
            while not http.get(f"/v1/jobs/{job_id}/metrics", params={"names": "train_loss"}).json()["series"]:
                time.sleep(0.02)
            samples.append(time.perf_counter() - began)
            while http.get(f"/v1/jobs/{job_id}").json()["status"] not in ("succeeded", "failed"):
                time.sleep(0.05)
    result = {
        "seconds": samples,
        "first_s": samples[0],
        "median_s": statistics.median(samples),
        "date": time.strftime("%Y-%m-%d"),
    }
    listed = ", ".join(f"{s:.2f}" for s in samples)
    median = result["median_s"]
    print(
        f"POST -> first metric: first job {samples[0]:.2f} s, median of {args.jobs} {median:.2f} s ({listed})"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
