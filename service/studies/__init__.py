"""Comparison studies: the controller that runs them and the statistics of their result."""

from __future__ import annotations

from .controller import StudyController, current_result

__all__ = ["StudyController", "current_result"]
