"""How SymOpt's step runs its tensor work: one engine, chosen when the optimizer is built.

`SymOpt.step` gathers each group's parameters, gradients and state, then hands the tensor work to
its engine: the elementwise kernels (step counters, momentum, AdamW, applying updates) and the
matrix work (`updates`: each matrix-rule parameter's momentum in, its update out). The engines:

  - `ReferenceEngine` (symopt_reference.py): one tensor, one matrix at a time; what the parity
    tests compare the others against (`SymOpt(batched=False)`).
  - `BatchedEngine`: multi-tensor kernels, and the same-shape matrices of all parameters of one
    rule and options stacked into one direction call (`SymOpt(batched=True)`, the default).
  - `DistributedEngine`: the batched engine under data parallelism, every rank with the same
    gradients: the whole-matrix directions are split across the ranks by FLOPs and all-gathered
    (sharding.py; `SymOpt(shard=True)`).
  - `RecordingEngine`: the batched engine that keeps its last step's whole-matrix work, for
    benchmarks/sharded_step.py to time a rank's share of it.
  - `FsdpRows` (fsdp.py): an adapter around any of them for parameters sharded by FSDP2.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.distributed as dist
from torch import Tensor

from .directions import DirectionOptions
from .elementwise import adamw_update, momentum_update
from .layout import Layout
from .rules import Rule
from .sharding import Bucket, ShardStats, sharded_directions

__all__ = [
    "BatchedEngine",
    "DistributedEngine",
    "Engine",
    "MatrixJob",
    "RecordingEngine",
    "Stack",
    "direction",
]


@dataclass(frozen=True)
class MatrixJob:
    """One matrix-rule parameter of one step: its momentum in, its update out (`update`)."""

    param: Tensor
    group: dict[str, Any]  # the param group: SymOpt applies the update with its lr and decay
    rule: Rule
    layout: Layout
    options: DirectionOptions
    # The momentum (or Nesterov) tensor the update is computed from, and whose shape the update
    # has: the whole parameter's, or under FSDP a row-local rule's own rows (fsdp.py).
    momentum: Tensor
    # The rule's direction matrices -> the update's matrices (NorMuon, then the shape scale).
    finish: Callable[[Tensor], Tensor]
    # Whether the update of any rows depends on those rows of the momentum alone (row-norm on a
    # plain [out, in] matrix): FSDP then updates each rank's rows without gathering.
    rows_independent: bool = False

    def matrices(self) -> Tensor:
        """[B, m, n]: the momentum as the layout's logical (out, in) matrices."""
        return self.layout.to_matrices(self.momentum, self.rule.view)

    def update(self, directions: Tensor) -> Tensor:
        """The update, shaped like `momentum`, from the rule's direction of each of `matrices()`."""
        return self.layout.from_matrices(self.finish(directions), tuple(self.momentum.shape), self.rule.view)

    @property
    def couples(self) -> bool:
        """Whether the direction takes one scalar over all of this tensor's matrices."""
        return self.rule.couples_stack and self.options.alpha != 0.0


def direction(rule: Rule, matrices: Tensor, options: DirectionOptions) -> Tensor:
    assert rule.direction is not None, f"{rule.name} has no matrix direction"
    return rule.direction(matrices, options)


class Engine(ABC):
    """The tensor work of a SymOpt step; SymOpt gathers parameters and state and calls these."""

    @property
    def stats(self) -> ShardStats | None:
        """How the last steps' whole-matrix work was split across ranks (DistributedEngine)."""
        return None

    @abstractmethod
    def count(self, steps: list[Tensor]) -> None:
        """Add one to each float32 step counter."""

    # The elementwise updates' kernels: multi-tensor (foreach, fused AdamW) or one tensor at a
    # time (elementwise.py holds both forms).
    foreach: ClassVar[bool] = True

    def momentum(
        self, grads: list[Tensor], buffers: list[Tensor], momentum: float, nesterov: bool
    ) -> list[Tensor]:
        """EMA momentum in place (elementwise.momentum_update); returns what the rule reads."""
        return momentum_update(grads, buffers, momentum, nesterov, foreach=self.foreach)

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
        """One AdamW step of each tensor, in place (elementwise.adamw_update)."""
        adamw_update(
            params, grads, exp_avgs, exp_avg_sqs, steps, lr=lr, betas=betas, eps=eps,
            weight_decay=weight_decay, foreach=self.foreach,
        )  # fmt: skip

    @abstractmethod
    def apply(self, params: list[Tensor], updates: list[Tensor], lr: float, weight_decay: float) -> None:
        """Decoupled decay with the unscaled lr, then the step: p <- (1 - lr·wd) p - lr · update
        (the order torch.optim.Muon uses)."""

    @abstractmethod
    def updates(self, jobs: Sequence[MatrixJob]) -> list[Tensor]:
        """Each job's update (`MatrixJob.update` of its rule's direction), in the order of `jobs`."""


@dataclass
class Stack:
    """Matrices of several jobs with one rule, options, shape, dtype and device: one direction call.
    Rules with D(Mᵀ) = D(M)ᵀ take tall blocks transposed (`flips`), so [m, n] and [n, m] blocks
    (attention q and o per head, say) share a stack."""

    jobs: list[tuple[int, MatrixJob, bool]]  # (index in the step's jobs, job, transposed)
    matrices: Tensor  # [N, m, n], the jobs' matrices one after the other
    sizes: list[int]  # how many of them each job has

    @property
    def rule(self) -> Rule:
        return self.jobs[0][1].rule

    @property
    def couples(self) -> bool:
        return self.jobs[0][1].couples

    def compute(self, matrices: Tensor) -> Tensor:
        """The rule's direction of `matrices` (all of this stack's, or a rank's share of them)."""
        return direction(self.rule, matrices, self.jobs[0][1].options)

    def bucket(self) -> Bucket:
        return Bucket(self.matrices, self.compute, self.jobs[0][1].options.polar_steps)


def stacks_of(jobs: Sequence[MatrixJob]) -> list[Stack]:
    """The jobs' matrices stacked by rule, options, wide shape, dtype and device. A job whose
    scalar couples its tensor's matrices (hybrids with α ≠ 0) gets a stack of its own."""
    members: dict[tuple[Any, ...], list[tuple[int, MatrixJob, bool, Tensor]]] = defaultdict(list)
    for index, job in enumerate(jobs):
        matrices = job.matrices()
        m, n = matrices.shape[-2:]
        flip = job.rule.transposable and m > n
        shape = (n, m) if flip else (m, n)
        tensor = id(job.param) if job.couples else None
        key = (job.rule.name, job.options, shape, matrices.dtype, matrices.device, tensor)
        members[key].append((index, job, flip, matrices))
    return [
        Stack(
            [(i, job, flip) for i, job, flip, _ in stack],
            torch.cat([x.mT if flip else x for _, _, flip, x in stack]),
            [x.shape[0] for _, _, _, x in stack],
        )
        for stack in members.values()
    ]


class BatchedEngine(Engine):
    """Multi-tensor (foreach, fused AdamW) kernels, and one direction call per `Stack`."""

    def count(self, steps: list[Tensor]) -> None:
        torch._foreach_add_(steps, 1.0)

    def apply(self, params: list[Tensor], updates: list[Tensor], lr: float, weight_decay: float) -> None:
        if weight_decay != 0.0:
            torch._foreach_mul_(params, 1 - lr * weight_decay)
        torch._foreach_add_(params, updates, alpha=-lr)

    def updates(self, jobs: Sequence[MatrixJob]) -> list[Tensor]:
        stacks = stacks_of(jobs)
        out: list[Tensor | None] = [None] * len(jobs)
        for stack, computed in zip(stacks, self.directions(stacks), strict=True):
            for (index, job, flip), block in zip(stack.jobs, computed.split(stack.sizes), strict=True):
                out[index] = job.update(block.mT if flip else block)
        assert all(update is not None for update in out), "a job in no stack"
        return [update for update in out if update is not None]

    def directions(self, stacks: list[Stack]) -> list[Tensor]:
        """Each stack's directions, [N, m, n] (in the stack's orientation)."""
        return [stack.compute(stack.matrices) for stack in stacks]


class DistributedEngine(BatchedEngine):
    """The batched engine under data parallelism (every rank of `group`, default the world, has
    the same gradients): each rank computes a FLOP-balanced share of the whole-matrix directions
    and all-gathers the rest (sharding.py). On one process: the batched engine, no communication."""

    def __init__(self, group: Any = None) -> None:
        self.group = group
        self._stats = ShardStats()

    @property
    def stats(self) -> ShardStats:
        return self._stats

    def directions(self, stacks: list[Stack]) -> list[Tensor]:
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size(self.group) < 2:
            return super().directions(stacks)
        # Coupled tensors are not split across ranks: their scalar needs all of their matrices.
        shared = [
            i for i, stack in enumerate(stacks) if stack.rule.communication == "gather" and not stack.couples
        ]
        split: dict[int, Tensor] = {}
        if shared:
            buckets = [stacks[i].bucket() for i in shared]
            computed = sharded_directions(buckets, group=self.group, stats=self._stats)
            split = dict(zip(shared, computed, strict=True))
        return [split[i] if i in split else stack.compute(stack.matrices) for i, stack in enumerate(stacks)]


class RecordingEngine(BatchedEngine):
    """The batched engine that keeps the whole-matrix ("gather"-rule) work of its last step, one
    Bucket per stack: benchmarks/sharded_step.py times one rank's share of it."""

    def __init__(self) -> None:
        self.work: list[Bucket] = []

    def directions(self, stacks: list[Stack]) -> list[Tensor]:
        self.work = [stack.bucket() for stack in stacks if stack.rule.communication == "gather"]
        return super().directions(stacks)
