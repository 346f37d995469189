"""Time from `POST /v1/jobs` to the job's first metric point readable over REST, on the embedded
default (`symopt serve`: SQLite, local Ray already started), with warm workers (each job a fork
of the node's warm process) and without (a fresh Ray worker per job), side by side.

    python -m benchmarks.first_metric [--jobs 5] [--paths warm,cold]

Each job is a tiny qwen3 on the default corpus reporting every step; jobs run one after another;
the API is polled every 20 ms. The time covers the scheduler noticing the job, Ray starting the
task, the training process (a fork, or a fresh worker importing torch and symopt), data and model
setup, one step, the event's trip back and the batched write. `cpu_s_per_job` is the whole
machine's CPU time (every process) per job, over the time the jobs ran.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

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
WARM = {"warm": "true", "cold": "false"}  # SYMOPT_WARM_WORKERS of each path


def machine_cpu_seconds() -> float:
    """User + system time of every process on the machine since boot (/proc/stat)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    return sum(int(value) for value in fields[:3]) / os.sysconf("SC_CLK_TCK")


def measure(path: str, jobs: int) -> dict[str, Any]:
    samples, env = [], {"SYMOPT_WARM_WORKERS": WARM[path]}
    with tempfile.TemporaryDirectory() as home, live_service(Path(home), env=env) as service:
        http = httpx.Client(base_url=service.url, headers={"Authorization": f"Bearer {service.api_key}"})
        time.sleep(5)  # the warm process (started with the service) and Ray's idle workers settle
        cpu = machine_cpu_seconds()
        for _ in range(jobs):
            began = time.perf_counter()
            job_id = http.post("/v1/jobs", json=SPEC).json()["id"]
            while not http.get(f"/v1/jobs/{job_id}/metrics", params={"names": "train_loss"}).json()["series"]:
                time.sleep(0.02)
            samples.append(time.perf_counter() - began)
            while http.get(f"/v1/jobs/{job_id}").json()["status"] not in ("succeeded", "failed"):
                time.sleep(0.05)
        cpu = machine_cpu_seconds() - cpu
    return {
        "seconds": samples,
        "first_s": samples[0],
        "median_s": statistics.median(samples),
        "cpu_s_per_job": cpu / jobs,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=5)
    parser.add_argument("--paths", default="warm,cold", help="warm, cold, or both (the default)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/first_metric.json"))
    args = parser.parse_args(argv)
    result: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "jobs": args.jobs}
    for path in args.paths.split(","):
        measured = result[path] = measure(path, args.jobs)
        listed = ", ".join(f"{s:.2f}" for s in measured["seconds"])
        print(
            f"{path}: POST -> first metric: first job {measured['first_s']:.2f} s, median of {args.jobs} "
            f"{measured['median_s']:.2f} s ({listed}); machine CPU per job {measured['cpu_s_per_job']:.2f} s"
        )
    if "warm" in result and "cold" in result:
        result["median_ratio_warm_to_cold"] = result["warm"]["median_s"] / result["cold"]["median_s"]
        print(f"warm / cold median: {result['median_ratio_warm_to_cold']:.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
