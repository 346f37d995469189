"""SymOpt: one torch optimizer whose param groups each name a symmetry-compatible rule.

    opt = SymOpt([
        {"params": hidden, "rule": "polar", "nesterov": True},
        {"params": [embedding], "rule": "row_norm", "lr": 0.01, "scale": "none"},
        {"params": vectors, "rule": "adamw", "lr": 1e-3},
    ], lr=0.02)

A step is: EMA momentum (optional Nesterov) -> the group's layout turns each tensor into a batch
of logical (out, in) matrices -> the rule's direction (same-shape matrices of all params batched
into one call) -> optional NorMuon row normalization -> shape scale -> decoupled weight decay
p <- (1 - lr·wd) p -> p <- p - lr · update. Elementwise rules (adamw, sgd) skip the matrix view.

Parameters sharded by FSDP2 (`fully_shard`: DTensors split by rows) are updated row-wise on each
rank; matrix rules gather the whole momentum first (fsdp.py).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..errors import ConfigError
from ..linalg import INVSQRT_METHODS, POLAR_METHODS
from .directions import HYBRID_POLAR_METHODS, DirectionOptions, neuron_normalize
from .elementwise import adamw_update, momentum_update
from .fsdp import gather_rows, gather_rows_reference, is_sharded, local, local_rows
from .layout import Layout, parse_layout
from .rules import Rule, get_rule
from .sharding import Bucket, ShardStats, sharded_directions

__all__ = ["SCALES", "SymOpt"]

# Shape scale applied to each matrix's direction (ALGORITHMS.md 8.3):
#   "kj": per-entry RMS 1/√fan_in, i.e. Keller Jordan's √max(1, m/n) for polar rules (a paired
#         [gate_j, up_j] view's fan-in is n/2: each half reads the n/2 inputs)
#   "match_rms_adamw": per-entry RMS rms_target (0.2: Moonlight's 0.2·√max(m, n) for polar rules)
#   "rms": the direction rescaled to RMS rms_target exactly (NorMuon paper form)
#   "none": the direction as the rule returns it
#   "kj_transposed": per-entry RMS 1/√fan_out, i.e. √max(1, n/m) for polar rules: KJ's factor of
#         the block read as (in, out), as EO's expert Muon scales the blocks it orients so
#         (ALGORITHMS.md 1; presets' eo_parity)
SCALES = ("kj", "match_rms_adamw", "rms", "none", "kj_transposed")
# Group options whose default changed the computation when they were introduced: a checkpoint
# without them was trained with these values (the hybrids took polar(X) with the quintic).
_BEFORE_OPTION: dict[str, Any] = {"hybrid_polar": "polar"}
_DTYPES = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float64": torch.float64,
}


@dataclass
class _MatrixJob:
    param: Tensor
    group: dict[str, Any]
    rule: Rule
    layout: Layout
    matrices: Tensor  # [B, m, n] momentum (or Nesterov) matrices in logical orientation
    options: DirectionOptions
    # FSDP: `matrices` are this rank's rows only (a row-local rule: `_row_local`), not the whole.
    row_local: bool = False
    direction: Tensor | None = None


class SymOpt(torch.optim.Optimizer):
    """Symmetry-compatible optimizer: each param group carries a rule name from `RULES`."""

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 0.02,
        *,
        rule: str = "polar",
        momentum: float = 0.95,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        layout: str = "auto",
        scale: str = "kj",
        rms_target: float = 0.2,
        alpha: float = 0.0,
        eps: float = 1e-8,
        polar_method: str = "polar_express",
        polar_steps: int = 5,
        polar_dtype: str = "auto",
        invsqrt_method: str = "polar_express",
        invsqrt_steps: int = 5,
        gram_eps: float = 1e-8,
        hybrid_polar: str = "invsqrt",
        normuon: bool = False,
        beta2: float = 0.95,
        normuon_eps: float = 1e-10,
        betas: tuple[float, float] = (0.9, 0.95),
        adam_eps: float = 1e-8,
        batched: bool = True,
        shard: bool = False,
        process_group: Any = None,
    ) -> None:
        defaults = {
            "lr": lr,
            "rule": rule,
            "momentum": momentum,
            "nesterov": nesterov,
            "weight_decay": weight_decay,
            "layout": layout,
            "scale": scale,
            "rms_target": rms_target,
            "alpha": alpha,
            "eps": eps,
            "polar_method": polar_method,
            "polar_steps": polar_steps,
            "polar_dtype": polar_dtype,
            "invsqrt_method": invsqrt_method,
            "invsqrt_steps": invsqrt_steps,
            "gram_eps": gram_eps,
            "hybrid_polar": hybrid_polar,
            "normuon": normuon,
            "beta2": beta2,
            "normuon_eps": normuon_eps,
            "betas": tuple(betas),
            "adam_eps": adam_eps,
        }
        # batched=False runs the readable per-tensor path: no foreach kernels, no batching of
        # same-shape matrices across parameters. The parity tests compare the two.
        self.batched = batched
        # shard=True, under data parallelism (every rank has the same gradients): each rank of
        # `process_group` (default: the world) computes a balanced share of the whole-matrix
        # directions and all-gathers the rest (sharding.py). Off, or on one process: no
        # communication at all.
        self.shard = shard
        self.process_group = process_group
        self.shard_stats = ShardStats()
        # record_work=True keeps the whole-matrix work of the last batched step (a copy of those
        # momenta), as a data-parallel step splits it: benchmarks/sharded_step.py times one
        # rank's share of it.
        self.record_work = False
        self._last_buckets: list[Bucket] = []
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        _validate_group(self.param_groups[-1])

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Also what `load_state_dict` ends with: a checkpoint written before a group option
        existed gets the value that reproduces how it was trained (_BEFORE_OPTION), else the
        option's default."""
        super().__setstate__(state)
        for group in self.param_groups:
            for key, value in {**self.defaults, **_BEFORE_OPTION}.items():
                group.setdefault(key, value)

    # -- the step -----------------------------------------------------------------------------

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One update of every parameter that has a gradient; returns the closure's loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        jobs: list[_MatrixJob] = []
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            for p in params:
                _check_gradient(p)
            rule = get_rule(group["rule"])
            if rule.name == "adamw":
                self._adamw(group, params)
            elif rule.elementwise:
                self._sgd(group, params)
            else:
                jobs.extend(self._prepare_matrix_jobs(group, rule, params))
        if jobs:
            self._compute_directions(jobs)
            self._apply_matrix_updates(jobs)
        return loss

    def _adamw(self, group: dict[str, Any], params: list[Tensor]) -> None:
        states = [self._state(p, ("exp_avg", "exp_avg_sq")) for p in params]
        adamw_update(
            [local(p) for p in params],
            [local(p.grad) for p in params],  # type: ignore[arg-type]
            [local(s["exp_avg"]) for s in states],
            [local(s["exp_avg_sq"]) for s in states],
            [s["step"] for s in states],
            lr=group["lr"],
            betas=group["betas"],
            eps=group["adam_eps"],
            weight_decay=group["weight_decay"],
            foreach=self.batched,
        )

    def _momentum(self, group: dict[str, Any], params: list[Tensor]) -> list[Tensor]:
        momentum = group["momentum"]
        states = [self._state(p, ("momentum_buffer",) if momentum > 0 else ()) for p in params]
        if self.batched:
            torch._foreach_add_([s["step"] for s in states], 1.0)
        else:
            for s in states:
                s["step"] += 1
        buffers = [local(s["momentum_buffer"]) for s in states] if momentum > 0 else []
        grads = [local(p.grad) for p in params]  # type: ignore[arg-type]
        return momentum_update(grads, buffers, momentum, group["nesterov"], foreach=self.batched)

    def _sgd(self, group: dict[str, Any], params: list[Tensor]) -> None:
        updates = self._momentum(group, params)
        _apply([local(p) for p in params], updates, group["lr"], group["weight_decay"], foreach=self.batched)

    def _prepare_matrix_jobs(
        self, group: dict[str, Any], rule: Rule, params: list[Tensor]
    ) -> list[_MatrixJob]:
        options = _direction_options(group)
        row_local = [is_sharded(p) and _row_local(group, rule, p) for p in params]
        updates = self._whole(params, self._momentum(group, params), row_local)
        jobs = []
        for p, update, mine in zip(params, updates, row_local, strict=True):
            layout = _layout_of(group, p)
            jobs.append(
                _MatrixJob(p, group, rule, layout, layout.to_matrices(update, rule.view), options, mine)
            )
        return jobs

    def _whole(self, params: list[Tensor], updates: list[Tensor], row_local: list[bool]) -> list[Tensor]:
        """The whole update of each parameter: FSDP-sharded ones gathered from every rank's rows,
        except those a row-local rule updates from this rank's rows (kept as they are)."""
        sharded = [i for i, p in enumerate(params) if is_sharded(p) and not row_local[i]]
        if not sharded:
            return updates
        gather = gather_rows if self.batched else gather_rows_reference
        fulls = gather([updates[i] for i in sharded], [params[i] for i in sharded])  # type: ignore[misc]
        whole = list(updates)
        for i, full in zip(sharded, fulls, strict=True):
            whole[i] = full
        return whole

    def _compute_directions(self, jobs: list[_MatrixJob]) -> None:
        if not self.batched:
            for job in jobs:
                job.direction = _direction(job.rule, job.matrices, job.options)
            return
        # Batch every matrix of the same rule, options, shape, dtype and device into one call.
        # Rules with D(Mᵀ) = D(M)ᵀ are computed on the wide orientation, so [m, n] and [n, m]
        # blocks (attention q and o per head, say) share a batch. A rule whose scalar couples a
        # tensor's matrices (hybrids with α ≠ 0) gets one call per tensor, as the reference path.
        buckets: dict[tuple[Any, ...], list[tuple[_MatrixJob, bool]]] = defaultdict(list)
        for job in jobs:
            m, n = job.matrices.shape[-2:]
            flip = job.rule.transposable and m > n
            shape = (n, m) if flip else (m, n)
            tensor = id(job.param) if _couples(job) else None
            key = (job.rule.name, job.options, shape, job.matrices.dtype, job.matrices.device, tensor)
            buckets[key].append((job, flip))
        stacks = [
            (members, torch.cat([job.matrices.mT if flip else job.matrices for job, flip in members]))
            for members in buckets.values()
        ]
        if self.record_work:
            self._last_buckets = [
                _bucket(members[0][0], stacked)
                for members, stacked in stacks
                if members[0][0].rule.communication == "gather"
            ]
        # Coupled tensors are not split across ranks: their scalar needs all of their matrices.
        shared = [
            i
            for i, (members, _) in enumerate(stacks)
            if self._splits(members[0][0].rule) and not _couples(members[0][0])
        ]
        directions: dict[int, Tensor] = {}
        if shared:
            split = sharded_directions(
                [_bucket(stacks[i][0][0][0], stacks[i][1]) for i in shared],
                group=self.process_group,
                stats=self.shard_stats,
            )
            directions.update(zip(shared, split, strict=True))
        for i, (members, stacked) in enumerate(stacks):
            first = members[0][0]
            computed = directions.get(i)
            if computed is None:
                computed = _direction(first.rule, stacked, first.options)
            sizes = [job.matrices.shape[0] for job, _ in members]
            for (job, flip), direction in zip(members, computed.split(sizes), strict=True):
                job.direction = direction.mT if flip else direction

    @property
    def whole_matrix_work(self) -> list[Bucket]:
        """The last batched step's "gather"-rule matrices, one Bucket per rule, options and shape."""
        return list(self._last_buckets)

    def _splits(self, rule: Rule) -> bool:
        """Whether this step splits `rule`'s matrices across ranks (module docstring)."""
        if not self.shard or rule.communication != "gather":
            return False
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        return distributed and torch.distributed.get_world_size(self.process_group) > 1

    def _apply_matrix_updates(self, jobs: list[_MatrixJob]) -> None:
        by_group: dict[int, tuple[dict[str, Any], list[Tensor], list[Tensor]]] = {}
        for job in jobs:
            assert job.direction is not None
            group, rule, D = job.group, job.rule, job.direction
            if rule.neuron_norm or group["normuon"]:
                state = self.state[job.param]
                if "second_moment" not in state:
                    state["second_moment"] = torch.zeros(
                        (*D.shape[:-1], 1), dtype=torch.promote_types(D.dtype, torch.float32), device=D.device
                    )
                D = neuron_normalize(D, state["second_moment"], group["beta2"], group["normuon_eps"])
            D = D * _scale_factor(group["scale"], rule, D, group["rms_target"])
            if job.row_local:
                update = job.layout.from_matrices(D, tuple(local(job.param).shape), rule.view)
            else:
                update = job.layout.from_matrices(D, tuple(job.param.shape), rule.view)
                if is_sharded(job.param):
                    update = local_rows(update, job.param)  # type: ignore[arg-type]
            entry = by_group.setdefault(id(group), (group, [], []))
            entry[1].append(local(job.param))
            entry[2].append(update.to(job.param.dtype))
        for group, params, updates in by_group.values():
            _apply(params, updates, group["lr"], group["weight_decay"], foreach=self.batched)

    def _state(self, p: Tensor, buffers: tuple[str, ...]) -> dict[str, Any]:
        state = self.state[p]
        if "step" not in state:
            # float32 step counters, as torch.optim keeps them (state_dict round-trips them as is).
            state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
        for name in buffers:
            if name not in state:
                state[name] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state


def _row_local(group: dict[str, Any], rule: Rule, p: Tensor) -> bool:
    """Whether an FSDP rank can update its rows of `p` from its rows alone: a row-local rule
    (communication "none": row-norm) on a plain [out, in] matrix, whose logical rows are the
    stored rows, and nothing that looks across rows (NorMuon's statistics, the "rms" scale)."""
    plain = _layout_of(group, p) == parse_layout("matrix") and p.ndim == 2
    return rule.communication == "none" and plain and not group["normuon"] and group["scale"] != "rms"


def _couples(job: _MatrixJob) -> bool:
    """Whether the job's direction takes one scalar over all of its tensor's matrices."""
    return job.rule.couples_stack and job.options.alpha != 0.0


def _direction(rule: Rule, matrices: Tensor, options: DirectionOptions) -> Tensor:
    assert rule.direction is not None
    return rule.direction(matrices, options)


def _bucket(job: _MatrixJob, stacked: Tensor) -> Bucket:
    rule, options = job.rule, job.options
    return Bucket(stacked, lambda matrices: _direction(rule, matrices, options), options.polar_steps)


def _apply(
    params: list[Tensor], updates: list[Tensor], lr: float, weight_decay: float, *, foreach: bool
) -> None:
    # Decoupled decay with the unscaled lr, then the step (the order torch.optim.Muon uses).
    if foreach:
        if weight_decay != 0.0:
            torch._foreach_mul_(params, 1 - lr * weight_decay)
        torch._foreach_add_(params, updates, alpha=-lr)
        return
    for p, update in zip(params, updates, strict=True):
        p.mul_(1 - lr * weight_decay)
        p.add_(update, alpha=-lr)


def _scale_factor(mode: str, rule: Rule, D: Tensor, rms_target: float) -> float | Tensor:
    m, n = D.shape[-2:]
    if mode == "none" or rule.natural_rms is None:
        return 1.0
    if mode == "kj":
        return 1.0 / (math.sqrt(rule.fan_in(n)) * rule.natural_rms(m, n))
    if mode == "kj_transposed":
        return 1.0 / (math.sqrt(m) * rule.natural_rms(m, n))
    if mode == "match_rms_adamw":
        return rms_target / rule.natural_rms(m, n)
    rms = torch.linalg.matrix_norm(D.float(), keepdim=True) / math.sqrt(m * n)
    return (rms_target / rms.clamp_min(1e-30)).to(D.dtype)


def _direction_options(group: dict[str, Any]) -> DirectionOptions:
    dtype = None if group["polar_dtype"] == "auto" else _DTYPES[group["polar_dtype"]]
    return DirectionOptions(
        alpha=group["alpha"],
        eps=group["eps"],
        polar_method=group["polar_method"],
        polar_steps=group["polar_steps"],
        polar_dtype=dtype,
        invsqrt_method=group["invsqrt_method"],
        invsqrt_steps=group["invsqrt_steps"],
        gram_eps=group["gram_eps"],
        hybrid_polar=group["hybrid_polar"],
    )


def _layout_of(group: dict[str, Any], p: Tensor) -> Layout:
    if group["layout"] == "auto":
        return parse_layout("vector" if p.ndim < 2 else "matrix")
    return parse_layout(group["layout"])


def _check_gradient(p: Tensor) -> None:
    if p.grad is not None and p.grad.is_sparse:
        raise ConfigError("SymOpt does not support sparse gradients (use nn.Embedding(sparse=False))")


def _check_range(
    group: dict[str, Any], key: str, low: float, high: float = math.inf, *, open_high: bool = False
) -> None:
    value = group[key]
    ok = isinstance(value, int | float) and not isinstance(value, bool) and low <= value
    ok = ok and (value < high if open_high else value <= high)
    if not ok:
        bound = f"[{low}, {high})" if open_high else f"[{low}, {high}]"
        raise ConfigError(f"Invalid {key}: {value!r} (expected a number in {bound})")


def _check_choice(group: dict[str, Any], key: str, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    if group[key] not in choices:
        raise ConfigError(f"Invalid {key}: {group[key]!r}; valid values: {', '.join(choices)}")


def _validate_group(group: dict[str, Any]) -> None:
    rule = get_rule(group["rule"])
    _check_range(group, "lr", 0.0)
    _check_range(group, "momentum", 0.0, 1.0, open_high=True)
    _check_range(group, "weight_decay", 0.0)
    _check_range(group, "rms_target", 0.0)
    _check_range(group, "alpha", 0.0)
    _check_range(group, "eps", 0.0)
    _check_range(group, "gram_eps", 0.0)
    _check_range(group, "beta2", 0.0, 1.0, open_high=True)
    _check_range(group, "normuon_eps", 0.0)
    _check_range(group, "adam_eps", 0.0)
    _check_range(group, "polar_steps", 1, 100, open_high=True)
    _check_range(group, "invsqrt_steps", 1, 100, open_high=True)
    _check_choice(group, "scale", SCALES)
    _check_choice(group, "polar_method", POLAR_METHODS)
    _check_choice(group, "invsqrt_method", INVSQRT_METHODS)
    _check_choice(group, "hybrid_polar", HYBRID_POLAR_METHODS)
    _check_choice(group, "polar_dtype", ("auto", *_DTYPES))
    betas = group["betas"]
    if not (isinstance(betas, tuple | list) and len(betas) == 2 and all(0.0 <= b < 1.0 for b in betas)):
        raise ConfigError(f"Invalid betas: {betas!r} (expected two numbers in [0, 1))")
    group["betas"] = tuple(betas)
    for p in group["params"]:
        if not p.is_floating_point():
            raise ConfigError(f"Invalid parameter dtype {p.dtype}: SymOpt needs floating-point parameters")
        layout = _layout_of(group, p)
        layout.check(tuple(p.shape), f"a parameter of shape {tuple(p.shape)}")
        if not rule.elementwise and layout.kind == "vector":
            raise ConfigError(
                f"Invalid rule {rule.name!r} for a parameter of shape {tuple(p.shape)}: matrix rules need "
                "2+ dims; give vectors an elementwise rule (adamw, sgd)"
            )
