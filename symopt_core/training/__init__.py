"""The training loop: `train(spec, report=...) -> Result`, checkpoints and run diagnostics."""

from __future__ import annotations

from ..run_request import RunRequest
from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .events import Event, Report, Result
from .loop import build_run, evaluate, train

__all__ = [
    "Event",
    "Report",
    "Result",
    "RunRequest",
    "build_run",
    "evaluate",
    "latest_checkpoint",
    "load_checkpoint",
    "save_checkpoint",
    "train",
]
