"""SymOpt under FSDP2: parameters sharded by rows across the ranks (`fully_shard`, DTensor Shard(0)).

`torch.distributed.fsdp.fully_shard` replaces each parameter by a DTensor whose rows are split
across the ranks of a 1-D mesh the way `torch.chunk` splits them: rank r holds rows
[r·c, min((r+1)·c, m)) with c = ⌈m / k⌉ (the last ranks may hold fewer, or none). Gradients
arrive reduce-scattered the same way. SymOpt then works on each rank's rows:

  - elementwise rules (AdamW, SGD) and momentum run on the local rows only: no communication;
  - row-local rules (communication "none": row-norm) on plain [out, in] matrices (embeddings)
    run on the local rows too (`MatrixJob.rows_independent` says when);
  - every other matrix rule needs the whole matrix (a layout may cut any dimension into heads or
    experts, a rule may look across rows), so the momenta of those parameters are all-gathered,
    one all_gather per dtype for all of them (`gather_rows`), the directions are computed (split
    across ranks by FLOPs for the whole-matrix rules, as under DDP: sharding.py), and each rank
    applies its own rows (`local_rows`). Column-reduce rules (centered row-norm) gather too:
    one all-reduce of the column sums would do (not built).

`FsdpRows` is that, as an adapter around any engine (engines.py): SymOpt's step never asks
whether a parameter is sharded. Without DTensor parameters it hands everything on unchanged.

Optimizer state lives beside the parameter it belongs to: momentum and Adam moments are
DTensors sharded like the parameter (so torch.distributed.checkpoint can reshard them to any
world size), NorMuon's row statistics are computed from the whole direction and are the same
on every rank. `gather_rows_reference` (one `DTensor.full_tensor()` per parameter) is the
readable version the parity test compares against.

`torch.distributed.tensor` is imported on the FSDP path only: it pulls in sympy and torch.fx, a
third of `import symopt_core.training`, which every job's worker and every CLI command would
otherwise pay. No tensor can be a DTensor before that module is loaded, so `is_sharded` and
`local` ask `sys.modules` instead of importing it.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from torch import Tensor

from ..errors import ConfigError
from .engines import Engine, MatrixJob
from .sharding import ShardStats

if TYPE_CHECKING:
    from torch.distributed.tensor import DTensor

__all__ = ["FsdpRows", "gather_rows", "gather_rows_reference", "is_sharded", "local", "local_rows"]


def _loaded_dtensor_class() -> type | None:
    """DTensor if `torch.distributed.tensor` has been imported (by fully_shard, DCP or the user),
    else None: then no tensor in this process can be one."""
    module = sys.modules.get("torch.distributed.tensor")
    return getattr(module, "DTensor", None)


def is_sharded(tensor: Tensor) -> bool:
    dtensor = _loaded_dtensor_class()
    return dtensor is not None and isinstance(tensor, dtensor)


def local(tensor: Tensor) -> Tensor:
    """This rank's rows of a sharded tensor (an alias: in-place updates reach the DTensor), or the
    tensor itself."""
    return tensor.to_local() if is_sharded(tensor) else tensor  # type: ignore[attr-defined]


def _check_row_sharded(param: DTensor) -> None:
    from torch.distributed.tensor import Shard

    if param.device_mesh.ndim != 1 or tuple(param.placements) != (Shard(0),):
        raise ConfigError(
            f"SymOpt shards matrices by rows over one mesh dimension (fully_shard's default); got "
            f"placements {tuple(param.placements)} on a {param.device_mesh.ndim}-D mesh"
        )


def _row_span(rows: int, world: int, rank: int) -> tuple[int, int]:
    chunk = math.ceil(rows / world) if rows else 0
    start = min(rank * chunk, rows)
    return start, min(start + chunk, rows)


def local_rows(full: Tensor, param: DTensor) -> Tensor:
    """The rows of `full` (shaped like `param`) that this rank holds of `param`."""
    mesh = param.device_mesh
    start, stop = _row_span(full.shape[0], mesh.size(), mesh.get_local_rank())
    if stop - start != param.to_local().shape[0]:
        raise ConfigError(f"unexpected row split of a {tuple(param.shape)} parameter: not fully_shard's")
    return full[start:stop]


def gather_rows(shards: Sequence[Tensor], params: Sequence[DTensor]) -> list[Tensor]:
    """The whole tensor of each parameter, from every rank's rows `shards[i]` (shaped like
    `param.to_local()`): per dtype, every rank packs its rows of all parameters, each padded to
    ⌈m / k⌉ rows, into one flat buffer, one all_gather, then each parameter is reassembled."""
    if not params:
        return []
    for param in params:
        _check_row_sharded(param)
    mesh = params[0].device_mesh
    group, world = mesh.get_group(), mesh.size()
    fulls: list[Tensor | None] = [None] * len(params)
    for dtype in dict.fromkeys(shard.dtype for shard in shards):
        members = [i for i, shard in enumerate(shards) if shard.dtype == dtype]
        sizes = [_padded_rows(params[i], world) * math.prod(params[i].shape[1:]) for i in members]
        buffer = torch.zeros(sum(sizes), dtype=dtype, device=shards[members[0]].device)
        offset = 0
        for i, size in zip(members, sizes, strict=True):
            rows = shards[i].reshape(-1)
            buffer[offset : offset + rows.numel()] = rows
            offset += size
        gathered = [torch.empty_like(buffer) for _ in range(world)]
        dist.all_gather(gathered, buffer, group=group)
        offset = 0
        for i, size in zip(members, sizes, strict=True):
            shape, row_numel = params[i].shape, math.prod(params[i].shape[1:])
            parts = []
            for rank in range(world):
                start, stop = _row_span(shape[0], world, rank)
                flat = gathered[rank][offset : offset + (stop - start) * row_numel]
                parts.append(flat.view(stop - start, *shape[1:]))
            fulls[i] = torch.cat(parts)
            offset += size
    assert all(full is not None for full in fulls)
    return [full for full in fulls if full is not None]


def _padded_rows(param: DTensor, world: int) -> int:
    return math.ceil(param.shape[0] / world) if param.shape[0] else 0


def gather_rows_reference(shards: Sequence[Tensor], params: Sequence[DTensor]) -> list[Tensor]:
    """`gather_rows`, one parameter at a time through DTensor (the readable version)."""
    from torch.distributed.tensor import DTensor

    fulls = []
    for shard, param in zip(shards, params, strict=True):
        _check_row_sharded(param)
        sharded = DTensor.from_local(
            shard, param.device_mesh, param.placements, shape=param.shape, stride=param.stride()
        )
        fulls.append(sharded.full_tensor())
    return fulls


Gather = Callable[[Sequence[Tensor], Sequence["DTensor"]], list[Tensor]]


def _locals(tensors: list[Tensor]) -> list[Tensor]:
    return [local(tensor) for tensor in tensors]


class FsdpRows(Engine):
    """`inner` on this rank's rows of FSDP-sharded parameters (module docstring): elementwise work
    on the local rows, whole momenta gathered in (`gather`: `gather_rows`, or the reference's
    `gather_rows_reference`) for the matrix rules that need them, their updates sliced back out."""

    def __init__(self, inner: Engine, gather: Gather = gather_rows) -> None:
        self.inner, self.gather = inner, gather

    @property
    def stats(self) -> ShardStats | None:
        return self.inner.stats

    def count(self, steps: list[Tensor]) -> None:
        self.inner.count(steps)  # plain scalars beside every parameter, sharded or not

    def momentum(
        self, grads: list[Tensor], buffers: list[Tensor], momentum: float, nesterov: bool
    ) -> list[Tensor]:
        return self.inner.momentum(_locals(grads), _locals(buffers), momentum, nesterov)

    def adamw(
        self,
        params: list[Tensor],
        grads: list[Tensor],
        exp_avgs: list[Tensor],
        exp_avg_sqs: list[Tensor],
        steps: list[Tensor],
        *,
        lr: float,
        betas: tuple[float, float],
        eps: float,
        weight_decay: float,
    ) -> None:
        self.inner.adamw(
            _locals(params), _locals(grads), _locals(exp_avgs), _locals(exp_avg_sqs), steps,
            lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
        )  # fmt: skip

    def apply(self, params: list[Tensor], updates: list[Tensor], lr: float, weight_decay: float) -> None:
        self.inner.apply(_locals(params), updates, lr, weight_decay)  # updates are local rows already

    def updates(self, jobs: Sequence[MatrixJob]) -> list[Tensor]:
        whole = [i for i, job in enumerate(jobs) if is_sharded(job.param) and not job.rows_independent]
        if not whole:
            return self.inner.updates(jobs)
        fulls = self.gather([jobs[i].momentum for i in whole], [jobs[i].param for i in whole])  # type: ignore[misc]
        gathered = list(jobs)
        for i, full in zip(whole, fulls, strict=True):
            gathered[i] = replace(jobs[i], momentum=full)
        updates = self.inner.updates(gathered)
        for i in whole:
            updates[i] = local_rows(updates[i], jobs[i].param)  # type: ignore[arg-type]
        return updates
