"""Sweeps: search spaces, and the controller that runs Optuna studies as jobs."""

from __future__ import annotations

from .controller import SweepController
from .space import auto_search_space, search_space

__all__ = ["SweepController", "auto_search_space", "search_space"]
