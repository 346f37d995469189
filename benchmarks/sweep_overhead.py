"""Scheduling overhead per sweep trial: from one trial's end to the next trial's first step,
with warm workers and without (a fresh Ray worker per trial), side by side.

    python -m benchmarks.sweep_overhead [--trials 6] [--paths warm,cold]

A sequential sweep (parallelism 1) of tiny trials on the embedded default, each reporting every
step. For consecutive trials, the gap is the next trial's first stored metric (its wall time as
the scheduler wrote it) minus the previous trial's finish time: the controller's tick, job
creation, launch on Ray, data and model setup, one step, and the trip back.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text

from service.testing import live_service

BASE = {
    "model": {"family": "qwen3", "size": "tiny"},
    "data": {"corpus": "pystdlib", "seq_len": 32},
    "batch": {"size": 4},
    "steps": 30,
    "log_every": 1,
    "eval": {"every": 1000, "batches": 1},
    "optimizer": {"preset": "adamw"},
}


GAPS = (
    "SELECT j.trial_number, j.finished_at, "
    "(SELECT min(m.wall_time) FROM symopt_metric_points m WHERE m.job_id = j.id) "
    "FROM symopt_jobs j WHERE j.sweep_id = :s ORDER BY j.trial_number"
)


def measure(path: str, trials: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as scratch:
        home = Path(scratch)
        env = {"SYMOPT_WARM_WORKERS": "true" if path == "warm" else "false"}
        with live_service(home, env=env) as service:
            http = httpx.Client(base_url=service.url, headers={"Authorization": f"Bearer {service.api_key}"})
            body = {
                "base": BASE,
                "n_trials": trials,
                "parallelism": 1,
                "pruner": "none",
                "search_space": {"optimizer.lr": {"type": "log_uniform", "low": 1e-3, "high": 1e-2}},
            }
            sweep_id = http.post("/v1/sweeps", json=body).json()["id"]
            while http.get(f"/v1/sweeps/{sweep_id}").json()["status"] not in ("succeeded", "failed"):
                time.sleep(0.5)
        engine = create_engine(f"sqlite:///{home / 'symopt.db'}")
        with engine.connect() as connection:
            rows = connection.execute(text(GAPS), {"s": sweep_id}).all()
        engine.dispose()
    finished = [datetime.fromisoformat(str(row[1])).timestamp() for row in rows]
    first_metric = [float(row[2]) for row in rows]
    gaps = [first_metric[i + 1] - finished[i] for i in range(len(rows) - 1)]
    return {"gaps_s": gaps, "median_s": statistics.median(gaps)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--paths", default="warm,cold", help="warm, cold, or both (the default)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/sweep_overhead.json"))
    args = parser.parse_args(argv)
    result: dict[str, Any] = {"trials": args.trials, "date": time.strftime("%Y-%m-%d")}
    for path in args.paths.split(","):
        measured = result[path] = measure(path, args.trials)
        gaps = ", ".join(f"{g:.2f}" for g in measured["gaps_s"])
        print(f"{path}: trial end -> next trial's first step: median {measured['median_s']:.2f} s ({gaps})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
