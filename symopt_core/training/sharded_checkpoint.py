"""Checkpoints of FSDP runs through torch.distributed.checkpoint (DCP): resumable at any world size.

Under FSDP2 no rank holds the whole model, so every rank writes its own rows:

    <directory>/step_<step>.dcp/
        .metadata, __<rank>_0.distcp   DCP: "model" and "optimizer" (and "schedule_free", a
                                       schedule-free wrapper's own state), keyed by parameter
                                       name (get_model_state_dict / get_optimizer_state_dict)
        run.pt                         the rest of Run.state() (step, schedule, sampler, RNG, ...),
                                       rank 0's, read with torch.load(weights_only=True)

The directory is written under a temporary name and renamed once complete, so a directory named
step_<step>.dcp is a whole checkpoint. DCP reshards on load: the same checkpoint resumes on
any number of FSDP ranks, under DDP, or in one process (no process group at all) for inspection.
With several nodes, `directory` must be a filesystem every rank sees.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from ..errors import ConfigError
from .checkpoint import checkpoint_path, prune_checkpoints

__all__ = ["RUN_STATE", "load_sharded_checkpoint", "save_sharded_checkpoint"]

RUN_STATE = "run.pt"


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _barrier() -> None:
    if _distributed():
        dist.barrier()


def _under(name: str, key: str) -> bool:
    return name == key or name.startswith(f"{key}.")


def _optimizers(optimizer: torch.optim.Optimizer) -> dict[str, torch.optim.Optimizer]:
    """DCP's optimizer helpers read an optimizer's own state and param groups only, so a
    schedule-free wrapper (ScheduleFree.base) is stored as two: the base and the wrapper."""
    base = getattr(optimizer, "base", None)
    if isinstance(base, torch.optim.Optimizer):
        return {"optimizer": base, "schedule_free": optimizer}
    return {"optimizer": optimizer}


def save_sharded_checkpoint(
    directory: Path,
    step: int,
    run_state: dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    keep: int,
    *,
    is_main: bool,
) -> Path:
    """Every rank calls this: write step_<step>.dcp in `directory` (rank 0 also writes
    `run_state`, Run.state() without model and optimizer, and deletes all but the newest `keep`
    checkpoints), as save_checkpoint does for one file. Returns the path once it exists."""
    target = checkpoint_path(directory, step, sharded=True)
    temporary = target.with_name(f".{target.name}.tmp")
    if is_main:
        shutil.rmtree(temporary, ignore_errors=True)  # a write interrupted earlier
        temporary.mkdir(parents=True)
    _barrier()
    state: dict[str, Any] = {"model": get_model_state_dict(model)}
    # An optimizer that has not stepped (a run stopped at step 0) is left out: DCP's helper would
    # take a zero-gradient step to create its state, and a resume starts it fresh anyway.
    if any(any(entry for entry in part.state.values()) for part in _optimizers(optimizer).values()):
        state |= {key: get_optimizer_state_dict(model, part) for key, part in _optimizers(optimizer).items()}
    dcp.save(state, checkpoint_id=str(temporary))
    if is_main:
        with open(temporary / RUN_STATE, "wb") as stream:
            torch.save(run_state, stream)
            stream.flush()
            os.fsync(stream.fileno())
        shutil.rmtree(target, ignore_errors=True)
        os.replace(temporary, target)
        prune_checkpoints(directory, keep)
    _barrier()
    return target


def load_sharded_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Load a step_<step>.dcp checkpoint into `model` and `optimizer` (sharded or not, on any
    number of ranks) and return the rest of the run's state (run.pt)."""
    if not (path / RUN_STATE).is_file() or not (path / ".metadata").is_file():
        raise ConfigError(f"Not a complete sharded checkpoint: {path} (expected .metadata and {RUN_STATE})")
    # The optimizers' templates first: for an optimizer that has not stepped, DCP's helper takes
    # one zero-gradient step to create its state (overwritten here, and the model's after it).
    stored = dcp.FileSystemReader(str(path)).read_metadata().state_dict_metadata
    parts = {
        key: part for key, part in _optimizers(optimizer).items() if any(_under(name, key) for name in stored)
    }
    state: dict[str, Any] = {key: get_optimizer_state_dict(model, part) for key, part in parts.items()}
    state["model"] = get_model_state_dict(model)
    with warnings.catch_warnings():  # one process is what no_dist says; DCP warns of it anyway
        warnings.filterwarnings("ignore", "torch.distributed is disabled", UserWarning)
        dcp.load(state, checkpoint_id=str(path), no_dist=not _distributed())
    for key, part in parts.items():
        set_optimizer_state_dict(model, part, state[key])
    set_model_state_dict(model, state["model"])
    run_state: dict[str, Any] = torch.load(path / RUN_STATE, map_location="cpu", weights_only=True)
    return run_state
