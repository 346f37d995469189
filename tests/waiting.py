"""Waiting on progress, not on the clock.

A loaded 2-core runner may take several times longer than an idle one for the same work, so a
test that waits a fixed number of seconds for a sweep to finish fails for no reason. `wait_for`
waits as long as something moves (a step, a trial, a status) and fails only when nothing has
moved for `stall` seconds (something is stuck) or after `limit` seconds in all, a bound generous
enough that only a hang reaches it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import TypeVar

__all__ = ["LIMIT", "STALL", "wait_for"]

T = TypeVar("T")

STALL = 300.0  # no tiny job's step, trial or status stands still this long unless it hangs
LIMIT = 1800.0  # the outer bound of any one wait


def wait_for(
    check: Callable[[], T | None],
    *,
    progress: Callable[[], Hashable],
    what: str,
    stall: float = STALL,
    limit: float = LIMIT,
    every: float = 0.2,
) -> T:
    """Call `check` every `every` seconds until it returns something other than None or False,
    and return that. `progress()` says where things stand (a step, a count of finished trials):
    while it changes, the wait goes on. Fails with `what` and the last progress seen when it has
    not changed for `stall` seconds, or after `limit` seconds in all."""
    started = moved = time.monotonic()
    seen = progress()
    while True:
        found = check()
        if found is not None and found is not False:
            return found
        now = time.monotonic()
        current = progress()
        if current != seen:
            seen, moved = current, now
        if now - moved > stall:
            raise AssertionError(f"{what}: no progress for {stall:.0f} s (stuck at {seen!r})")
        if now - started > limit:
            raise AssertionError(f"{what}: not done after {limit:.0f} s (last progress {seen!r})")
        time.sleep(every)
