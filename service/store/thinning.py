"""A series thinned for a plot: at most `max_points` points that keep its shape and its extremes.

The first and the last point are kept; the points between are cut into (max_points - 2) // 2
equal runs, and each run keeps its lowest and its highest point, in step order (min-max
bucketing: a loss spike or a divergence survives, as it would not in an average). Non-finite
values count as extremes ("nan" and "inf" as the highest, "-inf" as the lowest), so a diverged
step is always drawn. Points arrive one at a time in step order, and only the kept ones are held:
a 100,000-step history costs a plot's worth of memory.

    thinned = Thinning(count=100_000, max_points=1_000)
    for step, value in points:
        thinned.add(step, value)
    steps, values = thinned.points()
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["Thinning"]


def _rank(value: float | str) -> float:
    """Where a value sorts when picking a run's lowest and highest point."""
    if isinstance(value, str):
        return -math.inf if value == "-inf" else math.inf  # "nan" and "inf": the highest
    return value


@dataclass
class _Run:
    lowest: tuple[int, int, float | str] | None = None  # (index, step, value)
    highest: tuple[int, int, float | str] | None = None
    low: float = math.inf  # the ranks of lowest and highest
    high: float = -math.inf

    def add(self, point: tuple[int, int, float | str]) -> None:
        rank = _rank(point[2])
        if self.lowest is None or rank < self.low:
            self.lowest, self.low = point, rank
        if self.highest is None or rank > self.high:
            self.highest, self.high = point, rank


@dataclass
class Thinning:
    """Thins one series of `count` points, fed in step order, to at most `max_points`."""

    count: int
    max_points: int
    _index: int = 0
    _kept: list[tuple[int, int, float | str]] = field(default_factory=list)
    _runs: int = 0
    _run: int = -1
    _current: _Run = field(default_factory=_Run)

    def __post_init__(self) -> None:
        if self.max_points < 2:
            raise ValueError(f"max_points must be at least 2, got {self.max_points}")
        self._runs = (self.max_points - 2) // 2

    @property
    def thinned(self) -> bool:
        return self.count > self.max_points

    def add(self, step: int, value: float | str) -> None:
        point, index = (self._index, step, value), self._index
        self._index += 1
        if not self.thinned or index in (0, self.count - 1):
            self._kept.append(point)
            return
        if self._runs == 0:
            return  # room for the first and last point only
        run = (index - 1) * self._runs // (self.count - 2)
        if run != self._run:
            self._close_run()
            self._run = run
        self._current.add(point)

    def points(self) -> tuple[list[int], list[float | str]]:
        """The kept points' steps and values, in step order."""
        self._close_run()
        kept = sorted(set(self._kept))
        return [step for _, step, _ in kept], [value for _, _, value in kept]

    def _close_run(self) -> None:
        for point in (self._current.lowest, self._current.highest):
            if point is not None:
                self._kept.append(point)
        self._current = _Run()
