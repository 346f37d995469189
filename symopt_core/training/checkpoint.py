"""Checkpoints: written atomically (temp file + rename), the newest `keep` kept.

A checkpoint holds everything a bit-identical resume needs: model, optimizer (schedule-free
state and mode included), lr scheduler, data sampler position, RNG states, step, tokens and the
spec. Files are read back with `torch.load(weights_only=True)`: plain tensors and containers only.
FSDP runs write directories instead (step_<step>.dcp, sharded_checkpoint.py); both kinds count
as checkpoints here (newest, pruning).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError

__all__ = [
    "SHARDED_SUFFIX",
    "checkpoint_path",
    "latest_checkpoint",
    "load_checkpoint",
    "prune_checkpoints",
    "save_checkpoint",
]

SHARDED_SUFFIX = ".dcp"  # a sharded (FSDP) checkpoint: a directory written by every rank

_NAME = re.compile(r"^step_(\d{9})\.(pt|dcp)$")


def checkpoint_path(directory: Path, step: int, *, sharded: bool = False) -> Path:
    """Where the checkpoint after `step` optimizer steps is (or would be) written: a file, or
    a directory for a sharded (FSDP) checkpoint."""
    return directory / f"step_{step:09d}{SHARDED_SUFFIX if sharded else '.pt'}"


def save_checkpoint(directory: Path, step: int, payload: dict[str, Any], keep: int) -> Path:
    """Write `payload` as `step_<step>.pt` atomically, then delete all but the newest `keep`."""
    directory.mkdir(parents=True, exist_ok=True)
    target = checkpoint_path(directory, step)
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".step_", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save(payload, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, target)
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        failed_write = _os_error_of(error)
        if failed_write is None or not isinstance(error, Exception):
            raise
        raise OSError(
            failed_write.errno,
            f"{failed_write.strerror} (writing a checkpoint: free space there, or write them elsewhere)",
            str(target),
        ) from error
    prune_checkpoints(directory, keep)
    return target


def prune_checkpoints(directory: Path, keep: int) -> None:
    """Delete all but the newest `keep` checkpoints (files or sharded directories)."""
    for old in _checkpoints(directory)[:-keep]:
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


def _os_error_of(error: BaseException) -> OSError | None:
    """The OSError behind a failed write. torch.save reports one of its stream as a RuntimeError
    ("[enforce fail at inline_container.cc] unexpected pos ...") that names neither the errno
    (ENOSPC, EIO, EDQUOT) nor the file; the OSError is only its context."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno is not None:
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _checkpoints(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    found = [path for path in directory.iterdir() if _NAME.match(path.name)]
    return sorted(found, key=lambda path: (int(path.name[5:14]), path.suffix == ".pt"))


def latest_checkpoint(directory: Path) -> Path | None:
    """The newest complete checkpoint in `directory` (temp files of interrupted writes are ignored)."""
    found = _checkpoints(directory)
    return found[-1] if found else None


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint file, or the newest one in a directory, onto the CPU."""
    if path.is_dir() and path.suffix != SHARDED_SUFFIX:
        newest = latest_checkpoint(path)
        if newest is None:
            raise ConfigError(f"No checkpoint found in {path}: expected files named step_<step>.pt")
        path = newest
    if path.suffix == SHARDED_SUFFIX:
        raise ConfigError(
            f"{path} is a sharded (FSDP) checkpoint: resume a run from it (train(resume_from=...)), or "
            "read it with torch.distributed.checkpoint"
        )
    if not path.is_file():
        raise ConfigError(f"Checkpoint not found: {path}")
    checkpoint: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    return checkpoint
