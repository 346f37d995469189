"""Sweeps: search spaces, and the controller that runs Optuna studies as jobs."""

from __future__ import annotations

from .controller import SweepController
from .space import auto_search_space, check_sampler, search_space
from .storage import optuna_storage

__all__ = ["SweepController", "auto_search_space", "check_sampler", "optuna_storage", "search_space"]
