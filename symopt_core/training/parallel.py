"""Data parallelism for the training loop: which rows of the global batch a rank trains on.

A job with `resources.workers > 1` runs as one process per rank (worker/distributed.py starts
them through Ray Train, which initializes torch.distributed: NCCL on GPUs, gloo on CPUs). Every
rank draws the same global batch from the same sampler state, keeps its contiguous share of the
rows, and DDP averages the gradients, so the step equals a one-process step on the whole batch
(to fp32 reduction order). Losses are averaged across ranks before they are reported, so every
rank sees the same loss and takes the same decisions (stop, diverged, best checkpoint).

`resources.strategy` says how the ranks hold the model: a whole replica each, under DDP (the
default), or a share of every parameter's rows, under FSDP2 (`shard_model`), for models whose
parameters, gradients and optimizer state do not fit on one device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from ..errors import ConfigError

__all__ = ["DataParallel", "shard_model"]


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


@dataclass(frozen=True)
class DataParallel:
    rank: int
    world_size: int
    group: Any = None

    @classmethod
    def current(cls) -> DataParallel | None:
        """The data-parallel group of this process, if torch.distributed runs with 2+ ranks."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
            return None
        return cls(dist.get_rank(), dist.get_world_size())

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def rows(self, batch_size: int, what: str = "batch.size") -> slice:
        """This rank's rows of a global batch of `batch_size` rows (contiguous, equal shares)."""
        if batch_size % self.world_size:
            raise ConfigError(
                f"{what}={batch_size} does not split across {self.world_size} data-parallel ranks: "
                f"use a multiple of {self.world_size}, or change resources.workers"
            )
        share = batch_size // self.world_size
        return slice(self.rank * share, (self.rank + 1) * share)

    def mean(self, value: Tensor) -> Tensor:
        """The mean of a scalar over the ranks (every rank gets it)."""
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
        """How the optimizer's whole-matrix work was split in the last step (sharding.py):
        `shard/rank<r>/matrices` and `shard/rank<r>/flops_share` for every rank r."""
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
        """True on every rank when `flag` is true on any rank (a stop request, say)."""
        value = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX, group=self.group)
        return bool(value.item() > 0)
