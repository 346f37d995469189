"""The training loop: `train(spec, report=...) -> Result`, checkpoints and run diagnostics."""

from __future__ import annotations

from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .events import Event, Report, Result
from .loop import build_run, evaluate, train

__all__ = [
    "Event",
    "Report",
    "Result",
    "build_run",
    "evaluate",
    "latest_checkpoint",
    "load_checkpoint",
    "save_checkpoint",
    "train",
]
