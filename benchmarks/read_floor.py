"""symopt's metric reads against their floor: the same answers from the same SQLite file, served
by benchmarks/floor_app.py (FastAPI + sqlite3, the same key and tenant checks, nothing else).

    python -m benchmarks.read_floor                 # 10 series x 10k steps; 1, 10, 50 clients
    python -m benchmarks.read_floor --quick

Both servers run at once on loopback, one process each (`symopt serve --no-scheduler`, uvicorn);
wrk (apt-get install wrk) drives the poll (the last 100 steps of every series, what a dashboard
asks every 2 s) for `--seconds` per round, the two servers alternating round by round, and the
whole history (100k points) is read one request at a time, alternating too. Reported: requests/s
and p99 per client count, the whole-history p50, and symopt's ratio to the floor for each.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from service.testing import ROOT, free_port, live_service, one_thread_env

from .api_metrics import percentile, prepare

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk(url: str, key: str, clients: int, seconds: int) -> dict[str, float]:
    """requests/s and p99 (ms) of `clients` keep-alive connections for `seconds` (one wrk thread)."""
    done = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{clients}",
            f"-d{seconds}s",
            "--latency",
            "-H",
            f"Authorization: Bearer {key}",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    rate = re.search(r"Requests/sec:\s+([\d.]+)", done.stdout)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)", done.stdout, re.MULTILINE)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", done.stdout)
    if rate is None or p99 is None or errors is not None:
        raise RuntimeError(f"wrk: {done.stdout}")
    return {"requests_per_s": float(rate.group(1)), "p99_ms": float(p99.group(1)) * _UNITS[p99.group(2)]}


def floor_server(database: Path, port: int) -> subprocess.Popen[bytes]:
    environment = one_thread_env(SYMOPT_FLOOR_DB=str(database))
    command = [sys.executable, "-m", "uvicorn", "benchmarks.floor_app:app", "--port", str(port)]
    server = subprocess.Popen(
        command, cwd=ROOT, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/docs", timeout=1.0)
            return server
        except httpx.TransportError:
            time.sleep(0.2)
    server.kill()
    raise RuntimeError("the floor server did not start")


def whole_history(urls: dict[str, str], key: str, path: str, reads: int) -> dict[str, dict[str, float]]:
    """p50 and p99 (ms) of reads of the whole history, one at a time, the servers alternating."""
    samples: dict[str, list[float]] = {name: [] for name in urls}
    headers = {"Authorization": f"Bearer {key}"}
    clients = {name: httpx.Client(base_url=url, headers=headers, timeout=120) for name, url in urls.items()}
    for _ in range(reads + 2):
        for name, client in clients.items():
            began = time.perf_counter()
            client.get(path, params={"limit": 100_000}).raise_for_status()
            samples[name].append((time.perf_counter() - began) * 1e3)
    for client in clients.values():
        client.close()
    kept = {name: times[2:] for name, times in samples.items()}  # two warm-up reads each
    return {name: {"p50_ms": statistics.median(t), "p99_ms": percentile(t, 0.99)} for name, t in kept.items()}


def same_answers(urls: dict[str, str], key: str, path: str, params: dict[str, Any]) -> None:
    """Both servers answer the same JSON (or the comparison would be of different work)."""
    headers = {"Authorization": f"Bearer {key}"}
    answers = [
        httpx.get(f"{url}{path}", params=params, headers=headers, timeout=120).json() for url in urls.values()
    ]
    if answers[0] != answers[1]:
        raise RuntimeError(f"the two servers answer differently for {params}")


def run(steps: int, client_counts: list[int], rounds: int, seconds: int, reads: int) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        raise SystemExit("benchmarks.read_floor needs wrk: apt-get install wrk")
    with tempfile.TemporaryDirectory() as scratch:
        database = Path(scratch) / "symopt.db"
        key, job_id = prepare(f"sqlite:///{database}", steps)
        port = free_port()
        floor = floor_server(database, port)
        try:
            with live_service(Path(scratch), f"sqlite:///{database}", args=("--no-scheduler",)) as service:
                urls = {"symopt": service.url, "floor": f"http://127.0.0.1:{port}"}
                path = f"/v1/jobs/{job_id}/metrics"
                poll = {"since_step": steps - 100}
                same_answers(urls, key, path, poll)
                same_answers(urls, key, path, {"limit": 100_000})
                polls: dict[int, dict[str, list[dict[str, float]]]] = {}
                for clients in client_counts:
                    polls[clients] = {name: [] for name in urls}
                    for turn in range(rounds):
                        for name in list(urls)[:: 1 if turn % 2 == 0 else -1]:
                            url = f"{urls[name]}{path}?since_step={poll['since_step']}"
                            polls[clients][name].append(wrk(url, key, clients, seconds))
                history = whole_history(urls, key, path, reads)
        finally:
            floor.terminate()
            floor.wait(timeout=30)
    rows = []
    for clients, by_name in polls.items():
        medians = {name: {m: statistics.median(r[m] for r in runs) for m in ("requests_per_s", "p99_ms")}
                   for name, runs in by_name.items()}  # fmt: skip
        symopt, floor = medians["symopt"], medians["floor"]
        rows.append({"clients": clients, **medians,
                     "throughput_ratio": symopt["requests_per_s"] / floor["requests_per_s"],
                     "p99_ratio": symopt["p99_ms"] / floor["p99_ms"]})  # fmt: skip
    return {"date": time.strftime("%Y-%m-%d"), "points": steps * 10, "rounds": rounds, "seconds": seconds,
            "cpus": os.cpu_count(), "polls": rows, "whole_history": history,
            "whole_history_p50_ratio": history["symopt"]["p50_ms"] / history["floor"]["p50_ms"]}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10_000, help="steps per series (10 series)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--reads", type=int, default=20, help="whole-history reads per server")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/read_floor.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.clients, args.rounds, args.seconds, args.reads = 200, [10], 1, 2, 3
    result = run(args.steps, args.clients, args.rounds, args.seconds, args.reads)
    print(
        f"poll of the last 100 steps x 10 series ({result['points']} points stored), median of {args.rounds}:"
    )
    for row in result["polls"]:
        symopt, floor = row["symopt"], row["floor"]
        print(f"  {row['clients']:3} clients"
              f"  symopt {symopt['requests_per_s']:7.0f}/s p99 {symopt['p99_ms']:7.1f} ms"
              f"   floor {floor['requests_per_s']:7.0f}/s p99 {floor['p99_ms']:7.1f} ms"
              f"   ratio {row['throughput_ratio']:.2f}x, p99 {row['p99_ratio']:.2f}x")  # fmt: skip
    history = result["whole_history"]
    symopt_ms, floor_ms = history["symopt"]["p50_ms"], history["floor"]["p50_ms"]
    print(f"whole history p50: symopt {symopt_ms:.0f} ms, floor {floor_ms:.0f} ms"
          f" ({result['whole_history_p50_ratio']:.2f}x)")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
