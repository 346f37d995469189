"""The statistics of a comparison study: per-candidate spread and paired differences over seeds.

Lower objectives are better (losses, tokens to a target). With k seeds per candidate, run on the
same seeds (so the same initialisation and data order) for every candidate, the comparison is
paired: d_i = candidate(seed_i) - baseline(seed_i).

Two intervals are computed for every mean:
- a percentile bootstrap (resampling seeds with replacement, `resamples` times, from a fixed seed,
  so a result can be recomputed exactly from the stored runs);
- a Student-t interval.
At small k the percentile bootstrap is too narrow (with k = 3 it is about the range of the three
values), so a difference is called only when *both* intervals exclude zero; otherwise the verdict
says the two are not distinguishable at this k. No winner is claimed from one lucky seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats as scipy_stats

__all__ = [
    "Interval",
    "PairedDifference",
    "Summary",
    "bootstrap_mean_interval",
    "paired_difference",
    "summarize",
    "t_interval",
]


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    def excludes(self, value: float) -> bool:
        return value < self.low or value > self.high

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def to_dict(self) -> dict[str, float]:
        return {"low": self.low, "high": self.high}


@dataclass(frozen=True)
class Summary:
    """k values of one candidate: mean, sample standard deviation, and the mean's intervals."""

    n: int
    mean: float
    std: float
    bootstrap: Interval
    t: Interval

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "bootstrap": self.bootstrap.to_dict(), "t": self.t.to_dict()}


@dataclass(frozen=True)
class PairedDifference:
    """candidate minus baseline, seed by seed (negative: the candidate is better)."""

    candidate: str
    baseline: str
    seeds: list[int]
    differences: list[float]
    summary: Summary
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "summary": self.summary.to_dict()}


def bootstrap_mean_interval(
    values: Sequence[float], *, confidence: float = 0.95, resamples: int = 10_000, seed: int = 0
) -> Interval:
    """Percentile bootstrap interval of the mean: resample the values with replacement."""
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        return Interval(math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(resamples, data.size))].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return Interval(float(low), float(high))


def t_interval(values: Sequence[float], *, confidence: float = 0.95) -> Interval:
    """Student-t interval of the mean (unbounded with a single value: one seed says nothing)."""
    data = np.asarray(values, dtype=np.float64)
    if data.size < 2:
        return Interval(-math.inf, math.inf)
    mean, error = float(data.mean()), float(data.std(ddof=1)) / math.sqrt(data.size)
    width = float(scipy_stats.t.ppf(0.5 + confidence / 2, data.size - 1)) * error
    return Interval(mean - width, mean + width)


def summarize(
    values: Sequence[float], *, confidence: float = 0.95, resamples: int = 10_000, seed: int = 0
) -> Summary:
    data = np.asarray(values, dtype=np.float64)
    return Summary(
        n=int(data.size),
        mean=float(data.mean()) if data.size else math.nan,
        std=float(data.std(ddof=1)) if data.size > 1 else 0.0,
        bootstrap=bootstrap_mean_interval(values, confidence=confidence, resamples=resamples, seed=seed),
        t=t_interval(values, confidence=confidence),
    )


def paired_difference(
    candidate: str,
    baseline: str,
    by_seed: dict[int, tuple[float | None, float | None]],
    *,
    confidence: float = 0.95,
    resamples: int = 10_000,
    seed: int = 0,
) -> PairedDifference:
    """The paired difference over the seeds where both runs have an objective."""
    seeds = sorted(s for s, (mine, theirs) in by_seed.items() if mine is not None and theirs is not None)
    differences = [float(by_seed[s][0]) - float(by_seed[s][1]) for s in seeds]  # type: ignore[arg-type]
    summary = summarize(differences, confidence=confidence, resamples=resamples, seed=seed)
    return PairedDifference(
        candidate, baseline, seeds, differences, summary, verdict(candidate, baseline, summary, confidence)
    )


def verdict(candidate: str, baseline: str, summary: Summary, confidence: float = 0.95) -> str:
    """The comparison in words; a difference is claimed only when both intervals exclude zero."""
    level = f"{confidence:.0%}"
    if summary.n == 0:
        return f"{candidate} vs {baseline}: no seed where both have a result"
    if summary.bootstrap.excludes(0.0) and summary.t.excludes(0.0):
        word = "better than" if summary.mean < 0 else "worse than"
        return (
            f"{candidate} {word} {baseline} by {abs(summary.mean):.3f} ± {summary.t.half_width:.3f} "
            f"({level} t interval, k = {summary.n})"
        )
    low, high = summary.t.low, summary.t.high
    return (
        f"{candidate} and {baseline} not distinguishable at k = {summary.n} "
        f"(difference {summary.mean:+.3f}, {level} t interval [{low:+.3f}, {high:+.3f}])"
    )
