"""Does the best lr stay put across width? A proxy sweep per preset on nanoGPT's CPU configuration.

    nice -n 10 python -m benchmarks.proxy_transfer [--widths 64,128,256] [--steps 300] [--layers 2]

One proxy sweep per preset (adamw, muon, symmetric) through the service itself (`symopt serve`,
Ray, the embedded SQLite store): the base job is examples/shakespeare_char_cpu.yaml at the widest
width (heads of 32 dims each), its proxies the narrower widths (`proxy.width`), each width tuned by
a grid of `--lrs` log-spaced lrs, a factor 2 apart, around the preset's centre. What is saved
(benchmarks/results/proxy_transfer_nanogpt_cpu.json): every trial's lr and final validation loss
per width, the sweep's transfer result (best lr per width, slope of log lr on log width with its t
interval, the recommendation), and a leave-widest-out check: the slope fitted on the narrower
widths alone predicts the widest's best lr, compared with the best measured there. The transfer
plot (docs/proxy-transfer.png) draws loss against lr, one curve per width, one panel per preset.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from service.client.transfer_plot import plot_transfer
from service.sweeps.transfer import LrPoint, best_lr, fit_slope
from service.testing import live_service

ROOT = Path(__file__).resolve().parent.parent
HEAD_DIM = 32  # nanoGPT CPU: 4 heads of 32 at width 128
# The grid's centre per preset: AdamW's lr for a short run of this model; twice the matrix presets'
# default (a first run centred on 0.02 found their best lr at its upper edge at widths 32 and 64).
CENTRES = {"adamw": 4e-3, "muon": 0.04, "symmetric": 0.04}


def base_job(width: int, layers: int, steps: int) -> dict[str, Any]:
    job = yaml.safe_load((ROOT / "examples" / "shakespeare_char_cpu.yaml").read_text())
    job["model"].update(d_model=width, n_heads=width // HEAD_DIM, n_layers=layers)
    scale = steps / job["steps"]
    job["steps"] = steps
    job["schedule"]["warmup_steps"] = round(job["schedule"]["warmup_steps"] * scale)
    job["eval"] = {"every": steps // 3, "batches": 20}
    job["log_every"] = max(1, steps // 10)
    job.pop("name", None)
    return job


def sweep_body(preset: str, widths: list[int], args: argparse.Namespace) -> dict[str, Any]:
    full = max(widths)
    base = base_job(full, args.layers, args.steps)
    base["optimizer"] = {**base["optimizer"], "preset": preset, "lr": None}
    centre, half = CENTRES[preset], (args.lrs - 1) / 2
    return {
        "name": f"transfer-{preset}",
        "base": base,
        "search_space": {
            "optimizer.lr": {"type": "log_uniform", "low": centre / 2**half, "high": centre * 2**half}
        },
        "sampler": "grid",
        "pruner": "none",
        "objective": "final_val_loss",
        "n_trials": args.lrs,
        "parallelism": 1,
        "proxy": {"width": [f"{w}/{full}" for w in widths]},
    }


def leave_widest_out(entry: dict[str, Any]) -> dict[str, Any] | None:
    """The slope of the narrower widths alone, extrapolated to the widest: the transfer's test."""
    sizes = [s for s in entry["sizes"] if s["best"] is not None]
    if len(sizes) < 3:
        return None
    *narrow, widest = sizes
    fit = fit_slope([s["width"] for s in narrow], [s["best"]["fitted_lr"] for s in narrow])
    predicted = math.exp(fit["intercept"] + fit["slope"] * math.log(widest["width"]))
    no_shift = narrow[-1]["best"]["fitted_lr"]  # "the optimum stays put": the next width's lr
    measured = widest["best"]["fitted_lr"]
    points = [LrPoint(t["lr"], t["objective"], t["job_id"]) for t in widest["trials"]]
    nearest = min(points, key=lambda p: abs(math.log(p.lr / predicted)))
    return {
        "fitted_on": [s["width"] for s in narrow],
        "slope": fit["slope"],
        "predicted_lr": predicted,
        "no_shift_lr": no_shift,
        "measured_lr": measured,
        "predicted_over_measured": predicted / measured,
        "no_shift_over_measured": no_shift / measured,
        "loss_at_grid_point_nearest_prediction": nearest.objective,
        "best_loss": best_lr(points)["objective"] if points else None,  # type: ignore[index]
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    widths = sorted(int(w) for w in args.widths.split(","))
    presets = args.presets.split(",")
    with tempfile.TemporaryDirectory() as scratch:
        env = {"SYMOPT_RAY_NUM_CPUS": str(args.parallel)}
        with live_service(Path(scratch), env=env, timeout=180) as service:
            http = httpx.Client(
                base_url=service.url, headers={"Authorization": f"Bearer {service.api_key}"}, timeout=60
            )
            ids = {}
            for preset in presets:
                response = http.post("/v1/sweeps", json=sweep_body(preset, widths, args))
                response.raise_for_status()
                ids[preset] = response.json()["id"]
            started = time.time()
            while True:
                states = {p: http.get(f"/v1/sweeps/{i}").json() for p, i in ids.items()}
                done = sum(s["trials_finished"] for s in states.values())
                planned = args.lrs * len(widths) * len(presets)
                print(f"{time.time() - started:7.0f} s: {done} of {planned} trials", flush=True)
                if all(s["status"] in ("succeeded", "failed", "cancelled") for s in states.values()):
                    break
                if time.time() - started > args.max_wall:  # keep what finished; say it is partial
                    print("out of wall time: saving the finished trials", flush=True)
                    break
                time.sleep(20)
            wall = time.time() - started
            results = {}
            for preset, sweep_id in ids.items():
                transfer = http.get(f"/v1/sweeps/{sweep_id}/transfer").json()
                (entry,) = transfer["presets"]
                entry["status"] = states[preset]["status"]
                entry["leave_widest_out"] = leave_widest_out(entry)
                results[preset] = entry
    return {
        "what": "proxy sweeps of nanoGPT's CPU configuration, one per preset, lr grid per width",
        "setup": {
            "base": base_job(max(widths), args.layers, args.steps),
            "widths": widths,
            "head_dim": HEAD_DIM,
            "lrs_per_width": args.lrs,
            "grid_centres": {p: CENTRES[p] for p in presets},
            "grid_factor": 2.0,
            "objective": "final_val_loss (20 eval batches)",
            "seed": "one (1337), every run",
            "parallel_runs": args.parallel,
        },
        "wall_time_s": round(wall),
        "complete": all(entry["status"] == "succeeded" for entry in results.values()),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "threads": 1},
        "presets": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--widths", default="64,128,256")
    parser.add_argument("--presets", default="adamw,muon,symmetric")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--lrs", type=int, default=5)
    parser.add_argument("--parallel", type=int, default=2, help="runs at once (Ray CPUs)")
    parser.add_argument(
        "--out", default=str(ROOT / "benchmarks" / "results" / "proxy_transfer_nanogpt_cpu.json")
    )
    parser.add_argument("--plot", default=str(ROOT / "docs" / "proxy-transfer.png"))
    parser.add_argument("--max-wall", type=float, default=2700.0, help="seconds before saving what finished")
    parser.add_argument(
        "--reuse", default=None, help="a result file whose other presets join this run's (same setup)"
    )
    parser.add_argument("--plot-only", action="store_true", help="redraw the plot from --out")
    args = parser.parse_args()
    if args.plot_only:
        result = json.loads(Path(args.out).read_text())
    else:
        result = run(args)
        if args.reuse:  # presets measured by an earlier run of the same setup
            earlier = json.loads(Path(args.reuse).read_text())
            for preset, entry in earlier["presets"].items():
                if preset not in result["presets"]:
                    result["presets"][preset] = {**entry, "from_run": Path(args.reuse).name}
                    result["setup"]["grid_centres"][preset] = earlier["setup"]["grid_centres"][preset]
            result["presets"] = {p: result["presets"][p] for p in sorted(result["presets"])}
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    plot_transfer(list(result["presets"].values()), Path(args.plot), title="nanoGPT CPU (shakespeare-char)")
    print("\n".join(markdown(result)))


def markdown(result: dict[str, Any]) -> list[str]:
    """The README's table: best lr per width, the slope, and the leave-widest-out check."""
    widths = result["setup"]["widths"]
    lines = [
        "| preset | "
        + " | ".join(f"best lr at {w} (loss)" for w in widths)
        + " | slope [95% t interval] | widest predicted from the others / measured |",
        "|---|" + "---|" * len(widths) + "---|---|",
    ]
    for preset, entry in result["presets"].items():
        cells = []
        for size in entry["sizes"]:
            best = size["best"]
            cells.append(
                f"{best['fitted_lr']:.3g} ({best['objective']:.3f}, {len(size['trials'])} lrs)"
                if best
                else "-"
            )
        slope = entry.get("slope")
        slope_text = "-"
        if slope:
            interval = "" if slope["low"] is None else f" [{slope['low']:+.2f}, {slope['high']:+.2f}]"
            slope_text = f"{slope['slope']:+.2f}{interval}"
        check = entry.get("leave_widest_out")
        check_text = (
            f"{check['predicted_lr']:.3g} / {check['measured_lr']:.3g} "
            f"(x{check['predicted_over_measured']:.2f}; no shift: x{check['no_shift_over_measured']:.2f})"
            if check
            else "-"
        )
        lines.append(f"| {preset} | " + " | ".join(cells) + f" | {slope_text} | {check_text} |")
    return lines


if __name__ == "__main__":
    main()
