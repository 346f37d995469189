"""The data-parallel optimizer step: each rank orthogonalizes a balanced share of the matrices.

Under data parallelism (DDP) every rank holds the same parameters and, after the gradient
all-reduce, the same gradients, so every rank would compute the same directions. For rules whose
cost grows as m²n (those whose `communication` is "gather": polar, one-sided spectral, hybrid,
NorMuon) that repeated work is most of the optimizer step. Here the matrices are split across
the ranks, balanced by FLOPs (largest first, each to the least-loaded rank), each rank computes
its share batched by shape, and one all-gather per dtype hands every rank every direction, as
dion's and EO's sharded Muon do. The other rules cost O(mn) and run on every rank as before.

`DistributedEngine` (engines.py) runs this in SymOpt's step; the batched engine on one process is
the reference: the data-parallel tests compare the two on 2 gloo ranks.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["Bucket", "ShardStats", "assign_by_cost", "polar_flops", "sharded_directions", "shares"]


@dataclass
class Bucket:
    """Same-shape matrices of one rule and options: [N, m, n], computed by `compute` in one call."""

    matrices: Tensor
    compute: Callable[[Tensor], Tensor]
    steps: int  # iterations of the rule's matrix-product loop, for the cost model


@dataclass
class ShardStats:
    """What this rank computed: the per-rank counts the tests and the benchmark read."""

    steps: int = 0
    matrices_computed: int = 0  # by this rank, over all steps
    matrices_total: int = 0  # by all ranks together, over all steps
    flops_computed: float = 0.0
    flops_total: float = 0.0
    last_step: dict[str, float] = field(default_factory=dict)

    def record(self, computed: int, flops: float, total: int, total_flops: float) -> None:
        """One step: the matrices this rank passed to its rules, and what all ranks had to do."""
        self.steps += 1
        self.matrices_computed += computed
        self.matrices_total += total
        self.flops_computed += flops
        self.flops_total += total_flops
        self.last_step = {
            "matrices_computed": float(computed),
            "matrices_total": float(total),
            "flops_computed": flops,
            "flops_total": total_flops,
        }


def polar_flops(m: int, n: int, steps: int) -> float:
    """FLOPs of `steps` quintic Newton–Schulz / Polar Express iterations on an m×n matrix
    (computed on its wide orientation, k = min(m, n) <= l = max): A = X Xᵀ (2k²l), B = bA + cA²
    (2k³), X = aX + B X (2k²l)."""
    k, l = min(m, n), max(m, n)
    return steps * (4.0 * k * k * l + 2.0 * k**3)


def _cost(bucket: Bucket) -> float:
    m, n = bucket.matrices.shape[-2:]
    return polar_flops(int(m), int(n), bucket.steps)


def assign_by_cost(costs: Sequence[float], world_size: int) -> list[int]:
    """The owner rank of each item: largest cost first, each to the least-loaded rank (ties to the
    lower rank, then the earlier item), so every rank derives the same assignment from the same
    costs."""
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    owners = [0] * len(costs)
    loads = [(0.0, rank) for rank in range(world_size)]
    for index in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        load, rank = heapq.heappop(loads)
        owners[index] = rank
        heapq.heappush(loads, (load + costs[index], rank))
    return owners


def sharded_directions(
    buckets: Sequence[Bucket], *, group: Any = None, stats: ShardStats | None = None
) -> list[Tensor]:
    """The direction of every matrix of every bucket, each computed by one rank of `group` (the
    default process group if None) and all-gathered; returns one [N, m, n] tensor per bucket."""
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    owned = shares(buckets, world)
    outputs = [torch.empty_like(bucket.matrices) for bucket in buckets]
    indices = [{b: _index(i, buckets[b]) for b, i in mine.items()} for mine in owned]
    for b, index in indices[rank].items():
        outputs[b][index] = buckets[b].compute(buckets[b].matrices[index])
    _all_gather(outputs, indices, rank=rank, group=group)
    if stats is not None:
        mine = owned[rank]
        flops = sum(_cost(buckets[b]) * len(i) for b, i in mine.items())
        total = sum(bucket.matrices.shape[0] for bucket in buckets)
        total_flops = sum(_cost(bucket) * bucket.matrices.shape[0] for bucket in buckets)
        stats.record(sum(len(i) for i in mine.values()), flops, total, total_flops)
    return outputs


def shares(buckets: Sequence[Bucket], world_size: int) -> list[dict[int, list[int]]]:
    """Which matrices each rank computes: rank -> bucket -> matrix indices (ascending), from the
    FLOP-balanced assignment of every matrix of every bucket."""
    units = [(b, i) for b, bucket in enumerate(buckets) for i in range(bucket.matrices.shape[0])]
    owners = assign_by_cost([_cost(buckets[b]) for b, _ in units], world_size)
    owned: list[dict[int, list[int]]] = [{} for _ in range(world_size)]
    for (b, i), owner in zip(units, owners, strict=True):
        owned[owner].setdefault(b, []).append(i)
    return owned


def _index(indices: list[int], bucket: Bucket) -> Tensor:
    return torch.tensor(indices, dtype=torch.long, device=bucket.matrices.device)


def _all_gather(outputs: list[Tensor], indices: list[dict[int, Tensor]], *, rank: int, group: Any) -> None:
    """Every rank's computed matrices to every rank. Per dtype: each rank packs its matrices,
    bucket by bucket, into one flat buffer (padded to the longest rank's), one all_gather, then
    each other rank's buffer is unpacked in the same order, one index_copy_ per (rank, bucket)."""
    world = len(indices)
    for dtype in dict.fromkeys(output.dtype for output in outputs):
        plans = [[(b, i) for b, i in mine.items() if outputs[b].dtype == dtype] for mine in indices]
        sizes = [sum(len(i) * outputs[b][0].numel() for b, i in plan) for plan in plans]
        if max(sizes) == 0:
            continue
        buffer = torch.zeros(max(sizes), dtype=dtype, device=outputs[0].device)
        if plans[rank]:
            torch.cat([outputs[b][i].reshape(-1) for b, i in plans[rank]], out=buffer[: sizes[rank]])
        gathered = [torch.empty_like(buffer) for _ in range(world)]
        dist.all_gather(gathered, buffer, group=group)
        for other, plan in enumerate(plans):
            if other == rank:
                continue
            offset = 0
            for b, i in plan:
                size = len(i) * outputs[b][0].numel()
                outputs[b].index_copy_(
                    0, i, gathered[other][offset : offset + size].view(len(i), *outputs[b].shape[1:])
                )
                offset += size
