"""The scheduler: claims queued jobs, runs them on Ray, writes what they report."""

from __future__ import annotations

from .runtime import RayRuntime
from .scheduler import Scheduler

__all__ = ["RayRuntime", "Scheduler"]
