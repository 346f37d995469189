"""Side-by-side comparison of finished (or running) jobs: a table and their loss curves.

`symopt compare ID ID ...` prints it; from Python, `compare(jobs)` and `plot_comparison(jobs, path)`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .jobs import Job

__all__ = ["ComparedJob", "Comparison", "compare", "plot_comparison"]


@dataclass(frozen=True)
class ComparedJob:
    job_id: str
    name: str
    status: str
    preset: str
    lr: float | None  # the spec's lr, or the preset's default when the spec leaves it to the preset
    batch_size: int
    best_val_loss: float | None
    best_val_step: int | None
    final_val_loss: float | None
    tokens_to_target: int | None  # training tokens at the first evaluation at or below the target
    wall_time_s: float | None


@dataclass(frozen=True)
class Comparison:
    target: float | None  # the loss "tokens to target" is measured at
    jobs: list[ComparedJob]

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "jobs": [asdict(job) for job in self.jobs]}


def _evaluations(job: Job) -> list[tuple[int, int, float]]:
    """(step, tokens, val loss) of each finite evaluation: from the result once the job has one,
    else from its val_loss series (tokens estimated from the spec's batch, ramps aside)."""
    evals = (job.result or {}).get("evals")
    if evals:
        found = [(int(e["step"]), int(e["tokens"]), e["val_loss"]) for e in evals]
    else:
        per_step = int(job.spec["batch"]["size"]) * int(job.spec["data"]["seq_len"])
        found = [(r["step"], r["step"] * per_step, r["value"]) for r in job.metrics(["val_loss"])]
    return [(s, t, float(v)) for s, t, v in found if isinstance(v, int | float) and math.isfinite(v)]


def _lr(spec: dict[str, Any], preset_lrs: dict[str, float]) -> float | None:
    """The lr a job trains with: its spec's, else its preset's default."""
    lr = spec["optimizer"].get("lr")
    return float(lr) if lr is not None else preset_lrs.get(spec["optimizer"]["preset"])


def _preset_lrs(jobs: Sequence[Job]) -> dict[str, float]:
    """Each preset's default lr, asked of the service (importing the presets here would import
    torch: seconds for a command that only reads)."""
    if all(job.spec["optimizer"].get("lr") is not None for job in jobs):
        return {}
    catalog = jobs[0].client.request("GET", "/v1/presets")
    return {preset["name"]: float(preset["lr"]) for preset in catalog["data"]}


def _wall_time(job: Job) -> float | None:
    wall = (job.result or {}).get("wall_time_s")
    if isinstance(wall, int | float):
        return float(wall)
    started, finished = job.data.get("started_at"), job.data.get("finished_at")
    if started and finished:
        from datetime import datetime

        return (datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds()
    return None


def compare(jobs: Sequence[Job], target: float | None = None) -> Comparison:
    """One row per job. `target` defaults to the loss every job reached: the largest of their best
    validation losses, so that "tokens to target" is defined for all of them."""
    evaluations = {job.id: _evaluations(job) for job in jobs}
    bests = {job_id: min((v for _, _, v in found), default=None) for job_id, found in evaluations.items()}
    if target is None and bests and all(best is not None for best in bests.values()):
        target = max(best for best in bests.values() if best is not None)
    preset_lrs, rows = _preset_lrs(jobs), []
    for job in jobs:
        found = evaluations[job.id]
        best = min(found, key=lambda e: e[2]) if found else None
        reached = [tokens for _, tokens, value in found if target is not None and value <= target]
        rows.append(
            ComparedJob(
                job_id=job.id,
                name=job.name,
                status=job.status,
                preset=str(job.spec["optimizer"]["preset"]),
                lr=_lr(job.spec, preset_lrs),
                batch_size=int(job.spec["batch"]["size"]),
                best_val_loss=best[2] if best else None,
                best_val_step=best[0] if best else None,
                final_val_loss=found[-1][2] if found else None,
                tokens_to_target=min(reached) if reached else None,
                wall_time_s=_wall_time(job),
            )
        )
    return Comparison(target, rows)


# Points per series in a comparison plot: far more than a 12-inch figure resolves.
PLOT_POINTS = 2_000


def _at_tokens(
    losses: list[tuple[int, float]], counted: list[tuple[int, float]]
) -> list[tuple[float, float]]:
    """(tokens, loss) for each loss step inside the logged token counts."""
    if not counted:
        return []
    steps, tokens = [s for s, _ in counted], [t for _, t in counted]
    inside = [(step, loss) for step, loss in losses if steps[0] <= step <= steps[-1]]
    import numpy as np

    at = np.interp([step for step, _ in inside], steps, tokens)
    return [(float(t), loss) for t, (_, loss) in zip(at, inside, strict=True)]


def plot_comparison(jobs: Sequence[Job], path: str | Path) -> Path:
    """Train and validation loss of the jobs against training tokens, on shared axes, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (train_axes, val_axes) = plt.subplots(1, 2, figsize=(12, 4.5), sharex=True, sharey=True)
    preset_lrs = _preset_lrs(jobs)
    for job in jobs:
        # A plot's worth of each series (thinned by the service, extremes kept); the thinned
        # series keep different steps, so tokens are interpolated at the loss's steps (tokens
        # grow linearly with steps between two logged points).
        rows = job.metrics(["train_loss", "tokens"], max_points=PLOT_POINTS)
        counted = [(r["step"], r["value"]) for r in rows if r["name"] == "tokens"]
        losses = [(r["step"], r["value"]) for r in rows if r["name"] == "train_loss"]
        train = _at_tokens(losses, counted)
        label = f"{job.name} ({job.spec['optimizer']['preset']}, lr {_lr(job.spec, preset_lrs) or 0:.3g})"
        (line,) = train_axes.plot(*zip(*train, strict=True), label=label, alpha=0.8) if train else (None,)
        found = _evaluations(job)
        if found:
            color = line.get_color() if line is not None else None
            val_axes.plot(
                [t for _, t, _ in found], [v for _, _, v in found], marker=".", label=label, color=color
            )
    for axes, title in ((train_axes, "train loss"), (val_axes, "validation loss")):
        axes.set_title(title)
        axes.set_xlabel("training tokens")
        axes.grid(alpha=0.3)
    train_axes.set_ylabel("loss")
    val_axes.legend(fontsize="small")
    figure.tight_layout()
    target = Path(path)
    figure.savefig(target, dpi=100)
    plt.close(figure)
    return target
