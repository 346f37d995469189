"""Time from typing `symopt jobs submit SPEC --watch` to the first loss line it prints, on the
embedded default (`symopt serve`: SQLite, local Ray already started).

    python -m benchmarks.submit_watch [--runs 5]

Each run is a new `symopt` process (its start-up and imports count), submitting
examples/quickstart.yaml with `--progress lines` (one line per update, as in a log); the clock
stops at the first line with a `train_loss=`. That covers the CLI's start, the POST, the
scheduler noticing the job, a fresh Ray worker process (one per run), data and model setup, the
first `log_every` steps, the batched write and the server-sent event that carries the point.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from service.testing import ROOT, live_service


def first_loss_line(env: dict[str, str], settings: list[str]) -> tuple[float, str]:
    began = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "jobs", "submit", "examples/quickstart.yaml", "--watch",
         "--progress", "lines", *settings],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stderr is not None
    try:
        for line in process.stderr:
            if "train_loss=" in line:
                return time.perf_counter() - began, line.strip()
        raise RuntimeError(f"no loss line; symopt exited {process.wait()}")
    finally:
        process.wait(timeout=300)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/submit_watch.json"))
    args = parser.parse_args(argv)
    # quickstart logs every 50 steps; 100 steps keep each run short
    settings = ["--set", "steps=100", "--set", "eval.every=100"]
    samples, lines = [], []
    with tempfile.TemporaryDirectory() as home, live_service(Path(home)):
        env = {**os.environ, "XDG_CONFIG_HOME": str(Path(home) / "config")}
        for _ in range(args.runs):
            seconds, line = first_loss_line(env, settings)
            samples.append(seconds)
            lines.append(line)
    result = {
        "seconds": samples,
        "first_s": samples[0],
        "median_s": statistics.median(samples),
        "first_line": lines[0],
        "date": time.strftime("%Y-%m-%d"),
    }
    listed = ", ".join(f"{s:.2f}" for s in samples)
    median = result["median_s"]
    print(f"`symopt jobs submit --watch` -> first loss line: median of {args.runs} {median:.2f} s ({listed})")
    print(f"first line: {lines[0]}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
