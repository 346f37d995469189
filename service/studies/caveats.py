"""What a study's verdicts rest on, said beside them: a verdict on two tuning trials per candidate
and k = 2 seeds must not read as firmly as one on 32 trials and k = 5.

- Tuning that never left the sampler's random start-up: each candidate's "tuned" setting is then
  a random draw (and, with the same sampler seed, the same relative point of each range).
- A tuned step size at the edge of its searched range: the optimum may lie beyond it.
- A proxy study's recommendation (service/sweeps/transfer.py): its own caveats (a best lr at the
  edge of what a width tried, two widths only, a wide slope interval, a long extrapolation).
- A difference not resolved at this k: how many seeds would resolve one of the observed size,
  if it is real (the smallest k whose t interval, at the observed spread, excludes zero).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from scipy import stats as scipy_stats

from service.study_spec import StudySpec

from ..store.models import Sweep
from ..sweeps.space import startup_trials

__all__ = ["EDGE_FRACTION", "caveats", "seeds_to_resolve"]

# A tuned value within this fraction of its range's width (log-width for log ranges) of a bound.
EDGE_FRACTION = 0.1
MODEL_BASED = ("tpe", "cmaes", "gp")
MOST_SEEDS = 1_000


def caveats(
    spec: StudySpec,
    sweeps: Mapping[str, Sweep],
    best_trials: Mapping[str, dict[str, Any] | None],
    comparisons: list[dict[str, Any]],
) -> list[str]:
    """Plain sentences, each naming the candidate or comparison it is about and what to change."""
    found: list[str] = []
    for candidate in spec.candidates:
        best = best_trials.get(candidate.name)
        if best is None:
            continue
        found += _start_up(spec, candidate.name, best)
        transfer = best.get("transfer")  # a proxy study: what its recommendation rests on
        if transfer is not None:
            found += [f"{candidate.name} (tuned on proxies): {c}" for c in transfer.get("caveats", [])]
        sweep = sweeps.get(candidate.name)
        space = ((sweep.resolved_space if sweep is not None else None) or {}).get("default", {})
        found += _at_edges(candidate.name, best.get("params") or {}, space)
    for comparison in comparisons:
        found += _unresolved(comparison, spec.confidence)
    return found


def _start_up(spec: StudySpec, name: str, best: dict[str, Any]) -> list[str]:
    sampler, completed = spec.tuning.sampler, best.get("trials_completed")
    startup = startup_trials(spec.tuning.n_trials)
    if sampler not in MODEL_BASED or completed is None or completed > startup:
        return []
    return [
        f"{name}: tuning ran {completed} trial(s), all inside the {sampler} sampler's {startup} random "
        "start-up trials, so its tuned setting is a random draw rather than a search result; raise "
        f"tuning.n_trials (the start-up is a third of it, 2 to 10) to at least {3 * startup + 3}"
    ]


def _at_edges(name: str, params: Mapping[str, Any], space: Mapping[str, Any]) -> list[str]:
    found = []
    for path, value in params.items():
        bounds = space.get(path) or {}
        if not path.endswith((".lr", "lr_scale")) or not isinstance(value, int | float):
            continue
        low, high = bounds.get("low"), bounds.get("high")
        if low is None or high is None or high <= low:
            continue
        logarithmic = str(bounds.get("type", "")).startswith("log") and low > 0 and value > 0
        where = (
            (math.log(value) - math.log(low)) / (math.log(high) - math.log(low))
            if logarithmic
            else (value - low) / (high - low)
        )
        edge = "lower" if where <= EDGE_FRACTION else "upper" if where >= 1 - EDGE_FRACTION else None
        if edge is not None:
            found.append(
                f"{name}: its tuned {path} = {value:.3g} lies at the {edge} edge of the searched range "
                f"[{low:.3g}, {high:.3g}]; the optimum may lie beyond it: widen the range on that side"
            )
    return found


def _unresolved(comparison: dict[str, Any], confidence: float) -> list[str]:
    summary = comparison["summary"]
    called = "better than" in comparison["verdict"] or "worse than" in comparison["verdict"]
    if called or summary["n"] < 2:
        return []
    needed = seeds_to_resolve(summary["mean"], summary["std"], confidence)
    pair = f"{comparison['candidate']} vs {comparison['baseline']}"
    if needed is None:
        return [f"{pair}: no difference at all at k = {summary['n']} (every seed's difference is 0)"]
    return [
        f"{pair}: not resolved at k = {summary['n']}; a difference of the observed size "
        f"({summary['mean']:+.3f}, spread {summary['std']:.3f}) would need about k = {needed} seeds "
        f"to be resolved at {confidence:.0%}, if it is real"
        + (" (more than any study should run: the two are practically equal)" if needed >= MOST_SEEDS else "")
    ]


def seeds_to_resolve(mean: float, std: float, confidence: float = 0.95) -> int | None:
    """The smallest k whose t interval of a mean difference `mean` with sample spread `std`
    excludes zero (None when there is no difference to resolve)."""
    if mean == 0 or not math.isfinite(mean) or not math.isfinite(std):
        return None
    if std == 0:
        return 2
    for k in range(2, MOST_SEEDS):
        if scipy_stats.t.ppf(0.5 + confidence / 2, k - 1) * std / math.sqrt(k) < abs(mean):
            return k
    return MOST_SEEDS
