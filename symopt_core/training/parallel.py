"""How the ranks of a run share its work: one object the training loop asks, never a mode it tests.

A job with `resources.workers > 1` runs as one process per rank (worker/distributed.py starts
them through Ray Train, which initializes torch.distributed: NCCL on GPUs, gloo on CPUs). Every
rank draws the same global batch from the same sampler state, keeps its contiguous share of the
rows (`rows`), and the gradients are averaged, so the step equals a one-process step on the
whole batch (to fp32 reduction order). Losses are averaged across ranks before they are reported
(`mean`), so every rank sees the same loss and takes the same decisions (stop: `any`, diverged,
best checkpoint).

`resources.strategy` says how the ranks hold the model:
  - `Single`: one process, no torch.distributed group (or a group of one);
  - `DataParallel`: a whole replica each, under DDP (the default), rank 0 writing checkpoints;
  - `FullyShard`: a share of every parameter's rows, under FSDP2, for models whose parameters,
    gradients and optimizer state do not fit on one device; every rank writes its rows of each
    checkpoint (sharded_checkpoint.py).
Tensor parallelism or FSDP over several nodes would be another class here, not a flag.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..errors import ConfigError
from .checkpoint import SHARDED_SUFFIX, checkpoint_path, latest_checkpoint, load_checkpoint, save_checkpoint
from .job_model import has_routed_experts

__all__ = ["DataParallel", "FullyShard", "Parallelism", "Single", "current_parallelism", "shard_model"]


class Checkpointed(Protocol):
    """What a checkpoint is written from (the loop's Run)."""

    step: int
    model: nn.Module
    optimizer: torch.optim.Optimizer

    def state(self, *, weights: bool = True) -> dict[str, Any]: ...


def current_parallelism(strategy: str = "ddp") -> Parallelism:
    """This process's share of the run: `Single` unless torch.distributed runs with 2+ ranks, then
    `FullyShard` for resources.strategy "fsdp", else `DataParallel`."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return Single()
    rank, world = dist.get_rank(), dist.get_world_size()
    return FullyShard(rank, world) if strategy == "fsdp" else DataParallel(rank, world)


class Parallelism(ABC):
    rank: int
    world_size: int
    # Whether the ranks share SymOpt's whole-matrix work (SymOpt(shard=True), optim/sharding.py).
    splits_optimizer_work: bool

    @property
    def is_main(self) -> bool:
        """Rank 0, or the only process: the one that reports checkpoints (and writes them under DDP)."""
        return self.rank == 0

    @abstractmethod
    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """Prepare `model` (before its optimizer is built: FSDP shards it in place) and return the
        module the training forward goes through; `model` stays the one to evaluate and save."""

    def no_sync(self, module: nn.Module) -> contextlib.AbstractContextManager[Any]:
        """Around a backward that is not a batch's last micro-batch: no gradient communication."""
        return contextlib.nullcontext()

    @abstractmethod
    def rows(self, batch_size: int, what: str = "batch.size") -> slice:
        """This rank's rows of a global batch of `batch_size` rows."""

    @abstractmethod
    def mean(self, value: Tensor) -> Tensor:
        """The mean of a scalar over the ranks (every rank gets it)."""

    @abstractmethod
    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank when `flag` is true on any rank (a stop request, say)."""

    @abstractmethod
    def shard_metrics(self, optimizer: torch.optim.Optimizer, device: torch.device) -> dict[str, float]:
        """How the optimizer's whole-matrix work was split across the ranks in the last step."""

    @abstractmethod
    def save(self, directory: Path, run: Checkpointed, keep: int) -> Path:
        """Every rank calls this: write the checkpoint after `run.step` steps (keeping the newest
        `keep`) and return its path."""

    def load(self, path: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> Mapping[str, Any]:
        """A checkpoint file, a sharded checkpoint directory, or the newest of either in `path`
        (whatever the ranks that wrote it): a sharded one is loaded into `model` and `optimizer`
        here, and the rest of the run's state returned; a file's whole state is returned."""
        newest = latest_checkpoint(path) if path.is_dir() and path.suffix != SHARDED_SUFFIX else path
        if newest is not None and newest.suffix == SHARDED_SUFFIX:
            # DCP loads DTensor, sympy and torch.fx: imported on this path only (optim/fsdp.py).
            from .sharded_checkpoint import load_sharded_checkpoint

            return load_sharded_checkpoint(newest, model, optimizer)
        return load_checkpoint(newest or path)  # no checkpoint in `path`: its ConfigError


@dataclass(frozen=True)
class Single(Parallelism):
    """One process: the whole batch, nothing to communicate."""

    rank: int = 0
    world_size: int = 1
    splits_optimizer_work = False

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        return model

    def rows(self, batch_size: int, what: str = "batch.size") -> slice:
        return slice(0, batch_size)

    def mean(self, value: Tensor) -> Tensor:
        return value

    def any(self, flag: bool, device: torch.device) -> bool:
        return flag

    def shard_metrics(self, optimizer: torch.optim.Optimizer, device: torch.device) -> dict[str, float]:
        return {}

    def save(self, directory: Path, run: Checkpointed, keep: int) -> Path:
        return save_checkpoint(directory, run.step, run.state(), keep)


@dataclass(frozen=True)
class DataParallel(Parallelism):
    """Replicas under DDP: every rank holds the same model and optimizer state, so rank 0 writes
    one checkpoint file that resumes on any number of ranks."""

    rank: int
    world_size: int
    group: Any = None
    splits_optimizer_work = True

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        ids = [device.index] if device.type == "cuda" and device.index is not None else None
        # An expert no token was routed to in a step takes no part in its backward: DDP must be
        # told to look for such parameters, or it waits for their gradients forever.
        return torch.nn.parallel.DistributedDataParallel(
            model, device_ids=ids, find_unused_parameters=has_routed_experts(model)
        )

    def no_sync(self, module: nn.Module) -> contextlib.AbstractContextManager[Any]:
        # DDP all-reduces the gradients in the backward of a batch's last micro-batch only.
        return module.no_sync()  # type: ignore[operator]

    def rows(self, batch_size: int, what: str = "batch.size") -> slice:
        """Contiguous, equal shares."""
        if batch_size % self.world_size:
            raise ConfigError(
                f"{what}={batch_size} does not split across {self.world_size} data-parallel ranks: "
                f"use a multiple of {self.world_size}, or change resources.workers"
            )
        share = batch_size // self.world_size
        return slice(self.rank * share, (self.rank + 1) * share)

    def mean(self, value: Tensor) -> Tensor:
        total = value.detach().clone().float()
        dist.all_reduce(total, op=dist.ReduceOp.SUM, group=self.group)
        return total / self.world_size

    def gather(self, values: list[float], device: torch.device) -> list[list[float]]:
        """Every rank's `values` (the same length on every rank), on every rank, by rank."""
        mine = torch.tensor(values, dtype=torch.float64, device=device)
        everyone = [torch.empty_like(mine) for _ in range(self.world_size)]
        dist.all_gather(everyone, mine, group=self.group)
        return [row.tolist() for row in everyone]

    def shard_metrics(self, optimizer: torch.optim.Optimizer, device: torch.device) -> dict[str, float]:
        """`shard/rank<r>/matrices` and `shard/rank<r>/flops_share` for every rank r (sharding.py)."""
        stats = getattr(getattr(optimizer, "base", optimizer), "shard_stats", None)
        if stats is None or not stats.last_step:
            return {}
        last = stats.last_step
        rows = self.gather([last["matrices_computed"], last["flops_computed"]], device)
        total = max(last["flops_total"], 1.0)
        metrics = {"shard/matrices_total": last["matrices_total"]}
        for rank, (matrices, flops) in enumerate(rows):
            metrics[f"shard/rank{rank}/matrices"] = matrices
            metrics[f"shard/rank{rank}/flops_share"] = flops / total
        return metrics

    def any(self, flag: bool, device: torch.device) -> bool:
        value = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX, group=self.group)
        return bool(value.item() > 0)

    def save(self, directory: Path, run: Checkpointed, keep: int) -> Path:
        if not self.is_main:
            return checkpoint_path(directory, run.step)
        return save_checkpoint(directory, run.step, run.state(), keep)


@dataclass(frozen=True)
class FullyShard(DataParallel):
    """FSDP2: each rank holds its rows of every parameter (`shard_model`); the batch, the losses
    and the optimizer's work are shared as under DDP. Every rank writes its rows of each
    checkpoint through DCP (sharded_checkpoint.py), which reshards to any number on load."""

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        return shard_model(model)

    def no_sync(self, module: nn.Module) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()  # FSDP2 reduce-scatters each backward's gradients

    def save(self, directory: Path, run: Checkpointed, keep: int) -> Path:
        # DCP loads DTensor, sympy and torch.fx: imported on the FSDP path only (optim/fsdp.py).
        from .sharded_checkpoint import save_sharded_checkpoint

        state = run.state(weights=False)
        return save_sharded_checkpoint(
            directory, run.step, state, run.model, run.optimizer, keep, is_main=self.is_main
        )


def shard_model(model: torch.nn.Module) -> torch.nn.Module:
    """FSDP2 over the data-parallel ranks (resources.strategy = "fsdp"): each transformer block (the
    reference models' `blocks`, a transformers model's decoder layers: HFCausalLM.blocks) is
    one unit (its parameters gathered for its forward and backward, its gradients
    reduce-scattered after), the rest (embedding, final norm, LM head) the root unit. Every
    parameter becomes a DTensor split by rows; SymOpt updates each rank's rows (optim/fsdp.py)."""
    from torch.distributed.fsdp import fully_shard

    for block in getattr(model, "blocks", ()):
        fully_shard(block)
    fully_shard(model)
    return model
