"""A study's result, computed from its stored runs: the same function serves a running study's
partial result and the final one, so any figure can be recomputed from the store.

Per candidate: the tuned configuration (stage 1's best trial), each confirmation run's objective
by seed, their mean, spread and intervals, tokens to the target loss, and the validation curves
as mean with min/max over seeds. Against the baseline: the paired difference per seed, its
intervals and the verdict in words (service/studies/stats.py says when a difference is called).
Between the other candidates too (`pairwise`): every unordered pair without the baseline, (a, b)
with a listed before b, with the same statistics, so "symmetric vs muon" can be read directly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from service.study_spec import StudySpec

from ..store.models import Job, Sweep
from ..store.status import JobStatus
from ..store.sweeps import objective_of
from .caveats import caveats
from .stats import paired_difference, summarize

__all__ = ["study_result", "tokens_to_target"]


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def tokens_to_target(job: Job, target: float | None) -> int | None:
    """Training tokens at the first evaluation at or below `target` (None: never reached)."""
    if target is None:
        return None
    for evaluation in (job.result or {}).get("evals", []):
        value = _finite(evaluation.get("val_loss"))
        if value is not None and value <= target:
            return int(evaluation["tokens"])
    return None


def _curve(runs: list[Job]) -> dict[str, list[Any]]:
    """Validation loss against tokens: mean, min and max over the seeds at each evaluation."""
    by_step: dict[int, list[tuple[int, float]]] = {}
    for job in runs:
        for evaluation in (job.result or {}).get("evals", []):
            value = _finite(evaluation.get("val_loss"))
            if value is not None:
                by_step.setdefault(int(evaluation["step"]), []).append((int(evaluation["tokens"]), value))
    steps = [step for step in sorted(by_step) if len(by_step[step]) == len(runs)]  # every seed there
    values = [[v for _, v in by_step[step]] for step in steps]
    return {
        "steps": steps,
        "tokens": [by_step[step][0][0] for step in steps],
        "mean": [sum(v) / len(v) for v in values],
        "min": [min(v) for v in values],
        "max": [max(v) for v in values],
    }


def _compare(
    candidate: str,
    reference: str,
    objectives: Mapping[str, Mapping[int, float | None]],
    seeds: list[int],
    statistics: Mapping[str, Any],
) -> dict[str, Any]:
    """candidate minus reference, paired by seed (the baseline, or another candidate)."""
    by_seed = {s: (objectives[candidate].get(s), objectives[reference].get(s)) for s in seeds}
    return paired_difference(candidate, reference, by_seed, **statistics).to_dict()


def study_result(
    spec: StudySpec,
    sweeps: Mapping[str, Sweep],
    best_trials: Mapping[str, dict[str, Any] | None],
    runs: Mapping[tuple[str, int], Job],
) -> dict[str, Any]:
    """The result so far. `best_trials[candidate]` is stage 1's best trial ({job_id, params,
    objective}) or None; `runs` are the confirmation jobs by (candidate, seed)."""
    seeds = spec.confirmation_seeds
    statistics: dict[str, Any] = {
        "confidence": spec.confidence,
        "resamples": spec.bootstrap_resamples,
        "seed": spec.bootstrap_seed,
    }
    objectives: dict[str, dict[int, float | None]] = {}
    candidates: list[dict[str, Any]] = []
    for candidate in spec.candidates:
        mine = {seed: runs[(candidate.name, seed)] for seed in seeds if (candidate.name, seed) in runs}
        done = {s: j for s, j in mine.items() if JobStatus(j.status).terminal}
        objectives[candidate.name] = {
            s: objective_of(j, spec.objective, spec.target_loss) if j.status == JobStatus.SUCCEEDED else None
            for s, j in done.items()
        }
        values = [v for v in objectives[candidate.name].values() if v is not None]
        sweep = sweeps.get(candidate.name)
        candidates.append(
            {
                "name": candidate.name,
                "optimizer": candidate.optimizer.model_dump(mode="json", exclude_defaults=True),
                "sweep_id": sweep.id if sweep is not None else None,
                "tuning_status": sweep.status if sweep is not None else "queued",
                "tuned": best_trials.get(candidate.name),
                "runs": [
                    {
                        "seed": seed,
                        "job_id": job.id,
                        "status": job.status,
                        "objective": objectives[candidate.name].get(seed),
                        "best_val_loss": _finite((job.result or {}).get("best_val_loss")),
                        "final_val_loss": _finite((job.result or {}).get("val_loss")),
                        "wall_time_s": _finite((job.result or {}).get("wall_time_s")),
                    }
                    for seed, job in sorted(mine.items())
                ],
                "summary": summarize(values, **statistics).to_dict() if values else None,
                "curve": _curve([j for j in done.values() if j.status == JobStatus.SUCCEEDED]),
            }
        )
    baseline = spec.baseline_name
    base_values = [v for v in objectives[baseline].values() if v is not None]
    target = spec.target_loss
    if target is None and spec.objective != "tokens_to_target" and base_values:
        target = sum(base_values) / len(base_values)  # what the baseline reaches, on average
    for entry in candidates:
        reached = [
            tokens_to_target(runs[(entry["name"], run["seed"])], target)
            for run in entry["runs"]
            if run["status"] == JobStatus.SUCCEEDED
        ]
        hits = [tokens for tokens in reached if tokens is not None]
        entry["tokens_to_target"] = {
            "reached": len(hits),
            "runs": len(reached),
            "mean": sum(hits) / len(hits) if hits else None,
            "by_seed": reached,
        }
    others = [c.name for c in spec.candidates if c.name != baseline]
    comparisons = [_compare(name, baseline, objectives, seeds, statistics) for name in others]
    pairwise = [
        _compare(a, b, objectives, seeds, statistics) for i, a in enumerate(others) for b in others[i + 1 :]
    ]
    return {
        "objective": spec.objective,
        "caveats": caveats(spec, sweeps, best_trials, [*comparisons, *pairwise]),
        "baseline": baseline,
        "seeds": seeds,
        "target_loss": target,
        "statistics": statistics,
        "candidates": candidates,
        "comparisons": comparisons,
        "verdicts": [comparison["verdict"] for comparison in comparisons],
        "pairwise": pairwise,
        "pairwise_verdicts": [comparison["verdict"] for comparison in pairwise],
    }
